//! The wasmtime runtime: one engine for the whole host, components precompiled once, and one fresh instance
//! per turn whose hooks run under the endpoint's limits.
//!
//! Why it is shaped this way:
//! - A pooling allocator plus [`InstancePre`] make a fresh instance cheap (tens of microseconds for Rust), so
//!   every turn gets its own instance: no state leaks between users or turns, and a plugin that trapped is
//!   simply thrown away with its turn.
//! - Epoch interruption bounds a hook's wall time (a ticker thread advances the epoch every [`TICK`]). At
//!   each tick a running guest either stops (its deadline has passed) or yields, so a guest in a loop never
//!   holds a thread, or the plugin lane, for longer than a tick. A guest waiting in a host call (HTTP) is
//!   bounded by a tokio timeout around the call as well.
//! - A turn's plugin work runs on the plugin [`lane`](super::lane) unless the plugin is slow: under load,
//!   that keeps the engine's shared state on one core.
//! - Precompiled artifacts are written by [`Runtime::precompile`] and loaded with [`Runtime::load_precompiled`]:
//!   nothing is compiled on the message path.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, HasSelf, Instance, InstancePre, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use super::bindings::{self, FinishedIndices, InputIndices, OutputIndices};
use super::error::{HookError, PluginError};
use super::host::{HostState, MemoryLimiter, TurnLog};
use super::http::{AllowList, HttpPolicy};
use super::lane::Job;
use super::lane::{CallTimes, Lane};
use super::storage::{SessionKey, SessionStorage};
use super::types::{
    Hooks, InputDecision, InputEvent, Limits, LogSink, OutputContext, OutputDecision, PluginInfo,
    TurnStats, TurnSummary,
};
use super::validate;

/// How often the epoch advances: the granularity of hook deadlines.
pub const TICK: Duration = Duration::from_millis(10);
/// Instances alive at once (turns using a plugin concurrently); further turns wait for a slot.
const MAX_INSTANCES: u32 = 256;
/// Instances in use at once by turns that are not waiting on the flow or the Send API, per CPU core. See
/// [`Admission`].
const BUSY_INSTANCES_PER_CORE: usize = 48;
/// Bytes of a memory slot reset in place (memset) instead of being returned to the kernel.
const KEEP_RESIDENT: usize = 4 << 20;
/// Extra time the tokio backstop grants over the epoch deadline, so the epoch (which reports a clean
/// timeout trap) normally fires first.
const BACKSTOP_GRACE: Duration = Duration::from_millis(250);

/// The engine, the linker with every import a plugin may use, and the epoch ticker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    admission: Arc<Admission>,
    lane: Arc<Lane>,
    ticker: Arc<EpochTicker>,
}

