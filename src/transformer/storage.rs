//! Session storage: one JSON value per endpoint, user and session, shared by
//! all hooks of all turns of that session.

use std::collections::HashMap;
use std::sync::Mutex;

/// Largest value a plugin may store.
pub const MAX_SESSION_VALUE_BYTES: usize = 64 * 1024;

/// Identifies one conversation's storage slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub endpoint_id: String,
    pub user_id: String,
    pub session_id: String,
}

/// Backing store for `ferry:transformer/session-storage`. Implementations
/// must be quick: they are called from inside a running plugin.
pub trait SessionStorage: Send + Sync {
    fn get(&self, key: &SessionKey) -> Option<String>;
    /// Stores `value`; the error string is handed to the plugin.
    fn set(&self, key: &SessionKey, value: String) -> Result<(), String>;
}

/// Checks what every storage backend must enforce: valid JSON, size limit.
pub fn check_session_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_SESSION_VALUE_BYTES {
        return Err(format!(
            "value is {} bytes, the limit is {MAX_SESSION_VALUE_BYTES}",
            value.len()
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(value)
        .map(|_| ())
        .map_err(|e| format!("value is not valid JSON: {e}"))
}

/// Session storage in process memory (lost on restart).
#[derive(Debug, Default)]
pub struct MemorySessionStorage {
    values: Mutex<HashMap<SessionKey, String>>,
}

impl MemorySessionStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets a session's value, e.g. when the session expires.
    pub fn remove(&self, key: &SessionKey) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, String>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SessionStorage for MemorySessionStorage {
    fn get(&self, key: &SessionKey) -> Option<String> {
        self.lock().get(key).cloned()
    }

    fn set(&self, key: &SessionKey, value: String) -> Result<(), String> {
        check_session_value(&value)?;
        self.lock().insert(key.clone(), value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str) -> SessionKey {
        SessionKey {
            endpoint_id: "e".into(),
            user_id: user.into(),
            session_id: "s".into(),
        }
    }

    #[test]
    fn stores_per_key() {
        let storage = MemorySessionStorage::new();
        storage.set(&key("a"), r#"{"n":1}"#.into()).unwrap();
        assert_eq!(storage.get(&key("a")).as_deref(), Some(r#"{"n":1}"#));
        assert_eq!(storage.get(&key("b")), None);
        storage.remove(&key("a"));
        assert_eq!(storage.get(&key("a")), None);
    }

    #[test]
    fn rejects_invalid_or_large_values() {
        let storage = MemorySessionStorage::new();
        assert!(storage
            .set(&key("a"), "{".into())
            .unwrap_err()
            .contains("JSON"));
        let big = format!("\"{}\"", "x".repeat(MAX_SESSION_VALUE_BYTES));
        assert!(storage.set(&key("a"), big).unwrap_err().contains("limit"));
        assert_eq!(storage.get(&key("a")), None);
    }
}
