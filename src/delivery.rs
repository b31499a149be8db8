//! Delivering one turn's messages to one user: typing indicators and delays, the Page's rate limit, retries
//! by Meta's error table, the 24-hour window, and dead letters for what can never be delivered.
//!
//! A message that is being retried holds up the user's later messages (they are sent by the same turn, or by
//! a later turn of the same user, which waits for this one): order holds.

use crate::app::{Core, Endpoint};
use crate::messenger::graph::{GraphError, Retry, SendResponse};
use crate::store::DeadLetter;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Meta shows a typing indicator for about 20 s; re-send it before that runs out.
const TYPING_REFRESH: Duration = Duration::from_secs(15);

/// Who a turn answers: a PSID, or the `user_ref` of a checkbox opt-in (which has no PSID yet).
pub enum User {
    Psid(String),
    UserRef(String),
}

impl User {
    pub fn id(&self) -> &str {
        match self {
            User::Psid(id) | User::UserRef(id) => id,
        }
    }

    fn recipient(&self) -> Value {
        match self {
            User::Psid(id) => json!({ "id": id }),
            User::UserRef(r) => json!({ "user_ref": r }),
        }
    }
}

/// Delivers one turn's messages to one user, in order.
pub struct Delivery<'a> {
    core: &'a Core,
    ep: &'a Endpoint,
    user_id: String,
    recipient: Value,
    /// Sender actions are not allowed for `user_ref` recipients.
    can_act: bool,
    sent: usize,
    /// Every message of the turn with its Graph message id (`None` when it was dead-lettered).
    pub log: Vec<(Value, Option<String>)>,
}