/// Stops the epoch ticker when the runtime and every plugin loaded from it are gone: a plugin that
/// outlived its runtime without epochs could loop for ever.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    pub fn new() -> Result<Arc<Runtime>, PluginError> {
        Runtime::with_instances(MAX_INSTANCES, Runtime::default_busy_instances())
    }

    /// [`BUSY_INSTANCES_PER_CORE`] for each core this process may use.
    pub fn default_busy_instances() -> usize {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        BUSY_INSTANCES_PER_CORE * cores
    }

    /// A runtime that keeps at most `max_instances` instances alive at once, at most `max_busy` of them held
    /// by turns that are not waiting on the flow or the Send API (tests use small numbers).
    ///
    /// A turn that holds an instance never waits for another one, so turns that each run on a task of their
    /// own (as the host's do) always make progress. A single task that holds more working turns than
    /// `max_busy` (or more turns than `max_instances`) and starts yet another one waits forever: the plugin
    /// bench sizes its runtime for that.
    pub fn with_instances(
        max_instances: u32,
        max_busy: usize,
    ) -> Result<Arc<Runtime>, PluginError> {
        let max_instances = max_instances.max(1);
        let engine = match Engine::new(&engine_config(Some(max_instances))) {
            Ok(engine) => engine,
            // Some hosts cap virtual memory, which the pool reserves up front: run without it.
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; instances are allocated on demand");
                Engine::new(&engine_config(None))
                    .map_err(|e| PluginError::Runtime(e.to_string()))?
            }
        };
        let linker = host_linker(&engine)?;
        let stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), Arc::clone(&stop))?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            admission: Arc::new(Admission::new(max_instances as usize, max_busy)),
            lane: Arc::new(Lane::default()),
            ticker: Arc::new(EpochTicker { stop }),
        }))
    }

    /// The pool's size and its busy limit (see [`Runtime::with_instances`]).
    pub fn pool_limits(&self) -> (usize, usize) {
        (self.admission.max_slots, self.admission.max_busy)
    }

    /// Identifies the engine's artifact format: precompiled files are keyed by it, so an upgraded host
    /// recompiles instead of loading an incompatible artifact.
    pub fn compatibility_key(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    /// Compiles a component to native code (seconds for Python or JavaScript: never on the message path).
    pub fn precompile(&self, wasm: &[u8]) -> Result<Vec<u8>, PluginError> {
        self.engine
            .precompile_component(wasm)
            .map_err(|e| PluginError::Compile(format!("{e:#}")))
    }

    /// Loads an artifact written by [`Runtime::precompile`] and links it.
    ///
    /// The file must be one this host wrote itself (the plugin store's own directory): wasmtime trusts a
    /// precompiled artifact's native code.
    pub fn load_precompiled(
        &self,
        name: &str,
        info: PluginInfo,
        artifact: &Path,
    ) -> Result<Plugin, PluginError> {
        // SAFETY: the artifact was produced by `precompile` of this engine and stored under the data
        // directory by the plugin store; wasmtime checks the engine compatibility header itself.
        let component = unsafe { Component::deserialize_file(&self.engine, artifact) }
            .map_err(|e| PluginError::Io(format!("{}: {e:#}", artifact.display())))?;
        self.link(name, info, &component)
    }

    /// Compiles and links in one step (the `ferry plugin` commands and tests).
    pub fn load_bytes(
        &self,
        name: &str,
        info: PluginInfo,
        wasm: &[u8],
    ) -> Result<Plugin, PluginError> {
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
        self.link(name, info, &component)
    }

    fn link(
        &self,
        name: &str,
        info: PluginInfo,
        component: &Component,
    ) -> Result<Plugin, PluginError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
        // A hook is present when its interface resolves against the component (semver-compatible 0.1.x).
        let input = InputIndices::new(&pre).ok();
        let output = OutputIndices::new(&pre).ok();
        let finished = FinishedIndices::new(&pre).ok();
        let hooks = Hooks {
            input: input.is_some(),
            output: output.is_some(),
            execution_finished: finished.is_some(),
        };
        if !hooks.any() {
            return Err(PluginError::NoHooks(String::new()));
        }
        Ok(Plugin {
            name: name.to_string(),
            info: PluginInfo { hooks, ..info },
            pre,
            input,
            output,
            finished,
            admission: Arc::clone(&self.admission),
            lane: Arc::clone(&self.lane),
            call_times: CallTimes::default(),
            _ticker: Arc::clone(&self.ticker),
        })
    }
}

