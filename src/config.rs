//! The configuration file (TOML): the server and any number of endpoints, one per Facebook Page.
//!
//! Every string value may contain `${VAR}`, read from the environment while parsing. Parsing happens on the
//! unexpanded text, so an error message quoting a line never shows the value of a secret. Unknown keys,
//! missing keys and bad values are errors naming the key and the line (toml's spans do the line numbers).

use crate::flow::FlowKind;
use serde::{Deserialize, Deserializer};
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A string read from the config with `${VAR}` expanded.
#[derive(Clone, PartialEq, Eq)]
pub struct Text(pub String);

/// A secret (token, app secret): expanded like [`Text`], never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The only way to read a secret: grep for `expose` to audit where secrets go.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        expand_env(&raw).map(Text).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let value = expand_env(&raw).map_err(serde::de::Error::custom)?;
        if value.is_empty() {
            return Err(serde::de::Error::custom("a secret must not be empty"));
        }
        Ok(Secret(value))
    }
}

/// Replaces every `${NAME}` by the environment variable NAME. `$` not followed by `{` is kept.
pub fn expand_env(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated `${` (expected `${NAME}`)".to_string())?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable reference"
            ));
        }
        let value =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub graph: GraphConfig,
    #[serde(default, rename = "endpoint")]
    pub endpoints: Vec<EndpointConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: Listen,
    pub data_dir: PathBuf,
    pub admin_token: Option<Secret>,
    /// Largest webhook body accepted; Meta batches up to 1000 updates and escapes non-ASCII, so keep 1 MiB.
    pub max_body_bytes: usize,
    /// Server-wide cap on any session's lifetime, in minutes (default 7 days).
    pub max_session_minutes: u64,
    /// Events held in memory for turns, over all users. More accepted events wait in the inbox on disk and
    /// are loaded as turns finish, so memory stays bounded however far processing falls behind.
    pub max_pending_events: usize,
    /// Events accepted and not yet completed (the durable inbox); beyond it the webhook answers 503 and Meta
    /// retries.
    pub max_inbox_events: usize,
    /// On SIGTERM: how long turns in flight may take to finish before Ferry exits. Whatever is left resumes
    /// from the inbox at the next start.
    pub shutdown_grace_ms: u64,
    /// How long the keys that recognise a redelivered event are kept, in hours (at least 48: Meta retries
    /// for up to 36 hours).
    pub dedup_hours: u64,
    /// How much nicer than the rest of the process the turn threads run, 0 to 19 (Linux): during a burst
    /// Meta is answered first and turns take the CPU that is left; 0 gives turns an equal share.
    pub turn_niceness: i32,
    /// Plugin instances alive at once, over all endpoints: each turn of an endpoint with a plugin holds one
    /// from its first hook to its end. Further turns wait for one (the wait is not counted as hook time).
    pub plugin_instances: u32,
    /// Of those, how many may be held by turns that are working rather than waiting on a slow flow or on
    /// Meta (`0`: 48 per CPU core). Fewer turns interleaved keeps each instance in the CPU's caches.
    pub plugin_busy_instances: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: Listen(SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: PathBuf::from("./ferry-data"),
            admin_token: None,
            max_body_bytes: 1024 * 1024,
            max_session_minutes: 7 * 24 * 60,
            max_pending_events: 10_000,
            max_inbox_events: 1_000_000,
            shutdown_grace_ms: 10_000,
            dedup_hours: 48,
            turn_niceness: 15,
            plugin_instances: 256,
            plugin_busy_instances: 0,
        }
    }
}

