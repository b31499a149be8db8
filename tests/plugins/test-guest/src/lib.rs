//! A scriptable transformer plugin for Ferry's runtime tests. The text of the
//! input (or of the flow output) is a command; some commands misbehave on
//! purpose (endless loop, memory bomb, trap, invalid results, HTTP abuse).
//!
//! Input commands: `loop`, `bomb`, `trap`, `err`, `drop`, `reply`,
//! `reply-invalid`, `reply-array`, `patch`, `patch-long-user`,
//! `patch-bad-data`, `big-reply`, `http <url>`, `http-many <n> <url>`,
//! `storage-get`, `storage-set <json>`, `print`, `log-user`, `counter`; anything else
//! forwards an empty patch.
//!
//! Output commands: `skip`, `send`, `invalid`, `loop`, `trap`, `counter`,
//! `storage-get`; anything else is `send-default`.
//!
//! Finished: `err` or `trap` as the first output's text fails; otherwise the
//! summary's sizes are stored in session storage as
//! `{"outputs":n,"sent":m}`.

wit_bindgen::generate!({
    world: "transformer",
    path: "../../../wit",
    generate_all,
});

use exports::ferry::transformer::execution_finished::Guest as FinishedGuest;
use exports::ferry::transformer::input::Guest as InputGuest;
use exports::ferry::transformer::output::Guest as OutputGuest;
use ferry::transformer::log::{log, Level};
use ferry::transformer::session_storage;
use ferry::transformer::types::{
    InputDecision, InputEvent, InputPatch, OutputContext, OutputDecision, TurnSummary,
};
use std::sync::atomic::{AtomicU32, Ordering};

/// Counts hook calls on this instance: proves that the hooks of one turn share
/// an instance and that turns do not.
static CALLS: AtomicU32 = AtomicU32::new(0);

struct Component;

fn forward_text(text: String) -> InputDecision {
    InputDecision::Forward(InputPatch {
        user_id: None,
        session_id: None,
        text: Some(text),
        data: None,
    })
}

fn empty_patch() -> InputPatch {
    InputPatch {
        user_id: None,
        session_id: None,
        text: None,
        data: None,
    }
}

impl InputGuest for Component {
    fn handle_input(event: InputEvent) -> Result<InputDecision, String> {
        let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        let text = event.input.text.unwrap_or_default();
        let (command, argument) = text.split_once(' ').unwrap_or((text.as_str(), ""));
        Ok(match command {
            "loop" => endless_loop(),
            "bomb" => memory_bomb(),
            "trap" => panic!("asked to trap"),
            "err" => return Err("plugin says no".to_string()),
            "drop" => InputDecision::Drop,
            "reply" => InputDecision::Reply(vec![r#"{"text":"hi"}"#.to_string()]),
            "reply-invalid" => InputDecision::Reply(vec!["not json".to_string()]),
            "reply-array" => InputDecision::Reply(vec!["[1]".to_string()]),
            "big-reply" => InputDecision::Reply(vec![format!(
                r#"{{"text":"{}"}}"#,
                "x".repeat(2 * 1024 * 1024)
            )]),
            "patch" => InputDecision::Forward(InputPatch {
                user_id: Some("u2".to_string()),
                session_id: None,
                text: Some("patched".to_string()),
                data: Some(r#"{"a":1}"#.to_string()),
            }),
            "patch-long-user" => InputDecision::Forward(InputPatch {
                user_id: Some("u".repeat(300)),
                ..empty_patch()
            }),
            "patch-bad-data" => InputDecision::Forward(InputPatch {
                data: Some("[1,2]".to_string()),
                ..empty_patch()
            }),
            "http" => forward_text(http_get(argument)),
            "http-many" => {
                let (count, url) = argument.split_once(' ').unwrap_or(("0", ""));
                let count: usize = count.parse().unwrap_or(0);
                let results: Vec<String> = (0..count).map(|_| http_get(url)).collect();
                forward_text(results.join(";"))
            }
            "storage-get" => forward_text(session_storage::get().unwrap_or("none".to_string())),
            "storage-set" => forward_text(match session_storage::set(argument) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("err: {e}"),
            }),
            "log-user" => {
                log(Level::Warn, &format!("user {} wrote {:?}", event.input.user_id, text));
                InputDecision::Forward(empty_patch())
            }
            "print" => {
                println!("to stdout");
                eprintln!("to stderr");
                log(Level::Info, "to log");
                InputDecision::Forward(empty_patch())
            }
            "counter" => forward_text(calls.to_string()),
            _ => InputDecision::Forward(empty_patch()),
        })
    }
}

impl OutputGuest for Component {
    fn handle_output(context: OutputContext) -> Result<OutputDecision, String> {
        let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        let text = context.output.text.unwrap_or_default();
        Ok(match text.as_str() {
            "skip" => OutputDecision::Skip,
            "send" => OutputDecision::Send(vec![
                r#"{"text":"one"}"#.to_string(),
                r#"{"text":"two"}"#.to_string(),
            ]),
            "invalid" => OutputDecision::Send(vec!["{".to_string()]),
            "loop" => endless_loop(),
            "trap" => panic!("asked to trap"),
            "counter" => OutputDecision::Send(vec![format!(r#"{{"text":"{calls}"}}"#)]),
            "storage-get" => {
                let value = session_storage::get().unwrap_or("none".to_string());
                OutputDecision::Send(vec![format!(r#"{{"text":{value:?}}}"#)])
            }
            _ => OutputDecision::SendDefault,
        })
    }
}

impl FinishedGuest for Component {
    fn handle_execution_finished(summary: TurnSummary) -> Result<(), String> {
        let first = summary.outputs.first().and_then(|o| o.text.as_deref());
        match first {
            Some("err") => Err("finished failed".to_string()),
            Some("trap") => panic!("asked to trap"),
            _ => session_storage::set(&format!(
                r#"{{"outputs":{},"sent":{}}}"#,
                summary.outputs.len(),
                summary.sent.len()
            )),
        }
    }
}

fn endless_loop() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn memory_bomb() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
}

/// GETs `url` (`http://host:port/path`) and describes the outcome as
/// `status <code> bytes <n>` or `error <reason>`.
fn http_get(url: &str) -> String {
    match try_http_get(url) {
        Ok((status, bytes)) => format!("status {status} bytes {bytes}"),
        Err(reason) => format!("error {reason}"),
    }
}

fn try_http_get(url: &str) -> Result<(u16, usize), String> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};
    use wasi::io::streams::StreamError;

    let (scheme, rest) = url.split_once("://").ok_or("bad url")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).map_err(|()| "method")?;
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "path")?;

    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response.consume().map_err(|()| "body taken")?;
    let stream = body.stream().map_err(|()| "stream taken")?;
    let mut bytes = 0;
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes += chunk.len(),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("body {}", e.to_debug_string()))
            }
        }
    }
    Ok((status, bytes))
}

export!(Component);
