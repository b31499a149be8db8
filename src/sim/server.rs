//! The HTTP side: routes, shared state, the call record, counters and the `/_sim/` control API.

use super::auth::authenticate;
use super::directory::Directory;
use super::errors::GraphError;
use super::faults::{FaultState, Verdict};
use super::wire::{self, Query};
use super::{
    profile, send, CallKind, Faults, RecordedCall, SimConfig, SimCounters, SimError, SimPage,
};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// State shared by all handlers and every [`super::SimHandle`].
pub(crate) struct Shared {
    pub dir: Directory,
    pub granted_fields: Vec<String>,
    pub require_proof: bool,
    pub accept_unknown_users: bool,
    pub base_url: String,
    record_calls: bool,
    max_recorded_calls: usize,
    started: Instant,
    log: Mutex<CallLog>,
    logged: Notify,
    faults: Mutex<FaultState>,
    counters: Counters,
    mid_prefix: u32,
    next_mid: AtomicU64,
    stop: watch::Sender<bool>,
    stopped: watch::Sender<bool>,
}

#[derive(Default)]
struct CallLog {
    next_seq: u64,
    calls: VecDeque<RecordedCall>,
}

#[derive(Default)]
struct Counters {
    total: AtomicU64,
    messages: AtomicU64,
    sender_actions: AtomicU64,
    profiles: AtomicU64,
    ids_for_pages: AtomicU64,
    errors: AtomicU64,
}

/// One incoming Graph call, decoded.
pub(crate) struct Call<'a> {
    pub version: &'a str,
    pub node: &'a str,
    pub path: &'a str,
    pub query: &'a Query,
    pub headers: &'a HeaderMap,
    pub body: &'a Value,
}

/// A handler's answer plus what the record needs to know about the call.
pub(crate) struct Outcome {
    pub kind: CallKind,
    pub page_id: Option<String>,
    pub recipient: Option<String>,
    pub result: Result<Value, GraphError>,
    /// Replaces the reply in the record when the reply carries credentials.
    pub recorded: Option<Value>,
}

impl Outcome {
    pub fn new(kind: CallKind, recipient: Option<String>) -> Outcome {
        Outcome {
            kind,
            page_id: None,
            recipient,
            result: Ok(Value::Null),
            recorded: None,
        }
    }
}

/// When and in which order a call arrived.
struct Arrival {
    seq: u64,
    at_ms: f64,
}

pub(crate) fn serve(
    cfg: SimConfig,
    listener: tokio::net::TcpListener,
) -> std::io::Result<Arc<Shared>> {
    let dir = Directory::build(&cfg)?;
    let base_url = base_url(listener.local_addr()?);
    let (stop, mut stop_rx) = watch::channel(false);
    let (stopped, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        dir,
        granted_fields: cfg.granted_fields,
        require_proof: cfg.require_appsecret_proof,
        accept_unknown_users: cfg.accept_unknown_users,
        base_url,
        record_calls: cfg.record_calls,
        max_recorded_calls: cfg.max_recorded_calls.max(1),
        started: Instant::now(),
        log: Mutex::new(CallLog::default()),
        logged: Notify::new(),
        faults: Mutex::new(FaultState::new(Faults::default())),
        counters: Counters::default(),
        mid_prefix: rand::random(),
        next_mid: AtomicU64::new(0),
        stop,
        stopped,
    });
    let app = router(shared.clone());
    let running = shared.clone();
    tokio::spawn(async move {
        let graceful = async move {
            // An error means every sender is gone, which also means stop.
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(graceful)
            .await
        {
            tracing::warn!(error = %e, "graph emulator stopped with an error");
        }
        running.stopped.send_replace(true);
    });
    Ok(shared)
}

/// A wildcard bind is reached through loopback.
fn base_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("http://{ip}:{}", addr.port())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_sim/healthz", get(healthz))
        .route("/_sim/calls", get(list_calls).delete(delete_calls))
        .route("/_sim/faults", put(put_faults).get(get_faults))
        .route("/_sim/counters", get(get_counters))
        .route("/{version}/{node}/messages", graph(post(post_messages)))
        .route(
            "/{version}/{node}/ids_for_pages",
            graph(get(get_ids_for_pages)),
        )
        .route("/{version}/{node}", graph(get(get_node)))
        .fallback(unknown_route)
        .with_state(shared)
}

