//! Whole turns through the real host, a flow and the Graph API emulator.

mod common;

use common::*;
use ferry::sim::SimConfig;
use serde_json::{json, Value};
use std::time::Duration;

fn users() -> SimConfig {
    sim_config(vec![sim_user("u1", "Ada"), sim_user("u2", "Bob")])
}

#[tokio::test]
async fn typing_delay_and_mark_seen_order_read_from_emulator_timestamps() {
    let flow =
        TestFlow::answering(json!([{"text": "first"}, {"text": "second"}, {"text": "third"}]))
            .await;
    let ep = endpoint_toml(
        &flow.toml(),
        "\n[endpoint.messenger]\ntyping_indicators = true\nmessage_delay_ms = 300\nmark_seen = true\n",
    );
    let h = Harness::start(users(), &ep).await;
    assert_eq!(
        h.post_json(&body(vec![text_event("u1", "m1", "hi", 1)]))
            .await
            .0,
        200
    );
    h.idle().await;
    let sends: Vec<_> = h
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with("/messages"))
        .collect();
    let shape: Vec<String> = sends
        .iter()
        .map(|c| {
            c.body
                .get("sender_action")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    c.body
                        .pointer("/message/text")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap()
        })
        .collect();
    assert_eq!(
        shape,
        [
            "mark_seen",
            "typing_on",
            "first",
            "typing_on",
            "second",
            "typing_on",
            "third"
        ]
    );
    for c in &sends {
        assert_eq!(c.body["recipient"], json!({"id": "u1"}));
        assert!(c.body.get("message").is_none() || c.body["messaging_type"] == "RESPONSE");
        // appsecret_proof accompanies every call (the emulator checks its value).
        assert!(c.query.contains_key("appsecret_proof"));
    }
    let at = |i: usize| sends[i].at_ms;
    // The pause sits between consecutive messages, with the typing indicator shown before it.
    assert!(at(4) - at(2) >= 300.0, "gap {}", at(4) - at(2));
    assert!(at(6) - at(4) >= 300.0, "gap {}", at(6) - at(4));
    assert!(at(4) - at(3) >= 290.0, "typing_on must precede the pause");
    // No pause before the first message.
    assert!(
        at(2) - at(1) < 250.0,
        "first message delayed by {}",
        at(2) - at(1)
    );
}

#[tokio::test]
async fn no_typing_no_delay_when_disabled() {
    let flow = TestFlow::answering(json!([{"text": "a"}, {"text": "b"}])).await;
    let ep = endpoint_toml(&flow.toml(), quiet_messenger());
    let h = Harness::start(users(), &ep).await;
    h.post_json(&body(vec![text_event("u1", "m1", "hi", 1)]))
        .await;
    h.idle().await;
    let actions: Vec<_> = h
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.body.get("sender_action").is_some())
        .collect();
    assert!(actions.is_empty());
    assert_eq!(h.texts(), vec!["a", "b"]);
}

#[tokio::test]
async fn profile_reaches_the_flow_with_and_without_extra_fields() {
    for (extra, granted, expect_locale) in [
        ("", vec![], false),
        (
            "extra_fields = [\"locale\", \"timezone\"]",
            vec!["locale".to_string(), "timezone".to_string()],
            true,
        ),
    ] {
        let flow = TestFlow::answering(json!([])).await;
        let ep = endpoint_toml(
            &flow.toml(),
            &format!(
                "{}\n[endpoint.profiles]\nrequest = true\n{extra}\n",
                quiet_messenger()
            ),
        );
        let mut cfg = users();
        cfg.granted_fields = granted;
        let h = Harness::start(cfg, &ep).await;
        h.post_json(&body(vec![
            text_event("u1", "m1", "hi", 1),
            text_event("u1", "m2", "again", 2),
        ]))
        .await;
        h.idle().await;
        let reqs = flow.requests();
        assert_eq!(reqs.len(), 2);
        let p = &reqs[0]["data"]["profile"];
        assert_eq!(p["id"], "u1");
        assert_eq!(p["first_name"], "Ada");
        assert_eq!(p["last_name"], "Tester");
        assert_eq!(p["profile_pic"], "https://pics.example/u1.jpg");
        assert_eq!(p.get("locale").is_some(), expect_locale, "{p}");
        assert!(p.get("gender").is_none());
        // Cached: one profile call for two events.
        let profile_calls = h
            .sim
            .calls()
            .into_iter()
            .filter(|c| c.method == "GET")
            .count();
        assert_eq!(profile_calls, 1);
    }
}

