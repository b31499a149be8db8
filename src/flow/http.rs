//! Ferry's own JSON protocol: one POST per turn, the outputs in the reply.
//!
//! Request: `{"userId", "sessionId", "text"?, "data", "endpoint": {"id", "channel", "pageId"}}`.
//! Reply (2xx): `{"outputs": [{"text"?: string, "data"?: object}]}`; `{"outputs": []}` means no answer.
//!
//! The POST/read/parse plumbing here is shared with the Rasa backend.

use super::{FlowEndpoint, FlowError, FlowInput, FlowOutput};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

/// Replies larger than this are refused without being read further: a runaway backend must not exhaust memory.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// A flow reached over Ferry's JSON protocol (see the module docs).
pub struct HttpFlow {
    url: String,
    client: reqwest::Client,
}

// The URL may carry a token in its query string or user info, so Debug shows it redacted.
impl fmt::Debug for HttpFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFlow")
            .field("url", &redacted_url(&self.url))
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct FerryRequest<'a> {
    #[serde(flatten)]
    input: &'a FlowInput,
    endpoint: &'a FlowEndpoint,
}

impl HttpFlow {
    pub fn new(url: String, client: reqwest::Client) -> Self {
        HttpFlow { url, client }
    }

    pub async fn run(
        &self,
        endpoint: &FlowEndpoint,
        input: &FlowInput,
    ) -> Result<Vec<FlowOutput>, FlowError> {
        let request = FerryRequest { input, endpoint };
        let reply = post_json(&self.client, &self.url, &request).await?;
        parse_reply(reply)
    }
}

fn parse_reply(reply: Value) -> Result<Vec<FlowOutput>, FlowError> {
    let Value::Object(mut reply) = reply else {
        return Err(malformed("reply is not a JSON object"));
    };
    match reply.remove("outputs") {
        Some(Value::Array(outputs)) => outputs.into_iter().enumerate().map(parse_output).collect(),
        Some(_) => Err(malformed("\"outputs\" is not a list")),
        None => Err(malformed("missing \"outputs\"")),
    }
}

fn parse_output((index, output): (usize, Value)) -> Result<FlowOutput, FlowError> {
    let Value::Object(mut output) = output else {
        return Err(malformed(format!("output {index} is not an object")));
    };
    // null is accepted as "absent" for both fields: many JSON encoders write nulls for missing values.
    let text = match output.remove("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(_) => return Err(malformed(format!("output {index}: text is not a string"))),
    };
    let data = match output.remove("data") {
        None | Some(Value::Null) => None,
        Some(data @ Value::Object(_)) => Some(data),
        Some(_) => return Err(malformed(format!("output {index}: data is not an object"))),
    };
    Ok(FlowOutput { text, data })
}

pub(super) fn malformed(reason: impl Into<String>) -> FlowError {
    FlowError::Malformed(reason.into())
}

/// POSTs `body` as JSON and returns the reply parsed as JSON, enforcing the 2xx status and the size cap.
pub(super) async fn post_json<B: Serialize + ?Sized>(
    client: &reqwest::Client,
    url: &str,
    body: &B,
) -> Result<Value, FlowError> {
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|err| transport_error(url, err))?;
    let status = response.status();
    if !status.is_success() {
        return Err(FlowError::Status(status.as_u16()));
    }
    let bytes = read_capped(response, url).await?;
    serde_json::from_slice(&bytes).map_err(|err| malformed(format!("reply is not JSON: {err}")))
}

