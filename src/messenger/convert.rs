//! Default conversion of one flow output (`{ text?, data? }`) into Send API `message` objects.
//!
//! Each produced value is what goes under `"message"` in a Send API request; the caller adds the recipient
//! and the messaging type and sends them one after the other, in order.
//!
//! # Rules
//!
//! **Text.** The output's `text` is sent as one or more text messages of at most 2000 characters each
//! (characters are Unicode scalar values; a character is never cut in half). A long text is split at the last
//! sentence end (`.`, `!` or `?` followed by a space, or a line break) in the second half of the 2000
//! characters; failing that at the last space; a single word longer than the limit is cut at the limit (but
//! never between an emoji and its modifiers or a letter and its combining accent). Each part is trimmed of
//! surrounding whitespace. A text that is empty or only whitespace sends nothing.
//!
//! **`data`** must be a JSON object when present (`null` counts as absent). Keys other than the ones below are
//! ignored, so flows may keep their own data there. A key whose value is `null` or an empty array counts as
//! absent.
//!
//! - `data.quickReplies`: at most 13 items, each either `{"title", "payload"?, "imageUrl"?}` (a text quick
//!   reply; `payload` defaults to the title) or `{"contentType": "user_phone_number"}` /
//!   `{"contentType": "user_email"}`. They are attached to the last message the output produces (except
//!   `data.messenger`, see below). Titles longer than 20 characters are allowed; Messenger shortens them.
//!   Quick replies need a message to ride on: an output with quick replies and nothing else is an error.
//! - `data.buttons`: at most 3 buttons, each `{"title", "payload"}` (postback), `{"title", "url"}` (opens a web
//!   page) or `{"title", "phone"}` (calls a number). They are sent as a button template whose text is the
//!   output's text. A button template holds at most 640 characters of text: a longer text is sent as plain text
//!   messages first, with its last part (at most 640 characters) in the template. Buttons without text are an
//!   error.
//! - `data.gallery`: at most 10 cards, each `{"title", "subtitle"?, "imageUrl"?, "url"?, "buttons"?}`; `url`
//!   opens when the card is tapped, `buttons` take the same shapes as `data.buttons` (at most 3 per card).
//!   Sent as a generic template after the text.
//! - `data.attachment`: `{"type": "image" | "audio" | "video" | "file", "url"}`, sent after the text and the
//!   gallery.
//! - `data.messenger`: a complete Send API `message` object (a JSON object), sent last exactly as given. Quick
//!   replies are never added to it: they go on the last message before it, and an output with quick replies
//!   and only `data.messenger` is an error.
//!
//! Order of the messages: text parts (or the text parts and the button template), gallery, attachment,
//! messenger.
//!
//! Any malformed field (too many items, a wrong type, a missing title, a button with none or several of
//! `payload`/`url`/`phone`, an unknown attachment type) rejects the whole output with an error naming the
//! field, e.g. `data.quickReplies has 14 items, at most 13`. An output with no text and none of these keys
//! produces no messages.

use serde_json::{json, Map, Value};

/// Longest text message Messenger accepts, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Longest text of a button template, in characters.
pub const MAX_BUTTON_TEMPLATE_TEXT_CHARS: usize = 640;
/// Most quick replies on one message.
pub const MAX_QUICK_REPLIES: usize = 13;
/// Most buttons in a button template or on one gallery card.
pub const MAX_BUTTONS: usize = 3;
/// Most cards in a generic template.
pub const MAX_GALLERY_ELEMENTS: usize = 10;

const ATTACHMENT_TYPES: [&str; 4] = ["image", "audio", "video", "file"];
/// How far a hard cut may move to keep an emoji sequence or an accented letter together.
const MAX_CLUSTER_SHIFT: usize = 16;
/// Longest excerpt of an offending value quoted in an error.
const MAX_QUOTED_CHARS: usize = 40;

/// Why a flow output cannot be converted. Every variant names the offending field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("{field} must be {expected}, got {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{field} has {count} items, at most {max}")]
    TooMany {
        field: String,
        count: usize,
        max: usize,
    },
    #[error("{field} is required")]
    Missing { field: String },
    #[error("{field} must not be empty")]
    Empty { field: String },
    #[error("{field} is {value:?}, expected one of {expected}")]
    UnknownValue {
        field: String,
        value: String,
        expected: &'static str,
    },
    #[error("{field} needs one of payload, url or phone")]
    ButtonWithoutAction { field: String },
    #[error("{field} has more than one of payload, url and phone")]
    ButtonWithSeveralActions { field: String },
    #[error("data.buttons needs the output's text, but the output has no text")]
    ButtonsWithoutText,
    #[error(
        "data.quickReplies needs a text, buttons, gallery or attachment message to attach to, and the output has none"
    )]
    QuickRepliesWithoutMessage,
}

type Result<T> = std::result::Result<T, ConvertError>;

/// Converts one flow output into the Send API `message` objects to send, in order.
pub fn output_to_messages(text: Option<&str>, data: Option<&Value>) -> Result<Vec<Value>> {
    let empty = Map::new();
    let data = match data {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(other) => return Err(wrong_type("data", "an object", other)),
    };
    let text = text.filter(|t| !t.trim().is_empty());

    let quick_replies = quick_replies(data)?;
    let mut messages = match buttons(data, "data")? {
        Some(buttons) => text_with_button_template(text, buttons)?,
        None => text.map(text_messages).unwrap_or_default(),
    };
    messages.extend(gallery(data)?);
    messages.extend(attachment(data)?);
    if let Some(quick_replies) = quick_replies {
        let last = messages
            .last_mut()
            .ok_or(ConvertError::QuickRepliesWithoutMessage)?;
        last["quick_replies"] = Value::Array(quick_replies);
    }
    messages.extend(raw_messenger_message(data)?);
    Ok(messages)
}

