//! What the index counts for its operator's dashboards (`--metrics`):
//! requests by kind with their latency, the size of each group commit,
//! budget refusals and the peers online. Kept as iroh-metrics groups so
//! the daemon serves them in one registry beside iroh's own.

use iroh_metrics::{Counter, EncodeLabelSet, Family, Gauge, Histogram, MetricsGroup};

/// A request kind, as [`peernet_proto::index::Request::kind`] names it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Seconds from a request's arrival at the handler to its answer, which
/// includes waiting for its batch and the batch's disk sync.
fn latency_buckets() -> Histogram {
    Histogram::new(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
}

/// Why something was refused.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, MetricsGroup)]
#[metrics(default, name = "peernet_index")]
pub struct IndexMetrics {
    /// Requests handled, by kind.
    pub requests: Family<KindLabel, Counter>,
    /// Seconds from a request's arrival to its answer (queue, batch and commit), by kind.
    #[default(Family::with_constructor(latency_buckets))]
    pub request_seconds: Family<KindLabel, Histogram>,
    /// Requests per group commit (one transaction, one disk sync).
    #[default(Histogram::new(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]))]
    pub batch_size: Histogram,
    /// Requests refused because their key sent more than its budget.
    pub refused_rate: Counter,
    /// Joins refused because their address already held the most keys allowed.
    pub refused_address: Counter,
    /// Peers whose lease runs now (updated at most once a second).
    pub peers_online: Gauge,
    /// Peers forgotten, with their files, one lease after their lease ran out.
    pub peers_forgotten: Counter,
    /// Connections that had not joined, closed: over their pool or their
    /// address's share of it, or silent past the join deadline.
    pub unjoined_closed: Family<ReasonLabel, Counter>,
    /// Answers refused because they would have exceeded the response frame.
    pub answers_too_large: Counter,
}

impl IndexMetrics {
    /// Counts one answered request of `kind` that took `seconds`.
    pub fn answered(&self, kind: &'static str, seconds: f64) {
        let label = KindLabel { kind };
        self.requests.get_or_create(&label).inc();
        self.request_seconds.get_or_create(&label).observe(seconds);
    }
}
