//! The three hooks as the turn pipeline sees them: an endpoint's plugin slot ([`EndpointPlugin`]) and one
//! turn's hooks ([`TurnHooks`]), with the endpoint's policy applied: which hooks are enabled, what a failure
//! means (`abort_on_error`), logging with the plugin's name and hash, and metrics.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use serde_json::Value;

use super::error::HookError;
use super::http::AllowList;
use super::runtime::{Plugin, Turn, TurnContext};
use super::storage::{SessionKey, SessionStorage};
use super::types::{
    EndpointInfo, InputDecision, InputEvent, Level, Limits, LogSink, OutputContext, OutputDecision,
    TurnSummary,
};
use crate::config::TransformerConfig;
use crate::metrics::Metrics;

/// How long a flow or Send API call may take before its turn counts as waiting rather than working.
const WAIT_GRACE: std::time::Duration = std::time::Duration::from_millis(20);

/// The plugin an endpoint runs now, swapped atomically: a turn keeps the version it started with.
pub struct EndpointPlugin {
    endpoint_id: Arc<str>,
    active: ArcSwapOption<Plugin>,
    enabled: EnabledHooks,
    abort_on_error: bool,
    limits: Arc<Limits>,
    allowed: Arc<AllowList>,
    info: EndpointInfo,
}

#[derive(Clone, Copy)]
struct EnabledHooks {
    input: bool,
    output: bool,
    finished: bool,
}

impl EndpointPlugin {
    pub fn new(
        endpoint_id: Arc<str>,
        config: &TransformerConfig,
        info: EndpointInfo,
    ) -> EndpointPlugin {
        EndpointPlugin {
            endpoint_id,
            active: ArcSwapOption::empty(),
            enabled: EnabledHooks {
                input: config.input,
                output: config.output,
                finished: config.execution_finished,
            },
            abort_on_error: config.abort_on_error,
            limits: Arc::new(config.limits.clone()),
            allowed: Arc::new(AllowList::parse_lenient(&config.limits.allowed_hosts)),
            info,
        }
    }

    pub fn set(&self, plugin: Option<Arc<Plugin>>) {
        self.active.store(plugin);
    }

    pub fn current(&self) -> Option<Arc<Plugin>> {
        self.active.load_full()
    }

    pub fn endpoint_info(&self) -> &EndpointInfo {
        &self.info
    }

    /// The hooks of one turn; inert when no plugin is active.
    /// `sensitive`: values (user id, text, names) the plugin's log lines must not show when the endpoint masks
    /// sensitive logging; empty otherwise.
    pub fn begin(
        &self,
        metrics: &Arc<Metrics>,
        storage: Arc<dyn SessionStorage>,
        key: SessionKey,
        sensitive: Vec<String>,
    ) -> TurnHooks {
        let Some(plugin) = self.current() else {
            return TurnHooks::inert();
        };
        let masker = Arc::new(Masker(
            sensitive
                .into_iter()
                .filter(|s| s.chars().count() >= 2)
                .collect(),
        ));
        let log: Arc<dyn LogSink> = Arc::new(PluginLog {
            endpoint: Arc::clone(&self.endpoint_id),
            plugin: plugin.name.clone(),
            masker: Arc::clone(&masker),
        });
        let turn = plugin.turn(TurnContext {
            limits: Arc::clone(&self.limits),
            allowed: Arc::clone(&self.allowed),
            storage,
            key,
            log,
        });
        let hooks = plugin.hooks();
        TurnHooks {
            turn: Some(turn),
            input: hooks.input && self.enabled.input,
            output: hooks.output && self.enabled.output,
            finished: hooks.execution_finished && self.enabled.finished,
            abort_on_error: self.abort_on_error,
            endpoint: Arc::clone(&self.endpoint_id),
            metrics: Some(Arc::clone(metrics)),
            masker,
        }
    }
}

/// Marks a turn as working again when dropped (see [`TurnHooks::waiting`]).
struct BackToWork<'a>(&'a mut Turn);

impl Drop for BackToWork<'_> {
    fn drop(&mut self) {
        self.0.set_waiting(false);
    }
}

