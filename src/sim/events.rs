//! Builders for webhook bodies shaped like Meta's, for the demo, tests and benchmarks.
//!
//! Each builder returns one `messaging` item from a user (`psid`) to a Page; [`wrap`] puts items into a
//! `{"object":"page","entry":[...]}` body. [`to_meta_bytes`] serialises the way Meta does before signing
//! (escaping non-ASCII, `/`, `<`, `%`, `@`), so receivers are tested against bytes that differ from a
//! re-serialisation of the parsed JSON.

use serde::Serialize;
use serde_json::ser::Formatter;
use serde_json::{json, Value};
use std::io;

fn item(page_id: &str, psid: &str, ts_ms: u64, key: &str, value: Value) -> Value {
    let mut item = json!({
        "sender": { "id": psid },
        "recipient": { "id": page_id },
        "timestamp": ts_ms,
    });
    item[key] = value;
    item
}

pub fn text(page_id: &str, psid: &str, mid: &str, text: &str, ts_ms: u64) -> Value {
    item(
        page_id,
        psid,
        ts_ms,
        "message",
        json!({ "mid": mid, "text": text }),
    )
}

/// A tap on a quick reply: the reply's title as text, its payload under `quick_reply`.
pub fn quick_reply(
    page_id: &str,
    psid: &str,
    mid: &str,
    text: &str,
    payload: &str,
    ts_ms: u64,
) -> Value {
    let message = json!({ "mid": mid, "text": text, "quick_reply": { "payload": payload } });
    item(page_id, psid, ts_ms, "message", message)
}

/// A button tap (also how "Get Started" arrives). The mid is derived from the user and time.
pub fn postback(page_id: &str, psid: &str, title: &str, payload: &str, ts_ms: u64) -> Value {
    let mid = format!("m_postback_{psid}_{ts_ms}");
    let postback = json!({ "mid": mid, "title": title, "payload": payload });
    item(page_id, psid, ts_ms, "postback", postback)
}

pub fn image(page_id: &str, psid: &str, mid: &str, url: &str, ts_ms: u64) -> Value {
    attachment(page_id, psid, mid, "image", url, ts_ms)
}

/// An attachment message of any `kind` (image, audio, video, file, ...).
pub fn attachment(
    page_id: &str,
    psid: &str,
    mid: &str,
    kind: &str,
    url: &str,
    ts_ms: u64,
) -> Value {
    let message =
        json!({ "mid": mid, "attachments": [{ "type": kind, "payload": { "url": url } }] });
    item(page_id, psid, ts_ms, "message", message)
}

/// A sticker: an image attachment plus `sticker_id` (369239263222822 is the thumbs-up "like").
pub fn sticker(
    page_id: &str,
    psid: &str,
    mid: &str,
    sticker_id: u64,
    url: &str,
    ts_ms: u64,
) -> Value {
    let message = json!({
        "mid": mid,
        "sticker_id": sticker_id,
        "attachments": [{ "type": "image", "payload": { "url": url, "sticker_id": sticker_id } }],
    });
    item(page_id, psid, ts_ms, "message", message)
}

/// The echo of a message the Page sent: sender and recipient are swapped.
pub fn echo(page_id: &str, psid: &str, mid: &str, text: &str, app_id: u64, ts_ms: u64) -> Value {
    json!({
        "sender": { "id": page_id },
        "recipient": { "id": psid },
        "timestamp": ts_ms,
        "message": { "mid": mid, "text": text, "is_echo": true, "app_id": app_id },
    })
}

pub fn read(page_id: &str, psid: &str, watermark: u64, ts_ms: u64) -> Value {
    item(
        page_id,
        psid,
        ts_ms,
        "read",
        json!({ "watermark": watermark }),
    )
}

pub fn delivery(page_id: &str, psid: &str, mids: &[&str], watermark: u64, ts_ms: u64) -> Value {
    item(
        page_id,
        psid,
        ts_ms,
        "delivery",
        json!({ "mids": mids, "watermark": watermark }),
    )
}

/// `action` is `react` or `unreact`.
pub fn reaction(
    page_id: &str,
    psid: &str,
    mid: &str,
    reaction: &str,
    emoji: &str,
    action: &str,
    ts_ms: u64,
) -> Value {
    let reaction = json!({ "mid": mid, "action": action, "reaction": reaction, "emoji": emoji });
    item(page_id, psid, ts_ms, "reaction", reaction)
}

pub fn referral(
    page_id: &str,
    psid: &str,
    ref_: &str,
    source: &str,
    kind: &str,
    ts_ms: u64,
) -> Value {
    let referral = json!({ "ref": ref_, "source": source, "type": kind });
    item(page_id, psid, ts_ms, "referral", referral)
}

/// A checkbox-plugin opt-in: there is no sender yet, only a `user_ref` to reply to.
pub fn optin_user_ref(page_id: &str, user_ref: &str, ref_: &str, ts_ms: u64) -> Value {
    json!({
        "recipient": { "id": page_id },
        "timestamp": ts_ms,
        "optin": { "ref": ref_, "user_ref": user_ref },
    })
}

/// A webhook body for one Page: one entry per item, as Meta usually batches, each timed by its item.
pub fn wrap(page_id: &str, items: Vec<Value>) -> Value {
    let entries: Vec<Value> = items
        .into_iter()
        .map(|item| {
            let time = item.get("timestamp").cloned().unwrap_or(json!(0));
            json!({ "id": page_id, "time": time, "messaging": [item] })
        })
        .collect();
    json!({ "object": "page", "entry": entries })
}

/// Serialises like Meta before signing: non-ASCII as `\u00e4` (surrogate pairs beyond the BMP), and `/`,
/// `<`, `%`, `@` escaped.
pub fn to_meta_bytes(body: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, MetaFormatter);
    match body.serialize(&mut ser) {
        Ok(()) => out,
        // Writing a Value into a Vec cannot fail; fall back to the plain form rather than panic.
        Err(_) => body.to_string().into_bytes(),
    }
}

/// Compact JSON (the trait's defaults) with Meta's string escaping.
struct MetaFormatter;

impl Formatter for MetaFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut units = [0u16; 2];
        for ch in fragment.chars() {
            match ch {
                '/' => writer.write_all(b"\\/")?,
                '<' => writer.write_all(b"\\u003C")?,
                '%' => writer.write_all(b"\\u0025")?,
                '@' => writer.write_all(b"\\u0040")?,
                c if c.is_ascii() => writer.write_all(&[c as u8])?,
                c => {
                    for unit in c.encode_utf16(&mut units) {
                        write!(writer, "\\u{unit:04x}")?;
                    }
                }
            }
        }
        Ok(())
    }
}
