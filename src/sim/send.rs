//! `POST /{version}/{page_id|me}/messages`: the Send API's validation rules, recipients, faults and replies.

use super::directory::Lookup;
use super::errors::GraphError;
use super::server::{Call, Outcome, Shared};
use super::{CallKind, SimPage};
use serde_json::{json, Map, Value};

const TEXT_MAX_CHARS: usize = 2000;
const QUICK_REPLIES_MAX: usize = 13;
const BUTTONS_MAX: usize = 3;
const GENERIC_ELEMENTS_MAX: usize = 10;
const BUTTON_TEMPLATE_TEXT_MAX_CHARS: usize = 640;
const ELEMENT_TITLE_MAX_CHARS: usize = 80;
const PAYLOAD_MAX_CHARS: usize = 1000;

const MESSAGING_TYPES: [&str; 3] = ["RESPONSE", "UPDATE", "MESSAGE_TAG"];
const TAGS: [&str; 5] = [
    "HUMAN_AGENT",
    "ACCOUNT_UPDATE",
    "CONFIRMED_EVENT_UPDATE",
    "POST_PURCHASE_UPDATE",
    "CUSTOMER_FEEDBACK",
];
const SENDER_ACTIONS: [&str; 5] = ["typing_on", "typing_off", "mark_seen", "react", "unreact"];
const MEDIA_TYPES: [&str; 4] = ["image", "audio", "video", "file"];
const BUTTON_TYPES: [&str; 6] = [
    "web_url",
    "postback",
    "phone_number",
    "account_link",
    "account_unlink",
    "game_play",
];

enum Recipient {
    Id(String),
    /// Guests of the chat plugin and checkbox opt-ins: the emulator accepts them without a directory check.
    UserRef,
    NotificationToken,
}

enum Action {
    Message { tagged: bool },
    SenderAction,
}

struct SendRequest {
    recipient: Recipient,
    action: Action,
}

pub(crate) async fn handle(sim: &Shared, call: &Call<'_>) -> Outcome {
    let mut out = Outcome::new(kind_of(call.body), recipient_label(call.body));
    out.result = deliver(sim, call, &mut out.page_id).await;
    out
}

async fn deliver(
    sim: &Shared,
    call: &Call<'_>,
    page_id: &mut Option<String>,
) -> Result<Value, GraphError> {
    sim.check_version(call)?;
    let page = sim.authenticate(call)?;
    *page_id = Some(page.id.clone());
    if call.node != "me" && call.node != page.id {
        // The token is valid but not for the Page named in the path.
        return Err(GraphError::invalid_token());
    }
    let request = validate(call.body)?;
    check_recipient(sim, page, &request.recipient)?;
    let tagged = matches!(request.action, Action::Message { tagged: true });
    let verdict = sim.decide_faults(tagged);
    if !verdict.delay.is_zero() {
        tokio::time::sleep(verdict.delay).await;
    }
    if let Some(error) = verdict.error {
        return Err(error);
    }
    Ok(success(sim, &request))
}

fn kind_of(body: &Value) -> CallKind {
    let has = |key: &str| body.get(key).is_some_and(|v| !v.is_null());
    if has("sender_action") && !has("message") {
        CallKind::SenderAction
    } else {
        CallKind::Message
    }
}

fn recipient_label(body: &Value) -> Option<String> {
    let recipient = body.get("recipient")?;
    ["id", "user_ref", "notification_messages_token"]
        .iter()
        .find_map(|key| recipient.get(key).and_then(Value::as_str))
        .map(str::to_string)
}

/// Meta omits `recipient_id` when the recipient was a user_ref or a notification token.
fn success(sim: &Shared, request: &SendRequest) -> Value {
    let mut reply = Map::new();
    if let Recipient::Id(id) = &request.recipient {
        reply.insert("recipient_id".into(), json!(id));
    }
    if let Action::Message { .. } = request.action {
        reply.insert("message_id".into(), json!(sim.mint_message_id()));
    }
    Value::Object(reply)
}

