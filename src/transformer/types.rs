//! Host-side values exchanged with plugins. They mirror the WIT types of
//! `wit/transformer.wit` so that the rest of Ferry never touches generated
//! bindings. JSON values travel as strings, exactly as in the contract.

use serde::Deserialize;

/// The endpoint a turn belongs to (`types.endpoint-info`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointInfo {
    pub id: String,
    pub channel: String,
    pub page_id: String,
    /// Non-secret settings as a JSON object.
    pub settings: String,
}

/// What the host would hand to the flow (`types.flow-input`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowInput {
    pub user_id: String,
    pub session_id: String,
    pub text: Option<String>,
    /// A JSON object.
    pub data: String,
}

/// Argument of the input hook (`types.input-event`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InputEvent {
    pub endpoint: EndpointInfo,
    pub input: FlowInput,
    /// The raw messaging event (JSON) exactly as received.
    pub messenger_event: String,
    /// The user's profile (JSON), if known.
    pub profile: Option<String>,
}

/// Partial replacement of the flow input: `None` keeps the host's value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InputPatch {
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub text: Option<String>,
    /// A JSON object replacing the whole data object.
    pub data: Option<String>,
}

impl InputPatch {
    /// Applies the patch to the host's input.
    pub fn apply(self, input: &mut FlowInput) {
        if let Some(user_id) = self.user_id {
            input.user_id = user_id;
        }
        if let Some(session_id) = self.session_id {
            input.session_id = session_id;
        }
        if let Some(text) = self.text {
            input.text = Some(text);
        }
        if let Some(data) = self.data {
            input.data = data;
        }
    }
}

/// Result of the input hook (`types.input-decision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputDecision {
    /// Run the flow with the patched input.
    Forward(InputPatch),
    /// Ignore the event.
    Drop,
    /// Skip the flow and send these Send API message objects (JSON).
    Reply(Vec<String>),
}

/// One flow output (`types.flow-output`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowOutput {
    pub text: Option<String>,
    /// A JSON object, if any.
    pub data: Option<String>,
}

/// Argument of the output hook (`types.output-context`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutputContext {
    pub endpoint: EndpointInfo,
    pub user_id: String,
    pub session_id: String,
    /// The user's profile (JSON), if known.
    pub profile: Option<String>,
    pub output: FlowOutput,
    /// The Send API message objects (JSON) the host would send.
    pub messages: Vec<String>,
}

/// Result of the output hook (`types.output-decision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputDecision {
    /// Send the host's messages unchanged.
    SendDefault,
    /// Send these Send API message objects (JSON) instead.
    Send(Vec<String>),
    /// Send nothing for this output.
    Skip,
}

/// A message sent during the turn (`types.sent-message`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SentMessage {
    /// The Send API message object (JSON).
    pub message: String,
    /// Messenger's `message_id`, `None` if sending failed.
    pub message_id: Option<String>,
}

/// Argument of the execution-finished hook (`types.turn-summary`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TurnSummary {
    pub endpoint: EndpointInfo,
    pub user_id: String,
    pub session_id: String,
    /// The flow input after the input hook.
    pub input: FlowInput,
    pub outcome: TurnOutcome,
    pub outputs: Vec<FlowOutput>,
    pub sent: Vec<SentMessage>,
}

/// How a turn ended (`types.turn-outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TurnOutcome {
    #[default]
    Completed,
    Dropped,
    Replied,
    FlowFailed,
}

impl TurnOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TurnOutcome::Completed => "completed",
            TurnOutcome::Dropped => "dropped",
            TurnOutcome::Replied => "replied",
            TurnOutcome::FlowFailed => "flow-failed",
        }
    }
}

/// Which hooks a plugin exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hooks {
    pub input: bool,
    pub output: bool,
    pub execution_finished: bool,
}

impl Hooks {
    /// True if the plugin exports at least one hook.
    pub fn any(&self) -> bool {
        self.input || self.output || self.execution_finished
    }
}

/// What validation learnt about a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Hex SHA-256 of the component bytes.
    pub sha256: String,
    pub hooks: Hooks,
    /// Names of the component's imports, e.g. `ferry:transformer/log@0.1.0`.
    pub imports: Vec<String>,
    /// Size of the component in bytes.
    pub size: usize,
}

/// Per-endpoint sandbox limits (`[endpoint.transformer.limits]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall time of one hook call (instantiation counts against the first).
    pub hook_timeout_ms: u64,
    /// Linear memory the plugin may use (all memories together).
    pub memory_bytes: usize,
    /// Outbound HTTP requests per turn; further requests are denied.
    pub max_requests_per_turn: u32,
    /// Origins a plugin may call, `scheme://host[:port]`; empty = no HTTP.
    pub allowed_hosts: Vec<String>,
    /// Largest response body a plugin may read.
    pub max_response_bytes: usize,
    /// Time for one outbound request until the response head (and between
    /// body chunks).
    pub request_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hook_timeout_ms: 5_000,
            memory_bytes: 128 * 1024 * 1024,
            max_requests_per_turn: 3,
            allowed_hosts: Vec::new(),
            max_response_bytes: 1024 * 1024,
            request_timeout_ms: 10_000,
        }
    }
}

/// Log levels of `ferry:transformer/log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Where plugin log entries (and captured stdout/stderr) go. The host adds
/// the plugin's name and hash.
pub trait LogSink: Send + Sync {
    fn log(&self, level: Level, message: &str);
}

/// Counters of one turn, for metrics and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TurnStats {
    /// Outbound HTTP requests that were sent.
    pub http_requests: u32,
    /// Outbound HTTP requests that were denied (host not allowed, or over
    /// the per-turn limit).
    pub http_denied: u32,
    /// Instances created (0 or 1 per turn).
    pub instantiations: u32,
    /// Hook calls made on this turn's instance.
    pub hook_calls: u32,
    /// Largest linear memory size the instance reached, in bytes.
    pub peak_memory_bytes: usize,
    /// Log entries the plugin wrote (including stdout/stderr lines).
    pub log_entries: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_defaults_and_unknown_fields() {
        let limits: Limits = toml_like(r#"{"hook_timeout_ms": 100}"#).unwrap();
        assert_eq!(limits.hook_timeout_ms, 100);
        assert_eq!(limits.max_requests_per_turn, 3);
        assert_eq!(limits.memory_bytes, 128 * 1024 * 1024);
        assert!(toml_like(r#"{"hook_timeout": 100}"#).is_err());
    }

    fn toml_like(json: &str) -> Result<Limits, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn patch_keeps_absent_fields() {
        let mut input = FlowInput {
            user_id: "u".into(),
            session_id: "s".into(),
            text: Some("t".into()),
            data: "{}".into(),
        };
        InputPatch {
            text: Some("new".into()),
            ..InputPatch::default()
        }
        .apply(&mut input);
        assert_eq!(input.user_id, "u");
        assert_eq!(input.session_id, "s");
        assert_eq!(input.text.as_deref(), Some("new"));
        assert_eq!(input.data, "{}");
    }
}
