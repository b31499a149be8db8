//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`.
//!
//! A deliberately small registry: counters and histograms keyed by name and label values, behind one mutex
//! each. The hot path takes one short uncontended lock per update, which measured far below the cost of the
//! HTTP work around it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Every metric Ferry exports, with its help text. Names are a stable contract (dashboards rely on them).
const HELP: &[(&str, &str, &str)] = &[
    (
        "ferry_events_received_total",
        "counter",
        "Webhook events accepted, by endpoint and event kind.",
    ),
    (
        "ferry_events_ignored_total",
        "counter",
        "Webhook events ignored, by endpoint and reason.",
    ),
    (
        "ferry_events_duplicate_total",
        "counter",
        "Redelivered webhook events recognised and not processed again, by endpoint.",
    ),
    (
        "ferry_ack_duration_seconds",
        "histogram",
        "Time from receiving a webhook call to its 200, the events durably stored.",
    ),
    (
        "ferry_inbox_spills_total",
        "counter",
        "Times memory was full (server.max_pending_events) and new events waited in the inbox on disk.",
    ),
    (
        "ferry_send_retries_total",
        "counter",
        "Send API calls retried after a retryable error, by endpoint.",
    ),
    (
        "ferry_dead_letters_total",
        "counter",
        "Messages that will never be delivered, by endpoint and reason (permanent_error, retries_exhausted, outside_window, ...).",
    ),
    (
        "ferry_signature_failures_total",
        "counter",
        "Webhook calls rejected for a missing or wrong signature.",
    ),
    (
        "ferry_webhook_rejected_total",
        "counter",
        "Webhook calls rejected before parsing, by endpoint and reason.",
    ),
    (
        "ferry_turns_total",
        "counter",
        "Turns finished, by endpoint and outcome (completed, flow_failed, dropped, replied, no_user).",
    ),
    (
        "ferry_flow_errors_total",
        "counter",
        "Flow calls that failed, by endpoint and kind.",
    ),
    (
        "ferry_output_errors_total",
        "counter",
        "Flow outputs that could not be converted to Send API messages.",
    ),
    (
        "ferry_send_errors_total",
        "counter",
        "Send API calls that failed, by endpoint and Graph error code.",
    ),
    (
        "ferry_messages_sent_total",
        "counter",
        "Send API messages delivered, by endpoint.",
    ),
    (
        "ferry_profile_errors_total",
        "counter",
        "Profile look-ups that failed, by endpoint.",
    ),
    (
        "ferry_flow_duration_seconds",
        "histogram",
        "Time the flow took to answer.",
    ),
    (
        "ferry_send_duration_seconds",
        "histogram",
        "Time one Send API call took.",
    ),
    (
        "ferry_turn_duration_seconds",
        "histogram",
        "Time from accepting an event to the end of its turn.",
    ),
    (
        "ferry_hook_errors_total",
        "counter",
        "Transformer hook failures, by endpoint, hook and kind (trap, timeout, memory, validation, plugin_error, instantiate, poisoned, http_denied; hook \"http\" for denied requests).",
    ),
    (
        "ferry_plugin_instantiations_total",
        "counter",
        "Transformer plugin instances created (one per turn that runs a hook).",
    ),
    (
        "ferry_plugin_http_requests_total",
        "counter",
        "Outbound HTTP requests plugins made (allowed ones).",
    ),
    (
        "ferry_hook_duration_seconds",
        "histogram",
        "Time one transformer hook call took (the first call of a turn includes instantiation).",
    ),
];

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Key = (&'static str, Vec<(&'static str, String)>);

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<Key, u64>>,
    histograms: Mutex<BTreeMap<Key, Histogram>>,
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    (
        name,
        labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
    )
}

