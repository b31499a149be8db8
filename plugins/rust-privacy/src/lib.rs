//! Example Ferry transformer plugin (input and output hooks).
//!
//! - Input: replaces the user id (the Messenger PSID) with a stable pseudonym,
//!   drops stickers and "likes", and tidies the whitespace of the text.
//! - Output: splits long texts into several messages at sentence ends.

wit_bindgen::generate!({
    world: "input-output-transformer",
    path: "../../wit",
    generate_all,
});

use exports::ferry::transformer::input::Guest as InputGuest;
use exports::ferry::transformer::output::Guest as OutputGuest;
use ferry::transformer::log::{log, Level};
use ferry::transformer::types::{
    InputDecision, InputEvent, InputPatch, OutputContext, OutputDecision,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Texts longer than this (in characters) are sent as several messages.
const MAX_MESSAGE_CHARS: usize = 300;

/// Length of the pseudonymous user id, in hex characters (128 bits).
const PSEUDONYM_HEX_CHARS: usize = 32;

struct Component;

impl InputGuest for Component {
    fn handle_input(event: InputEvent) -> Result<InputDecision, String> {
        let raw: Value = serde_json::from_str(&event.messenger_event)
            .map_err(|e| format!("messenger event is not JSON: {e}"))?;
        if is_sticker_or_like(&raw) {
            log(Level::Debug, "dropping a sticker or like");
            return Ok(InputDecision::Drop);
        }
        let text = event
            .input
            .text
            .as_deref()
            .map(collapse_whitespace)
            .filter(|tidy| Some(tidy) != event.input.text.as_ref());
        Ok(InputDecision::Forward(InputPatch {
            user_id: Some(pseudonym(&event.input.user_id)),
            session_id: None,
            text,
            data: None,
        }))
    }
}

impl OutputGuest for Component {
    fn handle_output(context: OutputContext) -> Result<OutputDecision, String> {
        let Some(text) = context.output.text.as_deref() else {
            return Ok(OutputDecision::SendDefault);
        };
        // Only plain text outputs are split: anything with data (quick
        // replies, templates) would lose its structure.
        if context.output.data.is_some() || text.chars().count() <= MAX_MESSAGE_CHARS {
            return Ok(OutputDecision::SendDefault);
        }
        let messages = split_text(text, MAX_MESSAGE_CHARS)
            .into_iter()
            .map(|part| serde_json::json!({ "text": part }).to_string())
            .collect();
        Ok(OutputDecision::Send(messages))
    }
}

/// A deterministic pseudonym for a PSID: the first 128 bits of
/// SHA-256("ferry:" + psid) in hex.
fn pseudonym(psid: &str) -> String {
    let digest = Sha256::digest(format!("ferry:{psid}").as_bytes());
    let mut hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex.truncate(PSEUDONYM_HEX_CHARS);
    hex
}

/// Stickers and the "like" button arrive as messages with a `sticker_id`
/// (on the message or on an image attachment) or an attachment of type
/// "sticker".
fn is_sticker_or_like(event: &Value) -> bool {
    let Some(message) = event.get("message") else {
        return false;
    };
    if message.get("sticker_id").is_some() {
        return true;
    }
    message
        .get("attachments")
        .and_then(Value::as_array)
        .is_some_and(|attachments| {
            attachments.iter().any(|a| {
                a.get("type").and_then(Value::as_str) == Some("sticker")
                    || a.pointer("/payload/sticker_id").is_some()
            })
        })
}

/// Collapses runs of whitespace into one space and trims both ends.
fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits `text` into parts of at most `max` characters, preferring to cut
/// after a sentence end, then after a space, and only then mid-word.
fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while rest.chars().count() > max {
        let cut = cut_position(rest, max);
        let (head, tail) = rest.split_at(cut);
        parts.push(head.trim().to_string());
        rest = tail.trim_start();
    }
    if !rest.is_empty() {
        parts.push(rest.to_string());
    }
    parts
}

/// Byte index at which to cut `text` so that the head has at most `max`
/// characters and is never empty.
fn cut_position(text: &str, max: usize) -> usize {
    let limit = text
        .char_indices()
        .nth(max)
        .map_or(text.len(), |(index, _)| index);
    let window = &text[..limit];
    let sentence_end = window
        .char_indices()
        .filter(|&(i, c)| {
            matches!(c, '.' | '!' | '?' | '…')
                && window[i + c.len_utf8()..]
                    .chars()
                    .next()
                    .is_some_and(char::is_whitespace)
        })
        .map(|(i, c)| i + c.len_utf8())
        .last();
    let space = window.rfind(char::is_whitespace).filter(|&i| i > 0);
    sentence_end.or(space).unwrap_or(limit)
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonym_is_stable_and_short() {
        assert_eq!(pseudonym("123"), pseudonym("123"));
        assert_ne!(pseudonym("123"), pseudonym("124"));
        assert_eq!(pseudonym("123").len(), 32);
    }

    #[test]
    fn splits_at_sentence_ends() {
        let text = "One two three. Four five six. Seven eight nine.";
        assert_eq!(
            split_text(text, 20),
            vec!["One two three.", "Four five six.", "Seven eight nine."]
        );
    }

    #[test]
    fn splits_long_words() {
        let parts = split_text(&"x".repeat(25), 10);
        assert_eq!(parts, vec!["x".repeat(10), "x".repeat(10), "x".repeat(5)]);
    }
}