/// What the input hook decided, after the endpoint's policy.
pub enum InputStep {
    /// Run the flow (the input may have been patched).
    Forward,
    /// Do not run the flow; nothing is sent.
    Drop,
    /// Do not run the flow; send these Send API messages.
    Reply(Vec<Value>),
}

/// What to send for one output, after the output hook and the endpoint's policy.
pub enum OutputStep {
    Send(Vec<Value>),
    Skip,
}

/// One turn's plugin instance and the endpoint's policy.
pub struct TurnHooks {
    turn: Option<Turn>,
    input: bool,
    output: bool,
    finished: bool,
    abort_on_error: bool,
    endpoint: Arc<str>,
    metrics: Option<Arc<Metrics>>,
    masker: Arc<Masker>,
}

impl TurnHooks {
    pub fn inert() -> TurnHooks {
        TurnHooks {
            turn: None,
            input: false,
            output: false,
            finished: false,
            abort_on_error: false,
            endpoint: Arc::from(""),
            metrics: None,
            masker: Arc::default(),
        }
    }

    /// Runs `work` (a flow call, a Send API call). When it takes longer than [`WAIT_GRACE`], the rest of it is
    /// time spent waiting outside the host: meanwhile the turn's instance does not count as busy, so other
    /// turns may start theirs (see the runtime's admission). Quick calls count as work: under a burst they
    /// are mostly waiting for the CPU, like the rest of the turn.
    pub async fn waiting<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        let Some(turn) = self.turn.as_mut().filter(|t| t.instantiated()) else {
            return work.await;
        };
        tokio::pin!(work);
        tokio::select! {
            biased;
            result = &mut work => return result,
            () = tokio::time::sleep(WAIT_GRACE) => {}
        }
        turn.set_waiting(true);
        // Working again when the call returns, or when this future is dropped before.
        let back = BackToWork(turn);
        let result = work.await;
        drop(back);
        result
    }

    pub fn has_input(&self) -> bool {
        self.input
    }

    pub fn has_output(&self) -> bool {
        self.output
    }

    pub fn has_finished(&self) -> bool {
        self.finished
    }

    /// Runs the input hook. On success the patch is applied to `event.input` by the caller's copy: the
    /// returned step says whether the flow runs.
    pub async fn input(
        &mut self,
        event: InputEvent,
        input: &mut super::types::FlowInput,
    ) -> InputStep {
        if !self.input {
            return InputStep::Forward;
        }
        let Some(turn) = self.turn.as_mut() else {
            return InputStep::Forward;
        };
        let started = Instant::now();
        let result = turn.input(event).await;
        self.observe("input", started);
        match result {
            Ok(InputDecision::Forward(patch)) => {
                patch.apply(input);
                InputStep::Forward
            }
            Ok(InputDecision::Drop) => InputStep::Drop,
            Ok(InputDecision::Reply(messages)) => InputStep::Reply(parse_messages(&messages)),
            Err(e) => {
                self.failed("input", &e);
                if self.abort_on_error {
                    InputStep::Drop
                } else {
                    InputStep::Forward
                }
            }
        }
    }

    /// Runs the output hook for one output whose default conversion is `context.messages`.
    pub async fn output(&mut self, context: OutputContext, default: Vec<Value>) -> OutputStep {
        if !self.output {
            return OutputStep::Send(default);
        }
        let Some(turn) = self.turn.as_mut() else {
            return OutputStep::Send(default);
        };
        let started = Instant::now();
        let result = turn.output(context).await;
        self.observe("output", started);
        match result {
            Ok(OutputDecision::SendDefault) => OutputStep::Send(default),
            Ok(OutputDecision::Send(messages)) => OutputStep::Send(parse_messages(&messages)),
            Ok(OutputDecision::Skip) => OutputStep::Skip,
            Err(e) => {
                self.failed("output", &e);
                if self.abort_on_error {
                    OutputStep::Skip
                } else {
                    OutputStep::Send(default)
                }
            }
        }
    }

    /// Ends a turn whose plugin has no (enabled) execution-finished hook.
    pub fn finished_without_call(&self) {
        self.record_stats();
    }

    /// Runs the execution-finished hook and records the turn's plugin counters.
    pub async fn finished(&mut self, summary: TurnSummary) {
        if self.finished {
            if let Some(turn) = self.turn.as_mut() {
                let started = Instant::now();
                let result = turn.execution_finished(summary).await;
                self.observe("execution_finished", started);
                if let Err(e) = result {
                    self.failed("execution_finished", &e);
                }
            }
        }
        self.record_stats();
    }

    fn record_stats(&self) {
        let (Some(turn), Some(metrics)) = (&self.turn, &self.metrics) else {
            return;
        };
        let stats = turn.stats();
        let endpoint = [("endpoint", &*self.endpoint)];
        if stats.instantiations > 0 {
            metrics.add(
                "ferry_plugin_instantiations_total",
                &endpoint,
                stats.instantiations as u64,
            );
        }
        if stats.http_denied > 0 {
            metrics.add(
                "ferry_hook_errors_total",
                &[
                    ("endpoint", &*self.endpoint),
                    ("hook", "http"),
                    ("kind", "http_denied"),
                ],
                stats.http_denied as u64,
            );
        }
        if stats.http_requests > 0 {
            metrics.add(
                "ferry_plugin_http_requests_total",
                &endpoint,
                stats.http_requests as u64,
            );
        }
    }

    fn observe(&self, hook: &'static str, started: Instant) {
        if let Some(metrics) = &self.metrics {
            metrics.observe(
                "ferry_hook_duration_seconds",
                &[("endpoint", &*self.endpoint), ("hook", hook)],
                started.elapsed().as_secs_f64(),
            );
        }
    }

    fn failed(&self, hook: &'static str, error: &HookError) {
        let plugin = self
            .turn
            .as_ref()
            .map(|t| t.plugin().name.clone())
            .unwrap_or_default();
        let backtrace = match error {
            HookError::Trap {
                backtrace: Some(bt),
                ..
            } => bt.as_str(),
            _ => "",
        };
        tracing::warn!(
            endpoint = %self.endpoint,
            plugin = %plugin,
            hook,
            kind = error.kind(),
            abort_on_error = self.abort_on_error,
            backtrace,
            "plugin hook failed: {}",
            self.masker.mask(&error.to_string())
        );
        if let Some(metrics) = &self.metrics {
            metrics.inc(
                "ferry_hook_errors_total",
                &[
                    ("endpoint", &*self.endpoint),
                    ("hook", hook),
                    ("kind", error.kind()),
                ],
            );
        }
    }
}