/// A socket address, `${VAR}` allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen(pub SocketAddr);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Text::deserialize(d)?;
        text.0.parse().map(Listen).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{}` is not a socket address such as 127.0.0.1:8080",
                text.0
            ))
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    pub base_url: Text,
    pub version: Text,
    pub timeout_ms: u64,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            base_url: Text("https://graph.facebook.com".into()),
            version: Text("v25.0".into()),
            timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub id: toml::Spanned<String>,
    pub page_id: Text,
    pub page_access_token: Secret,
    #[serde(default)]
    pub app_id: Option<Text>,
    pub app_secret: Secret,
    pub verify_token: Secret,
    #[serde(default)]
    pub accept_sha1: bool,
    #[serde(default)]
    pub profiles: ProfilesConfig,
    #[serde(default)]
    pub messenger: MessengerConfig,
    pub flow: FlowConfig,
    #[serde(default)]
    pub transformer: TransformerConfig,
    #[serde(default)]
    pub session: SessionConfig,
    #[serde(default)]
    pub data_protection: DataProtectionConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

/// `[endpoint.delivery]`: retries, rate limits and the 24-hour window of the Send API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Attempts per message for retryable errors (HTTP 5xx and 429, codes 1, 2, 4, 17, 32, 613, 1200,
    /// connection errors), the first included; then the message is dead-lettered.
    pub max_attempts: u32,
    /// The first retry waits about this long; each next one twice as long, with jitter.
    pub retry_base_ms: u64,
    /// No wait between attempts is longer than this.
    pub retry_max_ms: u64,
    /// Send API calls per second for this Page (text, templates, sender actions): Meta allows 300.
    pub text_per_second: f64,
    /// Send API calls per second for audio and video attachments: Meta allows 10.
    pub media_per_second: f64,
    /// Outside the 24-hour window Meta refuses a RESPONSE (code 10, subcode 2018278). With a tag (such as
    /// `HUMAN_AGENT`), the message is sent again as `MESSAGE_TAG` with it; without one it is dead-lettered
    /// with reason `outside_window`.
    pub outside_window_tag: Option<String>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_attempts: 8,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            text_per_second: 300.0,
            media_per_second: 10.0,
            outside_window_tag: None,
        }
    }
}

/// The tags Meta accepts with `MESSAGE_TAG`.
pub const MESSAGE_TAGS: &[&str] = &[
    "HUMAN_AGENT",
    "ACCOUNT_UPDATE",
    "CONFIRMED_EVENT_UPDATE",
    "POST_PURCHASE_UPDATE",
    "CUSTOMER_FEEDBACK",
];

/// `[endpoint.session]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Minutes of inactivity after which the next input starts a new session; 0 = never (still capped by
    /// `server.max_session_minutes`).
    pub expiration_minutes: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            expiration_minutes: 30,
        }
    }
}

/// `[endpoint.data_protection]`: what is kept about users, and for how long.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataProtectionConfig {
    /// Keep contact profiles (needs `profiles.update_contacts`).
    pub contact_profiles: bool,
    /// Store a transcript of every turn.
    pub collect_conversations: bool,
    /// Replace user ids, texts and data in log lines with asterisks.
    pub mask_sensitive_logging: bool,
    /// Never store or log client IP addresses.
    pub mask_ip: bool,
    /// Transcripts and contacts older than this are deleted; 0 = kept forever.
    pub retention_days: u64,
}

impl Default for DataProtectionConfig {
    fn default() -> Self {
        DataProtectionConfig {
            contact_profiles: true,
            collect_conversations: true,
            mask_sensitive_logging: false,
            mask_ip: true,
            retention_days: 30,
        }
    }
}

/// `[endpoint.transformer]`: the endpoint's WebAssembly plugin and its sandbox.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformerConfig {
    /// A component loaded at start (an uploaded plugin replaces it until the file changes).
    pub plugin: Option<PathBuf>,
    /// Which exported hooks run.
    pub input: bool,
    pub output: bool,
    pub execution_finished: bool,
    /// Off: a failing hook is logged and the turn goes on as if it did not exist. On: the event (input hook)
    /// or the output (output hook) is dropped and counted.
    pub abort_on_error: bool,
    /// Free settings handed to the plugin in `endpoint-info.settings` under `transformer.settings`.
    pub settings: toml::Table,
    pub limits: crate::transformer::Limits,
}

impl Default for TransformerConfig {
    fn default() -> Self {
        TransformerConfig {
            plugin: None,
            input: true,
            output: true,
            execution_finished: true,
            abort_on_error: false,
            settings: toml::Table::new(),
            limits: crate::transformer::Limits::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilesConfig {
    pub request: bool,
    pub extra_fields: Vec<ProfileField>,
    pub cache_ttl_secs: u64,
    /// Copy fetched profiles into contacts.
    pub update_contacts: bool,
    /// Merge one person's contacts across the Pages of `business` (through `ids_for_pages`).
    pub merge_contacts: bool,
    /// Endpoints with the same business key share contacts; empty = this endpoint alone.
    pub business: String,
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        ProfilesConfig {
            request: true,
            extra_fields: Vec::new(),
            cache_ttl_secs: 24 * 3600,
            update_contacts: true,
            merge_contacts: false,
            business: String::new(),
        }
    }
}

/// Profile fields beyond the base three; each needs its own permission from Meta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileField {
    Locale,
    Timezone,
    Gender,
}

impl ProfileField {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileField::Locale => "locale",
            ProfileField::Timezone => "timezone",
            ProfileField::Gender => "gender",
        }
    }
}

