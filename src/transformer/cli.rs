//! `ferry plugin check FILE` and `ferry plugin run FILE --hook H --event E.json`: test a plugin without a
//! Page, on the same runtime and limits the host uses.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

use super::inspect::inspect;
use super::runtime::{Plugin, Runtime, TurnContext};
use super::storage::{MemorySessionStorage, SessionKey};
use super::store::hook_names;
use super::types::*;

#[derive(clap::Args, Debug)]
pub struct PluginArgs {
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// Validate a component and print its hooks and imports.
    Check { file: PathBuf },
    /// Run one hook of a component against an event file and print the decision, the log, the duration and
    /// the peak memory.
    Run {
        file: PathBuf,
        /// input | output | execution-finished
        #[arg(long)]
        hook: String,
        /// The hook's argument as JSON (see the README's plugin guide for the shapes).
        #[arg(long)]
        event: PathBuf,
        /// Origins the plugin may call (`http://127.0.0.1:9000`); none by default.
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
        /// Wall time for the call in milliseconds.
        #[arg(long, default_value_t = 5_000)]
        timeout_ms: u64,
        /// Memory limit in MiB.
        #[arg(long, default_value_t = 128)]
        memory_mib: usize,
        /// The session storage value before the call (JSON).
        #[arg(long)]
        storage: Option<String>,
    },
    /// Measure the transformer overhead of a turn: a fresh instance, then every exported hook once (input,
    /// one output, execution finished), as the host does. Prints median and p99.
    Bench {
        files: Vec<PathBuf>,
        /// Turns to measure per plugin (after 20 warm-up turns).
        #[arg(long, default_value_t = 2_000)]
        turns: usize,
        /// Also measure with this many turns in flight, each holding its own instance, hooks interleaved
        /// (as under load); prints the cost per turn.
        #[arg(long, default_value_t = 0)]
        in_flight: usize,
    },
}

pub async fn run(args: PluginArgs) -> anyhow::Result<()> {
    match args.command {
        PluginCommand::Check { file } => check(&file),
        PluginCommand::Run {
            file,
            hook,
            event,
            allow_hosts,
            timeout_ms,
            memory_mib,
            storage,
        } => {
            let limits = Limits {
                hook_timeout_ms: timeout_ms,
                memory_bytes: memory_mib * 1024 * 1024,
                allowed_hosts: allow_hosts,
                ..Limits::default()
            };
            run_hook(&file, &hook, &event, limits, storage).await
        }
        PluginCommand::Bench {
            files,
            turns,
            in_flight,
        } => {
            for file in files {
                bench(&file, turns).await?;
                if in_flight > 0 {
                    bench_in_flight(&file, turns, in_flight).await?;
                }
            }
            Ok(())
        }
    }
}

