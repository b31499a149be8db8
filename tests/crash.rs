//! The crash and fault test: a real `ferry serve` process, killed with SIGKILL twice while 5,000 events from
//! 500 users arrive, with the Graph API emulator failing 5% of sends with HTTP 500 and 2% with code 613, and
//! 3% of webhook deliveries duplicated (half at once, half after the last restart).
//!
//! The test plays Meta: it delivers each user's events in order, retrying a delivery until it gets a 200
//! (through the kills), and it records when each kill happened. Afterwards it checks the promise in the
//! README: every acknowledged event completed exactly one turn; the flow saw each event once, except an event
//! whose flow call was in flight at a kill; every user's messages reached the emulator in order and once,
//! except a send in flight at a kill (repeated right after the restart); redeliveries ran nothing; the inbox
//! is empty.

mod common;

use common::*;
use ferry::sim::{Faults, Sim};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const USERS: usize = 500;
const EVENTS_PER_USER: usize = 10;
const TOTAL: usize = USERS * EVENTS_PER_USER;
/// Events acknowledged before the first and the second kill.
const KILL_AT: [usize; 2] = [TOTAL * 3 / 10, TOTAL * 6 / 10];
/// Concurrent webhook deliveries (Meta's side).
const SENDERS: usize = 64;

fn psid(user: usize) -> String {
    format!("{}", 7_000_000 + user)
}

fn event_text(user: usize, i: usize) -> String {
    format!("u{user}-e{i}")
}

/// The host process and where it listens.
struct Host {
    child: Child,
    url: String,
}