async fn read_capped(mut response: reqwest::Response, url: &str) -> Result<Vec<u8>, FlowError> {
    let too_large = || malformed("reply larger than 1 MiB");
    if response
        .content_length()
        .is_some_and(|len| len > MAX_REPLY_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| transport_error(url, err))?
    {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error with its causes ("error sending request: ...: Connection refused"), with the URL's secrets removed.
fn transport_error(url: &str, err: reqwest::Error) -> FlowError {
    let err = err.without_url();
    let mut reason = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    FlowError::Transport(scrub_secrets(reason, url))
}

/// Removes the URL's query string and user info from `message`, in raw and in normalised spelling.
fn scrub_secrets(message: String, url: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    if let Some((_, query)) = url.split_once('?') {
        secrets.push(query.to_string());
    }
    if let Ok(parsed) = reqwest::Url::parse(url) {
        secrets.extend(parsed.query().map(str::to_string));
        secrets.extend(parsed.password().map(str::to_string));
        if !parsed.username().is_empty() {
            secrets.push(parsed.username().to_string());
        }
    }
    secrets
        .iter()
        .filter(|secret| !secret.is_empty())
        .fold(message, |message, secret| {
            message.replace(secret.as_str(), "<redacted>")
        })
}

/// The URL without query, fragment and user info, for Debug output.
pub(super) fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_query(None);
            parsed.set_fragment(None);
            // Both only fail for URLs that cannot have credentials, which then have none to hide.
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.to_string()
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

/// Builds a `data` value from collected fields; an empty object means no data.
pub(super) fn data_or_none(data: Map<String, Value>) -> Option<Value> {
    (!data.is_empty()).then_some(Value::Object(data))
}

/// A throwaway HTTP backend on 127.0.0.1 for the flow tests.
#[cfg(test)]
pub(super) mod test_server {
    use super::super::{FlowEndpoint, FlowInput};
    use axum::body::Body;
    use axum::extract::State;
    use axum::http::{header, StatusCode};
    use axum::response::Response;
    use axum::routing::post;
    use axum::Router;
    use bytes::Bytes;
    use serde_json::{json, Value};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// What the server answers to every request.
    #[derive(Clone)]
    pub enum Reply {
        Json(u16, String),
        /// An endless stream of whitespace without Content-Length.
        Endless,
        /// `{"outputs": []}` / `[]` after a long sleep.
        Slow(Duration, String),
    }

    #[derive(Clone)]
    struct Server {
        reply: Reply,
        received: Arc<Mutex<Vec<Value>>>,
    }

    pub struct Running {
        pub url: String,
        received: Arc<Mutex<Vec<Value>>>,
    }

    impl Running {
        /// The JSON bodies received so far.
        pub fn received(&self) -> Vec<Value> {
            self.received.lock().expect("lock").clone()
        }
    }

    pub async fn serve(reply: Reply) -> Running {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = Server {
            reply,
            received: received.clone(),
        };
        let app = Router::new().route("/hook", post(answer)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Running {
            url: format!("http://{addr}/hook?token=s3cr3t-t0ken"),
            received,
        }
    }

    async fn answer(State(server): State<Server>, body: String) -> Response {
        let parsed = serde_json::from_str(&body).unwrap_or(Value::String(body));
        server.received.lock().expect("lock").push(parsed);
        match server.reply {
            Reply::Json(status, body) => json_response(status, body),
            Reply::Endless => {
                let chunk = Bytes::from(vec![b' '; 64 * 1024]);
                let chunks =
                    futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
                Response::new(Body::from_stream(chunks))
            }
            Reply::Slow(delay, body) => {
                tokio::time::sleep(delay).await;
                json_response(200, body)
            }
        }
    }

    fn json_response(status: u16, body: String) -> Response {
        Response::builder()
            .status(StatusCode::from_u16(status).expect("status"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("response")
    }

    /// A URL on 127.0.0.1 where nothing listens.
    pub fn refused_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        format!("http://127.0.0.1:{port}/hook?token=s3cr3t-t0ken")
    }

    pub fn client() -> reqwest::Client {
        // No proxy: the tests must never leave 127.0.0.1, whatever the environment says.
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
    }

    pub fn endpoint() -> FlowEndpoint {
        FlowEndpoint {
            id: "ep-1".to_string(),
            channel: "messenger",
            page_id: "page-42".to_string(),
        }
    }

    pub fn input(text: Option<&str>) -> FlowInput {
        let data = json!({"request": {"sender": {"id": "user-1"}}, "attachments": []});
        FlowInput {
            user_id: "user-1".to_string(),
            session_id: "session-1".to_string(),
            text: text.map(str::to_string),
            data: data.as_object().cloned().expect("object"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Flow, FlowKind};
    use super::test_server::{client, endpoint, input, refused_url, serve, Reply};
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    async fn run_against(reply: Reply) -> Result<Vec<FlowOutput>, FlowError> {
        let server = serve(reply).await;
        HttpFlow::new(server.url.clone(), client())
            .run(&endpoint(), &input(Some("hello")))
            .await
    }

    fn ok(body: Value) -> Reply {
        Reply::Json(200, body.to_string())
    }

    fn assert_malformed(result: Result<Vec<FlowOutput>, FlowError>, needle: &str) {
        match result {
            Err(FlowError::Malformed(reason)) => {
                assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
            }
            other => panic!("expected Malformed({needle}), got {other:?}"),
        }
    }

    #[tokio::test]
    async fn request_body_has_every_field() {
        let server = serve(ok(json!({"outputs": []}))).await;
        let flow = HttpFlow::new(server.url.clone(), client());
        flow.run(&endpoint(), &input(Some("hello")))
            .await
            .expect("run");
        let received = server.received();
        assert_eq!(received.len(), 1);
        let body = &received[0];
        assert_eq!(body["userId"], "user-1");
        assert_eq!(body["sessionId"], "session-1");
        assert_eq!(body["text"], "hello");
        assert_eq!(body["data"], json!(input(None).data));
        assert_eq!(
            body["endpoint"],
            json!({"id": "ep-1", "channel": "messenger", "pageId": "page-42"})
        );
        assert_eq!(body.as_object().map(|o| o.len()), Some(5));
    }

    #[tokio::test]
    async fn request_body_omits_absent_text() {
        let server = serve(ok(json!({"outputs": []}))).await;
        let flow = HttpFlow::new(server.url.clone(), client());
        flow.run(&endpoint(), &input(None)).await.expect("run");
        let body = &server.received()[0];
        assert!(body.get("text").is_none(), "text must be omitted: {body}");
        assert_eq!(body["userId"], "user-1");
    }

    #[tokio::test]
    async fn reply_outputs_are_mapped_in_order() {
        let reply = json!({"outputs": [
            {"text": "one"},
            {"data": {"quickReplies": [{"title": "A", "payload": "A"}]}},
            {"text": "three", "data": {"x": 1}, "ignored": true},
            {"text": null, "data": null}
        ]});
        let outputs = run_against(ok(reply)).await.expect("outputs");
        assert_eq!(
            outputs,
            vec![
                FlowOutput {
                    text: Some("one".into()),
                    data: None
                },
                FlowOutput {
                    text: None,
                    data: Some(json!({"quickReplies": [{"title": "A", "payload": "A"}]}))
                },
                FlowOutput {
                    text: Some("three".into()),
                    data: Some(json!({"x": 1}))
                },
                FlowOutput::default(),
            ]
        );
    }

    #[tokio::test]
    async fn empty_outputs_mean_no_answer() {
        let outputs = run_against(ok(json!({"outputs": []}))).await.expect("ok");
        assert!(outputs.is_empty());
    }

    #[tokio::test]
    async fn non_2xx_is_a_status_error() {
        for status in [404, 500, 302] {
            let reply = Reply::Json(status, json!({"outputs": []}).to_string());
            match run_against(reply).await {
                Err(FlowError::Status(code)) => assert_eq!(code, status),
                other => panic!("expected Status({status}), got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn non_json_reply_is_malformed() {
        let reply = Reply::Json(200, "<html>oops</html>".to_string());
        assert_malformed(run_against(reply).await, "not JSON");
        assert_malformed(
            run_against(Reply::Json(200, String::new())).await,
            "not JSON",
        );
    }

    #[tokio::test]
    async fn wrong_shapes_are_malformed() {
        let cases = [
            (json!([]), "not a JSON object"),
            (json!({"answers": []}), "missing \"outputs\""),
            (json!({"outputs": {"text": "x"}}), "not a list"),
            (json!({"outputs": ["text"]}), "output 0 is not an object"),
            (
                json!({"outputs": [{"text": "ok"}, {"text": 5}]}),
                "output 1: text",
            ),
            (json!({"outputs": [{"data": "x"}]}), "output 0: data"),
            (json!({"outputs": [{"data": [1]}]}), "output 0: data"),
        ];
        for (reply, needle) in cases {
            assert_malformed(run_against(ok(reply)).await, needle);
        }
    }

    #[tokio::test]
    async fn oversized_reply_is_refused() {
        let padding = " ".repeat(MAX_REPLY_BYTES);
        let body = format!("{{\"outputs\": []}}{padding}");
        assert_malformed(
            run_against(Reply::Json(200, body)).await,
            "reply larger than 1 MiB",
        );
        // Exactly at the cap is fine.
        let body = "{\"outputs\":[]}".to_string();
        let body = format!("{body}{}", " ".repeat(MAX_REPLY_BYTES - body.len()));
        assert!(run_against(Reply::Json(200, body)).await.is_ok());
    }

    #[tokio::test]
    async fn endless_reply_stops_at_the_cap() {
        let started = Instant::now();
        assert_malformed(run_against(Reply::Endless).await, "reply larger than 1 MiB");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn connection_refused_is_transport_without_secrets() {
        let flow = HttpFlow::new(refused_url(), client());
        match flow.run(&endpoint(), &input(Some("hi"))).await {
            Err(FlowError::Transport(reason)) => {
                assert!(!reason.contains("s3cr3t"), "secret leaked: {reason}");
                assert!(!reason.contains("token="), "query leaked: {reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("expected Transport, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn slow_flow_times_out_promptly() {
        let server = serve(Reply::Slow(
            Duration::from_secs(30),
            json!({"outputs": []}).to_string(),
        ))
        .await;
        let flow = Flow::new(FlowKind::Http, Some(&server.url), client());
        let started = Instant::now();
        let result = flow
            .run(&endpoint(), &input(Some("hi")), Duration::from_millis(200))
            .await;
        assert!(matches!(result, Err(FlowError::Timeout(200))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(server.received().len(), 1, "the request was sent");
    }

    #[test]
    fn secrets_are_scrubbed_from_messages_and_debug() {
        let url = "http://user:pa55@127.0.0.1:1/hook?token=s3cr3t&x=%41";
        let scrubbed = scrub_secrets(format!("failed for {url}"), url);
        assert!(
            !scrubbed.contains("s3cr3t") && !scrubbed.contains("pa55"),
            "{scrubbed}"
        );
        let debug = format!("{:?}", HttpFlow::new(url.to_string(), client()));
        assert!(debug.contains("127.0.0.1:1/hook"), "{debug}");
        assert!(
            !debug.contains("s3cr3t") && !debug.contains("pa55"),
            "{debug}"
        );
        assert_eq!(redacted_url("not a url"), "<invalid url>");
    }
}