fn check_recipient(sim: &Shared, page: &SimPage, recipient: &Recipient) -> Result<(), GraphError> {
    let Recipient::Id(psid) = recipient else {
        // user_refs and notification tokens are opaque; Meta resolves them, the sim cannot.
        return Ok(());
    };
    match sim.dir.lookup(&page.id, psid) {
        Lookup::Known(_) => Ok(()),
        Lookup::Unknown if sim.accept_unknown_users => Ok(()),
        Lookup::Unknown | Lookup::OtherPage => Err(GraphError::person_unavailable()),
    }
}

fn validate(body: &Value) -> Result<SendRequest, GraphError> {
    let obj = body
        .as_object()
        .ok_or_else(|| GraphError::invalid_param("The parameter recipient is required"))?;
    let recipient = validate_recipient(field(obj, "recipient"))?;
    let action = match (field(obj, "message"), field(obj, "sender_action")) {
        (Some(_), Some(_)) => {
            return Err(GraphError::invalid_param(
                "Param sender_action cannot be sent with message",
            ))
        }
        (None, None) => {
            return Err(GraphError::invalid_param(
                "Must send either message or sender_action",
            ))
        }
        (Some(message), None) => {
            let tagged = validate_messaging_type(obj)?;
            validate_message(message)?;
            Action::Message { tagged }
        }
        (None, Some(action)) => {
            validate_sender_action(action, field(obj, "payload"))?;
            Action::SenderAction
        }
    };
    Ok(SendRequest { recipient, action })
}

/// A present, non-null member.
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn validate_recipient(value: Option<&Value>) -> Result<Recipient, GraphError> {
    let obj = value
        .and_then(Value::as_object)
        .ok_or_else(|| GraphError::invalid_param("The parameter recipient is required"))?;
    let given: Vec<(&str, &Value)> = ["id", "user_ref", "notification_messages_token"]
        .into_iter()
        .filter_map(|k| field(obj, k).map(|v| (k, v)))
        .collect();
    let [(key, value)] = given.as_slice() else {
        return Err(GraphError::invalid_param(
            "Param recipient must have exactly one of id, user_ref or notification_messages_token",
        ));
    };
    let text = value
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            GraphError::invalid_param(format!("Param recipient[{key}] must be a non-empty string"))
        })?
        .to_string();
    Ok(match *key {
        "id" => Recipient::Id(text),
        "user_ref" => Recipient::UserRef,
        _ => Recipient::NotificationToken,
    })
}

/// Returns whether the message is tagged (`MESSAGE_TAG`), which lets it out of the 24-hour window.
fn validate_messaging_type(obj: &Map<String, Value>) -> Result<bool, GraphError> {
    let kind = field(obj, "messaging_type")
        .and_then(Value::as_str)
        .ok_or_else(|| GraphError::invalid_param("The parameter messaging_type is required"))?;
    if !MESSAGING_TYPES.contains(&kind) {
        return Err(GraphError::invalid_param(
            "Param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}",
        ));
    }
    if kind != "MESSAGE_TAG" {
        return Ok(false);
    }
    match field(obj, "tag").and_then(Value::as_str) {
        Some(tag) if TAGS.contains(&tag) => Ok(true),
        Some(_) => Err(GraphError::invalid_param(format!(
            "Param tag must be one of {{{}}}",
            TAGS.join(", ")
        ))),
        None => Err(GraphError::invalid_param(
            "The parameter tag is required for messaging_type MESSAGE_TAG",
        )),
    }
}

fn validate_sender_action(action: &Value, payload: Option<&Value>) -> Result<(), GraphError> {
    let action = action
        .as_str()
        .filter(|a| SENDER_ACTIONS.contains(a))
        .ok_or_else(|| {
            GraphError::invalid_param(format!(
                "Param sender_action must be one of {{{}}}",
                SENDER_ACTIONS.join(", ")
            ))
        })?;
    if matches!(action, "react" | "unreact") {
        // A reaction names the message it reacts to; react also names the reaction.
        require_str(payload, "message_id", "payload[message_id]")?;
        if action == "react" {
            require_str(payload, "reaction", "payload[reaction]")?;
        }
    }
    Ok(())
}

