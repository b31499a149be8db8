//! The admin API (bearer `server.admin_token`): an endpoint's transformer plugin, and contacts (inspection,
//! transcript export, the right to erasure).
//!
//! | route | what |
//! |---|---|
//! | `PUT /admin/endpoints/{id}/transformer` | body = the .wasm; validate, precompile, store, activate |
//! | `GET /admin/endpoints/{id}/transformer` | active version and history |
//! | `POST /admin/endpoints/{id}/transformer/rollback` | activate the previous version |
//! | `DELETE /admin/endpoints/{id}/transformer` | deactivate |
//! | `GET /admin/contacts?endpoint=..&psid=..`, `GET /admin/contacts/{id}` | a contact |
//! | `GET /admin/contacts/{id}/transcript` | its turns, oldest first |
//! | `DELETE /admin/contacts/{id}` | erase the contact and everything about it |
//! | `GET /admin/dead-letters?endpoint=..&limit=..` | messages that will never be delivered, and why |
//!
//! Activation swaps an `Arc`: turns in flight finish on the version they started with.

use crate::app::{App, Endpoint};
use crate::transformer::store::EndpointState;
use crate::transformer::PluginError;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Largest plugin upload (Python and JavaScript components are 12-20 MB).
pub const MAX_PLUGIN_BYTES: usize = 64 * 1024 * 1024;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/admin/endpoints/{endpoint}/transformer",
            get(show).put(upload).delete(deactivate),
        )
        .route(
            "/admin/endpoints/{endpoint}/transformer/rollback",
            post(rollback),
        )
        .layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES))
        .route("/admin/contacts", get(find_contact))
        .route(
            "/admin/contacts/{contact}",
            get(show_contact).delete(erase_contact),
        )
        .route("/admin/contacts/{contact}/transcript", get(show_transcript))
        .route("/admin/dead-letters", get(dead_letters))
}

#[derive(serde::Deserialize)]
struct DeadLetterQuery {
    endpoint: Option<String>,
    limit: Option<usize>,
}

/// `GET /admin/dead-letters[?endpoint=ID][&limit=N]`: messages that will never be delivered, newest first,
/// with the reason and Meta's error.
async fn dead_letters(
    State(app): State<Arc<App>>,
    Query(query): Query<DeadLetterQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied.into_response();
    }
    if let Some(id) = &query.endpoint {
        if let Err(unknown) = endpoint(&app, id) {
            return unknown.into_response();
        }
    }
    let limit = query.limit.unwrap_or(100).min(10_000);
    match app
        .core
        .journal
        .dead_letters(query.endpoint.as_deref(), limit)
    {
        Ok(letters) => Json(json!({ "dead_letters": letters })).into_response(),
        Err(e) => db_error(e),
    }
}

/// A refused admin request: the status and a reason for the operator (never a secret).
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

/// Checks the bearer token in constant time (over hashes, so the length does not leak either).
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(token) = &app.admin_token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: set server.admin_token",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let matches =
        Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(token.expose().as_bytes()));
    if given.is_empty() || !bool::from(matches) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ));
    }
    Ok(())
}

/// The bearer token checked first, then the endpoint looked up: an unknown id is never revealed to a caller
/// without the token.
fn authorized_endpoint(app: &App, headers: &HeaderMap, id: &str) -> Result<Arc<Endpoint>, Refusal> {
    authorize(app, headers)?;
    endpoint(app, id)
}

fn endpoint(app: &App, id: &str) -> Result<Arc<Endpoint>, Refusal> {
    app.endpoints
        .get(id)
        .cloned()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("unknown endpoint `{id}`")))
}

fn plugin_error(e: PluginError) -> Refusal {
    let status = match e {
        PluginError::Io(_) | PluginError::Runtime(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "plugin store failure");
    }
    error(status, e.to_string())
}

fn state_json(ep: &Endpoint, state: &EndpointState) -> Response {
    let running = ep.plugin.current().map(|p| p.info.sha256.clone());
    Json(json!({
        "endpoint": &*ep.id,
        "active": state.active,
        "running_sha256": running,
        "history": state.history,
    }))
    .into_response()
}

/// Runs a blocking plugin-store operation off the async threads, serialised per host (uploads compile for
/// seconds and must not race each other's activation).
async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    work: impl FnOnce(&App) -> Result<T, PluginError> + Send + 'static,
) -> Result<T, Refusal> {
    let _serial = app.admin_lock.lock().await;
    let app = Arc::clone(app);
    tokio::task::spawn_blocking(move || work(&app))
        .await
        .map_err(|_| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "plugin operation panicked",
            )
        })?
        .map_err(plugin_error)
}

async fn upload(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ep = match authorized_endpoint(&app, &headers, &id) {
        Ok(ep) => ep,
        Err(r) => return r.into_response(),
    };
    if body.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be a WebAssembly component (.wasm)",
        )
        .into_response();
    }
    let ep_id = ep.id.to_string();
    let result = blocking(&app, move |app| {
        let store = app.plugin_store()?;
        let (version, plugin) = store.install(&body, "upload")?;
        let state = store.activate(&ep_id, version)?;
        Ok((state, plugin))
    })
    .await;
    match result {
        Ok((state, plugin)) => {
            tracing::info!(endpoint = %ep.id, plugin = %plugin.name, hooks = ?plugin.info.hooks, "transformer plugin uploaded and active");
            ep.plugin.set(Some(plugin));
            state_json(&ep, &state)
        }
        Err(r) => r.into_response(),
    }
}

