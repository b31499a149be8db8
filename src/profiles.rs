//! "Request Profile Data": the user's Facebook profile, fetched once and cached per (page, PSID) with a TTL.

use crate::messenger::graph::{GraphClient, GraphError, PageAuth};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The fields Ferry passes on; anything else Meta returns is dropped.
const KEPT_FIELDS: [&str; 7] = [
    "id",
    "first_name",
    "last_name",
    "profile_pic",
    "locale",
    "timezone",
    "gender",
];

pub struct ProfileCache {
    ttl: Duration,
    entries: Mutex<HashMap<(String, String), (Instant, Value)>>,
    /// PSIDs whose contacts were already merged since start (merging is idempotent; this only saves calls).
    merge_checked: Mutex<std::collections::HashSet<String>>,
}

impl ProfileCache {
    pub fn new(ttl: Duration) -> ProfileCache {
        ProfileCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
            merge_checked: Mutex::default(),
        }
    }

    /// True the first time a PSID is seen for merging.
    pub fn mark_merge_checked(&self, psid: &str) -> bool {
        self.merge_checked
            .lock()
            .map(|mut s| s.insert(psid.to_string()))
            .unwrap_or(true)
    }

    /// Forgets a PSID after a failed merge, so that a later turn tries again.
    pub fn unmark_merge_checked(&self, psid: &str) {
        if let Ok(mut s) = self.merge_checked.lock() {
            s.remove(psid);
        }
    }

    fn cached(&self, page_id: &str, psid: &str) -> Option<Value> {
        let map = self.entries.lock().ok()?;
        let (at, value) = map.get(&(page_id.to_string(), psid.to_string()))?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    fn store(&self, page_id: &str, psid: &str, value: Value) {
        if let Ok(mut map) = self.entries.lock() {
            // Expired entries are dropped lazily when the map grows, so a long-running host stays bounded.
            if map.len() > 100_000 {
                let ttl = self.ttl;
                map.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            map.insert(
                (page_id.to_string(), psid.to_string()),
                (Instant::now(), value),
            );
        }
    }

    /// The cached profile, or a fresh one from the Graph API.
    pub async fn get(
        &self,
        graph: &GraphClient,
        page: &PageAuth,
        psid: &str,
        extra_fields: &[&str],
    ) -> Result<Value, GraphError> {
        if let Some(v) = self.cached(&page.page_id, psid) {
            return Ok(v);
        }
        let mut fields = vec!["first_name", "last_name", "profile_pic"];
        fields.extend_from_slice(extra_fields);
        let raw = graph.profile(page, psid, &fields).await?;
        let profile = keep_known_fields(raw, psid);
        self.store(&page.page_id, psid, profile.clone());
        Ok(profile)
    }
}

fn keep_known_fields(raw: Value, psid: &str) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), Value::String(psid.to_string()));
    if let Value::Object(fields) = raw {
        for (k, v) in fields {
            if KEPT_FIELDS.contains(&k.as_str()) && !v.is_null() && k != "id" {
                out.insert(k, v);
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_only_known_fields_and_the_psid() {
        let p = keep_known_fields(
            json!({"id":"x","first_name":"Ada","gender":null,"email":"a@b","locale":"de_DE"}),
            "123",
        );
        assert_eq!(p, json!({"id":"123","first_name":"Ada","locale":"de_DE"}));
    }

    #[test]
    fn cache_respects_ttl() {
        let c = ProfileCache::new(Duration::from_secs(60));
        c.store("p", "u", json!({"id":"u"}));
        assert_eq!(c.cached("p", "u"), Some(json!({"id":"u"})));
        assert_eq!(c.cached("p", "other"), None);
        let expired = ProfileCache::new(Duration::ZERO);
        expired.store("p", "u", json!({}));
        assert_eq!(expired.cached("p", "u"), None);
    }
}