fn validate_message(message: &Value) -> Result<(), GraphError> {
    let obj = message
        .as_object()
        .ok_or_else(|| GraphError::invalid_param("Param message must be a JSON object"))?;
    match (field(obj, "text"), field(obj, "attachment")) {
        (Some(_), Some(_)) => {
            return Err(GraphError::invalid_param(
                "Param message must have exactly one of text or attachment",
            ))
        }
        (None, None) => {
            return Err(GraphError::invalid_param(
                "Param message must have text or attachment",
            ))
        }
        (Some(text), None) => validate_text(text)?,
        (None, Some(attachment)) => validate_attachment(attachment)?,
    }
    if let Some(replies) = field(obj, "quick_replies") {
        validate_quick_replies(replies)?;
    }
    if let Some(metadata) = field(obj, "metadata") {
        max_chars(metadata, PAYLOAD_MAX_CHARS, "message[metadata]")?;
    }
    Ok(())
}

fn validate_text(text: &Value) -> Result<(), GraphError> {
    let text = text.as_str().filter(|t| !t.is_empty()).ok_or_else(|| {
        GraphError::invalid_param("Param message[text] must be a non-empty UTF-8 encoded string")
    })?;
    if text.chars().count() > TEXT_MAX_CHARS {
        return Err(GraphError::invalid_param(format!(
            "Length of param message[text] must be less than or equal to {TEXT_MAX_CHARS}"
        )));
    }
    Ok(())
}

fn validate_quick_replies(replies: &Value) -> Result<(), GraphError> {
    let list = replies
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            GraphError::invalid_param("Param message[quick_replies] must be a non-empty array")
        })?;
    if list.len() > QUICK_REPLIES_MAX {
        return Err(GraphError::invalid_param(format!(
            "Param message[quick_replies] must be an array with at most {QUICK_REPLIES_MAX} elements"
        )));
    }
    for (i, reply) in list.iter().enumerate() {
        let at = format!("message[quick_replies][{i}]");
        match reply.get("content_type").and_then(Value::as_str) {
            Some("text") => {
                require_str(Some(reply), "title", &format!("{at}[title]"))?;
                require_str(Some(reply), "payload", &format!("{at}[payload]"))?;
                max_chars(
                    &reply["payload"],
                    PAYLOAD_MAX_CHARS,
                    &format!("{at}[payload]"),
                )?;
            }
            Some("user_phone_number" | "user_email") => {}
            _ => {
                return Err(GraphError::invalid_param(format!(
                "Param {at}[content_type] must be one of {{text, user_phone_number, user_email}}"
            )))
            }
        }
    }
    Ok(())
}

fn validate_attachment(attachment: &Value) -> Result<(), GraphError> {
    let kind = attachment
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let payload = attachment
        .get("payload")
        .filter(|p| p.is_object())
        .ok_or_else(|| {
            GraphError::invalid_param("Param message[attachment][payload] must be a JSON object")
        })?;
    match kind {
        "template" => validate_template(payload),
        media if MEDIA_TYPES.contains(&media) => validate_media(payload),
        _ => Err(GraphError::invalid_param(
            "Param message[attachment][type] must be one of {image, audio, video, file, template}",
        )),
    }
}

fn validate_media(payload: &Value) -> Result<(), GraphError> {
    if payload
        .get("attachment_id")
        .and_then(Value::as_str)
        .is_some()
    {
        return Ok(());
    }
    match payload.get("url").and_then(Value::as_str) {
        Some(url) if is_http_url(url) => Ok(()),
        _ => Err(GraphError::invalid_param(
            "Param message[attachment][payload] must have a valid url or an attachment_id",
        )),
    }
}