#[tokio::test]
async fn profile_failure_keeps_the_turn_going() {
    // The app asks for gender without the permission: Meta fails the whole call.
    let flow = TestFlow::answering(json!([{"text": "still answered"}])).await;
    let ep = endpoint_toml(
        &flow.toml(),
        &format!(
            "{}\n[endpoint.profiles]\nextra_fields = [\"gender\"]\n",
            quiet_messenger()
        ),
    );
    let h = Harness::start(users(), &ep).await;
    h.post_json(&body(vec![text_event("u1", "m1", "hi", 1)]))
        .await;
    h.idle().await;
    let reqs = flow.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0]["data"].get("profile").is_none());
    assert_eq!(h.texts(), vec!["still answered"]);
    assert!(h
        .metrics()
        .await
        .contains("ferry_profile_errors_total{endpoint=\"shop\"} 1"));
}

#[tokio::test]
async fn per_user_order_holds_under_concurrency() {
    // The flow answers the first messages slowest: without per-user serialisation replies would reorder.
    let flow = TestFlow::start(|req| {
        let text = req["text"].as_str().unwrap_or_default().to_string();
        let n: u64 = text
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (
            200,
            json!({"outputs": [{"text": format!("re {text}")}]}).to_string(),
            30u64.saturating_sub(n * 3),
        )
    })
    .await;
    let ep = endpoint_toml(&flow.toml(), quiet_messenger());
    let cfg = SimConfig {
        pages: sim_config(vec![]).pages,
        accept_unknown_users: true,
        ..SimConfig::default()
    };
    let h = Harness::start(cfg, &ep).await;
    let mut posts = Vec::new();
    for n in 0..10 {
        for u in 0..20 {
            let body = body(vec![text_event(
                &format!("user{u}"),
                &format!("m{u}-{n}"),
                &format!("u{u}-{n}"),
                n,
            )]);
            posts.push(body);
        }
    }
    // Posted one by one per user, but concurrently across users.
    let mut tasks = Vec::new();
    for u in 0..20 {
        let mine: Vec<Value> = posts.iter().skip(u).step_by(20).cloned().collect();
        let url = h.webhook();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for b in mine {
                let raw = serde_json::to_vec(&b).unwrap();
                let sig = ferry::messenger::signature::sign_sha256(APP_SECRET, &raw);
                let r = http
                    .post(&url)
                    .header("x-hub-signature-256", sig)
                    .body(raw)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    h.idle().await;
    let messages = h.messages();
    assert_eq!(messages.len(), 200);
    for u in 0..20 {
        let psid = format!("user{u}");
        let seq: Vec<String> = messages
            .iter()
            .filter(|c| c.body["recipient"]["id"] == psid.as_str())
            .map(|c| c.body["message"]["text"].as_str().unwrap().to_string())
            .collect();
        let expected: Vec<String> = (0..10).map(|n| format!("re u{u}-{n}")).collect();
        assert_eq!(seq, expected, "{psid}");
    }
}

#[tokio::test]
async fn each_output_shape_is_converted_and_accepted_by_the_emulator() {
    let long = "Lorem ipsum dolor sit amet. ".repeat(100); // 2800 chars
    let outputs = json!([
        {"text": long},
        {"text": "Pick one", "data": {"quickReplies": [{"title": "Red", "payload": "RED", "imageUrl": "https://x/r.png"}, {"contentType": "user_email"}]}},
        {"text": "Choose", "data": {"buttons": [{"title": "Go", "payload": "GO"}, {"title": "Web", "url": "https://example.com"}, {"title": "Call", "phone": "+4930123"}]}},
        {"data": {"gallery": [{"title": "A", "subtitle": "a", "imageUrl": "https://x/a.png", "url": "https://x/a", "buttons": [{"title": "Buy", "payload": "BUY_A"}]}, {"title": "B"}]}},
        {"data": {"attachment": {"type": "image", "url": "https://x/i.png"}}},
        {"data": {"messenger": {"text": "raw", "metadata": "m"}}},
        {"text": "bad", "data": {"buttons": [{"title":"1","payload":"1"},{"title":"2","payload":"2"},{"title":"3","payload":"3"},{"title":"4","payload":"4"}]}},
        {"text": "after the bad one"}
    ]);
    let flow = TestFlow::answering(outputs).await;
    let ep = endpoint_toml(&flow.toml(), quiet_messenger());
    let h = Harness::start(users(), &ep).await;
    h.post_json(&body(vec![text_event("u1", "m1", "show me", 1)]))
        .await;
    h.idle().await;
    let msgs: Vec<Value> = h
        .messages()
        .into_iter()
        .map(|c| {
            assert_eq!(c.status, 200, "emulator refused {}: {}", c.body, c.response);
            c.body["message"].clone()
        })
        .collect();
    // The long text is split into two parts of at most 2000 characters, at a sentence boundary.
    let p1 = msgs[0]["text"].as_str().unwrap();
    let p2 = msgs[1]["text"].as_str().unwrap();
    assert!(
        p1.chars().count() <= 2000 && p1.ends_with('.'),
        "{}",
        p1.len()
    );
    assert_eq!(
        format!("{p1} {p2}").split_whitespace().count(),
        long.split_whitespace().count()
    );
    assert_eq!(msgs[2]["text"], "Pick one");
    assert_eq!(
        msgs[2]["quick_replies"][0],
        json!({"content_type":"text","title":"Red","payload":"RED","image_url":"https://x/r.png"})
    );
    assert_eq!(
        msgs[2]["quick_replies"][1],
        json!({"content_type":"user_email"})
    );
    let bt = &msgs[3]["attachment"]["payload"];
    assert_eq!(bt["template_type"], "button");
    assert_eq!(bt["text"], "Choose");
    assert_eq!(
        bt["buttons"][0],
        json!({"type":"postback","title":"Go","payload":"GO"})
    );
    assert_eq!(bt["buttons"][1]["type"], "web_url");
    assert_eq!(bt["buttons"][2]["type"], "phone_number");
    let g = &msgs[4]["attachment"]["payload"];
    assert_eq!(g["template_type"], "generic");
    assert_eq!(g["elements"].as_array().unwrap().len(), 2);
    assert_eq!(g["elements"][0]["default_action"]["url"], "https://x/a");
    assert_eq!(msgs[5]["attachment"]["type"], "image");
    assert_eq!(msgs[5]["attachment"]["payload"]["url"], "https://x/i.png");
    assert_eq!(msgs[6], json!({"text": "raw", "metadata": "m"}));
    // Four buttons is more than Meta allows: that output is not sent; the rest of the turn goes on.
    assert_eq!(msgs[7]["text"], "after the bad one");
    assert_eq!(msgs.len(), 8);
    assert!(h
        .metrics()
        .await
        .contains("ferry_output_errors_total{endpoint=\"shop\"} 1"));
}

#[tokio::test]
async fn flow_failures_send_the_fallback_and_the_host_goes_on() {
    // Script: timeout (slow), 500, malformed JSON, wrong shape, then a good answer.
    let flow = TestFlow::start(|req| match req["text"].as_str().unwrap_or_default() {
        "slow" => (
            200,
            json!({"outputs":[{"text":"too late"}]}).to_string(),
            1500,
        ),
        "500" => (500, "boom".into(), 0),
        "garbage" => (200, "not json".into(), 0),
        "shape" => (200, json!({"outputs":[{"text": 5}]}).to_string(), 0),
        _ => (200, json!({"outputs":[{"text":"fine"}]}).to_string(), 0),
    })
    .await;
    let ep = endpoint_toml(&flow.toml(), quiet_messenger());
    let h = Harness::start(users(), &ep).await;
    let items = ["slow", "500", "garbage", "shape", "ok"]
        .iter()
        .enumerate()
        .map(|(i, t)| text_event("u1", &format!("m{i}"), t, i as i64))
        .collect();
    h.post_json(&body(items)).await;
    h.idle().await;
    // Give a late reply the chance to (wrongly) arrive.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let fallback = "Sorry, something went wrong.";
    assert_eq!(
        h.texts(),
        vec![fallback, fallback, fallback, fallback, "fine"]
    );
    let m = h.metrics().await;
    for kind in ["timeout", "status", "malformed"] {
        assert!(
            m.contains(&format!(
                "ferry_flow_errors_total{{endpoint=\"shop\",kind=\"{kind}\"}}"
            )),
            "{kind}: {m}"
        );
    }
}

#[tokio::test]
async fn unreachable_flow_without_fallback_sends_nothing() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ep = endpoint_toml(
        &format!("kind = \"http\"\nurl = \"http://127.0.0.1:{port}/flow\"\ntimeout_ms = 500"),
        quiet_messenger(),
    );
    let h = Harness::start(users(), &ep).await;
    assert_eq!(
        h.post_json(&body(vec![text_event("u1", "m1", "hi", 1)]))
            .await
            .0,
        200
    );
    h.idle().await;
    assert!(h.messages().is_empty());
    assert!(h
        .metrics()
        .await
        .contains("ferry_flow_errors_total{endpoint=\"shop\",kind=\"transport\"} 1"));
}

#[tokio::test]
async fn rasa_backend_round_trip() {
    // A fake Rasa REST channel, answering in Rasa's shape.
    let rasa = TestFlow::start(|req| {
        assert!(req.get("sender").is_some() && req.get("message").is_some());
        let reply = json!([
            {"recipient_id": req["sender"], "text": format!("Rasa heard {}", req["message"].as_str().unwrap())},
            {"recipient_id": req["sender"], "text": "Pick", "buttons": [{"title": "Yes", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}]},
            {"recipient_id": req["sender"], "image": "https://x/cat.png"}
        ]);
        (200, reply.to_string(), 0)
    })
    .await;
    let ep = endpoint_toml(
        &format!("kind = \"rasa\"\nurl = \"{}\"\ntimeout_ms = 1000", rasa.url),
        quiet_messenger(),
    );
    let h = Harness::start(users(), &ep).await;
    h.post_json(&body(vec![text_event("u1", "m1", "hello", 1)]))
        .await;
    h.idle().await;
    let reqs = rasa.requests();
    assert_eq!(reqs[0]["sender"], "u1");
    assert_eq!(reqs[0]["message"], "hello");
    assert!(reqs[0]["metadata"]["sessionId"].is_string());
    let msgs: Vec<Value> = h
        .messages()
        .into_iter()
        .map(|c| c.body["message"].clone())
        .collect();
    assert_eq!(msgs[0]["text"], "Rasa heard hello");
    assert_eq!(
        msgs[1]["attachment"]["payload"]["buttons"][0]["payload"],
        "/affirm"
    );
    assert_eq!(msgs[2]["attachment"]["type"], "image");
}

#[tokio::test]
async fn echo_flow_answers_with_quick_replies_and_sessions_are_per_user() {
    let flow = TestFlow::answering(json!([])).await;
    let ep = endpoint_toml(&flow.toml(), quiet_messenger());
    let h = Harness::start(users(), &ep).await;
    h.post_json(&body(vec![
        text_event("u1", "a", "1", 1),
        text_event("u1", "b", "2", 2),
        text_event("u2", "c", "3", 3),
    ]))
    .await;
    h.idle().await;
    let reqs = flow.requests();
    let session = |i: usize| reqs[i]["sessionId"].as_str().unwrap().to_string();
    let u1: Vec<_> = (0..3)
        .filter(|i| reqs[*i]["userId"] == "u1")
        .map(session)
        .collect();
    let u2: Vec<_> = (0..3)
        .filter(|i| reqs[*i]["userId"] == "u2")
        .map(session)
        .collect();
    assert_eq!(u1[0], u1[1]);
    assert_ne!(u1[0], u2[0]);

    let echo = endpoint_toml("kind = \"echo\"", quiet_messenger());
    let h = Harness::start(users(), &echo).await;
    h.post_json(&body(vec![text_event("u1", "a", "hi", 1)]))
        .await;
    h.idle().await;
    let m = &h.messages()[0].body["message"];
    assert_eq!(m["text"], "You said: hi");
    assert_eq!(m["quick_replies"].as_array().unwrap().len(), 2);
}

/// Niceness of this process's threads named `name`, and of the process itself (Linux `/proc`).
#[cfg(target_os = "linux")]
fn niceness_of_threads(name: &str) -> (Vec<i64>, i64) {
    let nice = |stat: &str| -> i64 {
        // Field 19 of stat; fields after the command (which may hold spaces) start at field 3.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(16).unwrap().parse().unwrap()
    };
    let process = nice(&std::fs::read_to_string("/proc/self/stat").unwrap());
    let threads = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| {
            let t = t.ok()?.path();
            let comm = std::fs::read_to_string(t.join("comm")).ok()?;
            (comm.trim() == name).then(|| std::fs::read_to_string(t.join("stat")).ok())?
        })
        .map(|stat| nice(&stat))
        .collect();
    (threads, process)
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn turn_threads_run_at_the_configured_niceness() {
    let echo = endpoint_toml("kind = \"echo\"", quiet_messenger());
    let h = Harness::start_with(users(), "turn_niceness = 7", &echo).await;
    h.post_json(&body(vec![text_event("u1", "a", "hi", 1)]))
        .await;
    h.idle().await;
    assert_eq!(h.messages().len(), 1);
    let (threads, process) = niceness_of_threads("ferry-turns");
    if process + 15 >= 19 {
        eprintln!("skipped: at niceness {process}, 7 and the default 15 both reach 19");
        return;
    }
    let expected = process + 7;
    // Other tests of this binary run hosts too (at the default, 15): this host's threads are among them.
    assert!(
        threads.iter().filter(|n| **n == expected).count() >= 1,
        "expected a turn thread at niceness {expected}, found {threads:?}"
    );
}