/// The event kinds that start a turn unless configured otherwise.
pub const DEFAULT_FLOW_EVENTS: [&str; 4] = ["message", "postback", "referral", "optin"];

/// Every kind name the parser produces (see `messenger::webhook`), for validating `flow_events`.
pub const KNOWN_EVENT_KINDS: [&str; 15] = [
    "message",
    "postback",
    "referral",
    "optin",
    "read",
    "delivery",
    "reaction",
    "message_edit",
    "account_linking",
    "pass_thread_control",
    "take_thread_control",
    "request_thread_control",
    "app_roles",
    "policy_enforcement",
    "unknown",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessengerConfig {
    pub typing_indicators: bool,
    pub message_delay_ms: u64,
    pub mark_seen: bool,
    /// Which event kinds reach the flow; the others are only counted and logged.
    #[serde(deserialize_with = "event_kinds")]
    pub flow_events: Vec<String>,
}

impl Default for MessengerConfig {
    fn default() -> Self {
        MessengerConfig {
            typing_indicators: true,
            message_delay_ms: 500,
            mark_seen: true,
            flow_events: DEFAULT_FLOW_EVENTS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

fn event_kinds<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let kinds = Vec::<String>::deserialize(d)?;
    if let Some(bad) = kinds
        .iter()
        .find(|k| !KNOWN_EVENT_KINDS.contains(&k.as_str()))
    {
        return Err(serde::de::Error::custom(format!(
            "unknown event kind `{bad}`, expected one of: {}",
            KNOWN_EVENT_KINDS.join(", ")
        )));
    }
    Ok(kinds)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawFlowConfig")]
pub struct FlowConfig {
    pub kind: FlowKind,
    pub url: Option<String>,
    pub timeout_ms: u64,
    pub fallback_text: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlowConfig {
    kind: FlowKind,
    #[serde(default)]
    url: Option<Text>,
    #[serde(default = "default_flow_timeout")]
    timeout_ms: u64,
    #[serde(default)]
    fallback_text: Option<Text>,
}

fn default_flow_timeout() -> u64 {
    10_000
}

impl TryFrom<RawFlowConfig> for FlowConfig {
    type Error = String;
    fn try_from(raw: RawFlowConfig) -> Result<Self, String> {
        let url = raw.url.map(|u| u.0);
        match (&raw.kind, &url) {
            (FlowKind::Http | FlowKind::Rasa, None) => {
                return Err("`url` is required when kind is \"http\" or \"rasa\"".into())
            }
            (FlowKind::Http | FlowKind::Rasa, Some(u))
                if !(u.starts_with("http://") || u.starts_with("https://")) =>
            {
                return Err(format!(
                    "`url` must start with http:// or https://, got `{u}`"
                ))
            }
            _ => {}
        }
        if raw.timeout_ms == 0 {
            return Err("`timeout_ms` must be greater than 0".into());
        }
        Ok(FlowConfig {
            kind: raw.kind,
            url,
            timeout_ms: raw.timeout_ms,
            fallback_text: raw.fallback_text.map(|t| t.0).filter(|t| !t.is_empty()),
        })
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string().trim().into()))?;
        config.validate(text)?;
        Ok(config)
    }

    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        let mut pages = HashSet::new();
        for ep in &self.endpoints {
            let line = line_of(text, ep.id.span().start);
            let id = ep.id.get_ref();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::Invalid(format!(
                    "line {line}: endpoint.id `{id}` must be non-empty and use only letters, digits, '-' and '_' (it is part of the webhook URL)"
                )));
            }
            if !ids.insert(id.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "line {line}: endpoint.id `{id}` is used twice"
                )));
            }
            if ep.page_id.0.is_empty() || !ep.page_id.0.chars().all(|c| c.is_ascii_digit()) {
                return Err(ConfigError::Invalid(format!(
                    "endpoint `{id}` (line {line}): page_id must be the Page's numeric id"
                )));
            }
            if let Some(plugin) = &ep.transformer.plugin {
                if !plugin.is_file() {
                    return Err(ConfigError::Invalid(format!(
                        "endpoint `{id}` (line {line}): transformer.plugin `{}` is not a readable file",
                        plugin.display()
                    )));
                }
            }
            let limits = &ep.transformer.limits;
            if let Err(e) = crate::transformer::http::AllowList::parse(&limits.allowed_hosts) {
                return Err(ConfigError::Invalid(format!(
                    "endpoint `{id}` (line {line}): transformer.limits.allowed_hosts: {e}"
                )));
            }
            if limits.hook_timeout_ms == 0 || limits.memory_bytes < 1 << 20 {
                return Err(ConfigError::Invalid(format!(
                    "endpoint `{id}` (line {line}): transformer.limits.hook_timeout_ms must be > 0 and memory_bytes at least 1 MiB"
                )));
            }
            let delivery = &ep.delivery;
            let rate_ok = |r: f64| r.is_finite() && r >= 0.01;
            if delivery.max_attempts == 0
                || delivery.retry_base_ms > delivery.retry_max_ms
                || !rate_ok(delivery.text_per_second)
                || !rate_ok(delivery.media_per_second)
            {
                return Err(ConfigError::Invalid(format!(
                    "endpoint `{id}` (line {line}): delivery.max_attempts must be at least 1, retry_base_ms at most retry_max_ms, and the rates finite numbers of at least 0.01 per second"
                )));
            }
            if let Some(tag) = &delivery.outside_window_tag {
                if !MESSAGE_TAGS.contains(&tag.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "endpoint `{id}` (line {line}): delivery.outside_window_tag `{tag}` is not one of {}",
                        MESSAGE_TAGS.join(", ")
                    )));
                }
            }
            if !pages.insert(ep.page_id.0.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "endpoint `{id}` (line {line}): page_id {} is used by another endpoint",
                    ep.page_id.0
                )));
            }
        }
        let server = &self.server;
        if server.max_body_bytes == 0
            || server.max_pending_events == 0
            || server.max_inbox_events == 0
        {
            return Err(ConfigError::Invalid(
                "server.max_body_bytes, server.max_pending_events and server.max_inbox_events must be greater than 0".into(),
            ));
        }
        if server.dedup_hours < 48 {
            return Err(ConfigError::Invalid(
                "server.dedup_hours must be at least 48: Meta redelivers events for up to 36 hours"
                    .into(),
            ));
        }
        if !(1..=10_000).contains(&server.plugin_instances) {
            return Err(ConfigError::Invalid(format!(
                "server.plugin_instances must be between 1 and 10000, not {}",
                server.plugin_instances
            )));
        }
        if !(0..=19).contains(&server.turn_niceness) {
            return Err(ConfigError::Invalid(format!(
                "server.turn_niceness must be between 0 and 19, not {}",
                server.turn_niceness
            )));
        }
        Ok(())
    }
}