fn validate_template(payload: &Value) -> Result<(), GraphError> {
    let at = "message[attachment][payload]";
    match payload.get("template_type").and_then(Value::as_str) {
        Some("button") => {
            require_str(Some(payload), "text", &format!("{at}[text]"))?;
            max_chars(
                &payload["text"],
                BUTTON_TEMPLATE_TEXT_MAX_CHARS,
                &format!("{at}[text]"),
            )?;
            validate_buttons(payload.get("buttons"), 1, &format!("{at}[buttons]"))
        }
        Some("generic") => validate_elements(payload.get("elements"), &format!("{at}[elements]")),
        // Other templates (media, receipt, ...) are passed through unchecked.
        Some(_) => Ok(()),
        None => Err(GraphError::invalid_param(format!(
            "Param {at}[template_type] is required"
        ))),
    }
}

fn validate_elements(elements: Option<&Value>, at: &str) -> Result<(), GraphError> {
    let list = elements
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            GraphError::invalid_param(format!("Param {at} must be a non-empty array"))
        })?;
    if list.len() > GENERIC_ELEMENTS_MAX {
        return Err(GraphError::invalid_param(format!(
            "Param {at} must be an array with at most {GENERIC_ELEMENTS_MAX} elements"
        )));
    }
    for (i, element) in list.iter().enumerate() {
        let here = format!("{at}[{i}]");
        require_str(Some(element), "title", &format!("{here}[title]"))?;
        max_chars(
            &element["title"],
            ELEMENT_TITLE_MAX_CHARS,
            &format!("{here}[title]"),
        )?;
        if let Some(subtitle) = element.get("subtitle").filter(|v| !v.is_null()) {
            max_chars(
                subtitle,
                ELEMENT_TITLE_MAX_CHARS,
                &format!("{here}[subtitle]"),
            )?;
        }
        if let Some(buttons) = element.get("buttons").filter(|v| !v.is_null()) {
            validate_buttons(Some(buttons), 0, &format!("{here}[buttons]"))?;
        }
    }
    Ok(())
}

fn validate_buttons(buttons: Option<&Value>, min: usize, at: &str) -> Result<(), GraphError> {
    let list = buttons
        .and_then(Value::as_array)
        .filter(|l| l.len() >= min)
        .ok_or_else(|| {
            GraphError::invalid_param(format!("Param {at} must be a non-empty array"))
        })?;
    if list.len() > BUTTONS_MAX {
        return Err(GraphError::invalid_param(format!(
            "Param {at} must be an array with at most {BUTTONS_MAX} elements"
        )));
    }
    for (i, button) in list.iter().enumerate() {
        validate_button(button, &format!("{at}[{i}]"))?;
    }
    Ok(())
}

fn validate_button(button: &Value, at: &str) -> Result<(), GraphError> {
    let kind = button
        .get("type")
        .and_then(Value::as_str)
        .filter(|k| BUTTON_TYPES.contains(k))
        .ok_or_else(|| {
            GraphError::invalid_param(format!(
                "Param {at}[type] must be one of {{{}}}",
                BUTTON_TYPES.join(", ")
            ))
        })?;
    let needs: &[&str] = match kind {
        "web_url" => &["title", "url"],
        "postback" | "phone_number" => &["title", "payload"],
        "account_link" => &["url"],
        _ => &[],
    };
    for key in needs {
        require_str(Some(button), key, &format!("{at}[{key}]"))?;
    }
    if let Some(url) = button.get("url").and_then(Value::as_str) {
        if !is_http_url(url) {
            return Err(GraphError::invalid_param(format!(
                "Param {at}[url] must be a valid URL"
            )));
        }
    }
    Ok(())
}

fn require_str(obj: Option<&Value>, key: &str, at: &str) -> Result<(), GraphError> {
    match obj.and_then(|o| o.get(key)).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(()),
        _ => Err(GraphError::invalid_param(format!(
            "Param {at} must be a non-empty string"
        ))),
    }
}

fn max_chars(value: &Value, max: usize, at: &str) -> Result<(), GraphError> {
    let text = value
        .as_str()
        .ok_or_else(|| GraphError::invalid_param(format!("Param {at} must be a string")))?;
    if text.chars().count() > max {
        return Err(GraphError::invalid_param(format!(
            "Length of param {at} must be less than or equal to {max}"
        )));
    }
    Ok(())
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}
