//! The built-in echo bot, for demos and tests: no network, deterministic answers.

use super::{FlowError, FlowInput, FlowOutput};
use serde_json::{json, Value};

/// The built-in echo bot. It always answers exactly one output, chosen in this order:
///
/// - text `buttons` (trimmed, any case): the text "Here are some buttons." with `data.buttons` holding a
///   postback button (`{"title":"Say hello","payload":"HELLO"}`) and a URL button
///   (`{"title":"Open example.com","url":"https://example.com"}`);
/// - text `gallery` (trimmed, any case): no text, `data.gallery` holding two cards
///   (`{"title","subtitle","imageUrl","buttons"}`);
/// - any other text: `"You said: <text>"` with `data.quickReplies` "Tell me more" (`MORE`) and "Stop" (`STOP`);
/// - no text (absent or blank) but a non-empty `data.attachments`: `"You sent <n> attachment(s): <types>"`,
///   the types (each attachment's `"type"`, `unknown` when missing) joined by `", "`;
/// - otherwise: `"Hello! Say something and I will echo it."`.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoFlow;

impl EchoFlow {
    pub async fn run(&self, input: &FlowInput) -> Result<Vec<FlowOutput>, FlowError> {
        Ok(vec![answer(input)])
    }
}

fn answer(input: &FlowInput) -> FlowOutput {
    // Blank text comes from events that only carry attachments; treat it as no text.
    let text = input.text.as_deref().filter(|t| !t.trim().is_empty());
    match text {
        Some(t) if is_command(t, "buttons") => buttons_demo(),
        Some(t) if is_command(t, "gallery") => gallery_demo(),
        Some(t) => echo_text(t),
        None => match attachment_types(input) {
            Some(types) => describe_attachments(&types),
            None => greeting(),
        },
    }
}

fn is_command(text: &str, command: &str) -> bool {
    text.trim().eq_ignore_ascii_case(command)
}

fn echo_text(text: &str) -> FlowOutput {
    FlowOutput {
        text: Some(format!("You said: {text}")),
        data: Some(json!({
            "quickReplies": [
                {"title": "Tell me more", "payload": "MORE"},
                {"title": "Stop", "payload": "STOP"}
            ]
        })),
    }
}

fn buttons_demo() -> FlowOutput {
    FlowOutput {
        text: Some("Here are some buttons.".to_string()),
        data: Some(json!({
            "buttons": [
                {"title": "Say hello", "payload": "HELLO"},
                {"title": "Open example.com", "url": "https://example.com"}
            ]
        })),
    }
}

fn gallery_demo() -> FlowOutput {
    FlowOutput {
        text: None,
        data: Some(json!({
            "gallery": [
                {
                    "title": "First card",
                    "subtitle": "The first of two demo cards",
                    "imageUrl": "https://example.com/first.png",
                    "buttons": [{"title": "Pick the first", "payload": "PICK_FIRST"}]
                },
                {
                    "title": "Second card",
                    "subtitle": "The second of two demo cards",
                    "imageUrl": "https://example.com/second.png",
                    "buttons": [{"title": "Open example.com", "url": "https://example.com"}]
                }
            ]
        })),
    }
}

/// The `type` of every attachment in `data.attachments`, or `None` when there are none.
fn attachment_types(input: &FlowInput) -> Option<Vec<&str>> {
    let attachments = input.data.get("attachments")?.as_array()?;
    if attachments.is_empty() {
        return None;
    }
    let types = attachments
        .iter()
        .map(|a| a.get("type").and_then(Value::as_str).unwrap_or("unknown"))
        .collect();
    Some(types)
}

fn describe_attachments(types: &[&str]) -> FlowOutput {
    FlowOutput {
        text: Some(format!(
            "You sent {} attachment(s): {}",
            types.len(),
            types.join(", ")
        )),
        data: None,
    }
}