/// Splits `text` into trimmed parts of at most `max_chars` characters (Unicode scalar values), preferring
/// sentence ends, then spaces; a word longer than `max_chars` is cut. Empty or blank text gives no parts.
pub fn split_text(text: &str, max_chars: usize) -> Vec<String> {
    let max_chars = max_chars.max(1);
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some(cut) = forward_cut(rest, max_chars) else {
            parts.push(rest.to_owned());
            break;
        };
        let head = rest[..cut].trim_end();
        if !head.is_empty() {
            parts.push(head.to_owned());
        }
        rest = rest[cut..].trim_start();
    }
    parts
}

// ---------------------------------------------------------------------------------------------------------
// Text splitting

#[derive(Clone, Copy, PartialEq, Eq)]
enum Boundary {
    Sentence,
    Space,
}

/// Whether a message may be cut just before `c` (the whitespace itself is trimmed away).
fn boundary_before(prev: Option<char>, c: char) -> Option<Boundary> {
    if !c.is_whitespace() || prev.is_none() {
        return None;
    }
    if c == '\n' || matches!(prev, Some('.' | '!' | '?')) {
        Some(Boundary::Sentence)
    } else {
        Some(Boundary::Space)
    }
}

/// Byte offset at which to cut the head (at most `max` chars) off `text`, or `None` when `text` fits.
/// `text` starts with a non-whitespace char, so the head is never empty.
fn forward_cut(text: &str, max: usize) -> Option<usize> {
    let (limit, _) = text.char_indices().nth(max)?;
    let mut last_sentence = None;
    let mut last_space = None;
    let mut prev = None;
    // Index `max` is included: a space right after the limit is a clean cut.
    for (index, (pos, c)) in text.char_indices().take(max + 1).enumerate() {
        match boundary_before(prev, c) {
            // An early sentence end would waste most of a message; a later space is better then.
            Some(Boundary::Sentence) if index >= max / 2 => last_sentence = Some(pos),
            Some(_) => last_space = Some(pos),
            None => {}
        }
        prev = Some(c);
    }
    Some(
        last_sentence
            .or(last_space)
            .unwrap_or_else(|| cluster_safe_cut_backward(text, limit)),
    )
}

/// Byte offset at which to cut the tail (at most `max` chars) off `text`, or `None` when `text` fits.
/// `text` is trimmed, so neither side is ever empty.
fn backward_cut(text: &str, max: usize) -> Option<usize> {
    let total = text.chars().count();
    if total <= max {
        return None;
    }
    let first_allowed = total - max;
    let mut first_space = None;
    let mut prev = None;
    for (index, (pos, c)) in text.char_indices().enumerate() {
        if index >= first_allowed {
            match boundary_before(prev, c) {
                // Mirror of `forward_cut`: a sentence end counts only if it leaves a reasonably long tail.
                Some(Boundary::Sentence) if total - index >= max / 2 => return Some(pos),
                Some(_) if first_space.is_none() => first_space = Some(pos),
                _ => {}
            }
        }
        prev = Some(c);
    }
    Some(first_space.unwrap_or_else(|| {
        let limit = text
            .char_indices()
            .nth(first_allowed)
            .map_or(text.len(), |(pos, _)| pos);
        cluster_safe_cut_forward(text, limit)
    }))
}

/// Moves a hard cut left until it no longer separates a char from the modifier, joiner or accent after it.
fn cluster_safe_cut_backward(text: &str, limit: usize) -> usize {
    let mut cut = limit;
    for _ in 0..MAX_CLUSTER_SHIFT {
        let Some(prev) = text[..cut].chars().next_back() else {
            return limit;
        };
        if !splits_cluster(text, cut) {
            return cut;
        }
        cut -= prev.len_utf8();
        if cut == 0 {
            return limit;
        }
    }
    limit
}

/// Moves a hard cut right until it no longer separates a char from the modifier, joiner or accent after it.
fn cluster_safe_cut_forward(text: &str, limit: usize) -> usize {
    let mut cut = limit;
    for _ in 0..MAX_CLUSTER_SHIFT {
        let Some(next) = text[cut..].chars().next() else {
            return limit;
        };
        if !splits_cluster(text, cut) {
            return cut;
        }
        cut += next.len_utf8();
        if cut == text.len() {
            return limit;
        }
    }
    limit
}

/// Approximates a grapheme cluster boundary check without a Unicode segmentation table: enough to keep
/// ZWJ emoji sequences, skin tones, variation selectors, keycaps, tags and combining accents together.
fn splits_cluster(text: &str, cut: usize) -> bool {
    let prev = text[..cut].chars().next_back();
    let next = text[cut..].chars().next();
    match (prev, next) {
        (Some(prev), Some(next)) => prev == '\u{200D}' || extends_previous(next),
        _ => false,
    }
}

fn extends_previous(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'      // combining diacritical marks
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}'    // includes the keycap U+20E3
        | '\u{FE00}'..='\u{FE0F}'    // variation selectors
        | '\u{FE20}'..='\u{FE2F}'
        | '\u{200D}'                 // zero width joiner
        | '\u{1F3FB}'..='\u{1F3FF}'  // skin tone modifiers
        | '\u{E0020}'..='\u{E007F}'  // tag characters (subdivision flags)
    )
}

