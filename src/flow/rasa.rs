//! A Rasa bot reached over its REST channel (`POST http://host:5005/webhooks/rest/webhook`).
//!
//! Request: `{"sender": userId, "message": text or "", "metadata": {"sessionId", "data", "endpoint"}}`.
//! Reply: a JSON array of bot messages, each becoming one [`FlowOutput`] (messages with nothing Ferry
//! understands are skipped):
//!
//! - `text` -> `text`;
//! - `image` (URL) -> `data.attachment = {"type": "image", "url"}`;
//! - `attachment`: `{"type", "payload": {"url"}}` -> `data.attachment = {"type", "url"}`; a URL string -> an
//!   image; any other `{"type", "payload": {...}}` (a Messenger template) -> `data.messenger = {"attachment": ...}`,
//!   a raw Send API message;
//! - `buttons` (`[{"title", "payload"}]`; a payload starting with `http://` or `https://`, or a `url` field,
//!   makes a URL button `{"title", "url"}`): up to 3 -> `data.buttons`; more -> `data.quickReplies`
//!   `{"title", "payload"}`, because Rasa bots commonly use buttons as quick replies while Messenger's button
//!   template holds at most 3;
//! - `quick_replies` (`[{"title", "payload", "image_url"?}]`, optionally with `"content_type": "text"`) ->
//!   appended to `data.quickReplies` as `{"title", "payload", "imageUrl"?}`; other content types (phone, email)
//!   are skipped;
//! - `custom`: an object with a `"messenger"` or `"facebook"` object -> `data.messenger` (a raw Send API
//!   message); anything else -> `data.custom`.

use super::http::{data_or_none, malformed, post_json};
use super::{FlowEndpoint, FlowError, FlowInput, FlowOutput};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::fmt;

/// Messenger's button template holds at most this many buttons.
const MAX_TEMPLATE_BUTTONS: usize = 3;

/// A flow backed by a Rasa bot's REST channel (see the module docs for the mapping).
pub struct RasaFlow {
    url: String,
    client: reqwest::Client,
}

// The URL may carry a token, so Debug shows it redacted.
impl fmt::Debug for RasaFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RasaFlow")
            .field("url", &super::http::redacted_url(&self.url))
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct RasaRequest<'a> {
    sender: &'a str,
    message: &'a str,
    metadata: RasaMetadata<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RasaMetadata<'a> {
    session_id: &'a str,
    data: &'a Map<String, Value>,
    endpoint: &'a FlowEndpoint,
}

impl RasaFlow {
    pub fn new(url: String, client: reqwest::Client) -> Self {
        RasaFlow { url, client }
    }

    pub async fn run(
        &self,
        endpoint: &FlowEndpoint,
        input: &FlowInput,
    ) -> Result<Vec<FlowOutput>, FlowError> {
        let request = RasaRequest {
            sender: &input.user_id,
            message: input.text.as_deref().unwrap_or_default(),
            metadata: RasaMetadata {
                session_id: &input.session_id,
                data: &input.data,
                endpoint,
            },
        };
        let reply = post_json(&self.client, &self.url, &request).await?;
        parse_reply(reply)
    }
}

fn parse_reply(reply: Value) -> Result<Vec<FlowOutput>, FlowError> {
    let Value::Array(messages) = reply else {
        return Err(malformed("Rasa reply is not a list"));
    };
    let mut outputs = Vec::with_capacity(messages.len());
    for (index, message) in messages.into_iter().enumerate() {
        let output = map_message(message)
            .map_err(|reason| malformed(format!("message {index}: {reason}")))?;
        if output != FlowOutput::default() {
            outputs.push(output);
        }
    }
    Ok(outputs)
}

