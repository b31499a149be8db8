//! The Graph API client: Send API calls, user profiles, and the classification of Graph errors.
//!
//! Every call carries the Page token and, when an app secret is set, `appsecret_proof`. Tokens travel in the
//! query string (as Meta documents), so no URL ever reaches a log or an error message: reqwest errors are
//! stripped of their URL.

use super::signature::appsecret_proof;
use crate::config::Secret;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// What a Page needs to call the Graph API.
pub struct PageAuth {
    pub page_id: String,
    access_token: Secret,
    proof: Option<String>,
}

impl PageAuth {
    pub fn new(page_id: &str, access_token: &Secret, app_secret: Option<&Secret>) -> PageAuth {
        PageAuth {
            page_id: page_id.to_string(),
            proof: app_secret.map(|s| appsecret_proof(s.expose(), access_token.expose())),
            access_token: access_token.clone(),
        }
    }

    fn query(&self) -> Vec<(&'static str, &str)> {
        let mut q = vec![("access_token", self.access_token.expose())];
        if let Some(p) = &self.proof {
            q.push(("appsecret_proof", p.as_str()));
        }
        q
    }
}

/// Whether an error may go away when the same call is made again later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    Retryable,
    Permanent,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    #[error("Graph API error {code}/{subcode} (HTTP {status}): {message}")]
    Api {
        status: u16,
        code: i64,
        subcode: i64,
        kind: String,
        message: String,
        fbtrace_id: String,
    },
    #[error("Graph API answered HTTP {status} without an error body")]
    Http { status: u16 },
    #[error("Graph API unreachable: {0}")]
    Transport(String),
    #[error("Graph API reply is malformed: {0}")]
    Malformed(String),
}

impl GraphError {
    /// Classifies by the table in Meta's docs (see the README's delivery section).
    pub fn retry(&self) -> Retry {
        match self {
            GraphError::Transport(_) => Retry::Retryable,
            GraphError::Http { status } => classify_status(*status),
            GraphError::Malformed(_) => Retry::Permanent,
            GraphError::Api {
                status,
                code,
                subcode,
                ..
            } => classify_code(*status, *code, *subcode),
        }
    }

    /// Code 10 with subcode 2018278 or 2534022: the message is outside the 24-hour window (a `MESSAGE_TAG`
    /// may still be allowed).
    pub fn is_outside_window(&self) -> bool {
        matches!(self, GraphError::Api { code: 10, subcode, .. } if *subcode == 2018278 || *subcode == 2534022)
    }

    /// A short label for the `code` metric label: the Graph code, `http_<status>` or `transport`.
    pub fn code_label(&self) -> String {
        match self {
            GraphError::Api { code, .. } => code.to_string(),
            GraphError::Http { status } => format!("http_{status}"),
            GraphError::Transport(_) => "transport".into(),
            GraphError::Malformed(_) => "malformed".into(),
        }
    }
}

fn classify_status(status: u16) -> Retry {
    if status == 429 || status >= 500 {
        Retry::Retryable
    } else {
        Retry::Permanent
    }
}

fn classify_code(status: u16, code: i64, subcode: i64) -> Retry {
    match code {
        // Window (10/2018278, 2534022), unavailable person, bad parameter, token, permission, too large.
        10 | 100 | 190 | 200..=299 | 551 | 36000 => Retry::Permanent,
        1 | 2 | 4 | 17 | 32 | 613 | 1200 => Retry::Retryable,
        80000..=80099 => Retry::Retryable,
        _ if subcode == 2018278 || subcode == 2534022 || subcode == 1545041 => Retry::Permanent,
        _ => classify_status(status),
    }
}

/// The Send API's answer to a delivered message or sender action.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SendResponse {
    #[serde(default)]
    pub recipient_id: Option<String>,
    #[serde(default)]
    pub message_id: Option<String>,
}

#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: String,
}

impl GraphClient {
    pub fn new(http: reqwest::Client, base_url: &str, version: &str) -> GraphClient {
        GraphClient {
            http,
            base: format!("{}/{}", base_url.trim_end_matches('/'), version),
        }
    }

    /// `POST /{page_id}/messages` with a full Send API body (recipient, messaging_type, message or sender_action).
    pub async fn send(&self, page: &PageAuth, body: &Value) -> Result<SendResponse, GraphError> {
        let url = format!("{}/{}/messages", self.base, page.page_id);
        let reply = self
            .http
            .post(url)
            .query(&page.query())
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        let value = read_reply(reply).await?;
        serde_json::from_value(value).map_err(|e| GraphError::Malformed(e.to_string()))
    }

    /// `GET /{psid}?fields=...`: the user's profile as Meta returns it.
    pub async fn profile(
        &self,
        page: &PageAuth,
        psid: &str,
        fields: &[&str],
    ) -> Result<Value, GraphError> {
        if psid.is_empty() || !psid.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(GraphError::Malformed("user id is not a PSID".into()));
        }
        let url = format!("{}/{}", self.base, psid);
        let fields = fields.join(",");
        let mut query = page.query();
        query.push(("fields", &fields));
        let reply = self
            .http
            .get(url)
            .query(&query)
            .send()
            .await
            .map_err(transport)?;
        read_reply(reply).await
    }
}

