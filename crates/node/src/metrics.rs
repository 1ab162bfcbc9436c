//! What a daemon counts for Prometheus (`--metrics ADDR`): iroh's own
//! endpoint and gossip metrics, the hosted index's, and the peer's (bytes
//! served and fetched, downloads by outcome, flood queries, dropped chat
//! events, shares), all in one iroh-metrics registry.
//!
//! Counters the node already keeps for `status` (flood, dropped events,
//! admissions) are copied into the registry when it is read, so there is
//! one count of each thing, not two that could disagree.

use std::{collections::BTreeMap, sync::Arc};

use iroh::Endpoint;
use iroh_gossip::net::Gossip;
use iroh_metrics::{Counter, EncodeLabelSet, Family, Gauge, MetricsGroup, Registry};
use peernet_index::metrics::IndexMetrics;

use crate::network::Status;

/// Why something ended or was dropped.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// How a download ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug, MetricsGroup)]
#[metrics(default, name = "peernet")]
pub struct PeerMetrics {
    /// Payload bytes served to other peers, counted when each request ends.
    pub bytes_served: Counter,
    /// Bytes fetched from other peers by downloads.
    pub bytes_fetched: Counter,
    /// Downloads ended, by outcome (saved, failed).
    pub downloads: Family<OutcomeLabel, Counter>,
    /// Flood queries handled.
    pub flood_handled: Counter,
    /// Flood queries dropped, by reason (duplicate, over_budget, oversized),
    /// flood frames not sent (send_cap) and not read (queue_full).
    pub flood_dropped: Family<ReasonLabel, Counter>,
    /// Chat and overlay events dropped, by reason (forged, replayed, over_budget, ...).
    pub chat_dropped: Family<ReasonLabel, Counter>,
    /// Connections closed because their key never proved membership.
    pub refused_outsiders: Counter,
    /// Blob requests refused: they asked for something this peer does not share.
    pub blobs_refused: Counter,
    /// New connections ignored because their IP address was over its budget.
    pub connections_refused: Counter,
    /// Providers that lost their turn in a get, by fault (stalled, failed,
    /// lied about a size).
    pub provider_faults: Family<ReasonLabel, Counter>,
    /// Files and folders this peer shares.
    pub shares: Gauge,
    /// Overlay neighbours now.
    pub neighbors: Gauge,
}

impl PeerMetrics {
    pub fn download_ended(&self, outcome: &'static str) {
        self.downloads.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn provider_fault(&self, fault: crate::reputation::Fault) {
        self.provider_faults.get_or_create(&ReasonLabel { reason: fault.label().to_string() }).inc();
    }

    /// Provider faults so far, by name, those that happened only.
    pub fn provider_fault_counts(&self) -> BTreeMap<String, u64> {
        crate::reputation::Fault::ALL
            .into_iter()
            .map(|f| (f.label().to_string(), self.provider_faults.get_or_create(&ReasonLabel { reason: f.label().to_string() }).get()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Copies what `status` counts.
    fn refresh(&self, status: &Status) {
        let reason = |r: &str| ReasonLabel { reason: r.to_string() };
        self.flood_handled.set(status.flood_handled);
        self.flood_dropped.get_or_create(&reason("duplicate")).set(status.flood_duplicates);
        self.flood_dropped.get_or_create(&reason("over_budget")).set(status.flood_over_budget);
        self.flood_dropped.get_or_create(&reason("oversized")).set(status.flood_oversized);
        self.flood_dropped.get_or_create(&reason("send_cap")).set(status.flood_sends_dropped);
        self.flood_dropped.get_or_create(&reason("queue_full")).set(status.flood_queue_full);
        for (why, n) in &status.dropped_events {
            self.chat_dropped.get_or_create(&reason(why)).set(*n);
        }
        self.refused_outsiders.set(status.refused_outsiders);
        self.blobs_refused.set(status.blobs_refused);
        self.connections_refused.set(status.connections_refused);
        self.shares.set(status.shares as i64);
        self.neighbors.set(status.neighbors.len() as i64);
    }
}

/// The daemon's registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    peer: Arc<PeerMetrics>,
}

impl Metrics {
    pub(crate) fn new(endpoint: &Endpoint, gossip: &Gossip, index: Option<Arc<IndexMetrics>>, peer: Arc<PeerMetrics>) -> Self {
        let mut registry = Registry::default();
        registry.register(peer.clone());
        if let Some(index) = index {
            registry.register(index);
        }
        let iroh = registry.sub_registry_with_prefix("iroh");
        iroh.register_all(endpoint.metrics());
        iroh.register(gossip.metrics().clone());
        Self { registry, peer }
    }

    /// The OpenMetrics text, with the status counters copied in first.
    pub fn encode(&self, status: &Status) -> String {
        self.peer.refresh(status);
        let mut text = String::new();
        // Writing to a String cannot fail.
        self.registry.encode_openmetrics_to_writer(&mut text).ok();
        iroh_metrics::encoding::encode_openmetrics_eof(&mut text).ok();
        text
    }
}