/// Graph answers a wrong method with a Graph error, not a bare 405.
fn graph(route: MethodRouter<Arc<Shared>>) -> MethodRouter<Arc<Shared>> {
    route.fallback(unknown_route)
}

async fn post_messages(
    State(sim): State<Arc<Shared>>,
    Path((version, node)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrival = sim.arrive();
    let query = wire::parse_query(uri.query());
    let body = wire::parse_body(&headers, &body);
    let call = Call {
        version: &version,
        node: &node,
        path: uri.path(),
        query: &query,
        headers: &headers,
        body: &body,
    };
    let outcome = send::handle(&sim, &call).await;
    sim.finish(arrival, Method::POST, &call, outcome)
}

async fn get_node(
    State(sim): State<Arc<Shared>>,
    Path((version, node)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let arrival = sim.arrive();
    let query = wire::parse_query(uri.query());
    let call = Call {
        version: &version,
        node: &node,
        path: uri.path(),
        query: &query,
        headers: &headers,
        body: &Value::Null,
    };
    let outcome = profile::handle_node(&sim, &call);
    sim.finish(arrival, Method::GET, &call, outcome)
}

async fn get_ids_for_pages(
    State(sim): State<Arc<Shared>>,
    Path((version, node)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let arrival = sim.arrive();
    let query = wire::parse_query(uri.query());
    let call = Call {
        version: &version,
        node: &node,
        path: uri.path(),
        query: &query,
        headers: &headers,
        body: &Value::Null,
    };
    let outcome = profile::handle_ids_for_pages(&sim, &call);
    sim.finish(arrival, Method::GET, &call, outcome)
}

async fn unknown_route(
    State(sim): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrival = sim.arrive();
    let query = wire::parse_query(uri.query());
    let body = wire::parse_body(&headers, &body);
    let call = Call {
        version: "",
        node: "",
        path: uri.path(),
        query: &query,
        headers: &headers,
        body: &body,
    };
    let mut outcome = Outcome::new(CallKind::Other, None);
    outcome.result = Err(GraphError::unknown_path(uri.path()));
    sim.finish(arrival, method, &call, outcome)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "ok": true }))
}

async fn list_calls(State(sim): State<Arc<Shared>>) -> Json<Vec<RecordedCall>> {
    Json(sim.calls())
}

async fn delete_calls(State(sim): State<Arc<Shared>>) -> StatusCode {
    sim.clear_calls();
    StatusCode::NO_CONTENT
}

async fn get_faults(State(sim): State<Arc<Shared>>) -> Json<Faults> {
    Json(sim.faults())
}

