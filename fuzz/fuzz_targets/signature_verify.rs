//! Fuzzes webhook signature verification.
//!
//! Input layout (so that seeds stay readable): `flags`, `tweak`, then `secret \0 sha256_header \0 sha1_header
//! \0 body`; a missing field is empty. `flags` bit 0 sends the sha256 header, bit 1 the sha1 header; `tweak`
//! picks the byte of the MAC that the "one byte changed" check alters.
//!
//! Checked on every input:
//! - `verify` agrees with a reference model (trim, strip the prefix, hex-decode, compare the whole MAC) for the
//!   given headers, with `accept_sha1` off and on;
//! - a correct `sha256=` (and, with `accept_sha1`, `sha1=`) signature of the body always verifies;
//! - the same signature with one MAC byte changed, or truncated by one byte, never does.
#![no_main]

use ferry::messenger::signature::{sign_sha256, verify, SignatureError};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha1::Sha1;
use sha2::Sha256;

fn hmac_sha256(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha1(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// What `verify` must answer for one header, written independently of its implementation.
fn model(header: &str, prefix: &str, mac: &[u8]) -> Result<(), SignatureError> {
    let Some(hex_sig) = header.trim().strip_prefix(prefix) else {
        return Err(SignatureError::Malformed);
    };
    match hex::decode(hex_sig) {
        Err(_) => Err(SignatureError::Malformed),
        Ok(sig) if sig == mac => Ok(()),
        Ok(_) => Err(SignatureError::Mismatch),
    }
}

fn model_verify(
    secret: &[u8],
    body: &[u8],
    sha256: Option<&str>,
    sha1: Option<&str>,
    accept_sha1: bool,
) -> Result<(), SignatureError> {
    match (sha256, sha1) {
        (Some(h), _) => model(h, "sha256=", &hmac_sha256(secret, body)),
        (None, Some(h)) if accept_sha1 => model(h, "sha1=", &hmac_sha1(secret, body)),
        _ => Err(SignatureError::Missing),
    }
}

fn split_field<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    match rest.iter().position(|&b| b == 0) {
        Some(at) => {
            let field = &rest[..at];
            *rest = &rest[at + 1..];
            field
        }
        None => std::mem::take(rest),
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, tweak, ref rest @ ..] = *data else {
        return;
    };
    let mut rest = rest;
    let secret = split_field(&mut rest);
    let sha256_field = String::from_utf8_lossy(split_field(&mut rest)).into_owned();
    let sha1_field = String::from_utf8_lossy(split_field(&mut rest)).into_owned();
    let body = rest;
    let sha256 = (flags & 1 != 0).then_some(sha256_field.as_str());
    let sha1 = (flags & 2 != 0).then_some(sha1_field.as_str());

    // The headers as given, both ways of accept_sha1.
    for accept_sha1 in [false, true] {
        assert_eq!(
            verify(secret, body, sha256, sha1, accept_sha1),
            model_verify(secret, body, sha256, sha1, accept_sha1),
            "accept_sha1={accept_sha1} sha256={sha256:?} sha1={sha1:?}"
        );
    }

    // A correct signature always verifies; the sha256 header decides whatever the sha1 one says.
    let mac256 = hmac_sha256(secret, body);
    let good256 = format!("sha256={}", hex::encode(&mac256));
    if let Ok(text_secret) = std::str::from_utf8(secret) {
        assert_eq!(sign_sha256(text_secret, body), good256);
    }
    for accept_sha1 in [false, true] {
        assert_eq!(
            verify(secret, body, Some(&good256), sha1, accept_sha1),
            Ok(())
        );
        let padded = format!(
            " \t{}\r\n",
            good256.to_ascii_uppercase().replace("SHA256=", "sha256=")
        );
        assert_eq!(
            verify(secret, body, Some(&padded), sha1, accept_sha1),
            Ok(())
        );
    }
    let mac1 = hmac_sha1(secret, body);
    let good1 = format!("sha1={}", hex::encode(&mac1));
    assert_eq!(verify(secret, body, None, Some(&good1), true), Ok(()));
    assert_eq!(
        verify(secret, body, None, Some(&good1), false),
        Err(SignatureError::Missing)
    );

    // One MAC byte changed, or the MAC cut short, never verifies.
    let xor = (flags >> 2) | 1;
    for (prefix, mac, is_sha1) in [("sha256=", &mac256, false), ("sha1=", &mac1, true)] {
        let mut bad = mac.clone();
        let at = tweak as usize % bad.len();
        bad[at] ^= xor;
        let changed = format!("{prefix}{}", hex::encode(&bad));
        let short = format!("{prefix}{}", hex::encode(&mac[..mac.len() - 1]));
        for header in [changed, short] {
            let result = if is_sha1 {
                verify(secret, body, None, Some(&header), true)
            } else {
                verify(secret, body, Some(&header), Some(&good1), true)
            };
            assert_eq!(result, Err(SignatureError::Mismatch), "{header}");
        }
    }
});
