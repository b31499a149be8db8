//! `ferry plugin check FILE` and `ferry plugin run FILE --hook H --event E.json`: test a plugin without a
//! Page, on the same runtime and limits the host uses.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

use super::inspect::inspect;
use super::runtime::{Runtime, TurnContext};
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
    }
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
    let mut turn = plugin.turn(TurnContext {
        limits,
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
