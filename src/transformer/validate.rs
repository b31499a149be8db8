//! Checks of plugin results against the contract's limits.

use super::error::HookError;
use super::types::{InputDecision, InputPatch, OutputDecision};

/// Longest user or session id a plugin may set (the reference's limit).
pub const MAX_ID_CHARS: usize = 256;
/// Longest text a plugin may set (the reference's limit).
pub const MAX_TEXT_CHARS: usize = 10_000;
/// Most messages one decision may return, and their total size: a runaway plugin must not flood a user or
/// the Send API.
pub const MAX_MESSAGES: usize = 50;
pub const MAX_MESSAGES_BYTES: usize = 256 * 1024;
/// Largest `data` object a patch may set.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

pub fn input_decision(decision: &InputDecision) -> Result<(), HookError> {
    match decision {
        InputDecision::Forward(patch) => input_patch(patch),
        InputDecision::Drop => Ok(()),
        InputDecision::Reply(messages) => send_api_messages(messages),
    }
}

pub fn output_decision(decision: &OutputDecision) -> Result<(), HookError> {
    match decision {
        OutputDecision::Send(messages) => send_api_messages(messages),
        OutputDecision::SendDefault | OutputDecision::Skip => Ok(()),
    }
}

fn input_patch(patch: &InputPatch) -> Result<(), HookError> {
    if let Some(user_id) = &patch.user_id {
        id("user id", user_id)?;
    }
    if let Some(session_id) = &patch.session_id {
        id("session id", session_id)?;
    }
    if let Some(text) = &patch.text {
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(invalid(format!(
                "text has {chars} characters, the limit is {MAX_TEXT_CHARS}"
            )));
        }
    }
    if let Some(data) = &patch.data {
        if data.len() > MAX_DATA_BYTES {
            return Err(invalid(format!(
                "data is {} bytes, the limit is {MAX_DATA_BYTES}",
                data.len()
            )));
        }
        json_object(data).map_err(|e| invalid(format!("data {e}")))?;
    }
    Ok(())
}

fn id(what: &str, value: &str) -> Result<(), HookError> {
    let chars = value.chars().count();
    if chars == 0 {
        return Err(invalid(format!("{what} is empty")));
    }
    if chars > MAX_ID_CHARS {
        return Err(invalid(format!(
            "{what} has {chars} characters, the limit is {MAX_ID_CHARS}"
        )));
    }
    Ok(())
}

fn send_api_messages(messages: &[String]) -> Result<(), HookError> {
    if messages.len() > MAX_MESSAGES {
        return Err(invalid(format!(
            "{} messages, the limit is {MAX_MESSAGES}",
            messages.len()
        )));
    }
    let bytes: usize = messages.iter().map(String::len).sum();
    if bytes > MAX_MESSAGES_BYTES {
        return Err(invalid(format!(
            "messages total {bytes} bytes, the limit is {MAX_MESSAGES_BYTES}"
        )));
    }
    for (index, message) in messages.iter().enumerate() {
        json_object(message).map_err(|e| invalid(format!("message {index} {e}")))?;
    }
    Ok(())
}

/// Ok if `text` is a JSON object; otherwise says what it is instead.
fn json_object(text: &str) -> Result<(), String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err("is JSON but not an object".to_string()),
        Err(e) => Err(format!("is not valid JSON ({e})")),
    }
}

fn invalid(reason: String) -> HookError {
    HookError::Validation(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<(), HookError>) -> String {
        match result {
            Err(HookError::Validation(reason)) => reason,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_valid_decisions() {
        let patch = InputPatch {
            user_id: Some("u".repeat(MAX_ID_CHARS)),
            text: Some("t".repeat(MAX_TEXT_CHARS)),
            data: Some("{}".into()),
            ..InputPatch::default()
        };
        assert!(input_decision(&InputDecision::Forward(patch)).is_ok());
        assert!(input_decision(&InputDecision::Reply(vec![r#"{"text":"x"}"#.into()])).is_ok());
        assert!(output_decision(&OutputDecision::Skip).is_ok());
    }

    #[test]
    fn rejects_oversized_or_empty_ids_and_text() {
        let long_user = InputPatch {
            user_id: Some("u".repeat(MAX_ID_CHARS + 1)),
            ..InputPatch::default()
        };
        assert!(reason(input_decision(&InputDecision::Forward(long_user))).contains("user id"));
        let empty_session = InputPatch {
            session_id: Some(String::new()),
            ..InputPatch::default()
        };
        assert!(reason(input_patch(&empty_session)).contains("session id is empty"));
        let long_text = InputPatch {
            text: Some("é".repeat(MAX_TEXT_CHARS + 1)),
            ..InputPatch::default()
        };
        assert!(reason(input_patch(&long_text)).contains("text"));
    }

    #[test]
    fn rejects_non_object_json() {
        let data = InputPatch {
            data: Some("[1]".into()),
            ..InputPatch::default()
        };
        assert!(reason(input_patch(&data)).contains("not an object"));
        let send = OutputDecision::Send(vec!["{}".into(), "nope".into()]);
        assert!(reason(output_decision(&send)).contains("message 1"));
    }
}
