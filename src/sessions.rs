//! Conversation sessions: one per (endpoint, user), identified by a random id that reaches the flow and the
//! plugins. Kept in memory for now; the storage layer will persist them and add expiry.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Sessions {
    by_user: Mutex<HashMap<(String, String), String>>,
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions::default()
    }

    /// The user's current session id on an endpoint, starting a session when there is none.
    pub fn session_for(&self, endpoint_id: &str, user_id: &str) -> String {
        let key = (endpoint_id.to_string(), user_id.to_string());
        match self.by_user.lock() {
            Ok(mut map) => map.entry(key).or_insert_with(new_session_id).clone(),
            // A poisoned map still must not stop the turn: a fresh session is the safe answer.
            Err(_) => new_session_id(),
        }
    }
}

/// 128 random bits as hex: unguessable, because plugins' session storage is keyed by it.
pub fn new_session_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_session_per_endpoint_and_user() {
        let s = Sessions::new();
        let a = s.session_for("shop", "u1");
        assert_eq!(a.len(), 32);
        assert_eq!(s.session_for("shop", "u1"), a);
        assert_ne!(s.session_for("shop", "u2"), a);
        assert_ne!(s.session_for("other", "u1"), a);
    }
}
