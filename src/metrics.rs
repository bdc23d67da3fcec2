//! Prometheus metrics, served by `GET /metrics` in the OpenMetrics text format through the
//! official `prometheus-client` crate, so the exposition (escaping, `_total` on counters,
//! cumulative buckets, `# EOF`) is the client library's and not ours.
//!
//! Method labels are limited to the registered method names (anything else counts as
//! `unknown`), so a client cannot create series at will. Record counts are read from the store
//! at scrape time and encoded from a registry built for that scrape alone, so concurrent scrapes
//! never see each other's half-written values.

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// Upper bounds of the expiry lateness buckets, in seconds.
const LATENESS_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// `method="<registered name>"`, `unknown` or `batch`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// `code="<JSON-RPC error code>"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    code: i32,
}

/// `kind="clients"`, `sessions`, `codes` or `tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RecordLabels {
    kind: String,
}

/// Builds each method's latency histogram with the latency buckets.
#[derive(Debug, Clone, Copy)]
struct LatencyHistogram;

impl MetricConstructor<Histogram> for LatencyHistogram {
    fn new_metric(&self) -> Histogram {
        Histogram::new(LATENCY_BUCKETS.iter().copied())
    }
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The method names that are their own label; fixed once, at start.
    methods: OnceLock<BTreeSet<String>>,
    calls: Family<MethodLabels, Counter>,
    latency: Family<MethodLabels, Histogram, LatencyHistogram>,
    errors: Family<ErrorLabels, Counter>,
    connections: Gauge<i64, AtomicI64>,
    subscriptions: Gauge<i64, AtomicI64>,
    events_emitted: Counter,
    expiry_lateness: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let calls = Family::<MethodLabels, Counter>::default();
        let latency = Family::new_with_constructor(LatencyHistogram);
        let errors = Family::<ErrorLabels, Counter>::default();
        let connections = Gauge::<i64, AtomicI64>::default();
        let subscriptions = Gauge::<i64, AtomicI64>::default();
        let events_emitted = Counter::default();
        let expiry_lateness = Histogram::new(LATENESS_BUCKETS.iter().copied());
        // Help texts without a final stop: the library adds one.
        let mut registry = Registry::default();
        registry.register("authstore_rpc_calls", "JSON-RPC calls by method", calls.clone());
        registry.register("authstore_rpc_duration_seconds", "JSON-RPC call latency by method", latency.clone());
        registry.register("authstore_rpc_errors", "JSON-RPC errors by code", errors.clone());
        registry.register("authstore_connections", "Open WebSocket connections", connections.clone());
        registry.register("authstore_subscriptions", "Open subscriptions", subscriptions.clone());
        registry.register("authstore_events", "Lifecycle events sequenced by this instance", events_emitted.clone());
        registry.register(
            "authstore_expiry_lateness_seconds",
            "How long after its deadline a record was expired",
            expiry_lateness.clone(),
        );
        Metrics {
            registry,
            methods: OnceLock::new(),
            calls,
            latency,
            errors,
            connections,
            subscriptions,
            events_emitted,
            expiry_lateness,
        }
    }

    /// Fixes the method labels: these names, plus `unknown` and `batch`. Only the first call
    /// has an effect. Every label is exported from the start, at zero.
    pub fn set_methods<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let methods: BTreeSet<String> = names.into_iter().chain(["unknown", "batch"]).map(str::to_string).collect();
        if self.methods.set(methods).is_ok() {
            for method in self.methods.get().into_iter().flatten() {
                let labels = MethodLabels { method: method.clone() };
                let _ = self.calls.get_or_create(&labels);
                let _ = self.latency.get_or_create(&labels);
            }
        }
    }

    /// The label for a method name: itself if registered, `unknown` otherwise.
    pub fn label<'a>(&self, method: &'a str) -> &'a str {
        if self.methods.get().is_some_and(|m| m.contains(method)) { method } else { "unknown" }
    }

    /// Records one finished call and, if it failed, its error code.
    pub fn record_call(&self, method: &str, took: Duration, error: Option<i32>) {
        if self.methods.get().is_some() {
            let labels = MethodLabels { method: self.label(method).to_string() };
            self.calls.get_or_create(&labels).inc();
            self.latency.get_or_create(&labels).observe(took.as_secs_f64());
        }
        if let Some(code) = error {
            self.errors.get_or_create(&ErrorLabels { code }).inc();
        }
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    pub fn subscription_opened(&self) {
        self.subscriptions.inc();
    }

    pub fn subscription_closed(&self) {
        self.subscriptions.dec();
    }

    pub fn events_emitted(&self, n: usize) {
        self.events_emitted.inc_by(n as u64);
    }

    /// How late after its deadline a record was expired.
    pub fn expiry_lateness(&self, late: Duration) {
        self.expiry_lateness.observe(late.as_secs_f64());
    }

    /// The exposition ([`CONTENT_TYPE`]), with the record counts read from the store at scrape
    /// time.
    pub fn render(&self, records: &[(&str, u64)]) -> String {
        let counts = Family::<RecordLabels, Gauge>::default();
        for (kind, count) in records {
            counts
                .get_or_create(&RecordLabels { kind: kind.to_string() })
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        let mut scrape = Registry::default();
        scrape.register("authstore_records", "Live records by kind", counts);
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a `String` cannot fail.
        let _ = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &scrape))
            .and_then(|()| encode_eof(&mut out));
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
        assert!(
            text.contains("authstore_rpc_duration_seconds_bucket{le=\"0.001\",method=\"session.get\"} 1"),
            "{text}"
        );
        assert!(text.contains("authstore_rpc_duration_seconds_bucket{le=\"+Inf\",method=\"session.get\"} 1"), "{text}");
        assert!(text.contains("authstore_rpc_errors_total{code=\"-32601\"} 1"));
        assert!(text.contains("authstore_records{kind=\"sessions\"} 2"));
        assert!(text.ends_with("# EOF\n"));
    }
}
