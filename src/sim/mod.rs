//! The Graph API emulator: a local stand-in for `graph.facebook.com` that bots are developed and tested against.
//!
//! It enforces the rules Meta documents for the Send API, the User Profile API, `ids_for_pages` and
//! `appsecret_proof` (see the notes on the Messenger Platform), answers with Meta's error shapes, records every
//! call, and injects faults (HTTP 500, rate limits, the messaging window, latency) on demand. What passes here
//! should pass against Meta; where Meta's behaviour is unconfirmed the emulator picks the stricter reading.
//!
//! Besides the Graph routes it serves a small control API under `/_sim/` (calls, faults, counters, health).
//! [`WebhookSender`] and [`events`] play Meta's other half: they build and sign webhook bodies.

mod auth;
pub mod cli;
mod directory;
mod errors;
pub mod events;
mod faults;
mod profile;
mod send;
mod server;
mod signing;
#[cfg(test)]
mod tests;
mod wire;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use faults::{Fault, Faults};
pub use signing::{appsecret_proof, sign_sha1, sign_sha256, WebhookSender};

/// Errors of the emulator's Rust API (the HTTP side answers with Graph error bodies instead).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("timed out after {waited_ms} ms waiting for sim calls ({seen} recorded)")]
    WaitTimeout { waited_ms: u128, seen: usize },
    #[error("webhook POST failed: {0}")]
    Webhook(#[source] reqwest::Error),
}

/// What the emulator knows: Pages, their users, and the app's permissions.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    pub pages: Vec<SimPage>,
    pub users: Vec<SimUser>,
    /// Gated profile fields the app holds a permission for: a subset of `locale`, `timezone`, `gender`.
    pub granted_fields: Vec<String>,
    /// Mirrors the app setting "Require App Secret": every call must carry `appsecret_proof`.
    pub require_appsecret_proof: bool,
    /// Accept PSIDs that appear nowhere in `users` (they get a made-up profile). A PSID configured for
    /// another Page is never accepted, as on Meta where PSIDs are Page-scoped.
    pub accept_unknown_users: bool,
    /// Keep a record of every call. Counters are kept regardless; turn this off for long load runs.
    pub record_calls: bool,
    /// Upper bound on kept records; the oldest are dropped beyond it.
    pub max_recorded_calls: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            pages: Vec::new(),
            users: Vec::new(),
            granted_fields: Vec::new(),
            require_appsecret_proof: false,
            accept_unknown_users: true,
            record_calls: true,
            max_recorded_calls: 100_000,
        }
    }
}

/// A Facebook Page the emulator hosts.
#[derive(Clone, Deserialize)]
pub struct SimPage {
    pub id: String,
    pub access_token: String,
    #[serde(default)]
    pub app_secret: Option<String>,
    #[serde(default)]
    pub name: String,
}

impl SimPage {
    pub fn new(id: &str, access_token: &str, app_secret: Option<&str>, name: &str) -> SimPage {
        SimPage {
            id: id.to_string(),
            access_token: access_token.to_string(),
            app_secret: app_secret.map(str::to_string),
            name: name.to_string(),
        }
    }
}

// Tokens and secrets never reach Debug output.
impl fmt::Debug for SimPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimPage")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("access_token", &"***")
            .field("app_secret", &self.app_secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A person as one Page sees them. The same `person` on several Pages links their PSIDs (`ids_for_pages`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SimUser {
    pub psid: String,
    pub page_id: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(default)]
    pub profile_pic: String,
    #[serde(default = "default_locale")]
    pub locale: String,
    /// Hours from UTC; Meta sends a number that may be fractional.
    #[serde(default)]
    pub timezone: f64,
    #[serde(default)]
    pub gender: Option<String>,
    /// Who this is across Pages; empty means a person of their own.
    #[serde(default)]
    pub person: String,
}

fn default_locale() -> String {
    "en_US".to_string()
}

impl SimUser {
    /// A user with a generated picture URL, locale `en_US`, timezone 0 and no gender.
    pub fn new(
        psid: &str,
        page_id: &str,
        first_name: &str,
        last_name: &str,
        person: &str,
    ) -> SimUser {
        SimUser {
            psid: psid.to_string(),
            page_id: page_id.to_string(),
            first_name: first_name.to_string(),
            last_name: last_name.to_string(),
            profile_pic: format!("https://sim.invalid/profile_pic/{psid}.jpg"),
            locale: default_locale(),
            timezone: 0.0,
            gender: None,
            person: person.to_string(),
        }
    }
}

/// What a recorded call was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    Message,
    SenderAction,
    Profile,
    IdsForPages,
    Other,
}

/// One Graph call as the emulator saw and answered it. Tokens and proofs are redacted to `***`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RecordedCall {
    /// Arrival order, from 0.
    pub seq: u64,
    /// Arrival time in milliseconds since the emulator started (monotonic clock).
    pub at_ms: f64,
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// The request body as JSON (form bodies become an object; unparseable bodies a string).
    pub body: Value,
    pub status: u16,
    pub response: Value,
    pub kind: CallKind,
    /// The Page the token belongs to, when the token was valid.
    pub page_id: Option<String>,
    /// The recipient (id, user_ref or notification token) of a send, or the PSID of a profile lookup.
    pub recipient: Option<String>,
}

/// Totals since start; kept even when recording is off. Successful calls per kind, and all failed calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCounters {
    pub total: u64,
    pub messages: u64,
    pub sender_actions: u64,
    pub profiles: u64,
    pub ids_for_pages: u64,
    pub errors: u64,
}

/// Starts emulators.
pub struct Sim;

impl Sim {
    /// Serves the emulator on `listener` until [`SimHandle::shutdown`]. Fails on an inconsistent config
    /// (a user of an unknown Page, a token shared by two Pages, a PSID listed twice for one Page).
    pub async fn start(
        cfg: SimConfig,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<SimHandle> {
        let shared = server::serve(cfg, listener)?;
        Ok(SimHandle { shared })
    }
}

/// A running emulator. Cheap to clone; all clones control the same instance.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<server::Shared>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("url", &self.url())
            .finish()
    }
}

impl SimHandle {
    /// Base URL, e.g. `http://127.0.0.1:PORT`; Graph paths go below it (`/v25.0/...`).
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Every recorded call in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared.calls()
    }

    pub fn clear_calls(&self) {
        self.shared.clear_calls();
    }

    /// Replaces the fault plan and reseeds its random generator from `faults.seed`.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// The current fault plan (one-shot faults already used are gone from `next`).
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    pub fn counters(&self) -> SimCounters {
        self.shared.counters()
    }

    /// Waits until `pred` holds for the recorded calls and returns them. Needs `record_calls`.
    pub async fn wait_for_calls(
        &self,
        pred: impl Fn(&[RecordedCall]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<RecordedCall>, SimError> {
        self.shared.wait_for_calls(pred, timeout).await
    }

    /// Stops accepting connections and lets calls in flight finish.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Resolves once the server has stopped (after [`SimHandle::shutdown`]).
    pub async fn stopped(&self) {
        self.shared.stopped().await;
    }
}
