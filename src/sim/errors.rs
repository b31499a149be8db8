//! Graph API errors exactly as Meta shapes them: `{"error":{"message","type","code","error_subcode"?,"fbtrace_id"}}`.
//! Messages and codes are Meta's own wording where known, so clients can be tested against the real strings.

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};

const OAUTH: &str = "OAuthException";
const METHOD: &str = "GraphMethodException";

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("Graph error {code} (HTTP {status}): {message}")]
pub(crate) struct GraphError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub code: u32,
    pub subcode: Option<u32>,
}

impl GraphError {
    fn new(
        status: u16,
        kind: &'static str,
        code: u32,
        subcode: Option<u32>,
        message: String,
    ) -> GraphError {
        GraphError {
            status,
            message,
            kind,
            code,
            subcode,
        }
    }

    /// Code 100, the Send API's answer to any malformed parameter.
    pub fn invalid_param(message: impl Into<String>) -> GraphError {
        GraphError::new(400, OAUTH, 100, None, format!("(#100) {}", message.into()))
    }

    pub fn missing_token() -> GraphError {
        let msg = "An access token is required to request this resource.";
        GraphError::new(400, OAUTH, 104, None, msg.into())
    }

    pub fn invalid_token() -> GraphError {
        let msg = "Invalid OAuth access token - Cannot parse access token";
        GraphError::new(400, OAUTH, 190, None, msg.into())
    }

    pub fn missing_proof() -> GraphError {
        let msg = "API calls from the server require an appsecret_proof argument";
        GraphError::new(400, METHOD, 100, None, msg.into())
    }

    pub fn invalid_proof() -> GraphError {
        let msg = "Invalid appsecret_proof provided in the API argument";
        GraphError::new(400, METHOD, 100, None, msg.into())
    }

    pub fn person_unavailable() -> GraphError {
        let msg = "(#551) This person isn't available right now.";
        GraphError::new(400, OAUTH, 551, Some(1_545_041), msg.into())
    }

    pub fn outside_window() -> GraphError {
        let msg = "(#10) This message is sent outside of allowed window. Learn more about the new policy here: \
                   https://developers.facebook.com/docs/messenger-platform/policy-overview";
        GraphError::new(400, OAUTH, 10, Some(2_018_278), msg.into())
    }

    pub fn rate_limited() -> GraphError {
        let msg = "(#613) Calls to this api have exceeded the rate limit.";
        GraphError::new(400, OAUTH, 613, None, msg.into())
    }

    pub fn unexpected() -> GraphError {
        let msg = "An unexpected error has occurred. Please retry your request later.";
        GraphError::new(500, OAUTH, 2, None, msg.into())
    }

    pub fn unknown_object(id: &str) -> GraphError {
        let msg = format!(
            "Unsupported get request. Object with ID '{id}' does not exist, cannot be loaded due to missing \
             permissions, or does not support this operation. Please read the Graph API documentation at \
             https://developers.facebook.com/docs/graph-api"
        );
        GraphError::new(400, METHOD, 100, Some(33), msg)
    }

    /// Also the answer for a gated profile field the app holds no permission for: Meta hides such fields
    /// rather than naming the permission, and fails the whole call.
    pub fn nonexisting_field(field: &str) -> GraphError {
        let msg = format!("(#100) Tried accessing nonexisting field ({field}) on node type (User)");
        GraphError::new(400, OAUTH, 100, None, msg)
    }

    pub fn unknown_path(path: &str) -> GraphError {
        GraphError::new(
            400,
            OAUTH,
            2500,
            None,
            format!("Unknown path components: {path}"),
        )
    }

    /// The response body, with a fresh `fbtrace_id` like Meta's.
    pub fn to_json(&self) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": self.kind,
            "code": self.code,
        });
        if let Some(sub) = self.subcode {
            error["error_subcode"] = json!(sub);
        }
        error["fbtrace_id"] = json!(fbtrace_id());
        json!({ "error": error })
    }
}

fn fbtrace_id() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(11)
        .map(char::from)
        .collect()
}
