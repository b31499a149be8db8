//! Transformer plugins through the real host: the hooks in Rust, Python and JavaScript, the decisions,
//! session storage, hostile plugins, the admin API with hot swap and rollback, and restarts.
//!
//! The components are built by `scripts/build-plugins.sh` (run by the test command) into target/plugins/.

mod common;

use common::*;
use ferry::sim::SimConfig;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ADMIN: &str = "admin-token-for-tests";

fn plugin_path(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/plugins")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh",
        path.display()
    );
    path
}

fn plugin_bytes(name: &str) -> Vec<u8> {
    std::fs::read(plugin_path(name)).unwrap()
}

/// A fresh data directory per test.
fn data_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ferry-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn server_toml(dir: &std::path::Path) -> String {
    format!(
        "data_dir = \"{}\"\nadmin_token = \"{ADMIN}\"",
        dir.display()
    )
}

/// A flow that answers each turn with `seen: <text>` (or `seen: -`), so tests see what the flow saw.
async fn seeing_flow() -> TestFlow {
    TestFlow::start(|req| {
        let text = req
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string();
        (
            200,
            json!({"outputs": [{"text": format!("seen: {text}")}]}).to_string(),
            0,
        )
    })
    .await
}

/// A flow whose output text is the user's text, so output commands of the test guest can be driven
/// (`same-instance` is answered with the output command `counter`).
async fn parrot_flow() -> TestFlow {
    TestFlow::start(|req| {
        let text = match req.get("text").and_then(Value::as_str).unwrap_or("") {
            "same-instance" => "counter".to_string(),
            other => other.to_string(),
        };
        (200, json!({"outputs": [{"text": text}]}).to_string(), 0)
    })
    .await
}

fn users(psids: &[&str]) -> SimConfig {
    sim_config(
        psids
            .iter()
            .map(|p| sim_user(p, &format!("Name{p}")))
            .collect(),
    )
}

struct Setup {
    h: Harness,
    flow: TestFlow,
    dir: PathBuf,
}

/// Host with the plugin named in the config (`transformer` holds extra `[endpoint.transformer]` lines).
async fn with_plugin(plugin: &str, transformer: &str, flow: TestFlow, sim: SimConfig) -> Setup {
    let dir = data_dir();
    let extra = format!(
        "{}\n[endpoint.transformer]\nplugin = \"{}\"\n{transformer}\n",
        quiet_messenger(),
        plugin_path(plugin).display()
    );
    let ep = endpoint_toml(&flow.toml(), &extra);
    let h = Harness::start_with(sim, &server_toml(&dir), &ep).await;
    Setup { h, flow, dir }
}

async fn say(h: &Harness, psid: &str, mid: &str, text: &str, ts: i64) {
    assert_eq!(
        h.post_json(&body(vec![text_event(psid, mid, text, ts)]))
            .await
            .0,
        200
    );
    h.idle().await;
}