// ---------------------------------------------------------------------------------------------------------
// Message builders

fn text_messages(text: &str) -> Vec<Value> {
    split_text(text, MAX_TEXT_CHARS)
        .into_iter()
        .map(|part| json!({ "text": part }))
        .collect()
}

/// The text as plain messages except its last part of at most 640 chars, which goes into the template.
fn text_with_button_template(text: Option<&str>, buttons: Vec<Value>) -> Result<Vec<Value>> {
    let mut parts = text
        .map(|t| split_text(t, MAX_TEXT_CHARS))
        .unwrap_or_default();
    let last = parts.pop().ok_or(ConvertError::ButtonsWithoutText)?;
    let template_text = match backward_cut(&last, MAX_BUTTON_TEMPLATE_TEXT_CHARS) {
        Some(cut) => {
            parts.push(last[..cut].trim_end().to_owned());
            last[cut..].trim_start().to_owned()
        }
        None => last,
    };
    let mut messages: Vec<Value> = parts
        .into_iter()
        .map(|part| json!({ "text": part }))
        .collect();
    messages.push(template_message(json!({
        "template_type": "button",
        "text": template_text,
        "buttons": buttons,
    })));
    Ok(messages)
}

fn template_message(payload: Value) -> Value {
    json!({ "attachment": { "type": "template", "payload": payload } })
}

fn quick_replies(data: &Map<String, Value>) -> Result<Option<Vec<Value>>> {
    let field = "data.quickReplies";
    let Some(items) = optional_array(data, "quickReplies", "data", MAX_QUICK_REPLIES)? else {
        return Ok(None);
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| quick_reply(item, &format!("{field}[{index}]")))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn quick_reply(item: &Value, field: &str) -> Result<Value> {
    let item = as_object(item, field)?;
    match optional_str(item, "contentType", field)? {
        None | Some("text") => text_quick_reply(item, field),
        Some(kind @ ("user_phone_number" | "user_email")) => Ok(json!({ "content_type": kind })),
        Some(other) => Err(unknown_value(
            &format!("{field}.contentType"),
            other,
            "text, user_phone_number, user_email",
        )),
    }
}

fn text_quick_reply(item: &Map<String, Value>, field: &str) -> Result<Value> {
    let title = required_str(item, "title", field)?;
    let payload = optional_str(item, "payload", field)?.unwrap_or(title);
    let mut reply = json!({ "content_type": "text", "title": title, "payload": payload });
    if let Some(image_url) = optional_str(item, "imageUrl", field)? {
        reply["image_url"] = json!(image_url);
    }
    Ok(reply)
}

/// `data.buttons` or a gallery card's `buttons`; `parent` is the field path of the object holding them.
fn buttons(parent_object: &Map<String, Value>, parent: &str) -> Result<Option<Vec<Value>>> {
    let Some(items) = optional_array(parent_object, "buttons", parent, MAX_BUTTONS)? else {
        return Ok(None);
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| button(item, &format!("{parent}.buttons[{index}]")))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn button(item: &Value, field: &str) -> Result<Value> {
    let item = as_object(item, field)?;
    let title = required_str(item, "title", field)?;
    let payload = optional_str(item, "payload", field)?;
    let url = optional_str(item, "url", field)?;
    let phone = optional_str(item, "phone", field)?;
    match (payload, url, phone) {
        (Some(payload), None, None) => {
            Ok(json!({ "type": "postback", "title": title, "payload": payload }))
        }
        (None, Some(url), None) => Ok(json!({ "type": "web_url", "title": title, "url": url })),
        (None, None, Some(phone)) => {
            Ok(json!({ "type": "phone_number", "title": title, "payload": phone }))
        }
        (None, None, None) => Err(ConvertError::ButtonWithoutAction {
            field: field.to_owned(),
        }),
        _ => Err(ConvertError::ButtonWithSeveralActions {
            field: field.to_owned(),
        }),
    }
}

fn gallery(data: &Map<String, Value>) -> Result<Option<Value>> {
    let Some(items) = optional_array(data, "gallery", "data", MAX_GALLERY_ELEMENTS)? else {
        return Ok(None);
    };
    let elements = items
        .iter()
        .enumerate()
        .map(|(index, item)| gallery_element(item, &format!("data.gallery[{index}]")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(template_message(json!({
        "template_type": "generic",
        "elements": elements,
    }))))
}

fn gallery_element(item: &Value, field: &str) -> Result<Value> {
    let item = as_object(item, field)?;
    let mut element = json!({ "title": required_str(item, "title", field)? });
    if let Some(subtitle) = optional_str(item, "subtitle", field)? {
        element["subtitle"] = json!(subtitle);
    }
    if let Some(image_url) = optional_str(item, "imageUrl", field)? {
        element["image_url"] = json!(image_url);
    }
    if let Some(url) = optional_str(item, "url", field)? {
        element["default_action"] = json!({ "type": "web_url", "url": url });
    }
    if let Some(buttons) = buttons(item, field)? {
        element["buttons"] = Value::Array(buttons);
    }
    Ok(element)
}

fn attachment(data: &Map<String, Value>) -> Result<Option<Value>> {
    let field = "data.attachment";
    let Some(item) = present(data, "attachment") else {
        return Ok(None);
    };
    let item = as_object(item, field)?;
    let kind = required_str(item, "type", field)?;
    if !ATTACHMENT_TYPES.contains(&kind) {
        return Err(unknown_value(
            &format!("{field}.type"),
            kind,
            "image, audio, video, file",
        ));
    }
    let url = required_str(item, "url", field)?;
    Ok(Some(json!({
        "attachment": { "type": kind, "payload": { "url": url, "is_reusable": true } }
    })))
}

fn raw_messenger_message(data: &Map<String, Value>) -> Result<Option<Value>> {
    match present(data, "messenger") {
        None => Ok(None),
        Some(message @ Value::Object(_)) => Ok(Some(message.clone())),
        Some(other) => Err(wrong_type("data.messenger", "an object", other)),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Field access with precise errors

/// The value under `key`, treating `null` as absent.
fn present<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|value| !value.is_null())
}

fn as_object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| wrong_type(field, "an object", value))
}

/// A non-empty array of at most `max` items under `key`; `null` or `[]` count as absent.
fn optional_array<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    parent: &str,
    max: usize,
) -> Result<Option<&'a [Value]>> {
    let field = || format!("{parent}.{key}");
    let Some(value) = present(object, key) else {
        return Ok(None);
    };
    let items = value
        .as_array()
        .ok_or_else(|| wrong_type(&field(), "an array", value))?;
    if items.len() > max {
        return Err(ConvertError::TooMany {
            field: field(),
            count: items.len(),
            max,
        });
    }
    Ok(Some(items.as_slice()).filter(|items| !items.is_empty()))
}

