//! Page tokens and `appsecret_proof`, checked the way Graph checks them on every call.

use super::directory::Directory;
use super::errors::GraphError;
use super::signing::proof_matches;
use super::wire::Query;
use super::SimPage;
use axum::http::{header, HeaderMap};

/// The token of a call: the `access_token` parameter, else an `Authorization: Bearer` header.
pub(crate) fn token<'a>(query: &'a Query, headers: &'a HeaderMap) -> Option<&'a str> {
    query.get("access_token").map(String::as_str).or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("OAuth "))
            })
            .map(str::trim)
    })
}

/// The Page whose token the call carries, once token and proof check out.
///
/// A proof is checked whenever the Page has an app secret and either the app requires proofs or the call
/// brings one (Graph validates a proof it is given). Without an app secret there is nothing to check against.
pub(crate) fn authenticate<'a>(
    dir: &'a Directory,
    require_proof: bool,
    query: &Query,
    headers: &HeaderMap,
) -> Result<&'a SimPage, GraphError> {
    let token = token(query, headers).ok_or_else(GraphError::missing_token)?;
    let page = dir
        .page_by_token(token)
        .ok_or_else(GraphError::invalid_token)?;
    let Some(secret) = page.app_secret.as_deref() else {
        return Ok(page);
    };
    match query.get("appsecret_proof") {
        Some(proof) if proof_matches(secret, token, proof) => Ok(page),
        Some(_) => Err(GraphError::invalid_proof()),
        None if require_proof => Err(GraphError::missing_proof()),
        None => Ok(page),
    }
}
