//! Request decoding: query strings, JSON or form bodies, and redaction of credentials for the call record.

use axum::http::{header, HeaderMap};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub(crate) type Query = BTreeMap<String, String>;

const SECRET_PARAMS: [&str; 2] = ["access_token", "appsecret_proof"];

/// Decodes `a=1&b=x%20y`; a repeated key keeps its last value, as Graph does.
pub(crate) fn parse_query(raw: Option<&str>) -> Query {
    raw.map(decode_pairs)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The body as JSON. Form bodies (Meta's curl examples) become an object whose JSON-looking values are parsed;
/// bodies that are neither stay a string so the record still shows what arrived.
pub(crate) fn parse_body(headers: &HeaderMap, body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    if is_form(headers) {
        return form_to_json(body);
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// The query with credentials replaced by `***`.
pub(crate) fn redact(query: &Query) -> Query {
    let mut out = query.clone();
    for key in SECRET_PARAMS {
        if let Some(v) = out.get_mut(key) {
            *v = "***".to_string();
        }
    }
    out
}

/// Rebuilds a query string, encoding what needs it.
pub(crate) fn encode_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
}

fn form_to_json(body: &[u8]) -> Value {
    let text = String::from_utf8_lossy(body);
    let mut object = Map::new();
    for (key, value) in decode_pairs(&text) {
        let parsed = match value.trim_start().chars().next() {
            Some('{' | '[') => serde_json::from_str(&value).unwrap_or(Value::String(value)),
            _ => Value::String(value),
        };
        object.insert(key, parsed);
    }
    Value::Object(object)
}

fn decode_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

/// Percent-decoding with `+` as space; a malformed escape is kept literally rather than rejected.
fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3).and_then(hex_byte) {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    if !pair.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let s = std::str::from_utf8(pair).ok()?;
    u8::from_str_radix(s, 16).ok()
}

fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