/// `pool`: the pooling allocator's size in instances, or `None` to allocate on demand.
fn engine_config(pool: Option<u32>) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // The contract is synchronous (WASI 0.2): no plugin needs the component model's concurrent ABI, and
    // without it a hook call is a plain fiber switch instead of a trip through wasmtime's task scheduler,
    // and a store carries no concurrent state to set up and tear down. Components that use the async ABI
    // are refused at upload.
    config.concurrency_support(false);
    if let Some(instances) = pool {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            // componentize-py links libc and libpython dynamically: many core instances and tables each.
            .max_core_instances_per_component(64)
            .max_tables_per_component(64)
            .max_memories_per_component(8)
            // At least what one component may use, so that even a pool of one fits any plugin.
            .total_core_instances((instances * 16).max(64))
            .total_memories((instances * 2).max(8))
            .total_tables((instances * 16).max(64))
            .total_stacks(instances)
            // The per-endpoint memory limit is enforced by the store's limiter; this is only the ceiling.
            .max_memory_size(1 << 32)
            // Resetting a slot with madvise costs a TLB shootdown across every core: under load that
            // dominated a turn. Instead, reset the pages a guest touched with memset (PAGEMAP_SCAN finds them
            // on Linux 6.7+), and batch the decommits that remain.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(1 << 16)
            .async_stack_keep_resident(1 << 16)
            .decommit_batch_size(64);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

fn host_linker(engine: &Engine) -> Result<Linker<HostState>, PluginError> {
    let setup = |e: wasmtime::Error| PluginError::Runtime(format!("{e:#}"));
    let mut linker: Linker<HostState> = Linker::new(engine);
    // All of WASI 0.2 is linked so that any language's standard library loads; `HostState` grants nothing.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(setup)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(setup)?;
    bindings::ferry::transformer::types::add_to_linker::<HostState, HasSelf<HostState>>(
        &mut linker,
        |s| s,
    )
    .map_err(setup)?;
    bindings::ferry::transformer::log::add_to_linker::<HostState, HasSelf<HostState>>(
        &mut linker,
        |s| s,
    )
    .map_err(setup)?;
    bindings::ferry::transformer::session_storage::add_to_linker::<HostState, HasSelf<HostState>>(
        &mut linker,
        |s| s,
    )
    .map_err(setup)?;
    Ok(linker)
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), PluginError> {
    std::thread::Builder::new()
        .name("ferry-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| PluginError::Runtime(format!("cannot start the epoch ticker: {e}")))
}

/// A linked plugin, ready to instantiate. Cheap to share: turns hold it in an `Arc`, so a hot swap lets
/// turns in flight finish on the version they started with.
pub struct Plugin {
    pub name: String,
    pub info: PluginInfo,
    pre: InstancePre<HostState>,
    input: Option<InputIndices>,
    output: Option<OutputIndices>,
    finished: Option<FinishedIndices>,
    admission: Arc<Admission>,
    lane: Arc<Lane>,
    /// How long this plugin's hook calls take: slow plugins stay off the lane.
    call_times: CallTimes,
    _ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("info", &self.info)
            .finish()
    }
}

/// What a turn's instance needs from the host: limits, session storage scope and the log.
pub struct TurnContext {
    pub limits: Arc<Limits>,
    /// `limits.allowed_hosts`, parsed once per endpoint rather than per turn.
    pub allowed: Arc<AllowList>,
    pub storage: Arc<dyn SessionStorage>,
    pub key: SessionKey,
    pub log: Arc<dyn LogSink>,
}

impl Plugin {
    pub fn hooks(&self) -> Hooks {
        self.info.hooks
    }

    /// Starts a turn. The instance is created on the first hook call (its cost counts against that call).
    pub fn turn(self: &Arc<Self>, context: TurnContext) -> Turn {
        Turn {
            plugin: Arc::clone(self),
            context: Some(context),
            slot: None,
            live: None,
            poisoned: false,
            stats: TurnStats::default(),
            log: None,
        }
    }
}

/// Which turns may create an instance now.
///
/// Two limits. `slots` is the pool: instances alive at once. A turn creates its instance only while fewer
/// than `max_busy` turns that are working (rather than waiting on the flow or the Send API) hold one; a turn
/// coming back from a wait goes on at once, so the count may briefly exceed the limit. The second one is about the CPU's
/// caches: under a burst every admitted turn's instance is touched again and again while the other turns run
/// in between, and with hundreds interleaved each hook call found its instance cold (the plugin's cost per
/// turn was four times what it is on a quiet host). Turns waiting on a slow flow or on Meta do not count,
/// so those still run concurrently up to the pool's size.
struct Admission {
    slots: Arc<Semaphore>,
    max_slots: usize,
    busy: AtomicUsize,
    max_busy: usize,
    less_busy: Notify,
}

impl Admission {
    fn new(slots: usize, max_busy: usize) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(slots)),
            max_slots: slots,
            busy: AtomicUsize::new(0),
            max_busy: max_busy.max(1),
            less_busy: Notify::new(),
        }
    }

    /// Waits until a pool slot and a busy place are free; the turn holds both from then on. Cancel-safe:
    /// nothing is held between awaits except the pool permit, which frees itself when dropped.
    async fn admit(self: &Arc<Self>) -> Result<Slot, HookError> {
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| HookError::Instantiate("the runtime is shutting down".into()))?;
        loop {
            let less_busy = self.less_busy.notified();
            tokio::pin!(less_busy);
            // Registered before the check, so a place freed in between is not missed.
            less_busy.as_mut().enable();
            if self.take_busy_place() {
                return Ok(Slot {
                    admission: Arc::clone(self),
                    _permit: permit,
                    busy: true,
                });
            }
            less_busy.await;
        }
    }

    fn take_busy_place(&self) -> bool {
        self.busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |busy| {
                (busy < self.max_busy).then_some(busy + 1)
            })
            .is_ok()
    }

    fn leave_busy(&self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
        self.less_busy.notify_one();
    }
}