async fn show(State(app): State<Arc<App>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let ep = match authorized_endpoint(&app, &headers, &id) {
        Ok(ep) => ep,
        Err(r) => return r.into_response(),
    };
    let ep_id = ep.id.to_string();
    match blocking(&app, move |app| app.plugin_store()?.state(&ep_id)).await {
        Ok(state) => state_json(&ep, &state),
        Err(r) => r.into_response(),
    }
}

async fn rollback(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ep = match authorized_endpoint(&app, &headers, &id) {
        Ok(ep) => ep,
        Err(r) => return r.into_response(),
    };
    let ep_id = ep.id.to_string();
    let has_history = {
        let ep_id = ep_id.clone();
        blocking(&app, move |app| {
            Ok(!app.plugin_store()?.state(&ep_id)?.history.is_empty())
        })
        .await
    };
    match has_history {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::CONFLICT,
                "there is no earlier version to roll back to",
            )
            .into_response()
        }
        Err(r) => return r.into_response(),
    }
    match blocking(&app, move |app| app.plugin_store()?.rollback(&ep_id)).await {
        Ok((state, plugin)) => {
            tracing::info!(endpoint = %ep.id, plugin = %plugin.name, "transformer plugin rolled back");
            ep.plugin.set(Some(plugin));
            state_json(&ep, &state)
        }
        Err(r) => r.into_response(),
    }
}

async fn deactivate(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ep = match authorized_endpoint(&app, &headers, &id) {
        Ok(ep) => ep,
        Err(r) => return r.into_response(),
    };
    let ep_id = ep.id.to_string();
    match blocking(&app, move |app| app.plugin_store()?.deactivate(&ep_id)).await {
        Ok(state) => {
            ep.plugin.set(None);
            tracing::info!(endpoint = %ep.id, "transformer plugin deactivated");
            state_json(&ep, &state)
        }
        Err(r) => r.into_response(),
    }
}

// ── Contacts: inspection, export and the right to erasure ────────────────────────────────────────────────

fn db_error(e: crate::store::StoreError) -> Response {
    tracing::error!(error = %e, "admin contact query failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, "database error").into_response()
}

fn not_found(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no contact `{id}`")).into_response()
}

#[derive(serde::Deserialize)]
struct ContactQuery {
    endpoint: String,
    psid: String,
}

/// `GET /admin/contacts?endpoint=..&psid=..`
async fn find_contact(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ContactQuery>,
) -> Response {
    let ep = match authorized_endpoint(&app, &headers, &q.endpoint) {
        Ok(ep) => ep,
        Err(r) => return r.into_response(),
    };
    match app.core.db.contact_of(&ep.config.page_id, &q.psid) {
        Ok(Some(id)) => contact_json(&app, &id),
        Ok(None) => error(StatusCode::NOT_FOUND, "no contact for this user").into_response(),
        Err(e) => db_error(e),
    }
}

fn contact_json(app: &App, id: &str) -> Response {
    match app.core.db.contact(id) {
        Ok(Some(contact)) => Json(contact).into_response(),
        Ok(None) => not_found(id),
        Err(e) => db_error(e),
    }
}

async fn show_contact(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied.into_response();
    }
    contact_json(&app, &id)
}

async fn show_transcript(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied.into_response();
    }
    match (app.core.db.contact(&id), app.core.db.transcript(&id)) {
        (Ok(None), _) => not_found(&id),
        (Ok(Some(_)), Ok(turns)) => {
            Json(json!({ "contact_id": id, "turns": turns })).into_response()
        }
        (Err(e), _) | (_, Err(e)) => db_error(e),
    }
}

/// `DELETE /admin/contacts/{id}`: the contact, its PSIDs, transcripts, sessions and plugin session storage.
async fn erase_contact(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied.into_response();
    }
    // The contact's ids on each Page, read before they are erased: its dead letters go too.
    let users: Vec<(String, String)> = match app.core.db.contact(&id) {
        Ok(Some(contact)) => contact["psids"]
            .as_array()
            .map(|psids| {
                psids
                    .iter()
                    .filter_map(|p| {
                        Some((
                            p["endpoint"].as_str()?.to_string(),
                            p["psid"].as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        Ok(None) => return not_found(&id),
        Err(e) => return db_error(e),
    };
    match app.core.db.erase_contact(&id) {
        Ok(Some(mut report)) => {
            let mut letters = 0;
            for (endpoint, psid) in &users {
                match app.core.journal.erase_user(endpoint, psid) {
                    Ok(n) => letters += n,
                    Err(e) => return db_error(e),
                }
            }
            report["deleted"]["dead_letters"] = json!(letters);
            tracing::info!("contact erased on request");
            Json(report).into_response()
        }
        Ok(None) => not_found(&id),
        Err(e) => db_error(e),
    }
}