fn greeting() -> FlowOutput {
    FlowOutput {
        text: Some("Hello! Say something and I will echo it.".to_string()),
        data: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn input(text: Option<&str>, data: Value) -> FlowInput {
        let data: Map<String, Value> = match data {
            Value::Object(map) => map,
            other => panic!("test data must be an object, got {other}"),
        };
        FlowInput {
            user_id: "user-1".to_string(),
            session_id: "session-1".to_string(),
            text: text.map(str::to_string),
            data,
        }
    }

    async fn run_one(input: &FlowInput) -> FlowOutput {
        let mut outputs = EchoFlow.run(input).await.expect("echo never fails");
        assert_eq!(outputs.len(), 1, "echo answers exactly one output");
        outputs.remove(0)
    }

    #[tokio::test]
    async fn text_is_echoed_with_quick_replies() {
        let out = run_one(&input(Some("hi there"), json!({}))).await;
        assert_eq!(out.text.as_deref(), Some("You said: hi there"));
        assert_eq!(
            out.data,
            Some(json!({"quickReplies": [
                {"title": "Tell me more", "payload": "MORE"},
                {"title": "Stop", "payload": "STOP"}
            ]}))
        );
    }

    #[tokio::test]
    async fn text_wins_over_attachments() {
        let data = json!({"attachments": [{"type": "image"}]});
        let out = run_one(&input(Some("look"), data)).await;
        assert_eq!(out.text.as_deref(), Some("You said: look"));
    }

    #[tokio::test]
    async fn attachments_are_counted_and_typed() {
        let data = json!({"attachments": [
            {"type": "image", "payload": {"url": "https://example.com/a.png"}},
            {"type": "audio"},
            {"payload": {}}
        ]});
        let out = run_one(&input(None, data)).await;
        assert_eq!(
            out.text.as_deref(),
            Some("You sent 3 attachment(s): image, audio, unknown")
        );
        assert_eq!(out.data, None);
    }

    #[tokio::test]
    async fn blank_text_with_attachment_counts_attachments() {
        let data = json!({"attachments": [{"type": "file"}]});
        let out = run_one(&input(Some("  "), data)).await;
        assert_eq!(out.text.as_deref(), Some("You sent 1 attachment(s): file"));
    }

    #[tokio::test]
    async fn nothing_gets_the_greeting() {
        let greeting = Some("Hello! Say something and I will echo it.");
        for data in [
            json!({}),
            json!({"attachments": []}),
            json!({"attachments": "not a list"}),
        ] {
            let out = run_one(&input(None, data)).await;
            assert_eq!(out.text.as_deref(), greeting);
            assert_eq!(out.data, None);
        }
        let out = run_one(&input(Some(""), json!({}))).await;
        assert_eq!(out.text.as_deref(), greeting);
    }

    #[tokio::test]
    async fn buttons_command_shows_a_postback_and_a_url_button() {
        let out = run_one(&input(Some(" Buttons "), json!({}))).await;
        assert_eq!(out.text.as_deref(), Some("Here are some buttons."));
        let data = out.data.expect("buttons carry data");
        assert_eq!(
            data["buttons"],
            json!([
                {"title": "Say hello", "payload": "HELLO"},
                {"title": "Open example.com", "url": "https://example.com"}
            ])
        );
    }

    #[tokio::test]
    async fn gallery_command_shows_two_cards() {
        let out = run_one(&input(Some("gallery"), json!({}))).await;
        assert_eq!(out.text, None);
        let data = out.data.expect("gallery carries data");
        let cards = data["gallery"].as_array().expect("gallery is a list");
        assert_eq!(cards.len(), 2);
        for card in cards {
            assert!(card["title"].is_string());
            assert!(card["subtitle"].is_string());
            assert!(card["imageUrl"]
                .as_str()
                .is_some_and(|u| u.starts_with("https://")));
            assert_eq!(card["buttons"].as_array().map(Vec::len), Some(1));
        }
    }
}