/// Compares without allocating: the hot path updates existing series, and there are few series, so a scan
/// beats building a key (a Vec of Strings) for every update.
fn is_key(k: &Key, name: &str, labels: &[(&'static str, &str)]) -> bool {
    k.0 == name
        && k.1.len() == labels.len()
        && k.1
            .iter()
            .zip(labels)
            .all(|((a, b), (c, d))| a == c && b == d)
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        if let Ok(mut c) = self.counters.lock() {
            match c.iter_mut().find(|(k, _)| is_key(k, name, labels)) {
                Some((_, v)) => *v += n,
                None => {
                    c.insert(key(name, labels), n);
                }
            }
        }
    }

    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], seconds: f64) {
        if let Ok(mut h) = self.histograms.lock() {
            if !h.keys().any(|k| is_key(k, name, labels)) {
                h.insert(key(name, labels), Histogram::default());
            }
            let Some((_, hist)) = h.iter_mut().find(|(k, _)| is_key(k, name, labels)) else {
                return;
            };
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    hist.counts[i] += 1;
                }
            }
            hist.count += 1;
            hist.sum += seconds;
        }
    }

    /// The current value of a counter (tests and the demo read it).
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        self.counters
            .lock()
            .map(|c| c.get(&key(name, labels)).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// How many observations a histogram has.
    pub fn histogram_count(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        self.histograms
            .lock()
            .map(|h| h.get(&key(name, labels)).map(|x| x.count).unwrap_or(0))
            .unwrap_or(0)
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = self
            .counters
            .lock()
            .map(|c| c.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>());
        let counters = counters.unwrap_or_default();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            if *kind == "counter" {
                for ((n, labels), v) in counters.iter().filter(|((n, _), _)| n == name) {
                    let _ = writeln!(out, "{n}{} {v}", render_labels(labels, None));
                }
            } else if let Ok(h) = self.histograms.lock() {
                for ((n, labels), hist) in h.iter().filter(|((n, _), _)| n == name) {
                    render_histogram(&mut out, n, labels, hist);
                }
            }
        }
        out
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &[(&str, String)], h: &Histogram) {
    for (i, bound) in BUCKETS.iter().enumerate() {
        let le = bound.to_string();
        let _ = writeln!(
            out,
            "{name}_bucket{} {}",
            render_labels(labels, Some(&le)),
            h.counts[i]
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{} {}",
        render_labels(labels, Some("+Inf")),
        h.count
    );
    let _ = writeln!(out, "{name}_sum{} {}", render_labels(labels, None), h.sum);
    let _ = writeln!(
        out,
        "{name}_count{} {}",
        render_labels(labels, None),
        h.count
    );
}

fn render_labels(labels: &[(&str, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new();
        m.inc(
            "ferry_events_received_total",
            &[("endpoint", "shop"), ("kind", "message")],
        );
        m.inc(
            "ferry_events_received_total",
            &[("endpoint", "shop"), ("kind", "message")],
        );
        m.observe(
            "ferry_flow_duration_seconds",
            &[("endpoint", "shop")],
            0.003,
        );
        let text = m.render();
        assert!(text.contains("ferry_events_received_total{endpoint=\"shop\",kind=\"message\"} 2"));
        assert!(
            text.contains("ferry_flow_duration_seconds_bucket{endpoint=\"shop\",le=\"0.0025\"} 0")
        );
        assert!(
            text.contains("ferry_flow_duration_seconds_bucket{endpoint=\"shop\",le=\"0.005\"} 1")
        );
        assert!(text.contains("ferry_flow_duration_seconds_count{endpoint=\"shop\"} 1"));
        assert!(text.contains("# TYPE ferry_send_duration_seconds histogram"));
        assert_eq!(
            m.counter(
                "ferry_events_received_total",
                &[("endpoint", "shop"), ("kind", "message")]
            ),
            2
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.inc(
            "ferry_send_errors_total",
            &[("endpoint", "a\"b"), ("code", "1")],
        );
        assert!(m.render().contains("endpoint=\"a\\\"b\""));
    }
}