/// A typical turn's arguments, built the way the host builds them.
fn bench_arguments() -> (InputEvent, OutputContext, TurnSummary) {
    let endpoint = EndpointInfo {
        id: "bench".into(),
        channel: "messenger".into(),
        page_id: "1234567890".into(),
        settings: r#"{"transformer":{"settings":{}}}"#.into(),
    };
    let raw = json!({"sender":{"id":"4242"},"recipient":{"id":"1234567890"},"timestamp":1_700_000_000_000_i64,
        "message":{"mid":"m.1","text":"Hello there, what are your opening hours?"}});
    let input = FlowInput {
        user_id: "4242".into(),
        session_id: "0123456789abcdef0123456789abcdef".into(),
        text: Some("Hello there, what are your opening hours?".into()),
        data: json!({"request": raw, "attachments": [], "profile": {"id": "4242", "first_name": "Ada", "last_name": "Lovelace"}}).to_string(),
    };
    let profile = Some(r#"{"id":"4242","first_name":"Ada","last_name":"Lovelace"}"#.to_string());
    let output = FlowOutput {
        text: Some("We are open from 9 to 5.".into()),
        data: Some(r#"{"choices":["Book a table","Menu"]}"#.into()),
    };
    let message = r#"{"text":"We are open from 9 to 5."}"#.to_string();
    let event = InputEvent {
        endpoint: endpoint.clone(),
        input: input.clone(),
        messenger_event: raw.to_string(),
        profile: profile.clone(),
    };
    let context = OutputContext {
        endpoint: endpoint.clone(),
        user_id: input.user_id.clone(),
        session_id: input.session_id.clone(),
        profile,
        output: output.clone(),
        messages: vec![message.clone()],
    };
    let summary = TurnSummary {
        endpoint,
        user_id: input.user_id.clone(),
        session_id: input.session_id.clone(),
        input,
        outcome: TurnOutcome::Completed,
        outputs: vec![output],
        sent: vec![SentMessage {
            message,
            message_id: Some("m_1".into()),
        }],
    };
    (event, context, summary)
}

/// Like the host: precompile once, load the artifact, never compile on the measured path.
fn load_for_bench(file: &PathBuf, runtime: &Runtime) -> anyhow::Result<Arc<Plugin>> {
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let info = inspect(&wasm)?;
    let artifact = std::env::temp_dir().join(format!("ferry-bench-{}.cwasm", info.sha256));
    std::fs::write(&artifact, runtime.precompile(&wasm)?)?;
    let plugin = Arc::new(runtime.load_precompiled("bench", info, &artifact)?);
    let _ = std::fs::remove_file(&artifact);
    Ok(plugin)
}

async fn bench(file: &PathBuf, turns: usize) -> anyhow::Result<()> {
    let runtime = Runtime::new()?;
    let plugin = load_for_bench(file, &runtime)?;
    let hooks = plugin.hooks();
    let (event, context, summary) = bench_arguments();
    let storage = Arc::new(MemorySessionStorage::new());
    let log: Arc<dyn LogSink> = Arc::new(DiscardLog);
    let mut times = Vec::with_capacity(turns);
    let mut failures = 0usize;
    for i in 0..turns + 20 {
        let key = SessionKey {
            endpoint_id: "bench".into(),
            user_id: format!("u{}", i % 100),
            session_id: "s".into(),
        };
        let started = Instant::now();
        let mut turn = plugin.turn(TurnContext {
            limits: Arc::new(Limits::default()),
            allowed: Arc::new(super::http::AllowList::default()),
            storage: storage.clone(),
            key,
            log: Arc::clone(&log),
        });
        if hooks.input && turn.input(event.clone()).await.is_err() {
            failures += 1;
        }
        if hooks.output && turn.output(context.clone()).await.is_err() {
            failures += 1;
        }
        if hooks.execution_finished && turn.execution_finished(summary.clone()).await.is_err() {
            failures += 1;
        }
        drop(turn);
        if i >= 20 {
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{}: hooks [{}], {} turns: median {:.1} us, p99 {:.1} us per turn (fresh instance + every hook){}",
        file.display(),
        hook_names(hooks).join(", "),
        turns,
        pct(0.5),
        pct(0.99),
        if failures > 0 { format!(", {failures} hook calls failed") } else { String::new() }
    );
    Ok(())
}

/// Turns in batches of `in_flight`: every turn of a batch is instantiated before any is dropped, so the
/// instances' memory competes for the caches as it does when a busy host runs many turns at once.
async fn bench_in_flight(file: &PathBuf, turns: usize, in_flight: usize) -> anyhow::Result<()> {
    // One task holds every turn of a batch: the pool and its busy limit must fit them all.
    let size = u32::try_from(in_flight).context("--in-flight is too large")?;
    let runtime = Runtime::with_instances(size, in_flight)?;
    let plugin = load_for_bench(file, &runtime)?;
    let hooks = plugin.hooks();
    let (event, context, summary) = bench_arguments();
    let storage = Arc::new(MemorySessionStorage::new());
    let log: Arc<dyn LogSink> = Arc::new(DiscardLog);
    let batches = turns.div_ceil(in_flight).max(1) + 1;
    let mut per_turn = Vec::with_capacity(batches);
    let mut failures = 0usize;
    let cpu_started = process_cpu_time();
    for b in 0..batches {
        let started = Instant::now();
        let mut batch: Vec<_> = (0..in_flight)
            .map(|i| {
                plugin.turn(TurnContext {
                    limits: Arc::new(Limits::default()),
                    allowed: Arc::new(super::http::AllowList::default()),
                    storage: storage.clone(),
                    key: SessionKey {
                        endpoint_id: "bench".into(),
                        user_id: format!("u{i}"),
                        session_id: "s".into(),
                    },
                    log: Arc::clone(&log),
                })
            })
            .collect();
        for turn in batch.iter_mut() {
            if hooks.input {
                failures += usize::from(turn.input(event.clone()).await.is_err());
            }
        }
        for turn in batch.iter_mut() {
            if hooks.output {
                failures += usize::from(turn.output(context.clone()).await.is_err());
            }
        }
        for turn in batch.iter_mut() {
            if hooks.execution_finished {
                failures += usize::from(turn.execution_finished(summary.clone()).await.is_err());
            }
        }
        drop(batch);
        if b > 0 {
            per_turn.push(started.elapsed().as_secs_f64() * 1e6 / in_flight as f64);
        }
    }
    let cpu = process_cpu_time().saturating_sub(cpu_started);
    per_turn.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{}: {in_flight} turns in flight: median {:.1} us per turn over {} batches; {:.1} us of CPU per turn{}",
        file.display(),
        per_turn[per_turn.len() / 2],
        per_turn.len(),
        cpu.as_secs_f64() * 1e6 / (batches * in_flight) as f64,
        if failures > 0 { format!(", {failures} hook calls failed") } else { String::new() }
    );
    Ok(())
}

/// CPU time this process has used (user and system, every thread).
pub(crate) fn process_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full rusage into the pointer it is given.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return Duration::ZERO;
        }
        usage.assume_init()
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

struct DiscardLog;

impl LogSink for DiscardLog {
    fn log(&self, _level: Level, _message: &str) {}
}

fn check(file: &PathBuf) -> anyhow::Result<()> {
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let info = inspect(&wasm)?;
    let runtime = Runtime::new()?;
    let started = Instant::now();
    // Compiling and linking proves the imports type-check against what the host offers.
    let plugin = runtime.load_bytes("check", info, &wasm)?;
    println!("ok: {} is a Ferry transformer plugin", file.display());
    println!("  sha256  {}", plugin.info.sha256);
    println!("  size    {} bytes", plugin.info.size);
    println!("  hooks   {}", hook_names(plugin.info.hooks).join(", "));
    println!("  imports");
    for import in &plugin.info.imports {
        println!("    {import}");
    }
    println!(
        "  compiled in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// Collects the plugin's log to print it after the call.
#[derive(Default)]
struct PrintedLog(Mutex<Vec<String>>);

impl LogSink for PrintedLog {
    fn log(&self, level: Level, message: &str) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(format!(
                "{:<5} {message}",
                format!("{level:?}").to_lowercase()
            ));
        }
    }
}

async fn run_hook(
    file: &PathBuf,
    hook: &str,
    event_file: &PathBuf,
    limits: Limits,
    storage_value: Option<String>,
) -> anyhow::Result<()> {
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let event: Value = serde_json::from_slice(
        &std::fs::read(event_file)
            .with_context(|| format!("cannot read {}", event_file.display()))?,
    )
    .with_context(|| format!("{} is not JSON", event_file.display()))?;
    let info = inspect(&wasm)?;
    let runtime = Runtime::new()?;
    let plugin = Arc::new(runtime.load_bytes("local", info, &wasm)?);
    let log = Arc::new(PrintedLog::default());
    let storage = Arc::new(MemorySessionStorage::new());
    let key = SessionKey {
        endpoint_id: "local".into(),
        user_id: str_at(&event, &["/input/userId", "/userId"])
            .unwrap_or("local-user")
            .into(),
        session_id: str_at(&event, &["/input/sessionId", "/sessionId"])
            .unwrap_or("local-session")
            .into(),
    };
    if let Some(value) = storage_value {
        use super::storage::SessionStorage;
        storage.set(&key, value).map_err(anyhow::Error::msg)?;
    }
    let allowed =
        Arc::new(super::http::AllowList::parse(&limits.allowed_hosts).map_err(anyhow::Error::msg)?);
    let mut turn = plugin.turn(TurnContext {
        limits: Arc::new(limits),
        allowed,
        storage: storage.clone(),
        key: key.clone(),
        log: log.clone(),
    });
    let started = Instant::now();
    let decision = match hook {
        "input" => turn
            .input(input_event(&event))
            .await
            .map(|d| input_decision_json(&d)),
        "output" => turn
            .output(output_context(&event)?)
            .await
            .map(|d| output_decision_json(&d)),
        "execution-finished" => turn
            .execution_finished(turn_summary(&event))
            .await
            .map(|()| json!("ok")),
        other => bail!("--hook must be input, output or execution-finished, not `{other}`"),
    };
    let elapsed = started.elapsed();
    let stats = turn.stats();
    for line in log.0.lock().map(|l| l.clone()).unwrap_or_default() {
        println!("log   {line}");
    }
    match &decision {
        Ok(value) => println!("result {}", serde_json::to_string_pretty(value)?),
        Err(e) => println!("error  [{}] {e}", e.kind()),
    }
    {
        use super::storage::SessionStorage;
        if let Some(value) = storage.get(&key) {
            println!("session-storage {value}");
        }
    }
    println!(
        "took  {:.3} ms (instantiation included), peak memory {} KiB, HTTP requests {} sent / {} denied",
        elapsed.as_secs_f64() * 1e3,
        stats.peak_memory_bytes / 1024,
        stats.http_requests,
        stats.http_denied
    );
    decision
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("the hook failed: {e}"))
}

