//! Prometheus metrics, rendered in the text exposition format by `GET /metrics`.
//!
//! Method labels are limited to the registered method names (anything else counts as
//! `unknown`), so a client cannot create series at will.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// Upper bounds of the expiry lateness buckets, in seconds.
const LATENESS_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// A histogram with fixed buckets.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(value.as_micros().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {total}");
    }
}

/// Per-method call figures.
#[derive(Debug)]
struct MethodStats {
    calls: AtomicU64,
    latency: Histogram,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    methods: std::sync::OnceLock<BTreeMap<String, MethodStats>>,
    errors: Mutex<BTreeMap<i32, u64>>,
    connections: AtomicI64,
    subscriptions: AtomicI64,
    events_emitted: AtomicU64,
    expiry_lateness: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            methods: std::sync::OnceLock::new(),
            errors: Mutex::new(BTreeMap::new()),
            connections: AtomicI64::new(0),
            subscriptions: AtomicI64::new(0),
            events_emitted: AtomicU64::new(0),
            expiry_lateness: Histogram::new(LATENESS_BUCKETS),
        }
    }

    /// Fixes the method labels: these names, plus `unknown` and `batch`. Only the first call
    /// has an effect.
    pub fn set_methods<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let methods = names
            .into_iter()
            .chain(["unknown", "batch"])
            .map(|name| {
                (name.to_string(), MethodStats { calls: AtomicU64::new(0), latency: Histogram::new(LATENCY_BUCKETS) })
            })
            .collect();
        let _ = self.methods.set(methods);
    }

    fn methods(&self) -> Option<&BTreeMap<String, MethodStats>> {
        self.methods.get()
    }

    /// The label for a method name: itself if registered, `unknown` otherwise.
    pub fn label<'a>(&self, method: &'a str) -> &'a str {
        if self.methods().is_some_and(|m| m.contains_key(method)) { method } else { "unknown" }
    }

    /// Records one finished call and, if it failed, its error code.
    pub fn record_call(&self, method: &str, took: Duration, error: Option<i32>) {
        if let Some(stats) = self.methods().and_then(|m| m.get(self.label(method))) {
            stats.calls.fetch_add(1, Ordering::Relaxed);
            stats.latency.observe(took);
        }
        if let Some(code) = error {
            let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
            *errors.entry(code).or_default() += 1;
        }
    }

    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn subscription_opened(&self) {
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn subscription_closed(&self) {
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn events_emitted(&self, n: usize) {
        self.events_emitted.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// How late after its deadline a record was expired.
    pub fn expiry_lateness(&self, late: Duration) {
        self.expiry_lateness.observe(late);
    }

    /// The text exposition, with the record counts read from the store at scrape time.
    pub fn render(&self, records: &[(&str, u64)]) -> String {
        let mut out = String::with_capacity(8 * 1024);
        out.push_str(
            "# HELP authstore_rpc_calls_total JSON-RPC calls by method.\n# TYPE authstore_rpc_calls_total counter\n",
        );
        let methods = self.methods().into_iter().flatten();
        for (name, stats) in methods.clone() {
            let _ =
                writeln!(out, "authstore_rpc_calls_total{{method=\"{name}\"}} {}", stats.calls.load(Ordering::Relaxed));
        }
        out.push_str(
            "# HELP authstore_rpc_duration_seconds JSON-RPC call latency by method.\n# TYPE authstore_rpc_duration_seconds histogram\n",
        );
        for (name, stats) in methods {
            stats.latency.render(&mut out, "authstore_rpc_duration_seconds", &format!("method=\"{name}\""));
        }
        out.push_str(
            "# HELP authstore_rpc_errors_total JSON-RPC errors by code.\n# TYPE authstore_rpc_errors_total counter\n",
        );
        for (code, count) in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "authstore_rpc_errors_total{{code=\"{code}\"}} {count}");
        }
        out.push_str("# HELP authstore_connections Open WebSocket connections.\n# TYPE authstore_connections gauge\n");
        let _ = writeln!(out, "authstore_connections {}", self.connections.load(Ordering::Relaxed));
        out.push_str("# HELP authstore_subscriptions Open subscriptions.\n# TYPE authstore_subscriptions gauge\n");
        let _ = writeln!(out, "authstore_subscriptions {}", self.subscriptions.load(Ordering::Relaxed));
        out.push_str("# HELP authstore_events_total Lifecycle events sequenced by this instance.\n# TYPE authstore_events_total counter\n");
        let _ = writeln!(out, "authstore_events_total {}", self.events_emitted.load(Ordering::Relaxed));
        out.push_str("# HELP authstore_records Live records by kind.\n# TYPE authstore_records gauge\n");
        for (kind, count) in records {
            let _ = writeln!(out, "authstore_records{{kind=\"{kind}\"}} {count}");
        }
        out.push_str(
            "# HELP authstore_expiry_lateness_seconds How long after its deadline a record was expired.\n# TYPE authstore_expiry_lateness_seconds histogram\n",
        );
        self.expiry_lateness.render(&mut out, "authstore_expiry_lateness_seconds", "");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label_and_histograms_are_cumulative() {
        let m = Metrics::new();
        m.set_methods(["session.get"]);
        m.record_call("session.get", Duration::from_micros(700), None);
        m.record_call("evil.method.{}", Duration::from_millis(3), Some(-32601));
        let text = m.render(&[("sessions", 2)]);
        assert!(text.contains("authstore_rpc_calls_total{method=\"session.get\"} 1"));
        assert!(text.contains("authstore_rpc_calls_total{method=\"unknown\"} 1"));
        assert!(!text.contains("evil"));
        assert!(text.contains("authstore_rpc_duration_seconds_bucket{method=\"session.get\",le=\"0.001\"} 1"));
        assert!(text.contains("authstore_rpc_duration_seconds_bucket{method=\"session.get\",le=\"+Inf\"} 1"));
        assert!(text.contains("authstore_rpc_errors_total{code=\"-32601\"} 1"));
        assert!(text.contains("authstore_records{kind=\"sessions\"} 2"));
    }
}