impl Config {
    /// A human summary for `ferry check-config`: no secrets.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "ok: listen {}, Graph API {}/{}, {} endpoint(s)",
            self.server.listen.0,
            &*self.graph.base_url,
            &*self.graph.version,
            self.endpoints.len()
        );
        for ep in &self.endpoints {
            out.push_str(&format!(
                "\n  - {}: page {}, webhook /webhooks/messenger/{}, flow {:?}{}",
                ep.id(),
                &*ep.page_id,
                ep.id(),
                ep.flow.kind,
                ep.flow
                    .url
                    .as_deref()
                    .map(|u| format!(" at {}", strip_query(u)))
                    .unwrap_or_default()
            ));
        }
        out
    }
}

/// URLs may carry credentials in their query: never print that part.
pub fn strip_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

impl EndpointConfig {
    pub fn id(&self) -> &str {
        self.id.get_ref()
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:0"

[[endpoint]]
id = "shop"
page_id = "1234567890"
page_access_token = "tok-${FERRY_TEST_CFG_TOKEN}"
app_secret = "s3cret"
verify_token = "verify"

[endpoint.flow]
kind = "echo"
"#;

    #[test]
    fn minimal_config_gets_defaults_and_expands_env() {
        std::env::set_var("FERRY_TEST_CFG_TOKEN", "abc");
        let c = Config::parse(MINIMAL).unwrap();
        let ep = &c.endpoints[0];
        assert_eq!(ep.id(), "shop");
        assert_eq!(ep.page_access_token.expose(), "tok-abc");
        assert!(ep.profiles.request);
        assert!(ep.messenger.typing_indicators);
        assert_eq!(ep.messenger.message_delay_ms, 500);
        assert_eq!(ep.flow.timeout_ms, 10_000);
        assert_eq!(c.graph.version.0, "v25.0");
        assert_eq!(c.server.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        std::env::set_var("FERRY_TEST_CFG_TOKEN", "abc");
        let c = Config::parse(MINIMAL).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("tok-abc"));
        assert!(!dbg.contains("s3cret"));
        assert!(dbg.contains("Secret(***)"));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = MINIMAL.replace(
            "verify_token = \"verify\"",
            "verify_token = \"v\"\ncolour = 1",
        );
        std::env::set_var("FERRY_TEST_CFG_TOKEN", "abc");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("line 11"), "{err}");
    }