async fn put_faults(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            sim.set_faults(faults);
            Json(sim.faults()).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn get_counters(State(sim): State<Arc<Shared>>) -> Json<SimCounters> {
    Json(sim.counters())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the emulator down with it; the data stays usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn authenticate(&self, call: &Call<'_>) -> Result<&SimPage, GraphError> {
        authenticate(&self.dir, self.require_proof, call.query, call.headers)
    }

    /// Graph paths start with a version such as `v25.0`.
    pub fn check_version(&self, call: &Call<'_>) -> Result<(), GraphError> {
        let valid = call
            .version
            .strip_prefix('v')
            .and_then(|v| v.split_once('.'))
            .is_some_and(|(major, minor)| is_digits(major) && is_digits(minor));
        if valid {
            Ok(())
        } else {
            Err(GraphError::unknown_path(call.path))
        }
    }

    pub fn decide_faults(&self, tagged: bool) -> Verdict {
        lock(&self.faults).decide(tagged)
    }

    /// Meta's message ids are opaque `m_...` strings; these are unique per emulator instance.
    pub fn mint_message_id(&self) -> String {
        let n = self.next_mid.fetch_add(1, Ordering::Relaxed);
        format!("m_sim{:08x}{n:010x}", self.mid_prefix)
    }

    /// Sequence number and time are taken together under the lock so that both grow in arrival order.
    fn arrive(&self) -> Arrival {
        if !self.record_calls {
            return Arrival { seq: 0, at_ms: 0.0 };
        }
        let mut log = lock(&self.log);
        let seq = log.next_seq;
        log.next_seq += 1;
        Arrival {
            seq,
            at_ms: self.started.elapsed().as_secs_f64() * 1000.0,
        }
    }

    fn finish(
        &self,
        arrival: Arrival,
        method: Method,
        call: &Call<'_>,
        outcome: Outcome,
    ) -> Response {
        let (status, reply) = match &outcome.result {
            Ok(value) => (StatusCode::OK, value.clone()),
            Err(e) => (
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                e.to_json(),
            ),
        };
        self.count(outcome.kind, status);
        if self.record_calls {
            let recorded = match (&outcome.recorded, status.is_success()) {
                (Some(redacted), true) => redacted.clone(),
                _ => reply.clone(),
            };
            self.record(RecordedCall {
                seq: arrival.seq,
                at_ms: arrival.at_ms,
                method: method.to_string(),
                path: call.path.to_string(),
                query: wire::redact(call.query),
                body: call.body.clone(),
                status: status.as_u16(),
                response: recorded,
                kind: outcome.kind,
                page_id: outcome.page_id,
                recipient: outcome.recipient,
            });
        }
        (status, Json(reply)).into_response()
    }

    fn count(&self, kind: CallKind, status: StatusCode) {
        let c = &self.counters;
        c.total.fetch_add(1, Ordering::Relaxed);
        let counter = if !status.is_success() {
            &c.errors
        } else {
            match kind {
                CallKind::Message => &c.messages,
                CallKind::SenderAction => &c.sender_actions,
                CallKind::Profile => &c.profiles,
                CallKind::IdsForPages => &c.ids_for_pages,
                CallKind::Other => return,
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps the log sorted by arrival: a delayed call is inserted behind the later calls that finished first.
    fn record(&self, call: RecordedCall) {
        {
            let mut log = lock(&self.log);
            let at = log
                .calls
                .iter()
                .rposition(|c| c.seq < call.seq)
                .map_or(0, |i| i + 1);
            log.calls.insert(at, call);
            while log.calls.len() > self.max_recorded_calls {
                log.calls.pop_front();
            }
        }
        self.logged.notify_waiters();
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.log).calls.iter().cloned().collect()
    }

    pub fn clear_calls(&self) {
        lock(&self.log).calls.clear();
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.faults) = FaultState::new(faults);
    }

    pub fn faults(&self) -> Faults {
        lock(&self.faults).plan().clone()
    }

    pub fn counters(&self) -> SimCounters {
        let c = &self.counters;
        SimCounters {
            total: c.total.load(Ordering::Relaxed),
            messages: c.messages.load(Ordering::Relaxed),
            sender_actions: c.sender_actions.load(Ordering::Relaxed),
            profiles: c.profiles.load(Ordering::Relaxed),
            ids_for_pages: c.ids_for_pages.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    /// The calls, if `pred` holds for them now.
    fn calls_if(
        &self,
        pred: &impl Fn(&[RecordedCall]) -> bool,
    ) -> Result<Vec<RecordedCall>, usize> {
        let mut log = lock(&self.log);
        let calls = log.calls.make_contiguous();
        if pred(calls) {
            Ok(calls.to_vec())
        } else {
            Err(calls.len())
        }
    }

    pub async fn wait_for_calls(
        &self,
        pred: impl Fn(&[RecordedCall]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<RecordedCall>, SimError> {
        let begun = Instant::now();
        loop {
            // Registered before checking, so a call recorded in between still wakes us.
            let logged = self.logged.notified();
            tokio::pin!(logged);
            logged.as_mut().enable();
            let seen = match self.calls_if(&pred) {
                Ok(calls) => return Ok(calls),
                Err(seen) => seen,
            };
            let remaining = timeout.saturating_sub(begun.elapsed());
            if remaining.is_zero() || tokio::time::timeout(remaining, logged).await.is_err() {
                return Err(SimError::WaitTimeout {
                    waited_ms: begun.elapsed().as_millis(),
                    seen,
                });
            }
        }
    }

    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    pub async fn stopped(&self) {
        let mut rx = self.stopped.subscribe();
        // An error means the server task is gone, which is stopped too.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}
