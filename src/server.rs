//! The HTTP surface: thin handlers that check, parse and hand events over; turns run in `pipeline`.
//!
//! | route | what |
//! |---|---|
//! | `GET /webhooks/messenger/{endpoint}` | Meta's verification handshake |
//! | `POST /webhooks/messenger/{endpoint}` | events: signature, parse, store in the inbox, then 200 |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | operations |
//! | `/admin/...` | plugin management, see `admin` |

use crate::app::App;
use crate::messenger::signature::{self, SignatureError};
use crate::messenger::webhook::{self, Event};
use crate::store::NewEvent;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

pub fn router(app: Arc<App>) -> Router {
    let limit = app.max_body_bytes;
    Router::new()
        .route(
            "/webhooks/messenger/{endpoint}",
            get(verify_subscription).post(receive_events),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .merge(crate::admin::routes())
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

/// Serves until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

async fn verify_subscription(
    State(app): State<Arc<App>>,
    Path(endpoint): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(ep) = app.endpoints.get(&endpoint) else {
        return plain(StatusCode::NOT_FOUND, "unknown endpoint");
    };
    let (Some(mode), Some(token), Some(challenge)) = (
        query.get("hub.mode"),
        query.get("hub.verify_token"),
        query.get("hub.challenge"),
    ) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "hub.mode, hub.verify_token and hub.challenge are required",
        );
    };
    if mode != "subscribe" {
        return plain(StatusCode::BAD_REQUEST, "hub.mode must be subscribe");
    }
    let expected = ep.config.verify_token.expose().as_bytes();
    if !bool::from(token.as_bytes().ct_eq(expected)) {
        tracing::warn!(endpoint = %ep.id, "webhook verification with a wrong verify token");
        return plain(StatusCode::FORBIDDEN, "verify token mismatch");
    }
    tracing::info!(endpoint = %ep.id, "webhook verified by Meta");
    // The challenge goes back verbatim, as a string: never parse it.
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        challenge.clone(),
    )
        .into_response()
}

async fn receive_events(
    State(app): State<Arc<App>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let accepted_at = Instant::now();
    let Some(ep) = app.endpoints.get(&endpoint) else {
        return plain(StatusCode::NOT_FOUND, "unknown endpoint");
    };
    let metrics = &app.core.metrics;
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(e) = signature::verify(
        ep.config.app_secret.expose().as_bytes(),
        &body,
        header_str("x-hub-signature-256"),
        header_str("x-hub-signature"),
        ep.config.accept_sha1,
    ) {
        metrics.inc("ferry_signature_failures_total", &[("endpoint", &*ep.id)]);
        tracing::warn!(endpoint = %ep.id, reason = %e, "webhook call rejected: bad signature");
        let text = match e {
            SignatureError::Missing => "missing signature",
            SignatureError::Malformed | SignatureError::Mismatch => "invalid signature",
        };
        return plain(StatusCode::UNAUTHORIZED, text);
    }
    let notification = match webhook::parse(&body) {
        Ok(n) => n,
        Err(e) => {
            metrics.inc(
                "ferry_webhook_rejected_total",
                &[("endpoint", &*ep.id), ("reason", "not_json")],
            );
            tracing::warn!(endpoint = %ep.id, error = %e, "webhook body is not a JSON object");
            return plain(StatusCode::BAD_REQUEST, "body must be a JSON object");
        }
    };
    for warning in &notification.warnings {
        tracing::warn!(endpoint = %ep.id, "webhook body: {warning}");
    }
    if notification.object != "page" {
        tracing::info!(endpoint = %ep.id, object = %notification.object, "webhook for another object type ignored");
        return plain(StatusCode::OK, "EVENT_RECEIVED");
    }

    let mut accepted: Vec<NewEvent> = Vec::new();
    for entry in notification.entries {
        for event in entry.events {
            if let Some(event) = admit(&app, ep, &entry.id, event) {
                accepted.push(NewEvent {
                    endpoint_id: ep.id.to_string(),
                    page_id: ep.config.page_id.0.clone(),
                    user_id: event.user_id().unwrap_or_default().to_string(),
                    dedup_key: event.dedup_key(),
                    event: event.raw.get().to_string(),
                });
            }
        }
    }
    if accepted.is_empty() {
        return plain(StatusCode::OK, "EVENT_RECEIVED");
    }
    // The 200 goes out only once every event of the body is on disk (or known as a redelivery).
    match app.core.journal.append(accepted).await {
        Ok(stored) => {
            let duplicates = stored.iter().filter(|s| s.is_none()).count();
            if duplicates > 0 {
                metrics.add(
                    "ferry_events_duplicate_total",
                    &[("endpoint", &*ep.id)],
                    duplicates as u64,
                );
                tracing::info!(endpoint = %ep.id, duplicates, "redelivered events ignored");
            }
            metrics.observe(
                "ferry_ack_duration_seconds",
                &[("endpoint", &*ep.id)],
                accepted_at.elapsed().as_secs_f64(),
            );
            plain(StatusCode::OK, "EVENT_RECEIVED")
        }
        Err(e) => {
            metrics.inc(
                "ferry_webhook_rejected_total",
                &[("endpoint", &*ep.id), ("reason", "not_stored")],
            );
            tracing::warn!(endpoint = %ep.id, error = %e, "webhook refused: events could not be stored");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot store events now, retry later",
            )
        }
    }
}

/// Counts an event and decides whether it starts a turn. Events for another Page and echoes never do.
fn admit(app: &App, ep: &crate::app::Endpoint, entry_id: &str, event: Event) -> Option<Event> {
    let metrics = &app.core.metrics;
    let kind = event.kind_name();
    let ignore = |reason: &'static str| {
        metrics.inc(
            "ferry_events_ignored_total",
            &[("endpoint", &*ep.id), ("reason", reason)],
        );
    };
    let page_id = &*ep.config.page_id;
    if entry_id != page_id || event.page_side().is_some_and(|p| p != page_id) {
        tracing::warn!(endpoint = %ep.id, entry = %entry_id, kind, "event for another Page ignored");
        ignore("other_page");
        return None;
    }
    metrics.inc(
        "ferry_events_received_total",
        &[("endpoint", &*ep.id), ("kind", kind)],
    );
    if event.is_echo() {
        ignore("echo");
        return None;
    }
    if event.source == webhook::Source::Standby {
        // Another app (a human agent in the Page Inbox, say) owns this thread: answering would talk over it.
        tracing::info!(endpoint = %ep.id, kind, "standby event recorded; this app does not own the thread");
        ignore("standby");
        return None;
    }
    if !ep.runs_flow_for(kind) || event.user_id().is_none() {
        tracing::info!(endpoint = %ep.id, kind, "event recorded; it does not start a turn");
        ignore("not_a_flow_event");
        return None;
    }
    Some(event)
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    if app.endpoints.is_empty() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "no endpoint configured");
    }
    plain(StatusCode::OK, "ready")
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut text = app.core.metrics.render();
    text.push_str(&format!(
        "# HELP ferry_inbox_waiting Events accepted and not yet completed (in the durable inbox).\n\
         # TYPE ferry_inbox_waiting gauge\nferry_inbox_waiting {}\n\
         # HELP ferry_turns_pending Turns in memory, queued or running.\n\
         # TYPE ferry_turns_pending gauge\nferry_turns_pending {}\n",
        app.core.journal.waiting(),
        app.dispatcher.pending()
    ));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}