impl<'a> Delivery<'a> {
    pub fn new(core: &'a Core, ep: &'a Endpoint, user: &User) -> Delivery<'a> {
        Delivery {
            core,
            ep,
            user_id: user.id().to_string(),
            recipient: user.recipient(),
            can_act: matches!(user, User::Psid(_)),
            sent: 0,
            log: Vec::new(),
        }
    }

    /// Sends one message: typing indicator first, and the configured pause after the previous message;
    /// retried until Meta takes it or it is dead-lettered. Returns the message id when delivered.
    pub async fn message(&mut self, message: Value) -> Option<String> {
        let typing = self.can_act && self.ep.config.messenger.typing_indicators;
        if typing {
            self.sender_action("typing_on").await;
        }
        if self.sent > 0 {
            self.pause(typing).await;
        }
        let body = json!({
            "recipient": self.recipient,
            "messaging_type": "RESPONSE",
            "message": message,
        });
        let id = self.deliver(body).await;
        self.sent += 1;
        self.log.push((message, id.clone()));
        id
    }

    /// The Send API call with its retries; dead-letters the message when Meta will never take it.
    async fn deliver(&self, mut body: Value) -> Option<String> {
        let policy = &self.ep.config.delivery;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let error = match self.call(&body).await {
                Ok(reply) => return Some(reply.message_id.unwrap_or_default()),
                // A 2xx reply Ferry could not read: Meta took the message; resending would double it.
                Err(GraphError::Malformed(e)) => {
                    tracing::warn!(endpoint = %self.ep.id, error = %e, "Send API accepted the message with an unreadable reply");
                    return Some(String::new());
                }
                Err(e) => e,
            };
            let reason = if error.is_outside_window() {
                match &policy.outside_window_tag {
                    Some(tag) if body["messaging_type"] != "MESSAGE_TAG" => {
                        tracing::info!(endpoint = %self.ep.id, %tag, "outside the 24-hour window; sending again with a message tag");
                        body["messaging_type"] = json!("MESSAGE_TAG");
                        body["tag"] = json!(tag);
                        continue;
                    }
                    _ => "outside_window",
                }
            } else if error.retry() == Retry::Permanent {
                "permanent_error"
            } else if attempt >= policy.max_attempts {
                "retries_exhausted"
            } else {
                let wait = backoff(attempt, policy.retry_base_ms, policy.retry_max_ms);
                self.core
                    .metrics
                    .inc("ferry_send_retries_total", &[("endpoint", &*self.ep.id)]);
                tracing::info!(endpoint = %self.ep.id, attempt, wait_ms = wait.as_millis() as u64, error = %error, "Send API call will be retried");
                tokio::time::sleep(wait).await;
                continue;
            };
            self.dead_letter(reason, &error, &body).await;
            return None;
        }
    }

    async fn dead_letter(&self, reason: &str, error: &GraphError, body: &Value) {
        tracing::warn!(endpoint = %self.ep.id, reason, error = %error, "message dead-lettered");
        self.core.metrics.inc(
            "ferry_dead_letters_total",
            &[("endpoint", &*self.ep.id), ("reason", reason)],
        );
        let letter = DeadLetter {
            endpoint_id: self.ep.id.to_string(),
            user_id: self.user_id.clone(),
            reason: reason.to_string(),
            error: error.to_string(),
            message: body.to_string(),
        };
        if let Err(e) = self.core.journal.dead_letter(letter).await {
            tracing::error!(endpoint = %self.ep.id, error = %e, "dead letter not stored");
        }
    }

    /// Counts a flow output that could not be converted into Send API messages.
    pub fn count_output_error(&self) {
        self.core
            .metrics
            .inc("ferry_output_errors_total", &[("endpoint", &*self.ep.id)]);
    }

    /// Waits `message_delay_ms`, re-sending the typing indicator before Meta hides it.
    async fn pause(&self, typing: bool) {
        let mut left = Duration::from_millis(self.ep.config.messenger.message_delay_ms);
        while left > Duration::ZERO {
            let step = left.min(TYPING_REFRESH);
            tokio::time::sleep(step).await;
            left -= step;
            if typing && left > Duration::ZERO {
                self.sender_action("typing_on").await;
            }
        }
    }

    /// Typing indicators and `mark_seen`: best effort, never retried (a late indicator is worse than none).
    pub async fn sender_action(&self, action: &str) {
        if !self.can_act {
            return;
        }
        let body = json!({ "recipient": self.recipient, "sender_action": action });
        let _ = self.call(&body).await;
    }

    async fn call(&self, body: &Value) -> Result<SendResponse, GraphError> {
        self.ep.limits.acquire(body).await;
        let started = Instant::now();
        let result = self.core.graph.send(&self.ep.page, body).await;
        let labels = [("endpoint", &*self.ep.id)];
        self.core.metrics.observe(
            "ferry_send_duration_seconds",
            &labels,
            started.elapsed().as_secs_f64(),
        );
        match &result {
            Ok(_) => {
                if body.get("message").is_some() {
                    self.core.metrics.inc("ferry_messages_sent_total", &labels);
                }
            }
            Err(e) => {
                let code = e.code_label();
                tracing::warn!(endpoint = %self.ep.id, error = %e, retry = ?e.retry(), "Send API call failed");
                self.core.metrics.inc(
                    "ferry_send_errors_total",
                    &[("endpoint", &*self.ep.id), ("code", &code)],
                );
            }
        }
        result
    }
}

/// Exponential backoff with jitter: attempt 1 waits about `base`, each next one twice as long, never more
/// than `max`; the wait is drawn between half and all of that, so retrying senders spread out.
pub fn backoff(attempt: u32, base_ms: u64, max_ms: u64) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << (attempt.saturating_sub(1)).min(30));
    let ceiling = exp.min(max_ms).max(1);
    let jittered =
        ceiling / 2 + rand::Rng::gen_range(&mut rand::thread_rng(), 0..=ceiling - ceiling / 2);
    Duration::from_millis(jittered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for _ in 0..100 {
            let first = backoff(1, 100, 10_000).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            let third = backoff(3, 100, 10_000).as_millis();
            assert!((200..=400).contains(&third), "{third}");
            let late = backoff(40, 100, 10_000).as_millis();
            assert!((5_000..=10_000).contains(&late), "{late}");
        }
    }
}
