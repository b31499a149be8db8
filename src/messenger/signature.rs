//! Webhook signatures: `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with the app secret) and the legacy
//! `X-Hub-Signature` (HMAC-SHA1), checked over the exact bytes received and compared in constant time.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("signature header is malformed")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a request's signature headers. When both are present the sha256 one decides; the sha1 one counts
/// only when `accept_sha1` is on.
pub fn verify(
    app_secret: &[u8],
    body: &[u8],
    sha256_header: Option<&str>,
    sha1_header: Option<&str>,
    accept_sha1: bool,
) -> Result<(), SignatureError> {
    match (sha256_header, sha1_header) {
        (Some(h), _) => verify_with::<Hmac<Sha256>>(app_secret, body, h, "sha256="),
        (None, Some(h)) if accept_sha1 => verify_with::<Hmac<Sha1>>(app_secret, body, h, "sha1="),
        _ => Err(SignatureError::Missing),
    }
}

fn verify_with<M: Mac + hmac::digest::KeyInit>(
    key: &[u8],
    body: &[u8],
    header: &str,
    prefix: &str,
) -> Result<(), SignatureError> {
    let hex_sig = header
        .trim()
        .strip_prefix(prefix)
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?;
    let mut mac =
        <M as hmac::digest::KeyInit>::new_from_slice(key).map_err(|_| SignatureError::Malformed)?;
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// `hex(HMAC-SHA256(app_secret, access_token))`, sent with every Graph call.
pub fn appsecret_proof(app_secret: &str, access_token: &str) -> String {
    hex::encode(hmac_sha256(app_secret.as_bytes(), access_token.as_bytes()))
}

/// The header value Meta would send for `body`: `sha256=<hex>`.
pub fn sign_sha256(app_secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(app_secret.as_bytes(), body))
    )
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    const RFC4231_2: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    #[test]
    fn known_vector() {
        assert_eq!(
            sign_sha256("Jefe", b"what do ya want for nothing?"),
            format!("sha256={RFC4231_2}")
        );
        assert_eq!(
            appsecret_proof("Jefe", "what do ya want for nothing?"),
            RFC4231_2
        );
    }

    #[test]
    fn sha256_accepted_and_rejected() {
        let body = br#"{"object":"page","entry":[]}"#;
        let good = sign_sha256("secret", body);
        assert_eq!(verify(b"secret", body, Some(&good), None, false), Ok(()));
        assert_eq!(
            verify(b"other", body, Some(&good), None, false),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", b"tampered", Some(&good), None, false),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", body, Some("sha256=zz"), None, false),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"secret", body, Some(&good[7..]), None, false),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"secret", body, None, None, true),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn sha1_only_when_enabled_and_sha256_decides() {
        let body = b"{}";
        let mut mac = <Hmac<Sha1> as hmac::digest::KeyInit>::new_from_slice(b"secret").unwrap();
        mac.update(body);
        let sha1 = format!("sha1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(
            verify(b"secret", body, None, Some(&sha1), false),
            Err(SignatureError::Missing)
        );
        assert_eq!(verify(b"secret", body, None, Some(&sha1), true), Ok(()));
        let bad256 = sign_sha256("wrong", body);
        assert_eq!(
            verify(b"secret", body, Some(&bad256), Some(&sha1), true),
            Err(SignatureError::Mismatch)
        );
    }
}
