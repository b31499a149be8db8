//! Reliability in one process: retries by Meta's error table, dead letters, the 24-hour window, rate limits,
//! de-duplication across restarts, the inbox bound, and shutdown. The crash test (SIGKILL of a real `ferry
//! serve`) is in `tests/crash.rs`.

mod common;

use common::*;
use ferry::sim::{Fault, Faults};
use serde_json::{json, Value};
use std::time::Duration;

const ADMIN: &str = "admin-secret-token";

fn users() -> ferry::sim::SimConfig {
    sim_config(vec![sim_user("u1", "Ada"), sim_user("u2", "Bob")])
}

/// Quiet messenger settings and fast retries.
fn delivery(extra: &str) -> String {
    format!(
        "{}\n[endpoint.delivery]\nretry_base_ms = 5\nretry_max_ms = 20\n{extra}\n",
        quiet_messenger()
    )
}

fn server_with_admin() -> String {
    format!("admin_token = \"{ADMIN}\"")
}

async fn dead_letters(h: &Harness, query: &str) -> Value {
    let resp = h
        .http
        .get(format!("{}/admin/dead-letters{query}", h.host.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["dead_letters"].clone()
}

fn statuses(h: &Harness) -> Vec<(u16, String)> {
    h.messages()
        .iter()
        .map(|c| {
            let text = c.body.pointer("/message/text").and_then(Value::as_str);
            (c.status, text.unwrap_or("").to_string())
        })
        .collect()
}

#[tokio::test]
async fn retryable_errors_are_retried_and_the_users_messages_keep_their_order() {
    let flow = TestFlow::answering(json!([{"text": "one"}, {"text": "two"}])).await;
    let h = Harness::start_with(
        users(),
        &server_with_admin(),
        &endpoint_toml(&flow.toml(), &delivery("")),
    )
    .await;
    h.sim
        .set_faults(Faults::once([Fault::RateLimit613, Fault::Http500]));
    h.post_json(&body(vec![text_event("u1", "m1", "hi", 1)]))
        .await;
    h.idle().await;
    // "one" failed twice (613, then HTTP 500) and went on the third attempt; "two" waited behind it.
    assert_eq!(
        statuses(&h),
        vec![
            (400, "one".to_string()),
            (500, "one".to_string()),
            (200, "one".to_string()),
            (200, "two".to_string())
        ]
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("ferry_send_retries_total{endpoint=\"shop\"} 2"),
        "{metrics}"
    );
    assert!(!metrics.contains("ferry_dead_letters_total{"), "{metrics}");
    assert_eq!(dead_letters(&h, "").await, json!([]));
}

#[tokio::test]
async fn permanent_errors_and_exhausted_retries_are_dead_lettered_and_later_messages_still_go() {
    let flow =
        TestFlow::answering(json!([{"text": "one"}, {"text": "two"}, {"text": "three"}])).await;
    let h = Harness::start_with(
        users(),
        &server_with_admin(),
        &endpoint_toml(&flow.toml(), &delivery("max_attempts = 2")),
    )
    .await;
    // "one": 551 (never retried). "two": 500 twice = both attempts. "three": delivered.
    h.sim.set_faults(Faults::once([
        Fault::PersonUnavailable,
        Fault::Http500,
        Fault::Http500,
    ]));
    h.post_json(&body(vec![text_event("u1", "m1", "hi", 1)]))
        .await;
    h.idle().await;
    assert_eq!(
        statuses(&h),
        vec![
            (400, "one".to_string()),
            (500, "two".to_string()),
            (500, "two".to_string()),
            (200, "three".to_string())
        ]
    );
    let letters = dead_letters(&h, "?endpoint=shop").await;
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    // Newest first.
    assert_eq!(letters[0]["reason"], "retries_exhausted");
    assert_eq!(letters[0]["message"]["message"]["text"], "two");
    assert_eq!(letters[1]["reason"], "permanent_error");
    assert_eq!(letters[1]["message"]["message"]["text"], "one");
    assert!(letters[1]["error"].as_str().unwrap().contains("551"));
    assert_eq!(letters[1]["user_id"], "u1");
    for letter in letters {
        assert!(!letter.to_string().contains(PAGE_TOKEN), "{letter}");
    }
    let metrics = h.metrics().await;
    for reason in ["permanent_error", "retries_exhausted"] {
        assert!(
            metrics.contains(&format!(
                "ferry_dead_letters_total{{endpoint=\"shop\",reason=\"{reason}\"}} 1"
            )),
            "{metrics}"
        );
    }
    // The transcript says which message was never delivered.
    let db = &h.host.app.core.db;
    let contact = db
        .contact_of(PAGE, "u1")
        .unwrap()
        .expect("u1 has a contact");
    let transcript_ids: Vec<Value> = db
        .transcript(&contact)
        .unwrap()
        .iter()
        .flat_map(|t| t["sent"].as_array().cloned().unwrap_or_default())
        .map(|s| s["message_id"].clone())
        .collect();
    assert_eq!(transcript_ids.len(), 3);
    assert!(transcript_ids[0].is_null() && transcript_ids[1].is_null());
    assert!(transcript_ids[2].is_string());

    // The admin API guards dead letters like everything else.
    let denied = h
        .http
        .get(format!("{}/admin/dead-letters", h.host.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let unknown = h
        .http
        .get(format!("{}/admin/dead-letters?endpoint=nope", h.host.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn outside_the_window_a_message_is_tagged_when_configured_else_dead_lettered() {
    let flow = TestFlow::answering(json!([{"text": "late"}])).await;
    // Without a tag: dead letter "outside_window", no second call.
    let h = Harness::start_with(
        users(),
        &server_with_admin(),
        &endpoint_toml(&flow.toml(), &delivery("")),
    )
    .await;
    h.sim.set_faults(Faults::once([Fault::OutsideWindow]));
    h.post_json(&body(vec![text_event("u1", "m1", "hi", 1)]))
        .await;
    h.idle().await;
    assert_eq!(h.messages().len(), 1);
    let letters = dead_letters(&h, "").await;
    assert_eq!(letters[0]["reason"], "outside_window");

    // With a tag: sent again as MESSAGE_TAG with it, and delivered.
    let h = Harness::start_with(
        users(),
        &server_with_admin(),
        &endpoint_toml(
            &flow.toml(),
            &delivery("outside_window_tag = \"HUMAN_AGENT\""),
        ),
    )
    .await;
    h.sim.set_faults(Faults::once([Fault::OutsideWindow]));
    h.post_json(&body(vec![text_event("u1", "m1", "hi", 1)]))
        .await;
    h.idle().await;
    let calls = h.messages();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].body["messaging_type"], "RESPONSE");
    assert_eq!(calls[1].body["messaging_type"], "MESSAGE_TAG");
    assert_eq!(calls[1].body["tag"], "HUMAN_AGENT");
    assert_eq!(calls[1].status, 200);
    assert_eq!(dead_letters(&h, "").await, json!([]));
}

#[tokio::test]
async fn a_bad_outside_window_tag_is_a_config_error() {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}",
        endpoint_toml(
            "kind = \"echo\"",
            "[endpoint.delivery]\noutside_window_tag = \"PROMOTION\""
        )
    );
    let err = ferry::config::Config::parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("outside_window_tag") && err.contains("HUMAN_AGENT"),
        "{err}"
    );
    let text = "[server]\ndedup_hours = 12\n";
    let err = ferry::config::Config::parse(text).unwrap_err().to_string();
    assert!(err.contains("dedup_hours") && err.contains("48"), "{err}");
}

#[tokio::test]
async fn the_page_rate_limit_spaces_send_api_calls() {
    let outputs: Vec<Value> = (0..12).map(|i| json!({"text": format!("m{i}")})).collect();
    let flow = TestFlow::answering(Value::Array(outputs)).await;
    let h = Harness::start(
        users(),
        &endpoint_toml(&flow.toml(), &delivery("text_per_second = 5")),
    )
    .await;
    h.post_json(&body(vec![text_event("u1", "m1", "hi", 1)]))
        .await;
    h.idle().await;
    let calls = h.messages();
    assert_eq!(calls.len(), 12);
    // A burst of 5 (one second's worth), then one every 200 ms: 7 more take at least 1.4 s.
    let span = calls[11].at_ms - calls[0].at_ms;
    assert!(span >= 1_300.0, "12 calls within {span} ms at 5/s");
    let texts: Vec<String> = h.texts();
    let expected: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
}

#[tokio::test]
async fn redelivered_events_run_once_even_after_a_restart() {
    let flow = TestFlow::answering(json!([{"text": "ok"}])).await;
    let dir = temp_dir();
    let server = format!("data_dir = \"{}\"", dir.display());
    let ep = endpoint_toml(&flow.toml(), quiet_messenger());
    let h = Harness::start_with(users(), &server, &ep).await;
    // The same message twice in one body, again in a second call, and a read event twice.
    let first = body(vec![
        text_event("u1", "m1", "hello", 1),
        text_event("u1", "m1", "hello", 1),
    ]);
    assert_eq!(h.post_json(&first).await.0, 200);
    assert_eq!(h.post_json(&first).await.0, 200);
    h.idle().await;
    assert_eq!(flow.requests().len(), 1);
    assert_eq!(h.texts(), vec!["ok"]);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("ferry_events_duplicate_total{endpoint=\"shop\"} 3"),
        "{metrics}"
    );
    h.host.stop(Duration::from_secs(5)).await.unwrap();

    // A new process on the same data directory still knows m1.
    let h = Harness::start_with(users(), &server, &ep).await;
    assert_eq!(h.post_json(&first).await.0, 200);
    assert_eq!(
        h.post_json(&body(vec![text_event("u1", "m2", "again", 2)]))
            .await
            .0,
        200
    );
    h.idle().await;
    let texts: Vec<String> = flow
        .requests()
        .iter()
        .map(|r| r["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(texts, vec!["hello", "again"]);
}

#[tokio::test]
async fn non_message_events_are_deduplicated_by_user_kind_and_watermark() {
    let flow = TestFlow::answering(json!([])).await;
    let ep = endpoint_toml(
        &flow.toml(),
        &format!(
            "{}flow_events = [\"message\", \"read\", \"referral\"]\n",
            quiet_messenger()
        ),
    );
    let h = Harness::start(users(), &ep).await;
    let read = |user: &str, watermark: i64| json!({"sender": {"id": user}, "recipient": {"id": PAGE}, "timestamp": 9, "read": {"watermark": watermark}});
    let referral = json!({"sender": {"id": "u1"}, "recipient": {"id": PAGE}, "timestamp": 10, "referral": {"ref": "ad", "source": "ADS", "type": "OPEN_THREAD"}});
    h.post_json(&body(vec![read("u1", 77), read("u1", 77), read("u2", 77)]))
        .await;
    h.post_json(&body(vec![referral.clone(), read("u1", 78)]))
        .await;
    h.post_json(&body(vec![referral])).await;
    h.idle().await;
    // u1 read 77, u2 read 77, the referral, u1 read 78: four events, each once.
    assert_eq!(flow.requests().len(), 4);
}

#[tokio::test]
async fn a_full_inbox_answers_503_and_what_was_refused_is_accepted_on_redelivery() {
    // The flow takes 1.5 s, so the first event holds its place in the inbox while the others arrive.
    let flow =
        TestFlow::start(|_| (200, json!({"outputs": [{"text": "ok"}]}).to_string(), 1_500)).await;
    let h = Harness::start_with(
        users(),
        "max_inbox_events = 2",
        &endpoint_toml(&flow.toml(), quiet_messenger()),
    )
    .await;
    let one = h
        .post_json(&body(vec![text_event("u1", "m1", "a", 1)]))
        .await;
    let two = h
        .post_json(&body(vec![text_event("u2", "m2", "b", 2)]))
        .await;
    let three = h
        .post_json(&body(vec![text_event("u1", "m3", "c", 3)]))
        .await;
    assert_eq!((one.0, two.0), (200, 200));
    assert_eq!(three.0, 503, "{three:?}");
    h.idle().await;
    // Meta redelivers the refused call; now there is room.
    let again = h
        .post_json(&body(vec![text_event("u1", "m3", "c", 3)]))
        .await;
    assert_eq!(again.0, 200);
    h.idle().await;
    let mut texts: Vec<String> = flow
        .requests()
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    texts.sort();
    assert_eq!(texts, vec!["a", "b", "c"]);
}

#[tokio::test]
async fn at_shutdown_turns_in_flight_finish_and_waiting_events_run_at_the_next_start() {
    let flow =
        TestFlow::start(|_| (200, json!({"outputs": [{"text": "ok"}]}).to_string(), 500)).await;
    let dir = temp_dir();
    let server = format!("data_dir = \"{}\"", dir.display());
    let ep = endpoint_toml(&flow.toml(), quiet_messenger());
    let h = Harness::start_with(users(), &server, &ep).await;
    // One user, three events: the first runs, the other two wait behind it.
    h.post_json(&body(vec![
        text_event("u1", "m1", "first", 1),
        text_event("u1", "m2", "second", 2),
        text_event("u1", "m3", "third", 3),
    ]))
    .await;
    while flow.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let Harness { sim, host, .. } = h;
    host.stop(Duration::from_secs(5)).await.unwrap();
    // The turn in flight finished (its message went out); the two waiting ones did not start.
    assert_eq!(flow.requests().len(), 1);
    let sent = sim
        .calls()
        .iter()
        .filter(|c| c.body.get("message").is_some())
        .count();
    assert_eq!(sent, 1);
    drop(sim);

    let h = Harness::start_with(users(), &server, &ep).await;
    h.idle().await;
    let texts: Vec<String> = flow
        .requests()
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, vec!["first", "second", "third"]);
    assert_eq!(h.texts(), vec!["ok", "ok"]);
}

#[tokio::test]
async fn with_little_memory_events_wait_on_disk_and_keep_per_user_order() {
    // Three turns in memory at most: the other events wait in the inbox file and are loaded as turns end.
    let flow = TestFlow::start(|req| {
        let text = req["text"].as_str().unwrap_or("").to_string();
        (200, json!({"outputs": [{"text": text}]}).to_string(), 20)
    })
    .await;
    let h = Harness::start_with(
        users(),
        "max_pending_events = 3",
        &endpoint_toml(&flow.toml(), quiet_messenger()),
    )
    .await;
    for i in 0..20 {
        let items = vec![
            text_event("u1", &format!("a{i}"), &format!("u1-{i}"), i),
            text_event("u2", &format!("b{i}"), &format!("u2-{i}"), i),
        ];
        assert_eq!(h.post_json(&body(items)).await.0, 200);
    }
    h.idle().await;
    for user in ["u1", "u2"] {
        let got: Vec<String> = h
            .messages()
            .iter()
            .filter(|c| c.body["recipient"]["id"] == user)
            .map(|c| c.body["message"]["text"].as_str().unwrap().to_string())
            .collect();
        let expected: Vec<String> = (0..20).map(|i| format!("{user}-{i}")).collect();
        assert_eq!(got, expected);
    }
    assert_eq!(h.host.app.core.journal.waiting(), 0);
    let metrics = h.metrics().await;
    assert!(metrics.contains("ferry_inbox_spills_total "), "{metrics}");
}