/// Plugin messages were validated as JSON objects by the runtime; parsing again cannot fail, but a value
/// that somehow does not parse is left out rather than sent broken.
fn parse_messages(messages: &[String]) -> Vec<Value> {
    messages
        .iter()
        .filter_map(|m| serde_json::from_str(m).ok())
        .collect()
}

/// Writes plugin log entries into the host's log, tagged with the endpoint and the plugin's hash.
struct PluginLog {
    endpoint: Arc<str>,
    plugin: String,
    masker: Arc<Masker>,
}

/// Values replaced by asterisks in every plugin log line and hook error (`mask_sensitive_logging`); empty
/// when the endpoint does not mask.
#[derive(Default)]
struct Masker(Vec<String>);

impl Masker {
    fn mask<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.0.iter().any(|s| text.contains(s.as_str())) {
            return std::borrow::Cow::Borrowed(text);
        }
        std::borrow::Cow::Owned(
            self.0
                .iter()
                .fold(text.to_string(), |m, s| m.replace(s.as_str(), "***")),
        )
    }
}

impl LogSink for PluginLog {
    fn log(&self, level: Level, message: &str) {
        let message = self.masker.mask(message);
        let (endpoint, plugin) = (&*self.endpoint, self.plugin.as_str());
        match level {
            Level::Trace => tracing::trace!(target: "ferry::plugin", endpoint, plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "ferry::plugin", endpoint, plugin, "{message}"),
            Level::Info => tracing::info!(target: "ferry::plugin", endpoint, plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "ferry::plugin", endpoint, plugin, "{message}"),
            Level::Error => tracing::error!(target: "ferry::plugin", endpoint, plugin, "{message}"),
        }
    }
}
