//! The conversation backends ("flows"): what a turn asks once the input is known.
//!
//! Every backend gets the same [`FlowInput`] and answers a list of [`FlowOutput`]s. Timeouts apply to
//! every kind the same way (see [`Flow::run`]); a late answer is dropped with its future.

mod echo;
mod http;
mod rasa;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

pub use echo::EchoFlow;
pub use http::HttpFlow;
pub use rasa::RasaFlow;

/// What the flow receives for one turn (after the input transformer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowInput {
    pub user_id: String,
    pub session_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Always a JSON object: `{"request": <messaging event>, "profile"?: {...}, "attachments": [...]}`.
    pub data: Map<String, Value>,
}

/// One answer of the flow. `data` is a JSON object or absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// The endpoint a turn belongs to, as the flow sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowEndpoint {
    pub id: String,
    pub channel: &'static str,
    pub page_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("flow did not answer within {0} ms")]
    Timeout(u64),
    #[error("flow answered HTTP {0}")]
    Status(u16),
    #[error("flow reply is malformed: {0}")]
    Malformed(String),
    #[error("flow unreachable: {0}")]
    Transport(String),
}

impl FlowError {
    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FlowError::Timeout(_) => "timeout",
            FlowError::Status(_) => "status",
            FlowError::Malformed(_) => "malformed",
            FlowError::Transport(_) => "transport",
        }
    }
}

/// Which backend an endpoint talks to, as written in `[endpoint.flow]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowKind {
    Http,
    Rasa,
    Echo,
}

/// One endpoint's backend.
pub enum Flow {
    Echo(EchoFlow),
    Http(HttpFlow),
    Rasa(RasaFlow),
}

impl Flow {
    /// Builds the backend; `url` is required for `http` and `rasa` (config validation checks that).
    pub fn new(kind: FlowKind, url: Option<&str>, client: reqwest::Client) -> Flow {
        let url = url.unwrap_or_default().to_string();
        match kind {
            FlowKind::Echo => Flow::Echo(EchoFlow),
            FlowKind::Http => Flow::Http(HttpFlow::new(url, client)),
            FlowKind::Rasa => Flow::Rasa(RasaFlow::new(url, client)),
        }
    }

    /// Asks the backend, giving up after `timeout`. A reply arriving later is discarded.
    pub async fn run(
        &self,
        endpoint: &FlowEndpoint,
        input: &FlowInput,
        timeout: Duration,
    ) -> Result<Vec<FlowOutput>, FlowError> {
        let call = async {
            match self {
                Flow::Echo(f) => f.run(input).await,
                Flow::Http(f) => f.run(endpoint, input).await,
                Flow::Rasa(f) => f.run(endpoint, input).await,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(FlowError::Timeout(timeout.as_millis() as u64)),
        }
    }
}
