//! Test harness: the real host on 127.0.0.1:0, the Graph API emulator, and a scriptable HTTP flow.
#![allow(dead_code)]

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use ferry::config::Config;
use ferry::run::Running;
use ferry::sim::{RecordedCall, Sim, SimConfig, SimHandle, SimPage, SimUser};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

pub const PAGE: &str = "1111";
pub const PAGE_TOKEN: &str = "page-token-1111";
pub const APP_SECRET: &str = "app-secret-1111";
pub const VERIFY: &str = "verify-1111";

pub async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

pub fn sim_user(psid: &str, first: &str) -> SimUser {
    SimUser {
        psid: psid.into(),
        page_id: PAGE.into(),
        first_name: first.into(),
        last_name: "Tester".into(),
        profile_pic: format!("https://pics.example/{psid}.jpg"),
        locale: "de_DE".into(),
        timezone: 1.0,
        gender: Some("female".into()),
        person: format!("person-{psid}"),
    }
}

pub fn sim_config(users: Vec<SimUser>) -> SimConfig {
    SimConfig {
        pages: vec![SimPage {
            id: PAGE.into(),
            access_token: PAGE_TOKEN.into(),
            app_secret: Some(APP_SECRET.into()),
            name: "Test Page".into(),
        }],
        users,
        ..SimConfig::default()
    }
}

/// A fresh directory under the system's temp dir (the database and plugin store of one test host).
pub fn temp_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ferry-test-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        ferry::sessions::new_session_id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub struct Harness {
    pub sim: SimHandle,
    pub host: Running,
    pub http: reqwest::Client,
}

/// The `[[endpoint]]` TOML for the test page, with the flow table and extra settings appended by the caller.
pub fn endpoint_toml(flow: &str, extra: &str) -> String {
    format!(
        r#"
[[endpoint]]
id = "shop"
page_id = "{PAGE}"
page_access_token = "{PAGE_TOKEN}"
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY}"
{extra}

[endpoint.flow]
{flow}
"#
    )
}

impl Harness {
    /// Host + emulator; `endpoint` is the endpoint TOML (see [`endpoint_toml`]).
    pub async fn start(sim_cfg: SimConfig, endpoint: &str) -> Harness {
        Harness::start_with(sim_cfg, "", endpoint).await
    }

    pub async fn start_with(sim_cfg: SimConfig, server_extra: &str, endpoint: &str) -> Harness {
        Harness::start_with_clock(
            sim_cfg,
            server_extra,
            endpoint,
            Arc::new(ferry::store::SystemClock),
        )
        .await
    }

