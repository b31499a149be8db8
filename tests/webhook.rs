//! The webhook HTTP contract: verification, signatures, limits, parsing and which events start turns.

mod common;

use common::*;
use serde_json::{json, Value};

async fn echo_harness(extra: &str) -> Harness {
    let ep = endpoint_toml("kind = \"echo\"", &format!("{extra}{}", quiet_messenger()));
    Harness::start(sim_config(vec![sim_user("u1", "Ada")]), &ep).await
}

async fn get(h: &Harness, path_and_query: &str) -> (u16, String) {
    let r = h
        .http
        .get(format!("{}{path_and_query}", h.host.url()))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn verification_handshake() {
    let h = echo_harness("").await;
    let ok = format!(
        "/webhooks/messenger/shop?hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=0123456789012345678901"
    );
    // The challenge comes back verbatim, even when it looks like a number too big for any integer type.
    assert_eq!(get(&h, &ok).await, (200, "0123456789012345678901".into()));
    let wrong = "/webhooks/messenger/shop?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1";
    assert_eq!(get(&h, wrong).await.0, 403);
    let other_mode = format!(
        "/webhooks/messenger/shop?hub.mode=unsubscribe&hub.verify_token={VERIFY}&hub.challenge=1"
    );
    assert_eq!(get(&h, &other_mode).await.0, 400);
    let missing = format!("/webhooks/messenger/shop?hub.mode=subscribe&hub.verify_token={VERIFY}");
    assert_eq!(get(&h, &missing).await.0, 400);
    let unknown = format!(
        "/webhooks/messenger/nope?hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=1"
    );
    assert_eq!(get(&h, &unknown).await.0, 404);
}

#[tokio::test]
async fn signature_missing_wrong_and_right() {
    let h = echo_harness("").await;
    let body = serde_json::to_vec(&body(vec![text_event("u1", "m1", "hi", 1)])).unwrap();
    let (status, text) = h.post_with_headers(&body, &[]).await;
    assert_eq!(status, 401);
    let wrong = ferry::messenger::signature::sign_sha256("not-the-secret", &body);
    let (status, reply) = h
        .post_with_headers(&body, &[("x-hub-signature-256", &wrong)])
        .await;
    assert_eq!(status, 401);
    // The reply never reveals the expected value.
    let right = ferry::messenger::signature::sign_sha256(APP_SECRET, &body);
    assert!(!reply.contains(&right[7..]) && !text.contains(&right[7..]));
    assert_eq!(h.post_signed(&body).await.0, 200);
    h.idle().await;
    assert_eq!(h.texts(), vec!["You said: hi"]);
    let m = h.metrics().await;
    assert!(
        m.contains("ferry_signature_failures_total{endpoint=\"shop\"} 2"),
        "{m}"
    );
}

fn sha1_header(body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(APP_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn sha1_is_refused_unless_enabled() {
    let off = echo_harness("").await;
    let body = serde_json::to_vec(&body(vec![text_event("u1", "m1", "hi", 1)])).unwrap();
    let sha1 = sha1_header(&body);
    assert_eq!(
        off.post_with_headers(&body, &[("x-hub-signature", &sha1)])
            .await
            .0,
        401
    );

    let on = echo_harness("accept_sha1 = true").await;
    assert_eq!(
        on.post_with_headers(&body, &[("x-hub-signature", &sha1)])
            .await
            .0,
        200
    );
    // With both headers the sha256 one decides, even when the sha1 one is right.
    let bad256 = ferry::messenger::signature::sign_sha256("wrong", &body);
    let both = [
        ("x-hub-signature", sha1.as_str()),
        ("x-hub-signature-256", bad256.as_str()),
    ];
    assert_eq!(on.post_with_headers(&body, &both).await.0, 401);
}

#[tokio::test]
async fn escaped_unicode_body_is_verified_over_the_raw_bytes() {
    let h = echo_harness("").await;
    // Meta escapes non-ASCII and '/'; re-serialising would change the bytes and break the signature.
    let raw = format!(
        r#"{{"object":"page","entry":[{{"id":"{PAGE}","time":1,"messaging":[{{"sender":{{"id":"u1"}},"recipient":{{"id":"{PAGE}"}},"timestamp":1,"message":{{"mid":"m1","text":"Gr\u00fc\u00dfe \/ \u003Cb\u003E \ud83d\ude00"}}}}]}}]}}"#
    );
    assert_eq!(h.post_signed(raw.as_bytes()).await.0, 200);
    h.idle().await;
    assert_eq!(h.texts(), vec!["You said: Grüße / <b> 😀"]);
}

#[tokio::test]
async fn body_over_the_limit_is_413_and_the_server_stays_up() {
    let h = echo_harness("").await;
    let mut big = vec![b' '; 1024 * 1024 + 1];
    big[0] = b'{';
    big[1024 * 1024] = b'}';
    assert_eq!(h.post_signed(&big).await.0, 413);
    let ok = serde_json::to_vec(&body(vec![text_event("u1", "m1", "still here", 1)])).unwrap();
    assert_eq!(h.post_signed(&ok).await.0, 200);
    h.idle().await;
    assert_eq!(h.texts(), vec!["You said: still here"]);
}

#[tokio::test]
async fn malformed_bodies_and_unknown_endpoint() {
    let h = echo_harness("").await;
    assert_eq!(h.post_signed(b"{not json").await.0, 400);
    assert_eq!(h.post_signed(b"[1,2]").await.0, 400);
    assert_eq!(h.post_signed(b"").await.0, 400);
    // Odd but JSON: accepted, nothing runs.
    assert_eq!(h.post_json(&json!({"object":"page"})).await.0, 200);
    assert_eq!(
        h.post_json(&json!({"object":"page","entry":"x"})).await.0,
        200
    );
    assert_eq!(
        h.post_json(&json!({"object":"page","entry":[{"id":PAGE,"messaging":[7]}]}))
            .await
            .0,
        200
    );
    // Another object type: 200 and ignored.
    assert_eq!(
        h.post_json(&json!({"object":"instagram","entry":[]}))
            .await
            .0,
        200
    );
    let r = h
        .http
        .post(h.host.webhook_url("nope"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    h.idle().await;
    assert!(h.messages().is_empty());
    let health = h
        .http
        .get(format!("{}/healthz", h.host.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn batched_entries_and_standby_are_all_read_but_standby_is_not_answered() {
    let h = echo_harness("").await;
    let b = json!({"object":"page","entry":[
        {"id": PAGE, "time": 1, "messaging": [text_event("u1","m1","one",1), text_event("u2","m2","two",2)]},
        {"id": PAGE, "time": 2, "messaging": [text_event("u3","m3","three",3)]},
        {"id": PAGE, "time": 3, "standby": [text_event("u4","m4","four",4)]}
    ]});
    assert_eq!(h.post_json(&b).await.0, 200);
    h.idle().await;
    let mut texts = h.texts();
    texts.sort();
    // The standby item belongs to a thread another app (a human agent) owns: recorded, never answered.
    assert_eq!(
        texts,
        vec!["You said: one", "You said: three", "You said: two"]
    );
    let m = h.metrics().await;
    assert!(
        m.contains("ferry_events_received_total{endpoint=\"shop\",kind=\"message\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("ferry_events_ignored_total{endpoint=\"shop\",reason=\"standby\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn echoes_other_pages_and_non_flow_kinds_never_reach_the_flow() {
    let flow = TestFlow::answering(json!([{"text": "ok"}])).await;
    let ep = endpoint_toml(&flow.toml(), quiet_messenger());
    let h = Harness::start(sim_config(vec![sim_user("u1", "Ada")]), &ep).await;
    let page = PAGE;
    let items = vec![
        // An echo: the page is the sender.
        json!({"sender":{"id":page},"recipient":{"id":"u1"},"timestamp":1,"message":{"mid":"e1","is_echo":true,"app_id":1,"text":"bot said"}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":2,"read":{"watermark":1}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":3,"delivery":{"mids":["x"],"watermark":1}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":4,"reaction":{"mid":"m","action":"react","reaction":"love","emoji":"❤"}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":5,"message_edit":{"mid":"m","text":"x","num_edit":1}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":6,"account_linking":{"status":"unlinked"}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":7,"pass_thread_control":{"previous_owner_app_id":null,"new_owner_app_id":"123","metadata":""}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":8,"take_thread_control":{"previous_owner_app_id":"1","metadata":""}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":9,"request_thread_control":{"requested_owner_app_id":"1","metadata":""}}),
        json!({"recipient":{"id":page},"timestamp":10,"app_roles":{"123":["primary_receiver"]}}),
        json!({"recipient":{"id":page},"timestamp":11,"policy-enforcement":{"action":"block","reason":"spam"}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":12,"brand_new_kind":{"x":1}}),
        // A user event addressed to another Page.
        json!({"sender":{"id":"u1"},"recipient":{"id":"9999"},"timestamp":13,"message":{"mid":"o1","text":"elsewhere"}}),
    ];
    assert_eq!(h.post_json(&body(items)).await.0, 200);
    // An entry of another Page.
    let other = json!({"object":"page","entry":[{"id":"9999","time":1,"messaging":[text_event("u1","o2","x",1)]}]});
    assert_eq!(h.post_json(&other).await.0, 200);
    h.idle().await;
    assert!(flow.requests().is_empty(), "{:?}", flow.requests());
    assert!(h.messages().is_empty());
    let m = h.metrics().await;
    for kind in [
        "echo",
        "read",
        "delivery",
        "reaction",
        "message_edit",
        "account_linking",
        "pass_thread_control",
        "take_thread_control",
        "request_thread_control",
        "app_roles",
        "policy_enforcement",
        "unknown",
    ] {
        assert!(
            m.contains(&format!(
                "ferry_events_received_total{{endpoint=\"shop\",kind=\"{kind}\"}} 1"
            )),
            "{kind} not counted:\n{m}"
        );
    }
    assert!(
        m.contains("ferry_events_ignored_total{endpoint=\"shop\",reason=\"other_page\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("ferry_events_ignored_total{endpoint=\"shop\",reason=\"echo\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn every_flow_kind_reaches_the_flow_with_the_right_text() {
    let flow = TestFlow::answering(json!([])).await;
    let ep = endpoint_toml(
        &flow.toml(),
        &format!(
            "{}\n[endpoint.profiles]\nrequest = false\n",
            quiet_messenger()
        ),
    );
    let h = Harness::start(sim_config(vec![sim_user("u1", "Ada")]), &ep).await;
    let page = PAGE;
    let items = vec![
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":1,"message":{"mid":"a","text":"Red","quick_reply":{"payload":"COLOR_RED"}}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":2,"message":{"mid":"b","attachments":[{"type":"sticker","payload":{"url":"https://x/s.png","sticker_id":369239263222822i64}}]}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":3,"postback":{"mid":"c","title":"Go","payload":"GO","referral":{"ref":"ad","source":"ADS","type":"OPEN_THREAD"}}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":4,"referral":{"ref":"shortlink","source":"SHORTLINK","type":"OPEN_THREAD"}}),
        json!({"recipient":{"id":page},"timestamp":5,"optin":{"ref":"cb","user_ref":"ref-777"}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":6,"message":{"mid":"d","attachments":[{"type":"fallback","title":"link"}]}}),
        json!({"sender":{"id":"u1"},"recipient":{"id":page},"timestamp":7,"message":{"mid":"e","attachments":[{"type":"location","payload":{"coordinates":{"lat":52.5,"long":13.4}}}]}}),
    ];
    assert_eq!(h.post_json(&body(items)).await.0, 200);
    h.idle().await;
    let reqs = flow.requests();
    assert_eq!(reqs.len(), 7, "{reqs:?}");
    let by_ts = |ts: i64| {
        reqs.iter()
            .find(|r| r.pointer("/data/request/timestamp").and_then(Value::as_i64) == Some(ts))
            .unwrap_or_else(|| panic!("no request with timestamp {ts}"))
            .clone()
    };
    assert_eq!(by_ts(1)["text"], "COLOR_RED");
    assert!(by_ts(2).get("text").is_none());
    assert_eq!(by_ts(2)["data"]["attachments"][0]["type"], "sticker");
    assert_eq!(by_ts(3)["text"], "GO");
    assert!(by_ts(4).get("text").is_none());
    let optin = by_ts(5);
    assert_eq!(optin["userId"], "ref-777");
    assert!(optin.get("text").is_none());
    assert_eq!(by_ts(6)["data"]["attachments"][0]["type"], "fallback");
    assert_eq!(
        by_ts(7)["data"]["attachments"][0]["payload"]["coordinates"]["lat"],
        52.5
    );
    // data.request is the event as received; the endpoint block names the page.
    assert_eq!(
        by_ts(3)["data"]["request"]["postback"]["referral"]["ref"],
        "ad"
    );
    assert_eq!(
        by_ts(1)["endpoint"],
        json!({"id":"shop","channel":"messenger","pageId":PAGE})
    );
}

#[tokio::test]
async fn flow_events_are_configurable() {
    let flow = TestFlow::answering(json!([])).await;
    let ep = endpoint_toml(
        &flow.toml(),
        "\n[endpoint.messenger]\ntyping_indicators = false\nmark_seen = false\nflow_events = [\"message\", \"reaction\"]\n",
    );
    let h = Harness::start(sim_config(vec![sim_user("u1", "Ada")]), &ep).await;
    let items = vec![
        json!({"sender":{"id":"u1"},"recipient":{"id":PAGE},"timestamp":1,"reaction":{"mid":"m","action":"react","reaction":"like"}}),
        postback_event("u1", "IGNORED", 2),
    ];
    assert_eq!(h.post_json(&body(items)).await.0, 200);
    h.idle().await;
    let reqs = flow.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0]["data"]["request"]["reaction"]["reaction"], "like");
}

#[tokio::test]
async fn health_ready_and_metrics_endpoints() {
    let h = echo_harness("").await;
    assert_eq!(get(&h, "/healthz").await.0, 200);
    assert_eq!(get(&h, "/readyz").await.0, 200);
    let (status, m) = get(&h, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "ferry_events_received_total",
        "ferry_signature_failures_total",
        "ferry_flow_duration_seconds",
        "ferry_send_duration_seconds",
        "ferry_send_errors_total",
        "ferry_turn_duration_seconds",
    ] {
        assert!(m.contains(&format!("# TYPE {name}")), "{name} missing");
    }
}
