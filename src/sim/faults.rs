//! Fault injection for Send API calls (messages and sender actions).
//!
//! Faults hit only calls that would otherwise succeed (valid token, proof and body), so a test of error
//! handling never depends on validation order. A call takes the next one-shot fault if any is queued;
//! otherwise one seeded draw decides between HTTP 500, code 613, the messaging window, or success.

use super::errors::GraphError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// The fault plan. Percentages are 0..=100 and are drawn in the listed order from one roll per call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    pub http_500_percent: f64,
    pub code_613_percent: f64,
    /// Code 10 / subcode 2018278. Not applied by chance to `MESSAGE_TAG` sends, which Meta lets through
    /// outside the window; a queued [`Fault::OutsideWindow`] still applies to them.
    pub outside_window_percent: f64,
    /// Delay before every send call is answered.
    pub latency_ms: u64,
    /// One-shot faults for the next send calls, in order; each replaces the random draw for its call.
    pub next: VecDeque<Fault>,
    /// `ids_for_pages` answers Meta's temporary error (code 2) while set.
    pub ids_for_pages_error: bool,
    pub seed: u64,
}

impl Faults {
    /// A plan holding only one-shot faults.
    pub fn once(faults: impl IntoIterator<Item = Fault>) -> Faults {
        Faults {
            next: faults.into_iter().collect(),
            ..Faults::default()
        }
    }
}

/// A one-shot fault. JSON: `"http_500"`, `"rate_limit_613"`, `"outside_window"`, `"person_unavailable"`,
/// `{"latency": ms}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    #[serde(rename = "http_500")]
    Http500,
    #[serde(rename = "rate_limit_613")]
    RateLimit613,
    #[serde(rename = "outside_window")]
    OutsideWindow,
    /// Code 551 / subcode 1545041: the person is not available (a permanent error).
    #[serde(rename = "person_unavailable")]
    PersonUnavailable,
    /// Delays the call by this many milliseconds (on top of `latency_ms`), then answers normally.
    #[serde(rename = "latency")]
    Latency(u64),
}

/// What the plan decides for one call.
#[derive(Debug, PartialEq)]
pub(crate) struct Verdict {
    pub delay: Duration,
    pub error: Option<GraphError>,
}

pub(crate) struct FaultState {
    plan: Faults,
    rng: StdRng,
}

impl FaultState {
    pub fn new(plan: Faults) -> FaultState {
        FaultState {
            rng: StdRng::seed_from_u64(plan.seed),
            plan,
        }
    }

    pub fn plan(&self) -> &Faults {
        &self.plan
    }

    /// Decides the fate of one send call; `tagged` is true for `MESSAGE_TAG` messages.
    pub fn decide(&mut self, tagged: bool) -> Verdict {
        let base = self.plan.latency_ms;
        match self.plan.next.pop_front() {
            Some(fault) => one_shot(fault, base),
            None => {
                let error = self.roll(tagged);
                Verdict {
                    delay: Duration::from_millis(base),
                    error,
                }
            }
        }
    }

    fn roll(&mut self, tagged: bool) -> Option<GraphError> {
        let p500 = percent(self.plan.http_500_percent);
        let p613 = percent(self.plan.code_613_percent);
        let pwin = percent(self.plan.outside_window_percent);
        if p500 + p613 + pwin == 0.0 {
            return None;
        }
        let roll: f64 = self.rng.gen_range(0.0..100.0);
        if roll < p500 {
            Some(GraphError::unexpected())
        } else if roll < p500 + p613 {
            Some(GraphError::rate_limited())
        } else if roll < p500 + p613 + pwin && !tagged {
            Some(GraphError::outside_window())
        } else {
            None
        }
    }
}

fn one_shot(fault: Fault, base_ms: u64) -> Verdict {
    let (extra_ms, error) = match fault {
        Fault::Http500 => (0, Some(GraphError::unexpected())),
        Fault::RateLimit613 => (0, Some(GraphError::rate_limited())),
        Fault::OutsideWindow => (0, Some(GraphError::outside_window())),
        Fault::PersonUnavailable => (0, Some(GraphError::person_unavailable())),
        Fault::Latency(ms) => (ms, None),
    };
    Verdict {
        delay: Duration::from_millis(base_ms.saturating_add(extra_ms)),
        error,
    }
}

/// Clamps to 0..=100; NaN counts as 0.
fn percent(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 100.0)
    }
}