/// A turn's place in the pool; counted as busy except while the turn waits on the flow or the Send API.
struct Slot {
    admission: Arc<Admission>,
    _permit: OwnedSemaphorePermit,
    busy: bool,
}

impl Slot {
    fn set_busy(&mut self, busy: bool) {
        if busy == self.busy {
            return;
        }
        self.busy = busy;
        if busy {
            // Never waits: a turn that holds an instance always goes on.
            self.admission.busy.fetch_add(1, Ordering::AcqRel);
        } else {
            self.admission.leave_busy();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.busy {
            self.admission.leave_busy();
        }
    }
}

struct Live {
    store: Store<HostState>,
    instance: Instance,
    slot: Slot,
}

/// One turn's instance of a plugin. Hooks of the turn run on it in order; it is dropped with the turn.
pub struct Turn {
    plugin: Arc<Plugin>,
    context: Option<TurnContext>,
    /// The pool slot this turn's instance will use, taken before the first hook's clock starts.
    slot: Option<Slot>,
    live: Option<Live>,
    poisoned: bool,
    stats: TurnStats,
    log: Option<Arc<TurnLog>>,
}

impl Turn {
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    pub async fn input(&mut self, event: InputEvent) -> Result<InputDecision, HookError> {
        let indices = self
            .plugin
            .input
            .clone()
            .ok_or(HookError::NotExported("input"))?;
        let decision: InputDecision = self
            .call(move |store, instance| {
                Box::pin(async move {
                    let guest = indices.load(&mut *store, instance)?;
                    guest.call_handle_input(&mut *store, &event.into()).await
                })
            })
            .await?
            .map_err(HookError::Plugin)?
            .into();
        validate::input_decision(&decision)?;
        Ok(decision)
    }

    pub async fn output(&mut self, context: OutputContext) -> Result<OutputDecision, HookError> {
        let indices = self
            .plugin
            .output
            .clone()
            .ok_or(HookError::NotExported("output"))?;
        let decision: OutputDecision = self
            .call(move |store, instance| {
                Box::pin(async move {
                    let guest = indices.load(&mut *store, instance)?;
                    guest.call_handle_output(&mut *store, &context.into()).await
                })
            })
            .await?
            .map_err(HookError::Plugin)?
            .into();
        validate::output_decision(&decision)?;
        Ok(decision)
    }

    /// The last hook of a turn: the instance is torn down right after it, while it is still warm in the
    /// caches (the turn's counters are kept).
    pub async fn execution_finished(&mut self, summary: TurnSummary) -> Result<(), HookError> {
        let indices = self
            .plugin
            .finished
            .clone()
            .ok_or(HookError::NotExported("execution-finished"))?;
        self.call_then_end(
            move |store, instance| {
                Box::pin(async move {
                    let guest = indices.load(&mut *store, instance)?;
                    guest
                        .call_handle_execution_finished(&mut *store, &summary.into())
                        .await
                })
            },
            true,
        )
        .await?
        .map_err(HookError::Plugin)
    }