fn optional_str<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    parent: &str,
) -> Result<Option<&'a str>> {
    match present(object, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(&format!("{parent}.{key}"), "a string", other)),
    }
}

fn required_str<'a>(object: &'a Map<String, Value>, key: &str, parent: &str) -> Result<&'a str> {
    let field = || format!("{parent}.{key}");
    match optional_str(object, key, parent)? {
        None => Err(ConvertError::Missing { field: field() }),
        Some(s) if s.trim().is_empty() => Err(ConvertError::Empty { field: field() }),
        Some(s) => Ok(s),
    }
}

fn wrong_type(field: &str, expected: &'static str, found: &Value) -> ConvertError {
    ConvertError::WrongType {
        field: field.to_owned(),
        expected,
        found: json_type_name(found),
    }
}

fn unknown_value(field: &str, value: &str, expected: &'static str) -> ConvertError {
    ConvertError::UnknownValue {
        field: field.to_owned(),
        value: value.chars().take(MAX_QUOTED_CHARS).collect(),
        expected,
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(text: Option<&str>, data: Value) -> Vec<Value> {
        output_to_messages(text, Some(&data)).expect("conversion succeeds")
    }

    fn convert_err(text: Option<&str>, data: Value) -> String {
        output_to_messages(text, Some(&data))
            .expect_err("conversion fails")
            .to_string()
    }

    fn char_count(s: &str) -> usize {
        s.chars().count()
    }

    fn items(n: usize, make: impl Fn(usize) -> Value) -> Value {
        Value::Array((0..n).map(make).collect())
    }

    fn template_payload(message: &Value) -> &Value {
        assert_eq!(message["attachment"]["type"], "template", "{message}");
        &message["attachment"]["payload"]
    }

    // --- split_text -------------------------------------------------------------------------------------

    #[test]
    fn short_text_is_one_trimmed_part() {
        assert_eq!(split_text("  hello there \n", 2000), vec!["hello there"]);
    }

    #[test]
    fn blank_text_gives_no_parts() {
        assert!(split_text("", 2000).is_empty());
        assert!(split_text(" \n\t ", 2000).is_empty());
    }

    #[test]
    fn splits_at_the_last_sentence_end_in_the_window() {
        let text = "One two three. Four five six! Seven eight? Nine ten";
        assert_eq!(
            split_text(text, 30),
            vec!["One two three. Four five six!", "Seven eight? Nine ten"]
        );
    }

    #[test]
    fn splits_at_a_newline_as_a_sentence_end() {
        let text = "first line here\nsecond line goes on and on";
        assert_eq!(
            split_text(text, 30),
            vec!["first line here", "second line goes on and on"]
        );
    }

    #[test]
    fn splits_at_whitespace_when_no_sentence_end_fits() {
        let text = "alpha beta gamma delta epsilon zeta";
        let parts = split_text(text, 12);
        assert_eq!(parts, vec!["alpha beta", "gamma delta", "epsilon zeta"]);
    }

    #[test]
    fn prefers_a_late_space_over_an_early_sentence_end() {
        // The sentence end is in the first half of the window: cutting there would waste the message.
        let text = "Hi. aaaa bbbb cccc dddd eeee ffff";
        let parts = split_text(text, 20);
        assert_eq!(parts[0], "Hi. aaaa bbbb cccc");
        assert_eq!(parts.join(" "), text);
    }

    #[test]
    fn exactly_max_chars_is_one_part_and_one_more_is_two() {
        let exact = "a".repeat(2000);
        assert_eq!(split_text(&exact, 2000), vec![exact.clone()]);

        let words = format!("{} b", "a".repeat(1998));
        assert_eq!(char_count(&words), 2000);
        assert_eq!(split_text(&words, 2000).len(), 1);

        let over = format!("{} bc", "a".repeat(1998));
        assert_eq!(
            split_text(&over, 2000),
            vec!["a".repeat(1998), "bc".to_owned()]
        );
    }

    #[test]
    fn a_space_right_after_the_limit_is_a_clean_cut() {
        let text = format!("{} {}", "a".repeat(2000), "b".repeat(5));
        assert_eq!(
            split_text(&text, 2000),
            vec!["a".repeat(2000), "b".repeat(5)]
        );
    }

    #[test]
    fn one_giant_word_is_cut_hard_at_the_limit() {
        let word = "x".repeat(4500);
        let parts = split_text(&word, 2000);
        let lengths: Vec<usize> = parts.iter().map(|p| char_count(p)).collect();
        assert_eq!(lengths, vec![2000, 2000, 500]);
        assert_eq!(parts.concat(), word);
    }

    #[test]
    fn counts_chars_not_bytes_and_never_splits_inside_a_char() {
        // 'ä' is 2 bytes and '😀' 4 bytes in UTF-8: byte-based limits would cut them in half.
        let umlauts = "ä".repeat(2000);
        assert_eq!(split_text(&umlauts, 2000), vec![umlauts.clone()]);

        let emoji = "😀".repeat(2500);
        let parts = split_text(&emoji, 2000);
        assert_eq!(char_count(&parts[0]), 2000);
        assert_eq!(char_count(&parts[1]), 500);
        assert_eq!(parts.concat(), emoji);

        let mixed = "Grüße 👋🏽 schön. ".repeat(300);
        for part in split_text(&mixed, 2000) {
            assert!(char_count(&part) <= 2000);
            assert!(part.starts_with("Grüße"), "{part:?}");
            assert!(part.ends_with("schön."), "{part:?}");
        }
    }

    #[test]
    fn hard_cut_keeps_emoji_modifiers_and_accents_with_their_base() {
        // Waving hand + skin tone: a cut between the two chars would leave a lone modifier.
        let text = format!("{}👋🏽{}", "x".repeat(9), "y".repeat(10));
        let parts = split_text(&text, 10);
        assert_eq!(parts[0], "x".repeat(9));
        assert!(parts[1].starts_with("👋🏽"));
        assert_eq!(parts.concat(), text);

        // 'e' + combining acute accent.
        let text = format!("{}e\u{301}{}", "x".repeat(9), "y".repeat(10));
        let parts = split_text(&text, 10);
        assert_eq!(parts[0], "x".repeat(9));
        assert!(parts[1].starts_with("e\u{301}"));
    }

    #[test]
    fn whitespace_runs_at_split_points_are_dropped() {
        let text = format!("{}\n\n\n   {}", "a".repeat(10), "b".repeat(10));
        assert_eq!(split_text(&text, 15), vec!["a".repeat(10), "b".repeat(10)]);
    }

    #[test]
    fn every_part_fits_and_no_word_is_lost_in_long_prose() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(120);
        let parts = split_text(&text, MAX_TEXT_CHARS);
        assert!(parts.len() >= 3);
        for part in &parts {
            assert!(char_count(part) <= MAX_TEXT_CHARS);
            assert!(part.ends_with("dog."), "cut mid-sentence: {part:?}");
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        let rejoined: Vec<&str> = parts.iter().flat_map(|p| p.split_whitespace()).collect();
        assert_eq!(rejoined, words);
    }

    #[test]
    fn zero_max_is_treated_as_one() {
        assert_eq!(split_text("ab", 0), vec!["a", "b"]);
    }

    // --- text -------------------------------------------------------------------------------------------

    #[test]
    fn nothing_in_nothing_out() {
        assert!(output_to_messages(None, None).unwrap().is_empty());
        assert!(output_to_messages(Some("   "), None).unwrap().is_empty());
        assert!(output_to_messages(None, Some(&Value::Null))
            .unwrap()
            .is_empty());
        assert!(convert(None, json!({ "myFlowState": { "step": 3 } })).is_empty());
    }

    #[test]
    fn text_becomes_text_messages() {
        assert_eq!(
            output_to_messages(Some("hi"), None).unwrap(),
            vec![json!({ "text": "hi" })]
        );
        let long = "word ".repeat(1000);
        let messages = output_to_messages(Some(&long), None).unwrap();
        assert_eq!(messages.len(), 3);
        assert!(messages.iter().all(|m| m.as_object().unwrap().len() == 1));
    }

    #[test]
    fn unknown_data_keys_and_null_values_are_ignored() {
        let messages = convert(
            Some("hi"),
            json!({ "custom": [1, 2], "buttons": null, "gallery": [], "quickReplies": [] }),
        );
        assert_eq!(messages, vec![json!({ "text": "hi" })]);
    }

    // --- quick replies ----------------------------------------------------------------------------------

    #[test]
    fn quick_replies_of_every_shape() {
        let messages = convert(
            Some("Pick one"),
            json!({ "quickReplies": [
                { "title": "Red", "payload": "COLOR_RED", "imageUrl": "https://example.com/red.png" },
                { "title": "Green" },
                { "contentType": "text", "title": "Blue", "payload": "B" },
                { "contentType": "user_phone_number" },
                { "contentType": "user_email" },
            ] }),
        );
        assert_eq!(
            messages,
            vec![json!({
                "text": "Pick one",
                "quick_replies": [
                    { "content_type": "text", "title": "Red", "payload": "COLOR_RED",
                      "image_url": "https://example.com/red.png" },
                    { "content_type": "text", "title": "Green", "payload": "Green" },
                    { "content_type": "text", "title": "Blue", "payload": "B" },
                    { "content_type": "user_phone_number" },
                    { "content_type": "user_email" },
                ]
            })]
        );
    }

    #[test]
    fn long_quick_reply_titles_are_passed_through() {
        let title = "A title much longer than twenty characters";
        let messages = convert(Some("?"), json!({ "quickReplies": [{ "title": title }] }));
        assert_eq!(messages[0]["quick_replies"][0]["title"], title);
    }

    #[test]
    fn quick_replies_go_on_the_last_part_of_a_long_text() {
        let long = "Sentence number one. ".repeat(200);
        let messages = convert(
            Some(&long),
            json!({ "quickReplies": [{ "title": "More" }] }),
        );
        assert_eq!(messages.len(), 3);
        assert!(messages[..2]
            .iter()
            .all(|m| m.get("quick_replies").is_none()));
        assert_eq!(messages[2]["quick_replies"][0]["title"], "More");
    }

    #[test]
    fn thirteen_quick_replies_pass_and_fourteen_fail() {
        let make = |i| json!({ "title": format!("Option {i}") });
        let messages = convert(Some("?"), json!({ "quickReplies": items(13, make) }));
        assert_eq!(messages[0]["quick_replies"].as_array().unwrap().len(), 13);

        assert_eq!(
            convert_err(Some("?"), json!({ "quickReplies": items(14, make) })),
            "data.quickReplies has 14 items, at most 13"
        );
    }

    #[test]
    fn quick_replies_alone_are_an_error() {
        let data = json!({ "quickReplies": [{ "title": "Yes" }] });
        assert_eq!(
            output_to_messages(None, Some(&data)),
            Err(ConvertError::QuickRepliesWithoutMessage)
        );
        assert_eq!(
            output_to_messages(Some("  "), Some(&data)),
            Err(ConvertError::QuickRepliesWithoutMessage)
        );
    }

    #[test]
    fn quick_reply_errors_name_the_field() {
        let cases = [
            (json!("Yes"), "data.quickReplies must be an array, got a string"),
            (json!(["Yes"]), "data.quickReplies[0] must be an object, got a string"),
            (
                json!([{ "title": "ok" }, { "payload": "P" }]),
                "data.quickReplies[1].title is required",
            ),
            (json!([{ "title": " " }]), "data.quickReplies[0].title must not be empty"),
            (
                json!([{ "title": "A", "payload": 7 }]),
                "data.quickReplies[0].payload must be a string, got a number",
            ),
            (
                json!([{ "title": "A", "imageUrl": {} }]),
                "data.quickReplies[0].imageUrl must be a string, got an object",
            ),
            (
                json!([{ "contentType": "location" }]),
                "data.quickReplies[0].contentType is \"location\", expected one of text, user_phone_number, user_email",
            ),
        ];
        for (quick_replies, reason) in cases {
            assert_eq!(
                convert_err(Some("?"), json!({ "quickReplies": quick_replies })),
                reason
            );
        }
    }

    // --- buttons ----------------------------------------------------------------------------------------

    #[test]
    fn buttons_of_every_shape_make_a_button_template_with_the_text() {
        let messages = convert(
            Some("What now?"),
            json!({ "buttons": [
                { "title": "Start", "payload": "START" },
                { "title": "Website", "url": "https://example.com" },
                { "title": "Call us", "phone": "+15105551234" },
            ] }),
        );
        assert_eq!(
            messages,
            vec![json!({ "attachment": { "type": "template", "payload": {
                "template_type": "button",
                "text": "What now?",
                "buttons": [
                    { "type": "postback", "title": "Start", "payload": "START" },
                    { "type": "web_url", "title": "Website", "url": "https://example.com" },
                    { "type": "phone_number", "title": "Call us", "payload": "+15105551234" },
                ]
            } } })]
        );
    }

    #[test]
    fn three_buttons_pass_and_four_fail() {
        let make = |i| json!({ "title": format!("B{i}"), "payload": format!("P{i}") });
        let messages = convert(Some("?"), json!({ "buttons": items(3, make) }));
        assert_eq!(
            template_payload(&messages[0])["buttons"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            convert_err(Some("?"), json!({ "buttons": items(4, make) })),
            "data.buttons has 4 items, at most 3"
        );
    }

    #[test]
    fn long_text_with_buttons_sends_leading_text_then_a_short_template() {
        let sentence = "This is a sentence of moderate length. ";
        let long = sentence.repeat(80); // about 3100 chars
        let data = json!({ "buttons": [{ "title": "OK", "payload": "OK" }] });
        let messages = convert(Some(&long), data);

        let (template, leading) = messages.split_last().unwrap();
        let template_text = template_payload(template)["text"].as_str().unwrap();
        assert!(char_count(template_text) <= MAX_BUTTON_TEMPLATE_TEXT_CHARS);
        assert!(char_count(template_text) >= MAX_BUTTON_TEMPLATE_TEXT_CHARS / 2);
        assert!(template_text.starts_with("This is"));
        assert!(template_text.ends_with("length."));
        for message in leading {
            let text = message["text"].as_str().unwrap();
            assert!(char_count(text) <= MAX_TEXT_CHARS);
            assert!(text.ends_with("length."));
        }
        let sent: Vec<&str> = leading
            .iter()
            .map(|m| m["text"].as_str().unwrap())
            .chain([template_text])
            .flat_map(str::split_whitespace)
            .collect();
        assert_eq!(sent, long.split_whitespace().collect::<Vec<_>>());
    }

    #[test]
    fn text_between_640_and_2000_chars_is_split_for_the_template() {
        let text = "word ".repeat(200); // 999 chars after trimming
        let messages = convert(
            Some(&text),
            json!({ "buttons": [{ "title": "OK", "payload": "OK" }] }),
        );
        assert_eq!(messages.len(), 2);
        let head = messages[0]["text"].as_str().unwrap();
        let tail = template_payload(&messages[1])["text"].as_str().unwrap();
        assert!(char_count(tail) <= 640);
        assert_eq!(char_count(head) + 1 + char_count(tail), 999);
    }

    #[test]
    fn template_text_of_one_giant_word_is_cut_hard() {
        let word = "z".repeat(700);
        let messages = convert(
            Some(&word),
            json!({ "buttons": [{ "title": "OK", "payload": "OK" }] }),
        );
        assert_eq!(messages[0]["text"], "z".repeat(60));
        assert_eq!(template_payload(&messages[1])["text"], "z".repeat(640));
    }

    #[test]
    fn quick_replies_go_on_the_button_template() {
        let messages = convert(
            Some("Choose"),
            json!({
                "buttons": [{ "title": "A", "payload": "A" }],
                "quickReplies": [{ "title": "Later" }],
            }),
        );
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["quick_replies"][0]["payload"], "Later");
        assert_eq!(template_payload(&messages[0])["template_type"], "button");
    }

    #[test]
    fn buttons_without_text_are_an_error() {
        let data = json!({ "buttons": [{ "title": "A", "payload": "A" }] });
        assert_eq!(
            output_to_messages(None, Some(&data)),
            Err(ConvertError::ButtonsWithoutText)
        );
        assert_eq!(
            convert_err(Some(" \n "), data),
            "data.buttons needs the output's text, but the output has no text"
        );
    }

    #[test]
    fn button_errors_name_the_field() {
        let cases = [
            (
                json!({ "title": "A" }),
                "data.buttons[0] needs one of payload, url or phone",
            ),
            (
                json!("A"),
                "data.buttons[0] must be an object, got a string",
            ),
            (
                json!({ "payload": "A" }),
                "data.buttons[0].title is required",
            ),
            (
                json!({ "title": "A", "url": 5 }),
                "data.buttons[0].url must be a string, got a number",
            ),
            (
                json!({ "title": "A", "phone": ["+1"] }),
                "data.buttons[0].phone must be a string, got an array",
            ),
            (
                json!({ "title": "A", "payload": "P", "url": "https://example.com" }),
                "data.buttons[0] has more than one of payload, url and phone",
            ),
        ];
        for (button, reason) in cases {
            assert_eq!(
                convert_err(Some("?"), json!({ "buttons": [button] })),
                reason
            );
        }
        assert_eq!(
            convert_err(Some("?"), json!({ "buttons": { "title": "A" } })),
            "data.buttons must be an array, got an object"
        );
    }

    // --- gallery ----------------------------------------------------------------------------------------

    #[test]
    fn gallery_becomes_a_generic_template_after_the_text() {
        let messages = convert(
            Some("Our picks"),
            json!({ "gallery": [
                {
                    "title": "Boots",
                    "subtitle": "Waterproof",
                    "imageUrl": "https://example.com/boots.jpg",
                    "url": "https://example.com/boots",
                    "buttons": [
                        { "title": "Buy", "payload": "BUY_BOOTS" },
                        { "title": "Details", "url": "https://example.com/boots/details" },
                    ],
                },
                { "title": "Socks" },
            ] }),
        );
        assert_eq!(
            messages,
            vec![
                json!({ "text": "Our picks" }),
                json!({ "attachment": { "type": "template", "payload": {
                    "template_type": "generic",
                    "elements": [
                        {
                            "title": "Boots",
                            "subtitle": "Waterproof",
                            "image_url": "https://example.com/boots.jpg",
                            "default_action": { "type": "web_url", "url": "https://example.com/boots" },
                            "buttons": [
                                { "type": "postback", "title": "Buy", "payload": "BUY_BOOTS" },
                                { "type": "web_url", "title": "Details",
                                  "url": "https://example.com/boots/details" },
                            ],
                        },
                        { "title": "Socks" },
                    ]
                } } }),
            ]
        );
    }

    #[test]
    fn gallery_without_text_and_with_quick_replies() {
        let messages = convert(
            None,
            json!({
                "gallery": [{ "title": "Only card" }],
                "quickReplies": [{ "title": "Back" }],
            }),
        );
        assert_eq!(messages.len(), 1);
        assert_eq!(template_payload(&messages[0])["template_type"], "generic");
        assert_eq!(messages[0]["quick_replies"][0]["title"], "Back");
    }

    #[test]
    fn ten_gallery_elements_pass_and_eleven_fail() {
        let make = |i| json!({ "title": format!("Card {i}") });
        let messages = convert(None, json!({ "gallery": items(10, make) }));
        assert_eq!(
            template_payload(&messages[0])["elements"]
                .as_array()
                .unwrap()
                .len(),
            10
        );
        assert_eq!(
            convert_err(None, json!({ "gallery": items(11, make) })),
            "data.gallery has 11 items, at most 10"
        );
    }

    #[test]
    fn gallery_errors_name_the_field() {
        let button = json!({ "title": "B", "payload": "P" });
        let cases = [
            (
                json!({ "title": "A" }),
                "data.gallery must be an array, got an object",
            ),
            (
                json!([{ "subtitle": "no title" }]),
                "data.gallery[0].title is required",
            ),
            (
                json!([{ "title": "A" }, { "title": "B", "url": false }]),
                "data.gallery[1].url must be a string, got a boolean",
            ),
            (
                json!([{ "title": "A", "imageUrl": 1 }]),
                "data.gallery[0].imageUrl must be a string, got a number",
            ),
            (
                json!([{ "title": "A", "buttons": [button.clone(), button.clone(), button.clone(), button] }]),
                "data.gallery[0].buttons has 4 items, at most 3",
            ),
            (
                json!([{ "title": "A", "buttons": [{ "title": "B" }] }]),
                "data.gallery[0].buttons[0] needs one of payload, url or phone",
            ),
        ];
        for (gallery, reason) in cases {
            assert_eq!(convert_err(None, json!({ "gallery": gallery })), reason);
        }
    }

    // --- attachment -------------------------------------------------------------------------------------

    #[test]
    fn attachment_of_each_type_comes_after_the_text() {
        for kind in ["image", "audio", "video", "file"] {
            let url = format!("https://example.com/media.{kind}");
            let messages = convert(
                Some("Here it is"),
                json!({ "attachment": { "type": kind, "url": url } }),
            );
            assert_eq!(
                messages,
                vec![
                    json!({ "text": "Here it is" }),
                    json!({ "attachment": { "type": kind,
                        "payload": { "url": url, "is_reusable": true } } }),
                ]
            );
        }
    }

    #[test]
    fn attachment_errors_name_the_field() {
        let cases = [
            (
                json!({ "type": "sticker", "url": "https://example.com/s" }),
                "data.attachment.type is \"sticker\", expected one of image, audio, video, file",
            ),
            (
                json!({ "url": "https://example.com/s" }),
                "data.attachment.type is required",
            ),
            (
                json!({ "type": "image" }),
                "data.attachment.url is required",
            ),
            (
                json!({ "type": "image", "url": 42 }),
                "data.attachment.url must be a string, got a number",
            ),
            (
                json!("https://example.com/a.png"),
                "data.attachment must be an object, got a string",
            ),
        ];
        for (attachment, reason) in cases {
            assert_eq!(
                convert_err(None, json!({ "attachment": attachment })),
                reason
            );
        }
    }

    // --- messenger passthrough --------------------------------------------------------------------------

    #[test]
    fn messenger_message_is_passed_through_untouched() {
        let raw = json!({
            "attachment": { "type": "template", "payload": {
                "template_type": "media", "elements": [{ "media_type": "image", "attachment_id": "123" }]
            } },
            "metadata": "anything",
            "someFutureField": [1, { "deep": true }],
        });
        let messages = convert(None, json!({ "messenger": raw.clone() }));
        assert_eq!(messages, vec![raw]);
    }

    #[test]
    fn messenger_message_must_be_an_object() {
        assert_eq!(
            convert_err(Some("hi"), json!({ "messenger": "text" })),
            "data.messenger must be an object, got a string"
        );
    }

    #[test]
    fn quick_replies_skip_the_messenger_message() {
        let raw = json!({ "text": "raw" });
        let messages = convert(
            Some("cooked"),
            json!({ "messenger": raw.clone(), "quickReplies": [{ "title": "Q" }] }),
        );
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0]["quick_replies"][0]["title"], "Q");
        assert_eq!(messages[1], raw);

        assert_eq!(
            output_to_messages(
                None,
                Some(&json!({ "messenger": raw, "quickReplies": [{ "title": "Q" }] }))
            ),
            Err(ConvertError::QuickRepliesWithoutMessage)
        );
    }

    // --- order and whole-output errors ------------------------------------------------------------------

    #[test]
    fn mixed_output_is_sent_in_order() {
        let messages = convert(
            Some("Hello"),
            json!({
                "messenger": { "text": "raw" },
                "attachment": { "type": "image", "url": "https://example.com/a.png" },
                "gallery": [{ "title": "Card" }],
                "buttons": [{ "title": "Go", "payload": "GO" }],
                "quickReplies": [{ "contentType": "user_email" }],
            }),
        );
        assert_eq!(messages.len(), 4);
        assert_eq!(template_payload(&messages[0])["template_type"], "button");
        assert_eq!(template_payload(&messages[0])["text"], "Hello");
        assert_eq!(template_payload(&messages[1])["template_type"], "generic");
        assert_eq!(messages[2]["attachment"]["type"], "image");
        assert_eq!(
            messages[2]["quick_replies"],
            json!([{ "content_type": "user_email" }])
        );
        assert_eq!(messages[3], json!({ "text": "raw" }));
        assert!(messages[..2]
            .iter()
            .all(|m| m.get("quick_replies").is_none()));
    }

    #[test]
    fn data_that_is_not_an_object_is_an_error() {
        for (data, found) in [
            (json!([1]), "an array"),
            (json!("x"), "a string"),
            (json!(3), "a number"),
        ] {
            assert_eq!(
                convert_err(Some("hi"), data),
                format!("data must be an object, got {found}")
            );
        }
    }

    #[test]
    fn one_bad_field_rejects_the_whole_output() {
        let result = output_to_messages(
            Some("fine text"),
            Some(&json!({
                "gallery": [{ "title": "fine" }],
                "attachment": { "type": "gif", "url": "https://example.com/a.gif" },
            })),
        );
        assert!(
            matches!(result, Err(ConvertError::UnknownValue { ref field, .. }) if field == "data.attachment.type")
        );
    }

    #[test]
    fn quoted_bad_values_are_shortened() {
        let long_type = "t".repeat(500);
        let error = convert_err(
            None,
            json!({ "attachment": { "type": long_type, "url": "u" } }),
        );
        assert!(error.len() < 200, "{error}");
    }
}
