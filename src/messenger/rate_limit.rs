//! The Send API's per-Page rate limits: 300 calls/s for text, templates and sender actions, 10 calls/s for
//! audio and video. A token bucket per class and Page; a caller over the limit waits its turn instead of
//! earning a code 613 from Meta.

use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which bucket a Send API call draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallClass {
    Text,
    Media,
}

impl CallClass {
    /// Audio and video attachments are media; everything else (text, images, templates, actions) is text.
    pub fn of(body: &Value) -> CallClass {
        match body
            .pointer("/message/attachment/type")
            .and_then(Value::as_str)
        {
            Some("audio" | "video") => CallClass::Media,
            _ => CallClass::Text,
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `rate` (one second's worth) saved up.
pub struct TokenBucket {
    rate: f64,
    state: Mutex<BucketState>,
}

struct BucketState {
    /// May go negative: callers reserve a future token and sleep until it exists, so waiters are served in
    /// the order they came.
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_second: f64) -> TokenBucket {
        TokenBucket {
            rate: rate_per_second,
            state: Mutex::new(BucketState {
                tokens: rate_per_second.max(1.0),
                at: Instant::now(),
            }),
        }
    }

    /// Takes a token; returns how long to wait before using it (zero when one was there).
    pub fn reserve(&self) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(s.at).as_secs_f64() * self.rate;
        s.tokens = (s.tokens + refill).min(self.rate.max(1.0));
        s.at = now;
        s.tokens -= 1.0;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / self.rate)
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The two buckets of one Page.
pub struct PageLimits {
    text: TokenBucket,
    media: TokenBucket,
}

impl PageLimits {
    pub fn new(text_per_second: f64, media_per_second: f64) -> PageLimits {
        PageLimits {
            text: TokenBucket::new(text_per_second),
            media: TokenBucket::new(media_per_second),
        }
    }

    /// Waits until a call with this body may be made.
    pub async fn acquire(&self, body: &Value) {
        match CallClass::of(body) {
            CallClass::Text => self.text.acquire().await,
            CallClass::Media => self.media.acquire().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn audio_and_video_are_media() {
        let audio = json!({"message": {"attachment": {"type": "audio", "payload": {"url": "u"}}}});
        let video = json!({"message": {"attachment": {"type": "video", "payload": {"url": "u"}}}});
        let image = json!({"message": {"attachment": {"type": "image", "payload": {"url": "u"}}}});
        assert_eq!(CallClass::of(&audio), CallClass::Media);
        assert_eq!(CallClass::of(&video), CallClass::Media);
        assert_eq!(CallClass::of(&image), CallClass::Text);
        assert_eq!(
            CallClass::of(&json!({"sender_action": "typing_on"})),
            CallClass::Text
        );
    }

    #[test]
    fn a_bucket_gives_its_burst_then_spaces_calls_at_the_rate() {
        let bucket = TokenBucket::new(10.0);
        for _ in 0..10 {
            assert_eq!(bucket.reserve(), Duration::ZERO);
        }
        // The 11th and 12th call wait about 1/10 s and 2/10 s: reservations queue up.
        let eleventh = bucket.reserve();
        let twelfth = bucket.reserve();
        assert!(
            eleventh > Duration::from_millis(80) && eleventh <= Duration::from_millis(100),
            "{eleventh:?}"
        );
        assert!(
            twelfth > Duration::from_millis(180) && twelfth <= Duration::from_millis(200),
            "{twelfth:?}"
        );
    }
}