    /// Counters of this turn so far.
    pub fn stats(&self) -> TurnStats {
        let mut stats = self.stats;
        if let Some(live) = &self.live {
            let data = live.store.data();
            stats.http_requests = data.http.sent;
            stats.http_denied = data.http.denied;
            stats.peak_memory_bytes = data.limiter.peak;
        }
        if let Some(log) = &self.log {
            stats.log_entries = log.entries();
        }
        stats
    }

    /// Whether an instance was created for this turn.
    pub fn instantiated(&self) -> bool {
        self.live.is_some()
    }

    /// Marks the turn as waiting on something outside the host (the flow, the Send API), or as working
    /// again: a waiting turn's instance does not count against the busy limit (see [`Admission`]).
    pub fn set_waiting(&mut self, waiting: bool) {
        let slot = match (&mut self.live, &mut self.slot) {
            (Some(live), _) => &mut live.slot,
            (None, Some(slot)) => slot,
            (None, None) => return,
        };
        slot.set_busy(!waiting);
    }

    /// Runs one export under the limits: instantiates on first use, sets the epoch deadline, bounds the
    /// whole call with a tokio timeout, and classifies failures.
    async fn call<R, F>(&mut self, f: F) -> Result<R, HookError>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(
                &'a mut Store<HostState>,
                &'a Instance,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>,
            > + Send
            + 'static,
    {
        self.call_then_end(f, false).await
    }

    /// [`Turn::call`], and with `end` the instance is dropped right after.
    async fn call_then_end<R, F>(&mut self, f: F, end: bool) -> Result<R, HookError>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(
                &'a mut Store<HostState>,
                &'a Instance,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>,
            > + Send
            + 'static,
    {
        if self.poisoned {
            return Err(HookError::Poisoned);
        }
        self.wait_for_a_slot().await?;
        if !Lane::fits(&self.plugin.call_times) {
            return self.call_here(f, end).await;
        }
        // The lane needs the turn's state for the duration of the call: it moves there and comes back.
        let mut turn = std::mem::replace(self, Turn::lent(&self.plugin));
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::pin(async move {
            let result = turn.call_here(f, end).await;
            let _ = done.send((turn, result));
        });
        if let Err(job) = self.plugin.lane.submit(job) {
            job.await;
        }
        match result.await {
            Ok((turn, result)) => {
                *self = turn;
                result
            }
            // Only when the lane's runtime shut down under the call: the instance went with it.
            Err(_) => Err(HookError::Poisoned),
        }
    }

    /// A stand-in for a turn whose state is on the lane; never called.
    fn lent(plugin: &Arc<Plugin>) -> Turn {
        Turn {
            plugin: Arc::clone(plugin),
            context: None,
            slot: None,
            live: None,
            poisoned: true,
            stats: TurnStats::default(),
            log: None,
        }
    }

    /// [`Turn::call`] on the task it is polled on.
    async fn call_here<R, F>(&mut self, f: F, end: bool) -> Result<R, HookError>
    where
        F: for<'a> FnOnce(
            &'a mut Store<HostState>,
            &'a Instance,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>,
        >,
    {
        self.stats.hook_calls += 1;
        let limits = self.limits();
        let timeout = Duration::from_millis(limits.hook_timeout_ms.max(1));
        let started = Instant::now();
        let result = tokio::time::timeout(timeout + BACKSTOP_GRACE, async {
            self.ensure_instance(timeout).await?;
            let Some(live) = self.live.as_mut() else {
                return Err(HookError::Instantiate("no instance".into()));
            };
            live.store.data_mut().deadline = started + timeout;
            live.store.set_epoch_deadline(1);
            let outcome = f(&mut live.store, &live.instance).await;
            live.store.data().output.flush();
            outcome
                .map_err(|e| classify(e, &live.store, limits.hook_timeout_ms, limits.memory_bytes))
        })
        .await;
        let result = match result {
            Ok(result) => result,
            Err(_) => Err(HookError::Timeout(limits.hook_timeout_ms)),
        };
        self.plugin.call_times.record(started.elapsed());
        if end {
            self.stats = self.stats();
            self.live = None;
        }
        if let Err(e) = &result {
            if matches!(
                e,
                HookError::Trap { .. }
                    | HookError::Timeout(_)
                    | HookError::Memory(_)
                    | HookError::Instantiate(_)
            ) {
                // A trapped instance may hold broken invariants; the rest of the turn runs without it.
                self.poisoned = true;
            }
        }
        result
    }

    fn limits(&self) -> Arc<Limits> {
        match (&self.context, &self.live) {
            (Some(context), _) => Arc::clone(&context.limits),
            (None, Some(live)) => Arc::clone(&live.store.data().limits),
            (None, None) => Arc::new(Limits::default()),
        }
    }

    /// Waits, without a deadline, until the pool has room for this turn's instance. The wait is not the
    /// plugin's doing, so it does not count against its hook's time: when every slot is held (by turns
    /// waiting on a slow flow, say), a turn waits its turn instead of failing its hook.
    async fn wait_for_a_slot(&mut self) -> Result<(), HookError> {
        if self.live.is_some() || self.slot.is_some() {
            return Ok(());
        }
        self.slot = Some(self.plugin.admission.admit().await?);
        Ok(())
    }

    async fn ensure_instance(&mut self, timeout: Duration) -> Result<(), HookError> {
        if self.live.is_some() {
            return Ok(());
        }
        let (Some(context), Some(slot)) = (self.context.take(), self.slot.take()) else {
            return Err(HookError::Poisoned);
        };
        let log = Arc::new(TurnLog::new(context.log));
        self.log = Some(Arc::clone(&log));
        let http = HttpPolicy::new(
            context.allowed,
            context.limits.max_requests_per_turn,
            context.limits.max_response_bytes,
            Duration::from_millis(context.limits.request_timeout_ms),
        );
        let state = HostState::new(
            http,
            MemoryLimiter::new(context.limits.memory_bytes),
            context.storage,
            context.key,
            log,
            context.limits,
        );
        let mut store = Store::new(self.plugin.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // At every epoch tick the guest either stops (its hook's deadline has passed) or yields, so that a
        // guest in a loop holds no task, and no lane, for longer than a tick. A fresh store's deadline has
        // already passed: set it before instantiating (instantiation runs guest start functions).
        store.data_mut().deadline = Instant::now() + timeout;
        store.epoch_deadline_callback(|store| {
            Ok(if Instant::now() >= store.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.set_epoch_deadline(1);
        let instance = match self.plugin.pre.instantiate_async(&mut store).await {
            Ok(instance) => instance,
            Err(e) => {
                let limits = Arc::clone(&store.data().limits);
                return Err(
                    match classify(e, &store, limits.hook_timeout_ms, limits.memory_bytes) {
                        HookError::Trap { message, .. } => HookError::Instantiate(message),
                        other => other,
                    },
                );
            }
        };
        self.stats.instantiations += 1;
        self.live = Some(Live {
            store,
            instance,
            slot,
        });
        Ok(())
    }
}

/// Turns a wasmtime error into what happened, for the log and the metrics.
impl Drop for Turn {
    /// Tearing an instance down touches the same shared state as creating one: on the lane too.
    fn drop(&mut self) {
        let Some(live) = self.live.take() else {
            return;
        };
        if Lane::fits(&self.plugin.call_times) {
            // Without a runtime the job comes back and is dropped here, instance and all.
            let _ = self.plugin.lane.submit(Box::pin(async move { drop(live) }));
        }
    }
}

fn classify(
    error: wasmtime::Error,
    store: &Store<HostState>,
    timeout_ms: u64,
    memory_bytes: usize,
) -> HookError {
    if store.data().limiter.exceeded {
        return HookError::Memory(memory_bytes);
    }
    if let Some(wasmtime::Trap::Interrupt) = error.downcast_ref::<wasmtime::Trap>() {
        return HookError::Timeout(timeout_ms);
    }
    let backtrace = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| bt.to_string());
    let message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    HookError::Trap { message, backtrace }
}
