//! Session ids: random, unguessable identifiers (sessions themselves live in the database, see `store`).

/// 128 random bits as hex: unguessable, because plugins' session storage is keyed by it.
pub fn new_session_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_ids_are_128_bit_hex_and_distinct() {
        let a = super::new_session_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, super::new_session_id());
    }
}