    /// With a clock the test moves by hand.
    pub async fn start_with_clock(
        sim_cfg: SimConfig,
        server_extra: &str,
        endpoint: &str,
        clock: Arc<dyn ferry::store::Clock>,
    ) -> Harness {
        let dir;
        let server_extra = if server_extra.contains("data_dir") {
            server_extra.to_string()
        } else {
            dir = temp_dir();
            format!("{server_extra}\ndata_dir = \"{}\"", dir.display())
        };
        // Tests run four at a time on the same cores, and several set wall-time limits of a few hundred
        // milliseconds. At the production default (turns at niceness 15) those limits would depend on what
        // the other tests are doing; priorities have a test of their own (`turn_threads_run_at_...`).
        let server_extra = if server_extra.contains("turn_niceness") {
            server_extra
        } else {
            format!("{server_extra}\nturn_niceness = 0")
        };
        let server_extra = server_extra.as_str();
        let sim = Sim::start(sim_cfg, listener().await).await.unwrap();
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n[graph]\nbase_url = \"{}\"\nversion = \"v25.0\"\n{endpoint}",
            sim.url()
        );
        let config = Config::parse(&config).unwrap_or_else(|e| panic!("{e}\n{config}"));
        let host = ferry::run::start_with_clock(config, listener().await, clock)
            .await
            .unwrap();
        Harness {
            sim,
            host,
            http: reqwest::Client::new(),
        }
    }

    pub fn webhook(&self) -> String {
        self.host.webhook_url("shop")
    }

    /// Posts a body signed with the test app secret; returns the status and the reply text.
    pub async fn post_signed(&self, body: &[u8]) -> (u16, String) {
        let sig = ferry::messenger::signature::sign_sha256(APP_SECRET, body);
        self.post_with_headers(body, &[("x-hub-signature-256", &sig)])
            .await
    }

    pub async fn post_json(&self, body: &Value) -> (u16, String) {
        self.post_signed(&serde_json::to_vec(body).unwrap()).await
    }

    pub async fn post_with_headers(&self, body: &[u8], headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = self
            .http
            .post(self.webhook())
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    /// Waits until the host finished every accepted turn.
    pub async fn idle(&self) {
        assert!(
            self.host.wait_idle(Duration::from_secs(20)).await,
            "turns did not finish"
        );
    }

    /// Send API calls carrying a message (not sender actions), in order.
    pub fn messages(&self) -> Vec<RecordedCall> {
        self.sim
            .calls()
            .into_iter()
            .filter(|c| c.body.get("message").is_some())
            .collect()
    }

    /// The texts of delivered messages, in order.
    pub fn texts(&self) -> Vec<String> {
        self.messages()
            .iter()
            .filter_map(|c| c.body.pointer("/message/text").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.host.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// A webhook body with one entry for the test page holding `items`.
pub fn body(items: Vec<Value>) -> Value {
    json!({"object": "page", "entry": [{"id": PAGE, "time": 1_700_000_000_000i64, "messaging": items}]})
}

pub fn text_event(psid: &str, mid: &str, text: &str, ts: i64) -> Value {
    json!({"sender": {"id": psid}, "recipient": {"id": PAGE}, "timestamp": ts,
           "message": {"mid": mid, "text": text}})
}

pub fn postback_event(psid: &str, payload: &str, ts: i64) -> Value {
    json!({"sender": {"id": psid}, "recipient": {"id": PAGE}, "timestamp": ts,
           "postback": {"mid": format!("pb-{ts}"), "title": "Start", "payload": payload}})
}

/// A scriptable HTTP flow: records every request body and answers with `reply(request)`.
pub struct TestFlow {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Value>>>,
}

type Reply = Arc<dyn Fn(&Value) -> (u16, String, u64) + Send + Sync>;

impl TestFlow {
    /// `reply` returns (status, body, delay in ms).
    pub async fn start(
        reply: impl Fn(&Value) -> (u16, String, u64) + Send + Sync + 'static,
    ) -> TestFlow {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state: (Arc<Mutex<Vec<Value>>>, Reply) = (Arc::clone(&requests), Arc::new(reply));
        let app = Router::new().route("/flow", post(answer)).with_state(state);
        let l = listener().await;
        let url = format!("http://{}/flow", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        TestFlow { url, requests }
    }

    /// A flow answering `{"outputs": outputs}` to everything.
    pub async fn answering(outputs: Value) -> TestFlow {
        let body = json!({ "outputs": outputs }).to_string();
        TestFlow::start(move |_| (200, body.clone(), 0)).await
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    pub fn toml(&self) -> String {
        format!("kind = \"http\"\nurl = \"{}\"\ntimeout_ms = 1000\nfallback_text = \"Sorry, something went wrong.\"", self.url)
    }
}

async fn answer(
    State((requests, reply)): State<(Arc<Mutex<Vec<Value>>>, Reply)>,
    Json(body): Json<Value>,
) -> (axum::http::StatusCode, String) {
    requests.lock().unwrap().push(body.clone());
    let (status, text, delay) = reply(&body);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    (axum::http::StatusCode::from_u16(status).unwrap(), text)
}

/// Settings that make turns fast and easy to assert: no typing, no delay, no mark_seen.
pub const QUIET: &str = "";
pub fn quiet_messenger() -> &'static str {
    "\n[endpoint.messenger]\ntyping_indicators = false\nmessage_delay_ms = 0\nmark_seen = false\n"
}

/// A server that records every request (method, path, body) and answers 200 with a fixed body.
pub struct Recorder {
    pub origin: String,
    requests: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Recorder {
    pub async fn start(reply: &'static str) -> Recorder {
        let requests: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
        let seen = Arc::clone(&requests);
        let app = Router::new().fallback(move |req: axum::extract::Request| {
            let seen = Arc::clone(&seen);
            async move {
                let (parts, body) = req.into_parts();
                let bytes = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                seen.lock().unwrap().push((
                    parts.method.to_string(),
                    parts.uri.path().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
                reply
            }
        });
        let l = listener().await;
        let origin = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        Recorder { origin, requests }
    }

    pub fn requests(&self) -> Vec<(String, String, String)> {
        self.requests.lock().unwrap().clone()
    }
}