fn str_at<'a>(value: &'a Value, pointers: &[&str]) -> Option<&'a str> {
    pointers
        .iter()
        .find_map(|p| value.pointer(p).and_then(Value::as_str))
}

fn json_string_at(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .filter(|v| !v.is_null())
        .map(Value::to_string)
}

fn endpoint_info(event: &Value) -> EndpointInfo {
    EndpointInfo {
        id: str_at(event, &["/endpoint/id"]).unwrap_or("local").into(),
        channel: "messenger".into(),
        page_id: str_at(event, &["/endpoint/pageId"]).unwrap_or("0").into(),
        settings: json_string_at(event, "/endpoint/settings").unwrap_or_else(|| "{}".into()),
    }
}

fn flow_input_at(event: &Value, base: &str) -> FlowInput {
    let at = |k: &str| format!("{base}/{k}");
    FlowInput {
        user_id: event
            .pointer(&at("userId"))
            .and_then(Value::as_str)
            .unwrap_or("local-user")
            .into(),
        session_id: event
            .pointer(&at("sessionId"))
            .and_then(Value::as_str)
            .unwrap_or("local-session")
            .into(),
        text: event
            .pointer(&at("text"))
            .and_then(Value::as_str)
            .map(str::to_string),
        data: json_string_at(event, &at("data")).unwrap_or_else(|| "{}".into()),
    }
}