/// Maps one Rasa message; the error is the reason, without the message index.
fn map_message(message: Value) -> Result<FlowOutput, String> {
    let Value::Object(mut message) = message else {
        return Err("not an object".to_string());
    };
    let text = match message.remove("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(_) => return Err("text is not a string".to_string()),
    };
    let mut data = Map::new();
    if let Some(image) = present(message.remove("image")) {
        let url = image.as_str().ok_or("image is not a URL string")?;
        data.insert("attachment".into(), image_attachment(url));
    }
    // Set after the image so an explicit attachment wins when a message has both.
    if let Some(attachment) = present(message.remove("attachment")) {
        let (key, value) = map_attachment(attachment)?;
        data.insert(key.into(), value);
    }
    let mut quick_replies = Vec::new();
    if let Some(buttons) = present(message.remove("buttons")) {
        let buttons = map_buttons(buttons)?;
        if buttons.len() <= MAX_TEMPLATE_BUTTONS {
            data.insert(
                "buttons".into(),
                Value::Array(buttons.iter().map(Button::as_button).collect()),
            );
        } else {
            quick_replies.extend(buttons.iter().map(Button::as_quick_reply));
        }
    }
    if let Some(replies) = present(message.remove("quick_replies")) {
        quick_replies.extend(map_quick_replies(replies)?);
    }
    if !quick_replies.is_empty() {
        data.insert("quickReplies".into(), Value::Array(quick_replies));
    }
    if let Some(custom) = present(message.remove("custom")) {
        let (key, value) = map_custom(custom);
        data.insert(key.into(), value);
    }
    Ok(FlowOutput {
        text,
        data: data_or_none(data),
    })
}

/// Rasa writes absent fields as null in some versions; both mean "not there".
fn present(value: Option<Value>) -> Option<Value> {
    value.filter(|v| !v.is_null())
}

fn image_attachment(url: &str) -> Value {
    json!({"type": "image", "url": url})
}

fn map_attachment(attachment: Value) -> Result<(&'static str, Value), String> {
    if let Some(url) = attachment.as_str() {
        return Ok(("attachment", image_attachment(url)));
    }
    let kind = attachment.get("type").and_then(Value::as_str);
    let payload = attachment.get("payload").filter(|p| p.is_object());
    match (kind, payload) {
        (Some(kind), Some(payload)) => match payload.get("url").and_then(Value::as_str) {
            Some(url) => Ok(("attachment", json!({"type": kind, "url": url}))),
            None => Ok(("messenger", json!({"attachment": attachment}))),
        },
        _ => Err("attachment is neither a URL nor {type, payload}".to_string()),
    }
}

/// One Rasa button, already classified.
enum Button {
    Postback { title: String, payload: String },
    Url { title: String, url: String },
}

impl Button {
    fn as_button(&self) -> Value {
        match self {
            Button::Postback { title, payload } => json!({"title": title, "payload": payload}),
            Button::Url { title, url } => json!({"title": title, "url": url}),
        }
    }

    /// Quick replies cannot open links, so a URL button keeps its URL as the payload Rasa would get back.
    fn as_quick_reply(&self) -> Value {
        match self {
            Button::Postback { title, payload } => json!({"title": title, "payload": payload}),
            Button::Url { title, url } => json!({"title": title, "payload": url}),
        }
    }
}

fn map_buttons(buttons: Value) -> Result<Vec<Button>, String> {
    let Value::Array(buttons) = buttons else {
        return Err("buttons is not a list".to_string());
    };
    buttons
        .iter()
        .enumerate()
        .map(|(index, button)| {
            map_button(button)
                .ok_or_else(|| format!("button {index} needs a title and a payload or url"))
        })
        .collect()
}

fn map_button(button: &Value) -> Option<Button> {
    let title = button.get("title")?.as_str()?.to_string();
    if let Some(url) = button.get("url").and_then(Value::as_str) {
        return Some(Button::Url {
            title,
            url: url.to_string(),
        });
    }
    let payload = button.get("payload")?.as_str()?;
    if is_web_url(payload) {
        Some(Button::Url {
            title,
            url: payload.to_string(),
        })
    } else {
        Some(Button::Postback {
            title,
            payload: payload.to_string(),
        })
    }
}

