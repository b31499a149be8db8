//! `GET /{version}/{psid}` (User Profile API), `GET /{version}/me` and `GET /{version}/{psid}/ids_for_pages`.
//!
//! The token decides which Page is asking, and so which PSIDs exist: a PSID of another Page is unknown.

use super::directory::Lookup;
use super::errors::GraphError;
use super::server::{Call, Outcome, Shared};
use super::wire::encode_query;
use super::{CallKind, SimPage, SimUser};
use serde_json::{json, Map, Value};

const DEFAULT_FIELDS: [&str; 3] = ["id", "first_name", "last_name"];
const BASE_FIELDS: [&str; 5] = ["id", "name", "first_name", "last_name", "profile_pic"];
const GATED_FIELDS: [&str; 3] = ["locale", "timezone", "gender"];
const DEFAULT_PAGE_SIZE: usize = 25;
const MAX_PAGE_SIZE: usize = 100;

/// `GET /{version}/{node}`: the Page itself for `me`, else a user profile.
pub(crate) fn handle_node(sim: &Shared, call: &Call<'_>) -> Outcome {
    let kind = if call.node == "me" {
        CallKind::Other
    } else {
        CallKind::Profile
    };
    let recipient = (kind == CallKind::Profile).then(|| call.node.to_string());
    let mut out = Outcome::new(kind, recipient);
    out.result = read_node(sim, call, &mut out.page_id);
    out
}

pub(crate) fn handle_ids_for_pages(sim: &Shared, call: &Call<'_>) -> Outcome {
    let mut out = Outcome::new(CallKind::IdsForPages, Some(call.node.to_string()));
    match ids_for_pages(sim, call, &mut out.page_id) {
        Ok(listing) => {
            out.result = Ok(listing.reply);
            out.recorded = Some(listing.recorded);
        }
        Err(e) => out.result = Err(e),
    }
    out
}

fn read_node(
    sim: &Shared,
    call: &Call<'_>,
    page_id: &mut Option<String>,
) -> Result<Value, GraphError> {
    sim.check_version(call)?;
    let page = sim.authenticate(call)?;
    *page_id = Some(page.id.clone());
    if call.node == "me" {
        return Ok(json!({ "id": page.id, "name": page.name }));
    }
    let view = visible_user(sim, page, call.node)?;
    let fields = requested_fields(
        call.query.get("fields").map(String::as_str),
        &sim.granted_fields,
    )?;
    Ok(render(&view, &fields))
}

/// A user as the asking Page may see them; unconfigured PSIDs get a made-up profile when accepted.
fn visible_user(sim: &Shared, page: &SimPage, psid: &str) -> Result<SimUser, GraphError> {
    match sim.dir.lookup(&page.id, psid) {
        Lookup::Known(user) => Ok(user.clone()),
        Lookup::Unknown if sim.accept_unknown_users => Ok(made_up_user(page, psid)),
        Lookup::Unknown | Lookup::OtherPage => Err(GraphError::unknown_object(psid)),
    }
}

fn made_up_user(page: &SimPage, psid: &str) -> SimUser {
    let tail: String = psid
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    SimUser::new(psid, &page.id, "Sim", &format!("User {tail}"), "")
}

/// The requested fields, or the defaults. One field the app may not read fails the whole call.
fn requested_fields<'a>(
    fields: Option<&'a str>,
    granted: &[String],
) -> Result<Vec<&'a str>, GraphError> {
    let list: Vec<&str> = fields
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    if list.is_empty() {
        return Ok(DEFAULT_FIELDS.to_vec());
    }
    for field in &list {
        let allowed = BASE_FIELDS.contains(field)
            || (GATED_FIELDS.contains(field) && granted.iter().any(|g| g == field));
        if !allowed {
            return Err(GraphError::nonexisting_field(field));
        }
    }
    Ok(list)
}

/// Graph always answers with the node's `id`; a missing gender is left out, as Meta does.
fn render(user: &SimUser, fields: &[&str]) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(user.psid));
    for &field in fields {
        let value = match field {
            "name" => json!(format!("{} {}", user.first_name, user.last_name)),
            "first_name" => json!(user.first_name),
            "last_name" => json!(user.last_name),
            "profile_pic" => json!(user.profile_pic),
            "locale" => json!(user.locale),
            "timezone" => json!(user.timezone),
            "gender" => match &user.gender {
                Some(g) => json!(g),
                None => continue,
            },
            _ => continue,
        };
        out.insert(field.to_string(), value);
    }
    Value::Object(out)
}