/// `{"input": {"userId", "sessionId", "text", "data"}, "messengerEvent": {...}, "profile": {...}, "endpoint": {...}}`
fn input_event(event: &Value) -> InputEvent {
    InputEvent {
        endpoint: endpoint_info(event),
        input: flow_input_at(event, "/input"),
        messenger_event: json_string_at(event, "/messengerEvent").unwrap_or_else(|| "{}".into()),
        profile: json_string_at(event, "/profile"),
    }
}

fn flow_output(value: &Value) -> FlowOutput {
    FlowOutput {
        text: value
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_string),
        data: value
            .get("data")
            .filter(|d| !d.is_null())
            .map(Value::to_string),
    }
}

/// `{"userId", "sessionId", "profile"?, "output": {"text", "data"}, "messages"?: [...]}`; without `messages`
/// the host's default conversion of `output` is used.
fn output_context(event: &Value) -> anyhow::Result<OutputContext> {
    let output = event
        .get("output")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    let messages = match event.get("messages").and_then(Value::as_array) {
        Some(messages) => messages.iter().map(Value::to_string).collect(),
        None => crate::messenger::convert::output_to_messages(
            output.get("text").and_then(Value::as_str),
            output.get("data").filter(|d| !d.is_null()),
        )
        .context("the output cannot be converted")?
        .iter()
        .map(Value::to_string)
        .collect(),
    };
    Ok(OutputContext {
        endpoint: endpoint_info(event),
        user_id: str_at(event, &["/userId"]).unwrap_or("local-user").into(),
        session_id: str_at(event, &["/sessionId"])
            .unwrap_or("local-session")
            .into(),
        profile: json_string_at(event, "/profile"),
        output: flow_output(&output),
        messages,
    })
}

/// `{"userId", "sessionId", "input"?, "outcome"?, "outputs": [...], "sent": [{"message", "messageId"}]}`
fn turn_summary(event: &Value) -> TurnSummary {
    let outcome = match str_at(event, &["/outcome"]) {
        Some("dropped") => TurnOutcome::Dropped,
        Some("replied") => TurnOutcome::Replied,
        Some("flow-failed") => TurnOutcome::FlowFailed,
        _ => TurnOutcome::Completed,
    };
    let list = |key: &str| {
        event
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    TurnSummary {
        endpoint: endpoint_info(event),
        user_id: str_at(event, &["/userId"]).unwrap_or("local-user").into(),
        session_id: str_at(event, &["/sessionId"])
            .unwrap_or("local-session")
            .into(),
        input: flow_input_at(event, "/input"),
        outcome,
        outputs: list("outputs").iter().map(flow_output).collect(),
        sent: list("sent")
            .iter()
            .map(|s| SentMessage {
                message: s
                    .get("message")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "{}".into()),
                message_id: s
                    .get("messageId")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
            .collect(),
    }
}

fn parsed(messages: &[String]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| serde_json::from_str(m).unwrap_or(Value::Null))
        .collect()
}

pub fn input_decision_json(decision: &InputDecision) -> Value {
    match decision {
        InputDecision::Forward(p) => json!({"forward": {
            "userId": p.user_id, "sessionId": p.session_id, "text": p.text,
            "data": p.data.as_deref().map(|d| serde_json::from_str::<Value>(d).unwrap_or(Value::Null)),
        }}),
        InputDecision::Drop => json!("drop"),
        InputDecision::Reply(messages) => json!({ "reply": parsed(messages) }),
    }
}

pub fn output_decision_json(decision: &OutputDecision) -> Value {
    match decision {
        OutputDecision::SendDefault => json!("send-default"),
        OutputDecision::Send(messages) => json!({ "send": parsed(messages) }),
        OutputDecision::Skip => json!("skip"),
    }
}