fn start_host(config: &Path, log: &Path) -> Host {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config"])
        .arg(config)
        .env("FERRY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("ferry starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .next()
        .expect("ferry prints its address")
        .expect("readable stdout");
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Host { child, url }
}

/// Everything the test observes, with times relative to its start.
#[derive(Default)]
struct Observed {
    /// Flow calls: (event text, ms since start).
    flow_calls: Vec<(String, f64)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_twice_under_faults_and_duplicates_keeps_every_turn_exactly_once() {
    let started = Instant::now();
    let since_start = move || started.elapsed().as_secs_f64() * 1000.0;

    // The emulator (Meta's Graph API) with the fault plan.
    let users: Vec<_> = (0..USERS)
        .map(|u| sim_user(&psid(u), &format!("User{u}")))
        .collect();
    let sim = Sim::start(sim_config(users), listener().await)
        .await
        .unwrap();
    // The emulator's call times count from its own start: shift them onto the test's clock.
    let sim_offset = since_start();
    sim.set_faults(Faults {
        http_500_percent: 5.0,
        code_613_percent: 2.0,
        latency_ms: 1,
        seed: 7,
        ..Faults::default()
    });

    // The flow: answers each event with two messages, after a short random pause (so kills land mid-call).
    let observed = Arc::new(Mutex::new(Observed::default()));
    let seen = Arc::clone(&observed);
    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(11)));
    let flow = TestFlow::start(move |request: &Value| {
        let text = request["text"].as_str().unwrap_or("").to_string();
        seen.lock()
            .unwrap()
            .flow_calls
            .push((text.clone(), since_start()));
        let pause = rng.lock().unwrap().gen_range(0..15);
        let outputs =
            json!({"outputs": [{"text": format!("{text}/1")}, {"text": format!("{text}/2")}]});
        (200, outputs.to_string(), pause)
    })
    .await;

    let dir = temp_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("ferry.toml");
    std::fs::write(&config_path, config(&dir, &sim.url(), &flow.url)).unwrap();
    let log_path = dir.join("ferry.log");
    let host = start_host(&config_path, &log_path);
    let url = Arc::new(RwLock::new(host.url.clone()));
    let host = Arc::new(Mutex::new(host));

    // Meta's side: each user's events in order; 3% delivered twice.
    let mut plan_rng = StdRng::seed_from_u64(3);
    let mut immediate_dupes = HashSet::new();
    let mut late_dupes = Vec::new();
    for u in 0..USERS {
        for i in 0..EVENTS_PER_USER {
            if plan_rng.gen_bool(0.03) {
                if plan_rng.gen_bool(0.5) {
                    immediate_dupes.insert((u, i));
                } else {
                    late_dupes.push((u, i));
                }
            }
        }
    }
    let immediate_dupes = Arc::new(immediate_dupes);
    let acked = Arc::new(AtomicUsize::new(0));
    let deliveries = Arc::new(AtomicUsize::new(0));
    // (SIGKILL sent, new host ready): a repeat must straddle one of these windows.
    let kills: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();

    // The killer: SIGKILL at the planned points, then a restart on the same data directory.
    let killer = {
        let (acked, url, host, kills) = (
            Arc::clone(&acked),
            Arc::clone(&url),
            Arc::clone(&host),
            Arc::clone(&kills),
        );
        let (config_path, log_path) = (config_path.clone(), log_path.clone());
        tokio::spawn(async move {
            for point in KILL_AT {
                while acked.load(Ordering::SeqCst) < point {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let mut h = host.lock().unwrap();
                let killed_at = since_start();
                h.child.kill().expect("SIGKILL");
                let _ = h.child.wait();
                *h = start_host(&config_path, &log_path);
                kills.lock().unwrap().push((killed_at, since_start()));
                *url.write().unwrap() = h.url.clone();
            }
        })
    };

    let next_user = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (next_user, url, acked, deliveries, dupes) = (
            Arc::clone(&next_user),
            Arc::clone(&url),
            Arc::clone(&acked),
            Arc::clone(&deliveries),
            Arc::clone(&immediate_dupes),
        );
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let u = next_user.fetch_add(1, Ordering::SeqCst);
                if u >= USERS {
                    return;
                }
                for i in 0..EVENTS_PER_USER {
                    deliver(&http, &url, &deliveries, u, i).await;
                    acked.fetch_add(1, Ordering::SeqCst);
                    if dupes.contains(&(u, i)) {
                        deliver(&http, &url, &deliveries, u, i).await;
                    }
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    killer.await.unwrap();
    assert_eq!(kills.lock().unwrap().len(), 2);
    // Redeliveries of events that were processed before the last restart.
    let http = reqwest::Client::new();
    for (u, i) in &late_dupes {
        deliver(&http, &url, &deliveries, *u, *i).await;
    }

    // Wait until every user's last message reached the emulator, then stop the host with SIGTERM.
    let expected_sends = TOTAL * 2;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let delivered: HashSet<String> = delivered_texts(&sim).into_iter().collect();
        if delivered.len() >= expected_sends {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {expected_sends} messages delivered; see {}",
            delivered.len(),
            log_path.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut h = Arc::try_unwrap(host)
        .ok()
        .expect("killer finished")
        .into_inner()
        .unwrap();
    let term = Command::new("kill")
        .args(["-TERM", &h.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = h.child.wait().unwrap();
    assert!(status.success(), "ferry exited with {status} after SIGTERM");

    // ── The checks. ──
    let kills = kills.lock().unwrap().clone();
    // The first copy went out before the new host was up, the second after the old one was killed.
    let straddles_a_kill = |first: f64, second: f64| {
        kills
            .iter()
            .any(|(killed, ready)| first < *ready && second > *killed)
    };

    // 1. Nothing is left in the inbox.
    let journal = ferry::store::Journal::open(&dir, Arc::new(ferry::store::SystemClock), 10)
        .expect("journal opens");
    assert_eq!(journal.waiting(), 0, "events left in the inbox");

    // 2. Every acknowledged event completed exactly one turn: one transcript each, none extra.
    let transcripts = transcript_texts(&dir);
    let mut flow_repeats = 0;
    let mut send_repeats = 0;
    for u in 0..USERS {
        for i in 0..EVENTS_PER_USER {
            let text = event_text(u, i);
            assert_eq!(
                transcripts.get(&text).copied().unwrap_or(0),
                1,
                "turns completed for {text}"
            );
        }
    }
    assert_eq!(transcripts.values().sum::<usize>(), TOTAL);

    // 3. The flow saw each event once, except a call in flight at a kill (made again after the restart).
    let observed = observed.lock().unwrap();
    let mut calls: HashMap<&str, Vec<f64>> = HashMap::new();
    for (text, at) in &observed.flow_calls {
        calls.entry(text.as_str()).or_default().push(*at);
    }
    for u in 0..USERS {
        let before = flow_repeats;
        for i in 0..EVENTS_PER_USER {
            let text = event_text(u, i);
            let times = calls.get(text.as_str()).cloned().unwrap_or_default();
            assert!(!times.is_empty(), "the flow never saw {text}");
            // Each repeat needs a kill of its own: a call in flight at one kill can be in flight again at
            // the next one, but never twice for the same kill.
            assert!(
                times.len() <= 1 + kills.len(),
                "the flow saw {text} {} times",
                times.len()
            );
            for pair in times.windows(2) {
                assert!(
                    straddles_a_kill(pair[0], pair[1]),
                    "{text} reached the flow twice without a kill between"
                );
                flow_repeats += 1;
            }
        }
        // Likewise at most one of their flow calls.
        assert!(flow_repeats - before <= kills.len(), "user {u}");
    }

    // 4. Every user's messages arrived in order, each once, except a send in flight at a kill, which is
    //    repeated right after it (adjacent) once the host is back (again at most once per kill).
    let per_user = delivered_per_user(&sim, sim_offset);
    for u in 0..USERS {
        let got = per_user.get(&psid(u)).cloned().unwrap_or_default();
        let before = send_repeats;
        let mut collapsed: Vec<String> = Vec::new();
        let mut previous_at = f64::NEG_INFINITY;
        for (text, at) in got {
            if collapsed.last() == Some(&text) {
                assert!(
                    straddles_a_kill(previous_at, at),
                    "{text} delivered twice without a kill between"
                );
                send_repeats += 1;
            } else {
                collapsed.push(text);
            }
            previous_at = at;
        }
        let expected: Vec<String> = (0..EVENTS_PER_USER)
            .flat_map(|i| {
                let t = event_text(u, i);
                [format!("{t}/1"), format!("{t}/2")]
            })
            .collect();
        assert_eq!(collapsed, expected, "messages of user {u}");
        // A user's turns run one at a time, so each kill interrupts at most one of their sends.
        assert!(
            send_repeats - before <= kills.len(),
            "user {u}: {} repeated sends",
            send_repeats - before
        );
    }

    let counters = sim.counters();
    let failed_sends = sim.calls().iter().filter(|c| c.status != 200).count();
    println!(
        "crash test: {TOTAL} events from {USERS} users, {} webhook deliveries ({} duplicated: {} at once, {} after the last restart), \
         2 SIGKILLs at {:?} ms; {} Send API calls ({} failed: HTTP 500 or code 613, retried); \
         flow repeats at a kill: {flow_repeats}; send repeats at a kill: {send_repeats}; inbox left: 0",
        deliveries.load(Ordering::SeqCst),
        immediate_dupes.len() + late_dupes.len(),
        immediate_dupes.len(),
        late_dupes.len(),
        kills.iter().map(|k| k.0.round() as u64).collect::<Vec<_>>(),
        counters.total,
        failed_sends,
    );
    assert!(failed_sends > 0, "the fault plan produced no failures");
}

/// Posts one event until the host answers 200 (through kills, restarts and 503s), like Meta does.
async fn deliver(
    http: &reqwest::Client,
    url: &RwLock<String>,
    deliveries: &AtomicUsize,
    user: usize,
    i: usize,
) {
    let item = text_event(
        &psid(user),
        &format!("mid.{user}.{i}"),
        &event_text(user, i),
        1_700_000_000_000 + (user * 100 + i) as i64,
    );
    let body = serde_json::to_vec(&common::body(vec![item])).unwrap();
    let signature = ferry::messenger::signature::sign_sha256(APP_SECRET, &body);
    loop {
        let base = url.read().unwrap().clone();
        deliveries.fetch_add(1, Ordering::SeqCst);
        let result = http
            .post(format!("{base}/webhooks/messenger/shop"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", &signature)
            .body(body.clone())
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        match result {
            Ok(resp) if resp.status() == 200 => return,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Texts of successfully delivered messages.
fn delivered_texts(sim: &ferry::sim::SimHandle) -> Vec<String> {
    sim.calls()
        .iter()
        .filter(|c| c.status == 200)
        .filter_map(|c| c.body.pointer("/message/text").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// Successfully delivered messages per recipient, in arrival order, with arrival times on the test's clock.
fn delivered_per_user(
    sim: &ferry::sim::SimHandle,
    offset_ms: f64,
) -> BTreeMap<String, Vec<(String, f64)>> {
    let mut out: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for call in sim.calls() {
        if call.status != 200 {
            continue;
        }
        let Some(text) = call.body.pointer("/message/text").and_then(Value::as_str) else {
            continue;
        };
        let to = call.body["recipient"]["id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        out.entry(to)
            .or_default()
            .push((text.to_string(), call.at_ms + offset_ms));
    }
    out
}

/// Transcript rows per event text, read from the host's database file.
fn transcript_texts(dir: &Path) -> HashMap<String, usize> {
    let conn = rusqlite::Connection::open(dir.join("ferry.db")).unwrap();
    let mut stmt = conn.prepare("SELECT input FROM transcripts").unwrap();
    let mut counts = HashMap::new();
    for input in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
        let input: Value = serde_json::from_str(&input.unwrap()).unwrap();
        let text = input["text"].as_str().unwrap_or("").to_string();
        *counts.entry(text).or_insert(0) += 1;
    }
    counts
}

fn config(dir: &Path, graph: &str, flow_url: &str) -> String {
    let settings = format!(
        "\n[endpoint.profiles]\nrequest = false\n{}\n[endpoint.delivery]\nmax_attempts = 30\nretry_base_ms = 10\nretry_max_ms = 200\ntext_per_second = 100000\n",
        quiet_messenger()
    );
    let flow = format!("kind = \"http\"\nurl = \"{flow_url}\"\ntimeout_ms = 10000");
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nshutdown_grace_ms = 5000\n\n[graph]\nbase_url = \"{graph}\"\nversion = \"v25.0\"\n{}",
        dir.display(),
        endpoint_toml(&flow, &settings)
    )
}