/// A page of `ids_for_pages`, and the same with credentials redacted from the `next` URL for the record.
struct Listing {
    reply: Value,
    recorded: Value,
}

fn ids_for_pages(
    sim: &Shared,
    call: &Call<'_>,
    page_id: &mut Option<String>,
) -> Result<Listing, GraphError> {
    sim.check_version(call)?;
    let page = sim.authenticate(call)?;
    *page_id = Some(page.id.clone());
    if sim.faults().ids_for_pages_error {
        return Err(GraphError::unexpected());
    }
    let user = match sim.dir.lookup(&page.id, call.node) {
        Lookup::Known(user) => Some(user),
        // A made-up user has no other Pages.
        Lookup::Unknown if sim.accept_unknown_users => None,
        Lookup::Unknown | Lookup::OtherPage => return Err(GraphError::unknown_object(call.node)),
    };
    let only_page = call.query.get("page").map(String::as_str);
    let items: Vec<Value> = user
        .map(|u| sim.dir.same_person_elsewhere(u))
        .unwrap_or_default()
        .into_iter()
        .filter(|u| only_page.is_none_or(|p| p == u.page_id))
        .map(|u| id_on_page(sim, u))
        .collect();
    let limit = page_size(call.query.get("limit"))?;
    let start = match call.query.get("after") {
        Some(cursor) => decode_cursor(cursor)? + 1,
        None => 0,
    };
    Ok(paginate(sim, call, &items, start, limit))
}

fn id_on_page(sim: &Shared, user: &SimUser) -> Value {
    let name = sim
        .dir
        .page(&user.page_id)
        .map(|p| p.name.as_str())
        .unwrap_or_default();
    json!({ "id": user.psid, "page": { "id": user.page_id, "name": name } })
}

fn paginate(sim: &Shared, call: &Call<'_>, items: &[Value], start: usize, limit: usize) -> Listing {
    let end = start.saturating_add(limit).min(items.len());
    if start >= end {
        let empty = json!({ "data": [] });
        return Listing {
            reply: empty.clone(),
            recorded: empty,
        };
    }
    let after = encode_cursor(end - 1);
    let mut reply = json!({
        "data": items[start..end],
        "paging": { "cursors": { "before": encode_cursor(start), "after": after } },
    });
    let mut recorded = reply.clone();
    if end < items.len() {
        reply["paging"]["next"] = json!(next_url(sim, call, limit, &after, false));
        recorded["paging"]["next"] = json!(next_url(sim, call, limit, &after, true));
    }
    Listing { reply, recorded }
}

/// The URL of the following page, carrying the caller's credentials as Graph's `next` links do.
fn next_url(sim: &Shared, call: &Call<'_>, limit: usize, after: &str, redact: bool) -> String {
    let limit = limit.to_string();
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for key in ["access_token", "appsecret_proof"] {
        if let Some(value) = call.query.get(key) {
            pairs.push((key, if redact { "***" } else { value.as_str() }));
        }
    }
    if let Some(page) = call.query.get("page") {
        pairs.push(("page", page));
    }
    pairs.push(("limit", &limit));
    pairs.push(("after", after));
    format!(
        "{}/{}/{}/ids_for_pages?{}",
        sim.base_url,
        call.version,
        call.node,
        encode_query(&pairs)
    )
}

fn page_size(raw: Option<&String>) -> Result<usize, GraphError> {
    match raw {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(s) => s
            .parse::<usize>()
            .map(|n| n.clamp(1, MAX_PAGE_SIZE))
            .map_err(|_| GraphError::invalid_param("Param limit must be a positive integer")),
    }
}

/// Cursors are opaque to clients; here they wrap the index of an item.
fn encode_cursor(index: usize) -> String {
    hex::encode(format!("sim:{index}"))
}

fn decode_cursor(cursor: &str) -> Result<usize, GraphError> {
    hex::decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|s| s.strip_prefix("sim:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| GraphError::invalid_param("Param after is not a valid cursor"))
}