    #[test]
    fn missing_required_key_is_named() {
        let text = MINIMAL.replace("app_secret = \"s3cret\"\n", "");
        std::env::set_var("FERRY_TEST_CFG_TOKEN", "abc");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("app_secret"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn missing_env_var_is_named_without_leaking_other_values() {
        let text = MINIMAL.replace("FERRY_TEST_CFG_TOKEN", "FERRY_TEST_DEFINITELY_UNSET");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("FERRY_TEST_DEFINITELY_UNSET is not set"),
            "{err}"
        );
        assert!(err.contains("line 8"), "{err}");
    }

    #[test]
    fn bad_values_are_errors_with_lines() {
        std::env::set_var("FERRY_TEST_CFG_TOKEN", "abc");
        let bad_listen = MINIMAL.replace("127.0.0.1:0", "nowhere");
        let err = Config::parse(&bad_listen).unwrap_err().to_string();
        assert!(
            err.contains("listen") || err.contains("socket address"),
            "{err}"
        );
        assert!(err.contains("line 3"), "{err}");

        let http_without_url = MINIMAL.replace("kind = \"echo\"", "kind = \"http\"");
        let err = Config::parse(&http_without_url).unwrap_err().to_string();
        assert!(err.contains("`url` is required"), "{err}");

        let bad_kind = MINIMAL.replace("kind = \"echo\"", "kind = \"smtp\"");
        let err = Config::parse(&bad_kind).unwrap_err().to_string();
        assert!(err.contains("smtp"), "{err}");
        assert!(err.contains("line 13"), "{err}");

        let bad_page = MINIMAL.replace("1234567890", "my-page");
        let err = Config::parse(&bad_page).unwrap_err().to_string();
        assert!(err.contains("page_id"), "{err}");
    }

    #[test]
    fn turn_niceness_defaults_to_15_and_must_be_0_to_19() {
        std::env::set_var("FERRY_TEST_CFG_TOKEN", "abc");
        assert_eq!(Config::parse(MINIMAL).unwrap().server.turn_niceness, 15);
        let with =
            |n: i32| MINIMAL.replacen("[server]", &format!("[server]\nturn_niceness = {n}"), 1);
        assert_eq!(Config::parse(&with(0)).unwrap().server.turn_niceness, 0);
        for bad in [-1, 20] {
            let err = Config::parse(&with(bad)).unwrap_err().to_string();
            assert!(
                err.contains("server.turn_niceness") && err.contains("0 and 19"),
                "{err}"
            );
        }
    }

    #[test]
    fn plugin_instances_default_to_256_with_the_busy_share_from_the_cores() {
        std::env::set_var("FERRY_TEST_CFG_TOKEN", "abc");
        let server = Config::parse(MINIMAL).unwrap().server;
        assert_eq!(
            (server.plugin_instances, server.plugin_busy_instances),
            (256, 0)
        );
        let with = |lines: &str| MINIMAL.replacen("[server]", &format!("[server]\n{lines}"), 1);
        let server = Config::parse(&with("plugin_instances = 32\nplugin_busy_instances = 4"))
            .unwrap()
            .server;
        assert_eq!(
            (server.plugin_instances, server.plugin_busy_instances),
            (32, 4)
        );
        for bad in [0, 10_001] {
            let err = Config::parse(&with(&format!("plugin_instances = {bad}")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("server.plugin_instances"), "{err}");
        }
    }

    #[test]
    fn duplicate_endpoint_ids_are_rejected() {
        std::env::set_var("FERRY_TEST_CFG_TOKEN", "abc");
        let twice = format!(
            "{MINIMAL}\n{}",
            &MINIMAL[MINIMAL.find("[[endpoint]]").unwrap()..].replace("1234567890", "999")
        );
        let err = Config::parse(&twice).unwrap_err().to_string();
        assert!(err.contains("used twice"), "{err}");
    }

    #[test]
    fn unknown_flow_event_kind_is_rejected() {
        std::env::set_var("FERRY_TEST_CFG_TOKEN", "abc");
        let text =
            format!("{MINIMAL}\n[endpoint.messenger]\nflow_events = [\"message\", \"mesage\"]\n");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("mesage"), "{err}");
    }
}
