//! The database through the real host: session expiry (with a hand-moved clock), plugin session storage
//! across a restart, contacts, transcripts per outcome, erasure, retention, and an unusable database.

mod common;

use common::*;
use ferry::store::{ManualClock, USER_TABLES};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const ADMIN: &str = "storage-admin-token";

fn server(dir: &std::path::Path) -> String {
    format!(
        "data_dir = \"{}\"\nadmin_token = \"{ADMIN}\"\nmax_session_minutes = 120",
        dir.display()
    )
}

async fn seeing_flow() -> TestFlow {
    TestFlow::start(|req| {
        let text = req
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string();
        let out = match text.as_str() {
            "remember" => json!({"text": "noted", "data": {"contact": {"tier": "gold"}}}),
            _ => json!({"text": format!("seen: {text}")}),
        };
        (200, json!({ "outputs": [out] }).to_string(), 0)
    })
    .await
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

async fn admin_get(h: &Harness, path: &str) -> (u16, Value) {
    let r = h
        .http
        .get(format!("{}{path}", h.host.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn plugin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/plugins")
        .join(format!("{name}.wasm"))
}

#[tokio::test]
async fn sessions_expire_after_inactivity_and_at_the_server_cap() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let flow = seeing_flow().await;
    let dir = temp_dir();
    let ep = endpoint_toml(
        &flow.toml(),
        &format!(
            "{}\n[endpoint.session]\nexpiration_minutes = 30\n",
            quiet_messenger()
        ),
    );
    let h = Harness::start_with_clock(
        sim_config(vec![sim_user("u1", "Ada")]),
        &server(&dir),
        &ep,
        clock.clone(),
    )
    .await;
    let session = |i: usize| {
        flow.requests()[i]["sessionId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    say(&h, "u1", "m1", "a", 1).await;
    clock.advance_minutes(29);
    say(&h, "u1", "m2", "b", 2).await;
    assert_eq!(
        session(0),
        session(1),
        "29 minutes of silence keep the session"
    );
    clock.advance_minutes(31);
    say(&h, "u1", "m3", "c", 3).await;
    assert_ne!(session(1), session(2), "31 minutes of silence end it");
    // Active every 20 minutes, the session still ends at the server's 120-minute cap.
    for i in 0..7 {
        clock.advance_minutes(20);
        say(&h, "u1", &format!("n{i}"), "d", 10 + i).await;
    }
    let ids: Vec<String> = (2..10).map(session).collect();
    assert!(
        ids[..7].iter().all(|id| *id == ids[0]),
        "120 minutes in all are allowed: {ids:?}"
    );
    assert_ne!(ids[7], ids[0], "capped by server.max_session_minutes");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn never_expiring_sessions_and_storage_survive_a_restart_and_expire_with_the_session() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let flow = seeing_flow().await;
    let dir = temp_dir();
    let ep = endpoint_toml(
        &flow.toml(),
        &format!(
            "{}\n[endpoint.session]\nexpiration_minutes = 0\n[endpoint.transformer]\nplugin = \"{}\"\n",
            quiet_messenger(),
            plugin("test_guest").display()
        ),
    );
    let users = || sim_config(vec![sim_user("u1", "Ada")]);
    let h = Harness::start_with_clock(users(), &server(&dir), &ep, clock.clone()).await;
    say(&h, "u1", "m1", r#"storage-set {"color":"blue"}"#, 1).await;
    h.host.stop(Duration::from_secs(5)).await.unwrap();
    clock.advance_minutes(100);
    let h = Harness::start_with_clock(users(), &server(&dir), &ep, clock.clone()).await;
    say(&h, "u1", "m2", "storage-get", 2).await;
    // The finished hook of the first turn stored the turn's sizes; it is still there after the restart.
    assert_eq!(flow.requests()[1]["text"], r#"{"outputs":1,"sent":1}"#);
    assert_eq!(
        flow.requests()[0]["sessionId"],
        flow.requests()[1]["sessionId"]
    );
    // Past the 120-minute cap: a new session, and its storage starts empty.
    clock.advance_minutes(30);
    say(&h, "u1", "m3", "storage-get", 3).await;
    assert_eq!(flow.requests()[2]["text"], "none");
    assert_ne!(
        flow.requests()[2]["sessionId"],
        flow.requests()[1]["sessionId"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn contacts_are_filled_from_profiles_and_flow_data_and_transcripts_record_each_outcome() {
    let flow = seeing_flow().await;
    let dir = temp_dir();
    let ep = endpoint_toml(
        &flow.toml(),
        &format!(
            "{}\n[endpoint.transformer]\nplugin = \"{}\"\n",
            quiet_messenger(),
            plugin("test_guest").display()
        ),
    );
    let h = Harness::start_with(sim_config(vec![sim_user("u1", "Ada")]), &server(&dir), &ep).await;
    say(&h, "u1", "m1", "hello", 1).await;
    say(&h, "u1", "m2", "remember", 2).await;
    say(&h, "u1", "m3", "drop", 3).await;
    say(&h, "u1", "m4", "reply", 4).await;
    // The flow saw the contact id in data.profile.
    let contact_id = flow.requests()[0]["data"]["profile"]["contact_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, contact) = admin_get(&h, "/admin/contacts?endpoint=shop&psid=u1").await;
    assert_eq!(status, 200, "{contact}");
    assert_eq!(contact["contact_id"], contact_id.as_str());
    // A later turn's flow input carries the contact data the flow saved, and the person's PSIDs.
    say(&h, "u1", "m5", "later", 5).await;
    let last = flow.requests().last().cloned().unwrap();
    assert_eq!(
        last["data"]["profile"]["contact_data"],
        json!({"tier": "gold"})
    );
    assert_eq!(last["data"]["profile"]["contact_psids"][0]["psid"], "u1");
    assert_eq!(contact["first_name"], "Ada");
    assert_eq!(contact["last_name"], "Tester");
    assert_eq!(contact["profile_pic"], "https://pics.example/u1.jpg");
    assert_eq!(contact["data"], json!({"tier": "gold"}));
    assert_eq!(contact["psids"][0]["psid"], "u1");

    let (status, transcript) =
        admin_get(&h, &format!("/admin/contacts/{contact_id}/transcript")).await;
    assert_eq!(status, 200);
    let turns = transcript["turns"].as_array().unwrap();
    let outcomes: Vec<&str> = turns
        .iter()
        .map(|t| t["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["completed", "completed", "dropped", "replied", "completed"]
    );
    assert_eq!(turns[0]["input"]["text"], "hello");
    assert_eq!(turns[0]["outputs"][0]["text"], "seen: hello");
    assert!(turns[0]["sent"][0]["message_id"]
        .as_str()
        .unwrap()
        .starts_with("m_sim"));
    assert_eq!(turns[2]["sent"], json!([]));
    assert_eq!(turns[3]["sent"][0]["message"]["text"], "hi");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failing_flow_is_recorded_and_collecting_can_be_switched_off() {
    let flow = TestFlow::start(|_| (500, "boom".into(), 0)).await;
    let dir = temp_dir();
    let ep = endpoint_toml(&flow.toml(), quiet_messenger());
    let h = Harness::start_with(sim_config(vec![sim_user("u1", "Ada")]), &server(&dir), &ep).await;
    say(&h, "u1", "m1", "hello", 1).await;
    let (_, contact) = admin_get(&h, "/admin/contacts?endpoint=shop&psid=u1").await;
    let id = contact["contact_id"].as_str().unwrap();
    let (_, transcript) = admin_get(&h, &format!("/admin/contacts/{id}/transcript")).await;
    assert_eq!(transcript["turns"][0]["outcome"], "flow_failed");
    assert_eq!(
        transcript["turns"][0]["sent"][0]["message"]["text"],
        "Sorry, something went wrong."
    );
    let _ = std::fs::remove_dir_all(&dir);

    let dir = temp_dir();
    let extra = format!(
        "{}\n[endpoint.data_protection]\ncollect_conversations = false\ncontact_profiles = false\n",
        quiet_messenger()
    );
    let ep = endpoint_toml(&seeing_flow().await.toml(), &extra);
    let h = Harness::start_with(sim_config(vec![sim_user("u1", "Ada")]), &server(&dir), &ep).await;
    say(&h, "u1", "m1", "hello", 1).await;
    let (status, _) = admin_get(&h, "/admin/contacts?endpoint=shop&psid=u1").await;
    assert_eq!(status, 404, "no contact kept");
    for table in ["transcripts", "contacts"] {
        assert_eq!(
            h.host.app.core.db.rows_mentioning(table, "u1").unwrap(),
            0,
            "{table}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn erasure_removes_the_user_from_every_table() {
    let flow = seeing_flow().await;
    let dir = temp_dir();
    let ep = endpoint_toml(
        &flow.toml(),
        &format!(
            "{}\n[endpoint.transformer]\nplugin = \"{}\"\n",
            quiet_messenger(),
            plugin("test_guest").display()
        ),
    );
    let users = sim_config(vec![sim_user("u1", "Ada"), sim_user("u2", "Bob")]);
    let h = Harness::start_with(users, &server(&dir), &ep).await;
    // u1's answer is refused for good: a dead letter about u1 is kept in the journal.
    h.sim.set_faults(ferry::sim::Faults::once([
        ferry::sim::Fault::PersonUnavailable,
    ]));
    say(&h, "u1", "m1", r#"storage-set {"x":1}"#, 1).await;
    say(&h, "u2", "m2", "hello", 2).await;
    let db = &h.host.app.core.db;
    let journal = &h.host.app.core.journal;
    for table in USER_TABLES {
        assert!(
            db.rows_mentioning(table, "u1").unwrap() > 0 || *table == "contacts",
            "{table} holds u1 before"
        );
    }
    assert_eq!(journal.rows_mentioning("dead_letters", "u1").unwrap(), 1);
    let (_, contact) = admin_get(&h, "/admin/contacts?endpoint=shop&psid=u1").await;
    let id = contact["contact_id"].as_str().unwrap().to_string();
    let r = h
        .http
        .delete(format!("{}/admin/contacts/{id}", h.host.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["deleted"]["contacts"], 1);
    assert_eq!(report["deleted"]["transcripts"], 1);
    assert_eq!(report["deleted"]["session_values"], 1);
    assert_eq!(report["deleted"]["dead_letters"], 1);
    for table in ferry::store::JOURNAL_USER_TABLES {
        assert_eq!(
            journal.rows_mentioning(table, "u1").unwrap(),
            0,
            "journal table {table} still mentions u1"
        );
    }
    for table in USER_TABLES {
        assert_eq!(
            db.rows_mentioning(table, "u1").unwrap(),
            0,
            "{table} still mentions u1"
        );
        assert_eq!(
            db.rows_mentioning(table, &id).unwrap(),
            0,
            "{table} still mentions the contact"
        );
    }
    assert!(
        db.rows_mentioning("transcripts", "u2").unwrap() > 0,
        "other users are untouched"
    );
    let (status, _) = admin_get(&h, &format!("/admin/contacts/{id}")).await;
    assert_eq!(status, 404);
    let r = h
        .http
        .delete(format!("{}/admin/contacts/{id}", h.host.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "erasure needs the admin token");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_retention_job_deletes_old_transcripts_and_contacts() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let flow = seeing_flow().await;
    let dir = temp_dir();
    let extra = format!(
        "{}\n[endpoint.data_protection]\nretention_days = 30\n",
        quiet_messenger()
    );
    let ep = endpoint_toml(&flow.toml(), &extra);
    let users = sim_config(vec![sim_user("u1", "Ada"), sim_user("u2", "Bob")]);
    let h = Harness::start_with_clock(users, &server(&dir), &ep, clock.clone()).await;
    say(&h, "u1", "m1", "old", 1).await;
    clock.advance_minutes(29 * 24 * 60);
    say(&h, "u2", "m2", "recent", 2).await;
    clock.advance_minutes(2 * 24 * 60);
    assert!(
        h.host.app.apply_retention() >= 3,
        "u1's transcript, contact and PSID mapping"
    );
    let db = &h.host.app.core.db;
    assert_eq!(db.rows_mentioning("transcripts", "u1").unwrap(), 0);
    assert_eq!(db.rows_mentioning("contact_psids", "u1").unwrap(), 0);
    assert_eq!(db.rows_mentioning("transcripts", "u2").unwrap(), 1);
    assert_eq!(db.rows_mentioning("contact_psids", "u2").unwrap(), 1);
    // Sessions idle beyond the server cap (120 minutes here) went too, with their plugin storage.
    assert_eq!(db.rows_mentioning("sessions", "u1").unwrap(), 0);
    assert_eq!(db.rows_mentioning("sessions", "u2").unwrap(), 0);
    say(&h, "u2", "m3", "fresh", 3).await;
    h.host.app.apply_retention();
    assert_eq!(
        db.rows_mentioning("sessions", "u2").unwrap(),
        1,
        "a live session stays"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unusable_database_is_a_clear_error_not_a_panic() {
    // The data directory is a file: the database cannot be created.
    let file = temp_dir();
    std::fs::write(&file, b"not a directory").unwrap();
    let config = ferry::config::Config::parse(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}",
        file.display(),
        endpoint_toml("kind = \"echo\"", "")
    ))
    .unwrap();
    let error = match ferry::run::start(config, listener().await).await {
        Ok(_) => panic!("started on an unusable data directory"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("cannot open the database"), "{error}");
    assert!(error.contains(&file.display().to_string()), "{error}");
    let _ = std::fs::remove_file(&file);

    // A database another process holds locked: Ferry waits its busy timeout, then says so.
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let holder = rusqlite::Connection::open(dir.join("ferry.db")).unwrap();
    holder
        .execute_batch("CREATE TABLE t (x INTEGER); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")
        .unwrap();
    let config = ferry::config::Config::parse(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}",
        dir.display(),
        endpoint_toml("kind = \"echo\"", "")
    ))
    .unwrap();
    let error = match ferry::run::start(config, listener().await).await {
        Ok(_) => panic!("started on a locked database"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("cannot open the database") && error.contains("locked"),
        "{error}"
    );
    drop(holder);
    let _ = std::fs::remove_dir_all(&dir);

    // A read-only database file.
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ferry.db"), b"").unwrap();
    let mut perms = std::fs::metadata(dir.join("ferry.db"))
        .unwrap()
        .permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(dir.join("ferry.db"), perms).unwrap();
    let config = ferry::config::Config::parse(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}",
        dir.display(),
        endpoint_toml("kind = \"echo\"", "")
    ))
    .unwrap();
    // Root may write to read-only files; either way, no panic, and a failure names the database.
    if let Err(e) = ferry::run::start(config, listener().await).await {
        assert!(
            format!("{e:#}").contains("cannot open the database"),
            "{e:#}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ── Merge Contact Profiles across the Pages of one business ───────────────────────────────────────────────

const PAGES: [&str; 3] = ["1111", "2222", "3333"];

/// Three endpoints (one per Page) of business "acme"; person P has a PSID on each Page, person Q on two.
async fn business_host(dir: &std::path::Path) -> (ferry::sim::SimHandle, ferry::run::Running) {
    use ferry::sim::{Sim, SimConfig, SimPage, SimUser};
    let mut users = Vec::new();
    for page in PAGES {
        users.push(SimUser::new(
            &format!("p{page}"),
            page,
            "Pat",
            "Person",
            "P",
        ));
    }
    users.push(SimUser::new("q1111", "1111", "Quinn", "Other", "Q"));
    users.push(SimUser::new("q2222", "2222", "Quinn", "Other", "Q"));
    let sim_cfg = SimConfig {
        pages: PAGES
            .iter()
            .map(|p| {
                SimPage::new(
                    p,
                    &format!("token-{p}"),
                    Some(APP_SECRET),
                    &format!("Page {p}"),
                )
            })
            .collect(),
        users,
        ..SimConfig::default()
    };
    let sim = Sim::start(sim_cfg, listener().await).await.unwrap();
    let flow = seeing_flow().await;
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nadmin_token = \"{ADMIN}\"\n[graph]\nbase_url = \"{}\"\n",
        dir.display(),
        sim.url()
    );
    for page in PAGES {
        config.push_str(&format!(
            "[[endpoint]]\nid = \"shop{page}\"\npage_id = \"{page}\"\npage_access_token = \"token-{page}\"\napp_secret = \"{APP_SECRET}\"\nverify_token = \"v\"\n{}\n[endpoint.profiles]\nmerge_contacts = true\nbusiness = \"acme\"\n[endpoint.flow]\n{}\n",
            quiet_messenger(),
            flow.toml()
        ));
    }
    let config = ferry::config::Config::parse(&config).unwrap();
    let host = ferry::run::start(config, listener().await).await.unwrap();
    std::mem::forget(flow);
    (sim, host)
}

async fn visit(host: &ferry::run::Running, page: &str, psid: &str, ts: i64) {
    let item = json!({"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": ts,
        "message": {"mid": format!("m-{psid}-{ts}"), "text": "hi"}});
    let body = json!({"object": "page", "entry": [{"id": page, "time": ts, "messaging": [item]}]});
    let bytes = serde_json::to_vec(&body).unwrap();
    let sig = ferry::messenger::signature::sign_sha256(APP_SECRET, &bytes);
    let status = reqwest::Client::new()
        .post(host.webhook_url(&format!("shop{page}")))
        .header("x-hub-signature-256", sig)
        .body(bytes)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    assert!(host.wait_idle(Duration::from_secs(10)).await);
}

fn contact_of(host: &ferry::run::Running, page: &str, psid: &str) -> Option<String> {
    host.app.core.db.contact_of(page, psid).unwrap()
}

#[tokio::test]
async fn one_person_across_three_pages_is_one_contact_in_any_order_and_two_people_never_merge() {
    for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0]] {
        let dir = temp_dir();
        let (sim, host) = business_host(&dir).await;
        for (ts, i) in order.iter().enumerate() {
            let page = PAGES[*i];
            visit(&host, page, &format!("p{page}"), ts as i64 + 1).await;
        }
        visit(&host, "1111", "q1111", 10).await;
        visit(&host, "2222", "q2222", 11).await;
        let p: Vec<Option<String>> = PAGES
            .iter()
            .map(|page| contact_of(&host, page, &format!("p{page}")))
            .collect();
        assert!(
            p[0].is_some() && p.iter().all(|c| *c == p[0]),
            "order {order:?}: {p:?}"
        );
        let q = (
            contact_of(&host, "1111", "q1111"),
            contact_of(&host, "2222", "q2222"),
        );
        assert!(q.0.is_some() && q.0 == q.1, "{q:?}");
        assert_ne!(q.0, p[0], "two people are never merged");
        let contact = host
            .app
            .core
            .db
            .contact(p[0].as_deref().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(contact["psids"].as_array().unwrap().len(), 3);
        assert_eq!(contact["first_name"], "Pat");
        assert!(sim.counters().ids_for_pages >= 3);
        // Merging again changes nothing (idempotent): a second visit through every Page.
        for (ts, page) in PAGES.iter().enumerate() {
            visit(&host, page, &format!("p{page}"), 20 + ts as i64).await;
        }
        assert_eq!(contact_of(&host, "3333", "p3333"), p[0]);
        assert_eq!(
            host.app.core.db.rows_mentioning("contacts", "Pat").unwrap(),
            1
        );
        host.stop(Duration::from_secs(5)).await.unwrap();
        sim.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test]
async fn a_changed_profile_updates_the_contact() {
    let flow = seeing_flow().await;
    let dir = temp_dir();
    let ep = endpoint_toml(&flow.toml(), quiet_messenger());
    let h = Harness::start_with(sim_config(vec![sim_user("u1", "Ada")]), &server(&dir), &ep).await;
    say(&h, "u1", "m1", "hello", 1).await;
    let (_, before) = admin_get(&h, "/admin/contacts?endpoint=shop&psid=u1").await;
    h.host.stop(Duration::from_secs(5)).await.unwrap();
    // The user renamed themselves on Facebook; the next profile fetch brings the new name.
    let mut renamed = sim_user("u1", "Adelaide");
    renamed.profile_pic = "https://pics.example/new.jpg".into();
    let h = Harness::start_with(sim_config(vec![renamed]), &server(&dir), &ep).await;
    say(&h, "u1", "m2", "again", 2).await;
    let (_, after) = admin_get(&h, "/admin/contacts?endpoint=shop&psid=u1").await;
    assert_eq!(after["contact_id"], before["contact_id"]);
    assert_eq!(before["first_name"], "Ada");
    assert_eq!(after["first_name"], "Adelaide");
    assert_eq!(after["profile_pic"], "https://pics.example/new.jpg");
    assert_eq!(after["first_seen_ms"], before["first_seen_ms"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failed_ids_for_pages_leaves_contacts_separate_and_a_later_turn_merges_them() {
    let dir = temp_dir();
    let (sim, host) = business_host(&dir).await;
    sim.set_faults(ferry::sim::Faults {
        ids_for_pages_error: true,
        ..Default::default()
    });
    visit(&host, "1111", "p1111", 1).await;
    visit(&host, "2222", "p2222", 2).await;
    let (a, b) = (
        contact_of(&host, "1111", "p1111"),
        contact_of(&host, "2222", "p2222"),
    );
    assert!(a.is_some() && b.is_some());
    assert_ne!(a, b, "the call failed: two separate contacts, nothing lost");
    sim.set_faults(ferry::sim::Faults::default());
    visit(&host, "2222", "p2222", 3).await;
    assert_eq!(
        contact_of(&host, "1111", "p1111"),
        contact_of(&host, "2222", "p2222"),
        "merged once Meta answers"
    );
    host.stop(Duration::from_secs(5)).await.unwrap();
    sim.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