impl GraphClient {
    /// `GET /{psid}/ids_for_pages`: the same person's PSIDs on the other Pages of the business, as
    /// (page id, psid), following the paging cursors (at most 20 pages of results).
    pub async fn ids_for_pages(
        &self,
        page: &PageAuth,
        psid: &str,
    ) -> Result<Vec<(String, String)>, GraphError> {
        if psid.is_empty() || !psid.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(GraphError::Malformed("user id is not a PSID".into()));
        }
        let url = format!("{}/{}/ids_for_pages", self.base, psid);
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..20 {
            let mut query = page.query();
            if let Some(cursor) = &after {
                query.push(("after", cursor));
            }
            let reply = self
                .http
                .get(&url)
                .query(&query)
                .send()
                .await
                .map_err(transport)?;
            let value = read_reply(reply).await?;
            let items = value
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in &items {
                let id = item.get("id").and_then(Value::as_str);
                let page_id = item.pointer("/page/id").and_then(Value::as_str);
                if let (Some(id), Some(page_id)) = (id, page_id) {
                    found.push((page_id.to_string(), id.to_string()));
                }
            }
            // Another page of results exists only when Meta gives a `next` link.
            let next = value.pointer("/paging/next").is_some();
            after = value
                .pointer("/paging/cursors/after")
                .and_then(Value::as_str)
                .map(str::to_string);
            if !next || after.is_none() || items.is_empty() {
                break;
            }
        }
        Ok(found)
    }
}

fn transport(e: reqwest::Error) -> GraphError {
    GraphError::Transport(e.without_url().to_string())
}

/// Reads a Graph reply: a 2xx JSON body, or a parsed error.
async fn read_reply(reply: reqwest::Response) -> Result<Value, GraphError> {
    let status = reply.status().as_u16();
    let bytes = reply.bytes().await.map_err(transport)?;
    if (200..300).contains(&status) {
        return serde_json::from_slice(&bytes).map_err(|e| GraphError::Malformed(e.to_string()));
    }
    Err(parse_error(status, &bytes))
}

/// Parses Meta's `{"error":{message,type,code,error_subcode,fbtrace_id}}`.
pub fn parse_error(status: u16, body: &[u8]) -> GraphError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Body,
    }
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        message: String,
        #[serde(default, rename = "type")]
        kind: String,
        #[serde(default)]
        code: i64,
        #[serde(default)]
        error_subcode: i64,
        #[serde(default)]
        fbtrace_id: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error: e }) => GraphError::Api {
            status,
            code: e.code,
            subcode: e.error_subcode,
            kind: e.kind,
            message: e.message,
            fbtrace_id: e.fbtrace_id,
        },
        Err(_) => GraphError::Http { status },
    }
}

/// A reqwest client tuned for many small calls to one host.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: i64, subcode: i64) -> GraphError {
        GraphError::Api {
            status,
            code,
            subcode,
            kind: "OAuthException".into(),
            message: "m".into(),
            fbtrace_id: "f".into(),
        }
    }

    #[test]
    fn classification_follows_the_table() {
        for code in [1, 2, 4, 17, 32, 613, 1200, 80006] {
            assert_eq!(api(400, code, 0).retry(), Retry::Retryable, "code {code}");
        }
        for (code, sub) in [
            (10, 2018278),
            (10, 2534022),
            (551, 1545041),
            (100, 0),
            (190, 0),
            (200, 0),
            (36000, 0),
            (10, 0),
        ] {
            assert_eq!(
                api(400, code, sub).retry(),
                Retry::Permanent,
                "code {code}/{sub}"
            );
        }
        assert_eq!(GraphError::Http { status: 500 }.retry(), Retry::Retryable);
        assert_eq!(GraphError::Http { status: 429 }.retry(), Retry::Retryable);
        assert_eq!(GraphError::Http { status: 404 }.retry(), Retry::Permanent);
        assert_eq!(GraphError::Transport("x".into()).retry(), Retry::Retryable);
    }

    #[test]
    fn parses_meta_error_bodies() {
        let body = br#"{"error":{"message":"(#613) Calls to this api have exceeded the rate limit.","type":"OAuthException","code":613,"error_subcode":0,"fbtrace_id":"AbC"}}"#;
        match parse_error(400, body) {
            GraphError::Api {
                code, fbtrace_id, ..
            } => {
                assert_eq!(code, 613);
                assert_eq!(fbtrace_id, "AbC");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_error(502, b"<html>"),
            GraphError::Http { status: 502 }
        ));
    }

    #[test]
    fn page_auth_debug_free_and_proof_present() {
        let auth = PageAuth::new("1", &Secret::new("tok"), Some(&Secret::new("sec")));
        let q = auth.query();
        assert_eq!(q[0], ("access_token", "tok"));
        assert_eq!(q[1].0, "appsecret_proof");
        assert_eq!(q[1].1, appsecret_proof("sec", "tok"));
        let no_secret = PageAuth::new("1", &Secret::new("tok"), None);
        assert_eq!(no_secret.query().len(), 1);
    }
}
