//! Meta's HMACs: webhook signatures (`X-Hub-Signature-256`, legacy `X-Hub-Signature`) and `appsecret_proof`.

use super::SimError;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;
type HmacSha1 = Hmac<Sha1>;

/// `sha256=<hex HMAC-SHA256(key = app secret, message = body)>`, the `X-Hub-Signature-256` value.
pub fn sign_sha256(app_secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac::<HmacSha256>(app_secret, body).finalize().into_bytes())
    )
}

/// `sha1=<hex HMAC-SHA1(key = app secret, message = body)>`, the legacy `X-Hub-Signature` value.
pub fn sign_sha1(app_secret: &str, body: &[u8]) -> String {
    format!(
        "sha1={}",
        hex::encode(mac::<HmacSha1>(app_secret, body).finalize().into_bytes())
    )
}

/// `hex(HMAC-SHA256(key = app secret, message = access token))`.
pub fn appsecret_proof(app_secret: &str, access_token: &str) -> String {
    hex::encode(
        mac::<HmacSha256>(app_secret, access_token.as_bytes())
            .finalize()
            .into_bytes(),
    )
}

/// Checks a proof in constant time; malformed hex is simply wrong.
pub(crate) fn proof_matches(app_secret: &str, access_token: &str, proof: &str) -> bool {
    let Ok(given) = hex::decode(proof) else {
        return false;
    };
    mac::<HmacSha256>(app_secret, access_token.as_bytes())
        .verify_slice(&given)
        .is_ok()
}

fn mac<M: Mac + KeyInit>(key: &str, data: &[u8]) -> M {
    let mut mac = match <M as KeyInit>::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(data);
    mac
}

/// Plays Meta delivering a webhook: signs the exact bytes and POSTs them.
#[derive(Clone, Debug)]
pub struct WebhookSender {
    client: reqwest::Client,
    legacy_sha1: bool,
}

impl WebhookSender {
    /// Sends both `X-Hub-Signature-256` and the legacy `X-Hub-Signature`, as Meta may.
    pub fn new(client: reqwest::Client) -> Self {
        WebhookSender {
            client,
            legacy_sha1: true,
        }
    }

    /// Leaves out the legacy SHA-1 header, for checking that a receiver relies on SHA-256 alone.
    pub fn without_legacy_sha1(mut self) -> Self {
        self.legacy_sha1 = false;
        self
    }

    /// POSTs `body` unchanged to `url`; returns the HTTP status the receiver answered.
    pub async fn post(&self, url: &str, app_secret: &str, body: &[u8]) -> Result<u16, SimError> {
        let mut request = self
            .client
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-Hub-Signature-256", sign_sha256(app_secret, body));
        if self.legacy_sha1 {
            request = request.header("X-Hub-Signature", sign_sha1(app_secret, body));
        }
        let reply = request
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| SimError::Webhook(e.without_url()))?;
        Ok(reply.status().as_u16())
    }
}