fn is_web_url(text: &str) -> bool {
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn map_quick_replies(replies: Value) -> Result<Vec<Value>, String> {
    let Value::Array(replies) = replies else {
        return Err("quick_replies is not a list".to_string());
    };
    let mut mapped = Vec::with_capacity(replies.len());
    for (index, reply) in replies.iter().enumerate() {
        let content_type = reply
            .get("content_type")
            .and_then(Value::as_str)
            .unwrap_or("text");
        // Phone and email quick replies have no title; Ferry's outputs only model text ones.
        if content_type != "text" {
            continue;
        }
        mapped.push(
            map_quick_reply(reply)
                .ok_or_else(|| format!("quick reply {index} needs a title and a payload"))?,
        );
    }
    Ok(mapped)
}

fn map_quick_reply(reply: &Value) -> Option<Value> {
    let title = reply.get("title")?.as_str()?;
    let payload = reply.get("payload")?.as_str()?;
    let mut mapped = json!({"title": title, "payload": payload});
    if let Some(image_url) = reply.get("image_url").and_then(Value::as_str) {
        mapped["imageUrl"] = Value::from(image_url);
    }
    Some(mapped)
}

fn map_custom(custom: Value) -> (&'static str, Value) {
    let messenger = ["messenger", "facebook"]
        .iter()
        .find_map(|key| custom.get(key).filter(|v| v.is_object()));
    match messenger {
        Some(message) => ("messenger", message.clone()),
        None => ("custom", custom),
    }
}

#[cfg(test)]
mod tests {
    use super::super::http::test_server::{client, endpoint, input, refused_url, serve, Reply};
    use super::super::{Flow, FlowKind};
    use super::*;
    use std::time::{Duration, Instant};

    async fn run_against(reply: Reply) -> Result<Vec<FlowOutput>, FlowError> {
        let server = serve(reply).await;
        RasaFlow::new(server.url.clone(), client())
            .run(&endpoint(), &input(Some("hello")))
            .await
    }

    fn ok(body: Value) -> Reply {
        Reply::Json(200, body.to_string())
    }

    async fn map_one(message: Value) -> FlowOutput {
        let mut outputs = run_against(ok(json!([message]))).await.expect("outputs");
        assert_eq!(outputs.len(), 1, "{outputs:?}");
        outputs.remove(0)
    }

    async fn data_of(message: Value) -> Value {
        map_one(message).await.data.expect("data")
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
    async fn request_body_follows_the_rest_channel() {
        let server = serve(ok(json!([]))).await;
        let flow = RasaFlow::new(server.url.clone(), client());
        flow.run(&endpoint(), &input(Some("hello")))
            .await
            .expect("run");
        let body = &server.received()[0];
        assert_eq!(body["sender"], "user-1");
        assert_eq!(body["message"], "hello");
        let metadata = &body["metadata"];
        assert_eq!(metadata["sessionId"], "session-1");
        assert_eq!(metadata["data"], json!(input(None).data));
        assert_eq!(
            metadata["endpoint"],
            json!({"id": "ep-1", "channel": "messenger", "pageId": "page-42"})
        );
        assert_eq!(body.as_object().map(|o| o.len()), Some(3));
        assert_eq!(metadata.as_object().map(|o| o.len()), Some(3));
    }

    #[tokio::test]
    async fn absent_text_is_sent_as_empty_message() {
        let server = serve(ok(json!([]))).await;
        let flow = RasaFlow::new(server.url.clone(), client());
        flow.run(&endpoint(), &input(None)).await.expect("run");
        assert_eq!(server.received()[0]["message"], "");
    }

    #[tokio::test]
    async fn text_messages_stay_separate_outputs() {
        let reply = json!([
            {"recipient_id": "user-1", "text": "first"},
            {"recipient_id": "user-1", "text": "second"},
            {"recipient_id": "user-1"}
        ]);
        let outputs = run_against(ok(reply)).await.expect("outputs");
        let texts: Vec<_> = outputs.iter().map(|o| o.text.as_deref()).collect();
        assert_eq!(texts, vec![Some("first"), Some("second")]);
        assert!(outputs.iter().all(|o| o.data.is_none()));
    }

    #[tokio::test]
    async fn empty_reply_means_no_answer() {
        assert!(run_against(ok(json!([]))).await.expect("ok").is_empty());
    }

    #[tokio::test]
    async fn image_becomes_an_image_attachment() {
        let out = map_one(json!({"text": "look", "image": "https://example.com/a.png"})).await;
        assert_eq!(out.text.as_deref(), Some("look"));
        assert_eq!(
            out.data,
            Some(json!({"attachment": {"type": "image", "url": "https://example.com/a.png"}}))
        );
    }

    #[tokio::test]
    async fn few_buttons_become_buttons_with_url_detection() {
        let data = data_of(json!({"text": "pick", "buttons": [
            {"title": "Yes", "payload": "/affirm"},
            {"title": "Docs", "payload": "https://example.com/docs"},
            {"title": "Site", "url": "http://example.com", "type": "web_url"}
        ]}))
        .await;
        assert_eq!(
            data,
            json!({"buttons": [
                {"title": "Yes", "payload": "/affirm"},
                {"title": "Docs", "url": "https://example.com/docs"},
                {"title": "Site", "url": "http://example.com"}
            ]})
        );
    }

    #[tokio::test]
    async fn many_buttons_become_quick_replies() {
        let buttons: Vec<Value> = (1..=4)
            .map(|n| json!({"title": format!("B{n}"), "payload": format!("/b{n}")}))
            .collect();
        let data = data_of(json!({"text": "pick", "buttons": buttons})).await;
        assert_eq!(data.get("buttons"), None);
        assert_eq!(data["quickReplies"], json!(buttons));
    }

    #[tokio::test]
    async fn quick_replies_accept_both_rasa_shapes() {
        let data = data_of(json!({"text": "pick", "quick_replies": [
            {"title": "A", "payload": "/a"},
            {"content_type": "text", "title": "B", "payload": "/b", "image_url": "https://example.com/b.png"},
            {"content_type": "user_phone_number"}
        ]}))
        .await;
        assert_eq!(
            data,
            json!({"quickReplies": [
                {"title": "A", "payload": "/a"},
                {"title": "B", "payload": "/b", "imageUrl": "https://example.com/b.png"}
            ]})
        );
    }

    #[tokio::test]
    async fn many_buttons_and_quick_replies_are_merged() {
        let buttons: Vec<Value> = (1..=4)
            .map(|n| json!({"title": format!("B{n}"), "payload": format!("/b{n}")}))
            .collect();
        let data = data_of(
            json!({"buttons": buttons, "quick_replies": [{"title": "Q", "payload": "/q"}]}),
        )
        .await;
        let titles: Vec<_> = data["quickReplies"]
            .as_array()
            .expect("list")
            .iter()
            .map(|r| r["title"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(titles, ["B1", "B2", "B3", "B4", "Q"]);
    }

    #[tokio::test]
    async fn custom_messenger_payloads_become_raw_messages() {
        let message = json!({"text": "raw"});
        let data = data_of(json!({"custom": {"messenger": message}})).await;
        assert_eq!(data, json!({"messenger": message}));
        let data = data_of(json!({"custom": {"facebook": message, "other": 1}})).await;
        assert_eq!(data, json!({"messenger": message}));
    }

    #[tokio::test]
    async fn other_custom_payloads_are_kept_as_custom() {
        for custom in [
            json!({"kind": "handover"}),
            json!({"messenger": "not an object"}),
            json!("plain"),
        ] {
            let out = map_one(json!({"custom": custom})).await;
            assert_eq!(out.text, None);
            assert_eq!(out.data, Some(json!({"custom": custom})));
        }
    }

    #[tokio::test]
    async fn attachments_are_mapped_by_shape() {
        let data = data_of(json!({"attachment": {"type": "video", "payload": {"url": "https://example.com/v.mp4"}}})).await;
        assert_eq!(
            data,
            json!({"attachment": {"type": "video", "url": "https://example.com/v.mp4"}})
        );

        let data = data_of(json!({"attachment": "https://example.com/i.png"})).await;
        assert_eq!(
            data,
            json!({"attachment": {"type": "image", "url": "https://example.com/i.png"}})
        );

        let template =
            json!({"type": "template", "payload": {"template_type": "generic", "elements": []}});
        let data = data_of(json!({"attachment": template})).await;
        assert_eq!(data, json!({"messenger": {"attachment": template}}));
    }

    #[tokio::test]
    async fn nulls_are_treated_as_absent() {
        let out = map_one(json!({"text": "t", "image": null, "buttons": null, "custom": null, "attachment": null})).await;
        assert_eq!(out.text.as_deref(), Some("t"));
        assert_eq!(out.data, None);
    }

    #[tokio::test]
    async fn wrong_shapes_are_malformed() {
        let cases = [
            (json!({"outputs": []}), "not a list"),
            (json!(["hi"]), "message 0: not an object"),
            (
                json!([{"text": "ok"}, {"text": 3}]),
                "message 1: text is not a string",
            ),
            (
                json!([{"image": {"url": "x"}}]),
                "image is not a URL string",
            ),
            (
                json!([{"buttons": {"title": "x"}}]),
                "buttons is not a list",
            ),
            (json!([{"buttons": [{"title": "x"}]}]), "button 0 needs"),
            (json!([{"buttons": [{"payload": "/x"}]}]), "button 0 needs"),
            (
                json!([{"quick_replies": "x"}]),
                "quick_replies is not a list",
            ),
            (
                json!([{"quick_replies": [{"title": "x"}]}]),
                "quick reply 0 needs",
            ),
            (
                json!([{"attachment": {"type": "image"}}]),
                "attachment is neither",
            ),
            (json!([{"attachment": 5}]), "attachment is neither"),
        ];
        for (reply, needle) in cases {
            assert_malformed(run_against(ok(reply)).await, needle);
        }
    }

    #[tokio::test]
    async fn transport_level_errors_match_the_http_flow() {
        match run_against(Reply::Json(503, "[]".into())).await {
            Err(FlowError::Status(503)) => {}
            other => panic!("expected Status(503), got {other:?}"),
        }
        assert_malformed(
            run_against(Reply::Json(200, "not json".into())).await,
            "not JSON",
        );
        let big = format!("[]{}", " ".repeat(1024 * 1024));
        assert_malformed(
            run_against(Reply::Json(200, big)).await,
            "reply larger than 1 MiB",
        );
        assert_malformed(run_against(Reply::Endless).await, "reply larger than 1 MiB");
    }

    #[tokio::test]
    async fn connection_refused_is_transport_without_secrets() {
        let flow = RasaFlow::new(refused_url(), client());
        match flow.run(&endpoint(), &input(Some("hi"))).await {
            Err(FlowError::Transport(reason)) => {
                assert!(
                    !reason.contains("s3cr3t") && !reason.contains("token="),
                    "{reason}"
                );
            }
            other => panic!("expected Transport, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn slow_bot_times_out_promptly() {
        let server = serve(Reply::Slow(Duration::from_secs(30), "[]".to_string())).await;
        let flow = Flow::new(FlowKind::Rasa, Some(&server.url), client());
        let started = Instant::now();
        let result = flow
            .run(&endpoint(), &input(Some("hi")), Duration::from_millis(200))
            .await;
        assert!(matches!(result, Err(FlowError::Timeout(200))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn debug_hides_the_url_query() {
        let flow = RasaFlow::new(
            "http://127.0.0.1:5005/webhooks/rest/webhook?token=s3cr3t".into(),
            client(),
        );
        let debug = format!("{flow:?}");
        assert!(
            debug.contains("/webhooks/rest/webhook") && !debug.contains("s3cr3t"),
            "{debug}"
        );
    }
}