async fn admin(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
    body: Vec<u8>,
    token: &str,
) -> (u16, Value) {
    let resp = h
        .http
        .request(
            method,
            format!("{}/admin/endpoints/shop/transformer{path}", h.host.url()),
        )
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

// ── Rust: the example plugin ──────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn rust_example_pseudonymises_tidies_drops_stickers_and_splits_long_texts() {
    let long = "This is a sentence that goes on. ".repeat(20);
    let long_reply = long.clone();
    let flow = TestFlow::start(move |req| {
        let text = req.get("text").and_then(Value::as_str).unwrap_or("");
        let out = if text == "long" {
            long_reply.clone()
        } else {
            format!("seen: {text}")
        };
        (200, json!({"outputs": [{"text": out}]}).to_string(), 0)
    })
    .await;
    let s = with_plugin("rust_privacy", "", flow, users(&["u1"])).await;
    say(&s.h, "u1", "m1", "  hello    there  ", 1).await;
    let reqs = s.flow.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0]["text"], "hello there");
    let user = reqs[0]["userId"].as_str().unwrap();
    assert_eq!(user.len(), 32);
    assert_ne!(user, "u1");
    // Replies still go to the real PSID.
    assert_eq!(s.h.messages()[0].body["recipient"]["id"], "u1");

    // A sticker never reaches the flow.
    let sticker = json!({"sender": {"id": "u1"}, "recipient": {"id": PAGE}, "timestamp": 2,
        "message": {"mid": "m2", "sticker_id": 369239263222822_i64,
        "attachments": [{"type": "image", "payload": {"url": "https://x/like.png", "sticker_id": 369239263222822_i64}}]}});
    assert_eq!(s.h.post_json(&body(vec![sticker])).await.0, 200);
    s.h.idle().await;
    assert_eq!(s.flow.requests().len(), 1);

    // A long answer goes out as several messages, in order, nothing lost.
    s.h.sim.clear_calls();
    say(&s.h, "u1", "m3", "long", 3).await;
    let texts = s.h.texts();
    assert!(texts.len() >= 2, "{texts:?}");
    assert!(texts.iter().all(|t| t.chars().count() <= 300));
    assert_eq!(
        texts.join(" ").split_whitespace().collect::<Vec<_>>(),
        long.split_whitespace().collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

// ── Python: greeting once per session, choices as quick replies ───────────────────────────────────────────

#[tokio::test]
async fn python_example_greets_once_per_session_and_turns_choices_into_quick_replies() {
    let flow = TestFlow::start(|req| {
        let text = req.get("text").and_then(Value::as_str).unwrap_or("");
        let out = if text == "menu" {
            json!({"text": "What would you like?", "data": {"choices": ["Tea", "Coffee"]}})
        } else {
            json!({"text": format!("seen: {text}")})
        };
        (200, json!({ "outputs": [out] }).to_string(), 0)
    })
    .await;
    let s = with_plugin("python_greeter", "", flow, users(&["u1", "u2"])).await;
    say(&s.h, "u1", "m1", "hello", 1).await;
    assert_eq!(s.h.texts(), vec!["Hi Nameu1!", "seen: hello"]);
    say(&s.h, "u1", "m2", "menu", 2).await;
    let messages = s.h.messages();
    assert_eq!(messages.len(), 3, "no second greeting in the same session");
    let menu = &messages[2].body["message"];
    assert_eq!(menu["text"], "What would you like?");
    let titles: Vec<&str> = menu["quick_replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Tea", "Coffee"]);
    // Another user has their own session: greeted too.
    say(&s.h, "u2", "m3", "hi", 3).await;
    assert_eq!(
        s.h.texts()[3..],
        ["Hi Nameu2!".to_string(), "seen: hi".to_string()]
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

// ── JavaScript: transcript to an allow-listed collector ───────────────────────────────────────────────────

#[tokio::test]
async fn javascript_example_posts_the_turn_to_an_allow_listed_collector() {
    let collector = Recorder::start("{}").await;
    let transformer = format!(
        "[endpoint.transformer.settings]\ncollector_url = \"{}/transcripts\"\n[endpoint.transformer.limits]\nallowed_hosts = [\"{}\"]\n",
        collector.origin, collector.origin
    );
    let s = with_plugin(
        "js_transcript",
        &transformer,
        seeing_flow().await,
        users(&["u1"]),
    )
    .await;
    say(&s.h, "u1", "m1", "hello", 1).await;
    let records = collector.requests();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (records[0].0.as_str(), records[0].1.as_str()),
        ("POST", "/transcripts")
    );
    let record: Value = serde_json::from_str(&records[0].2).unwrap();
    let record = &record;
    assert_eq!(record["outcome"], "completed");
    assert_eq!(record["userId"], "u1");
    let text = record.to_string();
    assert!(
        text.contains("hello") && text.contains("seen: hello"),
        "{text}"
    );
    assert!(
        text.contains("m_sim"),
        "the Graph message id is in the record: {text}"
    );
    let _ = std::fs::remove_dir_all(&s.dir);

    // Not allow-listed: the plugin's fetch fails cleanly (an error result, not a trap) and nothing leaves.
    let transformer = format!(
        "[endpoint.transformer.settings]\ncollector_url = \"{}/transcripts\"\n",
        collector.origin
    );
    let s = with_plugin(
        "js_transcript",
        &transformer,
        seeing_flow().await,
        users(&["u1"]),
    )
    .await;
    say(&s.h, "u1", "m1", "hello", 1).await;
    assert_eq!(
        collector.requests().len(),
        1,
        "nothing more reached the collector"
    );
    assert_eq!(
        s.h.texts(),
        vec!["seen: hello"],
        "the turn itself is unaffected"
    );
    let m = s.h.metrics().await;
    assert!(m.contains(r#"ferry_hook_errors_total{endpoint="shop",hook="execution_finished",kind="plugin_error"} 1"#), "{m}");
    assert!(
        m.contains(r#"ferry_hook_errors_total{endpoint="shop",hook="http",kind="http_denied"} 1"#),
        "{m}"
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

// ── Decisions ─────────────────────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn input_decisions_patch_drop_and_reply() {
    let s = with_plugin("test_guest", "", seeing_flow().await, users(&["u1"])).await;
    // A partial patch: text, user id and data replaced, the session id kept.
    say(&s.h, "u1", "m1", "patch", 1).await;
    let reqs = s.flow.requests();
    assert_eq!(reqs[0]["text"], "patched");
    assert_eq!(reqs[0]["userId"], "u2");
    assert_eq!(reqs[0]["data"], json!({"a": 1}));
    assert_eq!(reqs[0]["sessionId"].as_str().unwrap().len(), 32);
    // An empty patch keeps everything.
    say(&s.h, "u1", "m2", "anything", 2).await;
    let reqs = s.flow.requests();
    assert_eq!(reqs[1]["text"], "anything");
    assert_eq!(reqs[1]["userId"], "u1");
    assert!(reqs[1]["data"]["request"].is_object());
    // Drop: no flow, nothing sent.
    let before = s.h.messages().len();
    say(&s.h, "u1", "m3", "drop", 3).await;
    assert_eq!(s.flow.requests().len(), 2);
    assert_eq!(s.h.messages().len(), before);
    // Reply: no flow, the plugin's message is sent.
    say(&s.h, "u1", "m4", "reply", 4).await;
    assert_eq!(s.flow.requests().len(), 2);
    assert_eq!(s.h.texts().last().map(String::as_str), Some("hi"));
    let m = s.h.metrics().await;
    assert!(
        m.contains(r#"ferry_turns_total{endpoint="shop",outcome="dropped"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ferry_turns_total{endpoint="shop",outcome="replied"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ferry_plugin_instantiations_total{endpoint="shop"} 4"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ferry_hook_duration_seconds_count{endpoint="shop",hook="input"} 4"#),
        "{m}"
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test]
async fn output_decisions_skip_replace_and_default() {
    let s = with_plugin("test_guest", "", parrot_flow().await, users(&["u1"])).await;
    say(&s.h, "u1", "m1", "skip", 1).await;
    assert!(s.h.messages().is_empty());
    say(&s.h, "u1", "m2", "send", 2).await;
    assert_eq!(s.h.texts(), vec!["one", "two"]);
    say(&s.h, "u1", "m3", "plain", 3).await;
    assert_eq!(s.h.texts(), vec!["one", "two", "plain"]);
    // The input and output hooks of one turn share an instance (the output hook is its second call), and the
    // next turn starts on a fresh one.
    say(&s.h, "u1", "m4", "same-instance", 4).await;
    say(&s.h, "u1", "m5", "same-instance", 5).await;
    assert_eq!(
        s.h.texts()[3..],
        ["2".to_string(), "2".to_string()],
        "one instance per turn"
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test]
async fn session_storage_is_shared_across_hooks_and_turns_of_a_session_but_not_across_users() {
    let s = with_plugin("test_guest", "", parrot_flow().await, users(&["u1", "u2"])).await;
    say(&s.h, "u1", "m1", r#"storage-set {"k":"v"}"#, 1).await;
    // The finished hook of that turn then stored the turn's sizes; the next input reads them.
    say(&s.h, "u1", "m2", "storage-get", 2).await;
    assert_eq!(s.flow.requests()[1]["text"], r#"{"outputs":1,"sent":1}"#);
    // Input sets, output of the same turn reads.
    say(&s.h, "u1", "m3", r#"storage-set {"n":3}"#, 3).await;
    say(&s.h, "u2", "m4", "storage-get", 4).await;
    assert_eq!(
        s.flow.requests()[3]["text"],
        "none",
        "another user's storage is separate"
    );
    // An invalid value is refused and the plugin is told why.
    say(&s.h, "u2", "m5", "storage-set {oops", 5).await;
    assert!(s.flow.requests()[4]["text"]
        .as_str()
        .unwrap()
        .starts_with("err: value is not valid JSON"));
    let _ = std::fs::remove_dir_all(&s.dir);
}

// ── Hostile plugins ───────────────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn endless_loop_and_memory_bomb_are_stopped_and_the_host_answers_the_next_event() {
    let transformer =
        "[endpoint.transformer.limits]\nhook_timeout_ms = 300\nmemory_bytes = 33554432\n";
    let s = with_plugin(
        "test_guest",
        transformer,
        seeing_flow().await,
        users(&["u1", "u2"]),
    )
    .await;
    say(&s.h, "u1", "m1", "loop", 1).await;
    // The hook failed, so the turn went on as if it did not exist.
    assert_eq!(s.flow.requests()[0]["text"], "loop");
    say(&s.h, "u2", "m2", "bomb", 2).await;
    assert_eq!(s.flow.requests()[1]["text"], "bomb");
    say(&s.h, "u1", "m3", "patch", 3).await;
    assert_eq!(
        s.flow.requests()[2]["text"],
        "patched",
        "the next event runs normally"
    );
    let m = s.h.metrics().await;
    assert!(
        m.contains(r#"ferry_hook_errors_total{endpoint="shop",hook="input",kind="timeout"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ferry_hook_errors_total{endpoint="shop",hook="input",kind="memory"} 1"#),
        "{m}"
    );
    assert_eq!(
        s.h.texts(),
        vec!["seen: loop", "seen: bomb", "seen: patched"]
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test]
async fn outbound_http_is_allow_listed_and_limited_per_turn() {
    let allowed = Recorder::start("hello").await;
    let forbidden = Recorder::start("secret").await;
    let transformer = format!(
        "[endpoint.transformer.limits]\nallowed_hosts = [\"{}\"]\n",
        allowed.origin
    );
    let s = with_plugin(
        "test_guest",
        &transformer,
        seeing_flow().await,
        users(&["u1"]),
    )
    .await;

    say(&s.h, "u1", "m1", &format!("http {}/x", forbidden.origin), 1).await;
    assert_eq!(
        s.flow.requests()[0]["text"],
        "error ErrorCode::HttpRequestDenied"
    );
    // `localhost` is not the allowed 127.0.0.1 origin either.
    let by_name = allowed.origin.replace("127.0.0.1", "localhost");
    say(&s.h, "u1", "m2", &format!("http {by_name}/x"), 2).await;
    assert_eq!(
        s.flow.requests()[1]["text"],
        "error ErrorCode::HttpRequestDenied"
    );
    assert!(
        forbidden.requests().is_empty(),
        "nothing reached the forbidden server"
    );
    assert!(allowed.requests().is_empty());

    say(
        &s.h,
        "u1",
        "m3",
        &format!("http-many 5 {}/x", allowed.origin),
        3,
    )
    .await;
    let text = s.flow.requests()[2]["text"].as_str().unwrap().to_string();
    let outcomes: Vec<&str> = text.split(';').collect();
    assert_eq!(&outcomes[..3], ["status 200 bytes 5"; 3], "{text}");
    assert_eq!(allowed.requests().len(), 3);
    assert_eq!(
        &outcomes[3..],
        ["error ErrorCode::HttpRequestDenied"; 2],
        "{text}"
    );
    let m = s.h.metrics().await;
    assert!(
        m.contains(r#"ferry_hook_errors_total{endpoint="shop",hook="http",kind="http_denied"} 4"#),
        "{m}"
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test]
async fn invalid_and_oversized_returns_are_plugin_errors() {
    let s = with_plugin("test_guest", "", seeing_flow().await, users(&["u1"])).await;
    for (i, command) in [
        "reply-invalid",
        "reply-array",
        "patch-long-user",
        "patch-bad-data",
        "big-reply",
    ]
    .iter()
    .enumerate()
    {
        say(&s.h, "u1", &format!("m{i}"), command, i as i64 + 1).await;
        // Abort on error is off: the flow runs with the host's input.
        assert_eq!(s.flow.requests()[i]["text"], *command);
        assert_eq!(s.flow.requests()[i]["userId"], "u1");
    }
    let m = s.h.metrics().await;
    assert!(
        m.contains(r#"ferry_hook_errors_total{endpoint="shop",hook="input",kind="validation"} 5"#),
        "{m}"
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test]
async fn abort_on_error_drops_the_event_or_the_output() {
    let s = with_plugin(
        "test_guest",
        "abort_on_error = true",
        parrot_flow().await,
        users(&["u1"]),
    )
    .await;
    say(&s.h, "u1", "m1", "err", 1).await;
    assert!(s.flow.requests().is_empty(), "the event is dropped");
    say(&s.h, "u1", "m2", "trap", 2).await;
    assert!(s.flow.requests().is_empty());
    // An output hook failure drops that output.
    say(&s.h, "u1", "m3", "invalid", 3).await;
    assert_eq!(s.flow.requests().len(), 1);
    assert!(s.h.messages().is_empty());
    let m = s.h.metrics().await;
    assert!(
        m.contains(r#"ferry_turns_total{endpoint="shop",outcome="dropped"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(
            r#"ferry_hook_errors_total{endpoint="shop",hook="input",kind="plugin_error"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"ferry_hook_errors_total{endpoint="shop",hook="input",kind="trap"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ferry_hook_errors_total{endpoint="shop",hook="output",kind="validation"} 1"#),
        "{m}"
    );
    let _ = std::fs::remove_dir_all(&s.dir);

    // Off: the same failures leave the turn as if the hook did not exist.
    let s = with_plugin("test_guest", "", parrot_flow().await, users(&["u1"])).await;
    say(&s.h, "u1", "m1", "err", 1).await;
    say(&s.h, "u1", "m2", "invalid", 2).await;
    assert_eq!(s.flow.requests().len(), 2);
    assert_eq!(s.h.texts(), vec!["err", "invalid"]);
    let _ = std::fs::remove_dir_all(&s.dir);
}

// ── Admin API, hot swap, restart ──────────────────────────────────────────────────────────────────────────

async fn plain_host(dir: &std::path::Path, flow: &TestFlow, sim: SimConfig) -> Harness {
    let ep = endpoint_toml(&flow.toml(), quiet_messenger());
    Harness::start_with(sim, &server_toml(dir), &ep).await
}

#[tokio::test]
async fn uploads_are_validated_with_precise_reasons_and_need_the_token() {
    let dir = data_dir();
    let flow = seeing_flow().await;
    let h = plain_host(&dir, &flow, users(&["u1"])).await;
    let put = reqwest::Method::PUT;
    let (status, _) = admin(&h, put.clone(), "", plugin_bytes("test_guest"), "wrong").await;
    assert_eq!(status, 401);
    let (status, body) = admin(&h, put.clone(), "", b"definitely not wasm".to_vec(), ADMIN).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("magic bytes"),
        "{body}"
    );
    let mut truncated = plugin_bytes("test_guest");
    truncated.truncate(truncated.len() / 2);
    let (status, body) = admin(&h, put.clone(), "", truncated, ADMIN).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("truncated"),
        "{body}"
    );
    let (status, body) = admin(&h, put.clone(), "", plugin_bytes("evil_import"), ADMIN).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("evil:x/y"),
        "{body}"
    );
    // A core module is not a component.
    let (status, body) = admin(&h, put.clone(), "", b"\0asm\x01\0\0\0".to_vec(), ADMIN).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("core WebAssembly module"),
        "{body}"
    );
    // Nothing was activated by the failures: events flow untouched.
    say(&h, "u1", "m1", "patch", 1).await;
    assert_eq!(flow.requests()[0]["text"], "patch");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn upload_rollback_delete_and_restart_without_recompiling() {
    let dir = data_dir();
    let flow = seeing_flow().await;
    let h = plain_host(&dir, &flow, users(&["u1"])).await;
    let (status, body) = admin(
        &h,
        reqwest::Method::PUT,
        "",
        plugin_bytes("test_guest"),
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["active"]["hooks"],
        json!(["input", "output", "execution-finished"])
    );
    say(&h, "u1", "m1", "patch", 1).await;
    assert_eq!(flow.requests()[0]["text"], "patched");

    let (status, body) = admin(
        &h,
        reqwest::Method::PUT,
        "",
        plugin_bytes("rust_privacy"),
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["history"].as_array().unwrap().len(), 1);
    say(&h, "u1", "m2", "  spaced   out ", 2).await;
    assert_eq!(flow.requests()[1]["text"], "spaced out");

    let (status, body) = admin(&h, reqwest::Method::POST, "/rollback", vec![], ADMIN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["active"]["hooks"],
        json!(["input", "output", "execution-finished"])
    );
    say(&h, "u1", "m3", "patch", 3).await;
    assert_eq!(flow.requests()[2]["text"], "patched");

    // Restart: the active plugin is loaded from its precompiled artifact.
    let artifacts = |d: &PathBuf| -> Vec<(PathBuf, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(d.join("plugins/artifacts"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path(), e.metadata().unwrap().modified().unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let before = artifacts(&dir);
    assert_eq!(before.len(), 2);
    h.host.stop(Duration::from_secs(5)).await.unwrap();
    let h = plain_host(&dir, &flow, users(&["u1"])).await;
    say(&h, "u1", "m4", "patch", 4).await;
    assert_eq!(
        flow.requests()[3]["text"],
        "patched",
        "the uploaded plugin survived the restart"
    );
    assert_eq!(artifacts(&dir), before, "nothing was recompiled");

    let (status, body) = admin(&h, reqwest::Method::GET, "", vec![], ADMIN).await;
    assert_eq!(status, 200);
    assert_eq!(body["running_sha256"], body["active"]["sha256"]);
    let (status, _) = admin(&h, reqwest::Method::DELETE, "", vec![], ADMIN).await;
    assert_eq!(status, 200);
    say(&h, "u1", "m5", "patch", 5).await;
    assert_eq!(
        flow.requests()[4]["text"],
        "patch",
        "no plugin after DELETE"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn hot_swap_under_load_loses_and_duplicates_nothing() {
    let dir = data_dir();
    let flow = parrot_flow().await;
    let psids: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    let sim = SimConfig {
        accept_unknown_users: true,
        ..sim_config(vec![])
    };
    let h = Arc::new(plain_host(&dir, &flow, sim).await);
    let posted = Arc::new(Mutex::new(Vec::new()));
    let poster = {
        let (h, posted, psids) = (Arc::clone(&h), Arc::clone(&posted), psids.clone());
        tokio::spawn(async move {
            for i in 0..400 {
                let psid = &psids[i % psids.len()];
                let text = format!("msg-{i}");
                let status = h
                    .post_json(&body(vec![text_event(
                        psid,
                        &format!("mid-{i}"),
                        &text,
                        i as i64 + 1,
                    )]))
                    .await
                    .0;
                assert_eq!(status, 200);
                posted.lock().unwrap().push(text);
            }
        })
    };
    let swaps = ["rust_privacy", "test_guest", "rust_privacy", "test_guest"];
    for name in swaps {
        let (status, body) = admin(&h, reqwest::Method::PUT, "", plugin_bytes(name), ADMIN).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    poster.await.unwrap();
    h.idle().await;
    let mut sent = h.texts();
    let mut expected = posted.lock().unwrap().clone();
    sent.sort();
    expected.sort();
    assert_eq!(sent, expected, "every event answered exactly once");
    // Per user, answers stay in order.
    for psid in &psids {
        let mine: Vec<usize> = h
            .messages()
            .iter()
            .filter(|c| c.body["recipient"]["id"] == psid.as_str())
            .map(|c| {
                c.body["message"]["text"].as_str().unwrap()[4..]
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{psid}: {mine:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn disabled_hooks_do_not_run() {
    let s = with_plugin(
        "test_guest",
        "output = false\ninput = false",
        parrot_flow().await,
        users(&["u1"]),
    )
    .await;
    say(&s.h, "u1", "m1", "skip", 1).await;
    assert_eq!(
        s.h.texts(),
        vec!["skip"],
        "the output hook is off, so `skip` is sent"
    );
    say(&s.h, "u1", "m2", "drop", 2).await;
    assert_eq!(
        s.flow.requests().len(),
        2,
        "the input hook is off, so nothing is dropped"
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

// ── The command line: check and run a plugin locally ──────────────────────────────────────────────────────

fn ferry_cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn plugin_check_and_run_work_without_a_page() {
    let rust = plugin_path("rust_privacy");
    let (ok, text) = ferry_cli(&["plugin", "check", rust.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("hooks   input, output"), "{text}");
    assert!(text.contains("ferry:transformer/log@0.1.0"), "{text}");

    let (ok, text) = ferry_cli(&[
        "plugin",
        "check",
        plugin_path("evil_import").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(text.contains("evil:x/y"), "{text}");

    let event = data_dir().with_extension("json");
    std::fs::write(
        &event,
        json!({"input": {"userId": "4242", "sessionId": "s", "text": "  a   b ", "data": {}},
               "messengerEvent": {"sender": {"id": "4242"}, "message": {"mid": "m", "text": "  a   b "}}})
        .to_string(),
    )
    .unwrap();
    let (ok, text) = ferry_cli(&[
        "plugin",
        "run",
        rust.to_str().unwrap(),
        "--hook",
        "input",
        "--event",
        event.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains(r#""text": "a b""#), "{text}");
    assert!(text.contains("peak memory"), "{text}");

    let guest = plugin_path("test_guest");
    let loop_event = data_dir().with_extension("json");
    std::fs::write(&loop_event, json!({"input": {"text": "loop"}}).to_string()).unwrap();
    let (ok, text) = ferry_cli(&[
        "plugin",
        "run",
        guest.to_str().unwrap(),
        "--hook",
        "input",
        "--event",
        loop_event.to_str().unwrap(),
        "--timeout-ms",
        "200",
    ]);
    assert!(!ok);
    assert!(text.contains("[timeout]"), "{text}");
    let _ = std::fs::remove_file(&event);
    let _ = std::fs::remove_file(&loop_event);
}

/// Turns of the test guest straight on a runtime (no server), for the pool's admission rules.
struct Pool {
    plugin: Arc<ferry::transformer::runtime::Plugin>,
    storage: Arc<ferry::transformer::storage::MemorySessionStorage>,
}

impl Pool {
    fn new(instances: u32, busy: usize) -> Pool {
        let wasm = plugin_bytes("test_guest");
        let info = ferry::transformer::inspect::inspect(&wasm).unwrap();
        let runtime = ferry::transformer::Runtime::with_instances(instances, busy).unwrap();
        let plugin = Arc::new(runtime.load_bytes("test_guest", info, &wasm).unwrap());
        Pool {
            plugin,
            storage: Arc::new(ferry::transformer::storage::MemorySessionStorage::new()),
        }
    }

    fn turn(&self, user: &str) -> ferry::transformer::runtime::Turn {
        self.turn_with_timeout(user, 300)
    }

    fn turn_with_timeout(
        &self,
        user: &str,
        hook_timeout_ms: u64,
    ) -> ferry::transformer::runtime::Turn {
        use ferry::transformer::{Level, Limits, LogSink};
        struct NoLog;
        impl LogSink for NoLog {
            fn log(&self, _: Level, _: &str) {}
        }
        self.plugin.turn(ferry::transformer::runtime::TurnContext {
            limits: Arc::new(Limits {
                hook_timeout_ms,
                ..Limits::default()
            }),
            allowed: Arc::new(ferry::transformer::http::AllowList::default()),
            storage: self.storage.clone(),
            key: ferry::transformer::storage::SessionKey {
                endpoint_id: "ep".into(),
                user_id: user.into(),
                session_id: "s".into(),
            },
            log: Arc::new(NoLog),
        })
    }
}

/// Runs the input hook of `turn` on a task of its own, handing the turn back with the decision.
fn input_in_background(
    mut turn: ferry::transformer::runtime::Turn,
    user: &str,
) -> tokio::task::JoinHandle<(
    Result<ferry::transformer::InputDecision, ferry::transformer::HookError>,
    ferry::transformer::runtime::Turn,
)> {
    let event = input_event(user);
    tokio::spawn(async move {
        let decision = turn.input(event).await;
        (decision, turn)
    })
}

fn input_event(user: &str) -> ferry::transformer::InputEvent {
    use ferry::transformer::{EndpointInfo, FlowInput, InputEvent};
    InputEvent {
        endpoint: EndpointInfo {
            id: "ep".into(),
            channel: "messenger".into(),
            page_id: PAGE.into(),
            settings: "{}".into(),
        },
        input: FlowInput {
            user_id: user.into(),
            session_id: "s".into(),
            text: Some("hello".into()),
            data: "{}".into(),
        },
        messenger_event: "{}".into(),
        profile: None,
    }
}

fn forwarded(
    decision: &Result<ferry::transformer::InputDecision, ferry::transformer::HookError>,
) -> bool {
    matches!(decision, Ok(ferry::transformer::InputDecision::Forward(_)))
}

/// Plugin work of all turns shares one task (the lane), so a guest in an endless loop must not hold it: on
/// a runtime with a single thread, turns after it finish while it is still running towards its deadline.
#[tokio::test]
async fn a_turn_in_an_endless_loop_holds_up_no_other_turn() {
    let pool = Pool::new(8, 8);
    let mut looping = pool.turn_with_timeout("u1", 5_000);
    let mut event = input_event("u1");
    event.input.text = Some("loop".into());
    let looping = tokio::spawn(async move { looping.input(event).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    for user in ["u2", "u3", "u4"] {
        let mut turn = pool.turn(user);
        assert!(forwarded(&turn.input(input_event(user)).await));
    }
    assert!(
        !looping.is_finished(),
        "the other turns finished before the loop's deadline"
    );
    let result = looping.await.unwrap();
    assert!(
        matches!(result, Err(ferry::transformer::HookError::Timeout(5_000))),
        "{result:?}"
    );
}

/// A turn whose instance must wait for a free pool slot: the wait is not the plugin's, so it must not
/// count against its hook's time. (Before, a turn that waited longer than `hook_timeout_ms` for one of the
/// 256 slots, all held by turns waiting on a slow flow, failed its hook as a timeout.)
#[tokio::test]
async fn waiting_for_a_free_instance_slot_does_not_count_against_the_hook_time() {
    let pool = Pool::new(1, 1);
    // The first turn takes the only slot and keeps it (as a turn does while its flow runs).
    let mut first = pool.turn("u1");
    assert!(forwarded(&first.input(input_event("u1")).await));
    let waiting = input_in_background(pool.turn("u2"), "u2");
    // Hold the slot for three times the second turn's hook timeout.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        !waiting.is_finished(),
        "the second turn must wait for the slot"
    );
    drop(first);
    let (decision, second) = waiting.await.unwrap();
    assert!(forwarded(&decision), "{decision:?}");
    assert!(second.instantiated());
}

/// The busy limit counts only turns that are working: a turn waiting on its flow or on Meta lets another
/// turn take an instance, and a working turn beyond the limit waits until one finishes or starts waiting.
#[tokio::test]
async fn only_working_turns_count_against_the_busy_limit() {
    let pool = Pool::new(8, 1);
    let mut first = pool.turn("u1");
    assert!(forwarded(&first.input(input_event("u1")).await));
    let second = input_in_background(pool.turn("u2"), "u2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "one working turn fills a busy limit of one"
    );
    // The first turn now waits on its flow: the second may go on.
    first.set_waiting(true);
    let (decision, mut second) = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("a waiting turn must not hold the busy place")
        .unwrap();
    assert!(forwarded(&decision), "{decision:?}");
    // Back from the flow, the first turn goes on without waiting (two are busy now, over the limit), and a
    // third turn waits until both have left.
    first.set_waiting(false);
    assert!(forwarded(&first.input(input_event("u1")).await));
    let third = input_in_background(pool.turn("u3"), "u3");
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "still one busy turn, the limit");
    second.set_waiting(true);
    let (decision, _third) = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the third turn must get the place the second left")
        .unwrap();
    assert!(forwarded(&decision), "{decision:?}");
    drop(second);
}

/// Through the server: with a busy limit of one, turns whose flow is slow still all reach the flow at once.
/// The flow answers each request only when all of them have arrived (or after 8 s, saying so).
#[tokio::test]
async fn turns_waiting_on_a_slow_flow_do_not_hold_back_other_turns_with_a_plugin() {
    const USERS: usize = 6;
    let arrived = Arc::new(tokio::sync::Barrier::new(USERS));
    let app = axum::Router::new().route(
        "/flow",
        axum::routing::post(move |axum::Json(req): axum::Json<Value>| {
            let arrived = Arc::clone(&arrived);
            async move {
                let together = tokio::time::timeout(Duration::from_secs(8), arrived.wait())
                    .await
                    .is_ok();
                let user = req["userId"].as_str().unwrap_or("?").to_string();
                let text = format!("{user} {}", if together { "together" } else { "alone" });
                axum::Json(json!({"outputs": [{"text": text}]}))
            }
        }),
    );
    let listener = listener().await;
    let url = format!("http://{}/flow", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = data_dir();
    let psids: Vec<String> = (0..USERS).map(|i| format!("70{i}")).collect();
    let sim = users(&psids.iter().map(String::as_str).collect::<Vec<_>>());
    let extra = format!(
        "{}\n[endpoint.transformer]\nplugin = \"{}\"\n",
        quiet_messenger(),
        plugin_path("test_guest").display()
    );
    let flow = format!("kind = \"http\"\nurl = \"{url}\"\ntimeout_ms = 20000");
    let h = Harness::start_with(
        sim,
        &format!("{}\nplugin_busy_instances = 1", server_toml(&dir)),
        &endpoint_toml(&flow, &extra),
    )
    .await;
    let events = psids
        .iter()
        .enumerate()
        .map(|(i, p)| text_event(p, &format!("m.slow.{i}"), "hello", 1_000 + i as i64))
        .collect();
    // The setting reached the runtime (else the default of 48 per core would let all six in anyway).
    let store = h.host.app.plugin_store().unwrap();
    assert_eq!(store.runtime().pool_limits(), (256, 1));
    assert_eq!(h.post_json(&body(events)).await.0, 200);
    h.idle().await;
    let mut texts = h.texts();
    texts.sort();
    let expected: Vec<String> = psids.iter().map(|p| format!("{p} together")).collect();
    assert_eq!(texts, expected);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pipeline marks a turn as waiting through `TurnHooks::waiting`: a call that returns within the grace
/// (20 ms) counts as work and keeps the busy place; a longer one lets another turn in while it lasts.
#[tokio::test]
async fn only_calls_longer_than_the_grace_count_as_waiting() {
    use ferry::transformer::hooks::EndpointPlugin;
    use ferry::transformer::storage::SessionKey;
    let pool = Pool::new(8, 1);
    let endpoint = EndpointPlugin::new(
        Arc::from("ep"),
        &ferry::config::TransformerConfig::default(),
        input_event("u1").endpoint,
    );
    endpoint.set(Some(Arc::clone(&pool.plugin)));
    let metrics = Arc::new(ferry::metrics::Metrics::new());
    let key = SessionKey {
        endpoint_id: "ep".into(),
        user_id: "u1".into(),
        session_id: "s".into(),
    };
    let mut hooks = endpoint.begin(&metrics, pool.storage.clone(), key, Vec::new());
    let mut input = input_event("u1").input;
    hooks.input(input_event("u1"), &mut input).await;
    // The first turn holds the only busy place; a second one waits for it through a quick call.
    let second = input_in_background(pool.turn("u2"), "u2");
    hooks
        .waiting(tokio::time::sleep(Duration::from_millis(2)))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "a quick call counts as work");
    // A slow call: the second turn gets the place while it lasts.
    let finished_during_the_call = hooks
        .waiting(async {
            tokio::time::timeout(Duration::from_secs(10), second)
                .await
                .is_ok()
        })
        .await;
    assert!(finished_during_the_call, "a slow call lets another turn in");
}
