//! The network as this peer sees it: status, who is online, the map, and
//! closing the whole network (the root only).

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use iroh::{Endpoint, Watcher};
use peernet_index::budget::Budget;
use peernet_proto::{
    index::{OnlinePeer, PeerAddr, PeerInfo, Request, Response},
    limits::LAN_NAME_SHORT_CHARS,
    ticket::Ticket,
    topo::{Graph, Report},
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    admission::Admission,
    data_dir::DataDir,
    dht::{DhtLayer, DhtStatus},
    endpoint,
    flood::FloodSearch,
    index_client::{IndexClient, IndexError, IndexStatus},
    metrics::PeerMetrics,
    overlay::{Overlay, OverlayError},
    paths::{self, PathInfo, Paths},
    relay::RootRelay,
    serving::Serving,
    shares::Shares,
    tasks::{self, Tasks},
};

/// Most online pages fetched for one `online` call.
const MAX_ONLINE_PAGES: u32 = 256;
/// Time for the root's close event to spread before the root goes away.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What `peernet status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub id: String,
    pub nickname: String,
    /// The ticket others join with (empty on a LAN network).
    pub ticket: String,
    /// The LAN network's name, on a LAN network (which has no ticket and
    /// no index).
    #[serde(default)]
    pub lan: Option<String>,
    /// What the network's openness means, when it is worth saying.
    #[serde(default)]
    pub warning: Option<String>,
    pub hosts_index: bool,
    pub index: IndexStatus,
    pub addrs: Vec<String>,
    pub shares: usize,
    /// Current overlay neighbours (short ids).
    pub neighbors: Vec<String>,
    /// Each overlay neighbour with the path its link takes now.
    #[serde(default)]
    pub links: Vec<LinkStatus>,
    /// The path of the link to the index (none while there is no live
    /// connection, or when this process hosts the index).
    #[serde(default)]
    pub index_path: Option<PathInfo>,
    /// The relays this peer uses: whether it is connected to each, and why
    /// not.
    #[serde(default)]
    pub relays: Vec<RelayLink>,
    /// The relay this root runs for its network, with its admissions.
    #[serde(default)]
    pub relay_server: Option<RelayServerStatus>,
    /// Flood queries handled here, and duplicate copies dropped.
    pub flood_handled: u64,
    pub flood_duplicates: u64,
    /// Flood queries dropped because their neighbour was over its budget.
    #[serde(default)]
    pub flood_over_budget: u64,
    /// Flood queries dropped for text over the index's query limit.
    #[serde(default)]
    pub flood_oversized: u64,
    /// Blob requests refused because they asked for something this peer
    /// does not share (any more).
    #[serde(default)]
    pub blobs_refused: u64,
    /// Flood frames not sent because too many were already on their way to
    /// that peer.
    #[serde(default)]
    pub flood_sends_dropped: u64,
    /// Flood frames from others dropped unread: the queue was full.
    #[serde(default)]
    pub flood_queue_full: u64,
    /// When this process hosts the index: what its bounds refused or
    /// removed, by name (also in the metrics).
    #[serde(default)]
    pub index_bounds: BTreeMap<String, u64>,
    /// New connections ignored because their IP address was over its budget.
    #[serde(default)]
    pub connections_refused: u64,
    /// Providers that lost their turn in this peer's gets, by fault
    /// (stalled, failed, lied), those that happened only.
    #[serde(default)]
    pub provider_faults: BTreeMap<String, u64>,
    /// Overlay events dropped, by reason (forged, replayed, ...).
    pub dropped_events: BTreeMap<String, u64>,
    /// Tasks this node is running, and every live task of the process's
    /// runtime (detached ones included): both return to their idle level
    /// when work is done.
    #[serde(default)]
    pub node_tasks: usize,
    #[serde(default)]
    pub runtime_tasks: usize,
    /// Live QUIC connections of this peer, by protocol (ALPN).
    #[serde(default)]
    pub connections: BTreeMap<String, usize>,
    /// Connections closed because their key never proved membership of
    /// this network, admission exchanges refused, exchanges that succeeded
    /// (either way), and the keys admitted now.
    #[serde(default)]
    pub refused_outsiders: u64,
    #[serde(default)]
    pub refused_proofs: u64,
    #[serde(default)]
    pub admissions: u64,
    #[serde(default)]
    pub admitted_keys: usize,
    pub data_dir: PathBuf,
    pub downloads: PathBuf,
    /// The DHT node, with `--dht`; `None` without it.
    #[serde(default)]
    pub dht: Option<DhtStatus>,
}

/// What a LAN network's name does not protect, in one line (for `up` and
/// `status`). A short name is called out: anyone on the LAN hears the
/// network's mDNS service name and can try names against it offline.
pub fn lan_warning(name: &str) -> String {
    if lan_name_is_short(name) {
        let chars = name.trim().chars().count();
        format!(
            "LAN network '{name}': anyone on this LAN who starts peernet with the same name is a member, and a name of {chars} characters is \
             soon guessed offline by anyone who hears the LAN; pick one of at least {LAN_NAME_SHORT_CHARS} characters (a few uncommon words)"
        )
    } else {
        format!(
            "LAN network '{name}': anyone on this LAN who starts peernet with the same name is a member; a common name can be guessed, so pick an uncommon one"
        )
    }
}

/// Whether a LAN network's name is short enough to deserve a warning.
pub fn lan_name_is_short(name: &str) -> bool {
    name.trim().chars().count() < LAN_NAME_SHORT_CHARS
}

/// An overlay neighbour and the path to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkStatus {
    pub id: String,
    /// `None` while no connection to it is open.
    pub path: Option<PathInfo>,
}

/// A relay this peer uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelayLink {
    pub url: String,
    pub connected: bool,
    /// Why the relay refused this peer, or the last error reaching it.
    pub error: Option<String>,
}

/// The relay this root runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelayServerStatus {
    pub url: String,
    pub quic_port: Option<u16>,
    /// Connections admitted with the network's token, and refused without it.
    pub admitted: u64,
    pub refused: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{0}")]
    Index(#[from] IndexError),
    #[error("only the root can close the network: run stop-network with the data directory of the peer or index that started it")]
    NotRoot,
    #[error("{0}")]
    Overlay(#[from] OverlayError),
}

/// The network handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Network {
    endpoint: Endpoint,
    ticket: Option<Ticket>,
    lan: Option<String>,
    index: IndexClient,
    hosts_index: bool,
    overlay: Overlay,
    flood: FloodSearch,
    shares: Arc<Shares>,
    serving: Serving,
    nickname: watch::Receiver<String>,
    data_dir: DataDir,
    downloads: PathBuf,
    /// Fired when the root closes the network.
    closed: CancellationToken,
    tasks: Tasks,
    admission: Admission,
    connections: Arc<Budget<IpAddr>>,
    paths: Paths,
    relay: Option<Arc<RootRelay>>,
    dht: Option<DhtLayer>,
    index_metrics: Option<Arc<peernet_index::metrics::IndexMetrics>>,
    peer_metrics: Arc<PeerMetrics>,
}

/// What [`Network`] is built from.
pub struct Parts {
    pub endpoint: Endpoint,
    pub ticket: Option<Ticket>,
    pub lan: Option<String>,
    pub index: IndexClient,
    pub hosts_index: bool,
    pub overlay: Overlay,
    pub flood: FloodSearch,
    pub shares: Arc<Shares>,
    /// The gate of blob requests (only what we share is served).
    pub serving: Serving,
    pub nickname: watch::Receiver<String>,
    pub data_dir: DataDir,
    pub downloads: PathBuf,
    pub closed: CancellationToken,
    pub tasks: Tasks,
    pub admission: Admission,
    /// The budget of new connections per IP address.
    pub connections: Arc<Budget<IpAddr>>,
    /// Every connection's path.
    pub paths: Paths,
    /// The network's relay, when this root runs it.
    pub relay: Option<Arc<RootRelay>>,
    /// The DHT layer, with `--dht`.
    pub dht: Option<DhtLayer>,
    /// The hosted index's counters, when this process hosts it.
    pub index_metrics: Option<Arc<peernet_index::metrics::IndexMetrics>>,
    pub peer_metrics: Arc<PeerMetrics>,
}

impl Network {
    pub fn new(p: Parts) -> Self {
        Self {
            endpoint: p.endpoint,
            ticket: p.ticket,
            lan: p.lan,
            index: p.index,
            hosts_index: p.hosts_index,
            overlay: p.overlay,
            flood: p.flood,
            shares: p.shares,
            serving: p.serving,
            nickname: p.nickname,
            data_dir: p.data_dir,
            downloads: p.downloads,
            closed: p.closed,
            tasks: p.tasks,
            admission: p.admission,
            connections: p.connections,
            paths: p.paths,
            relay: p.relay,
            dht: p.dht,
            index_metrics: p.index_metrics,
            peer_metrics: p.peer_metrics,
        }
    }

    /// Whether the link to `peer` is direct or relayed now, and its RTT.
    pub fn path_to(&self, peer: &iroh::EndpointId) -> Option<PathInfo> {
        self.paths.of(peer, paths::OVERLAY)
    }

    fn relays(&self) -> Vec<RelayLink> {
        self.endpoint
            .home_relay_status()
            .get()
            .into_iter()
            .map(|r| RelayLink {
                url: r.url().to_string(),
                connected: r.is_connected(),
                error: r.auth_denied_reason().map(|why| format!("refused: {why}")).or_else(|| r.last_error().map(|e| e.to_string())),
            })
            .collect()
    }

    pub fn status(&self) -> Status {
        let (flood_handled, flood_duplicates) = self.flood.counters();
        let admission = self.admission.counters();
        let neighbours = self.overlay.neighbors();
        Status {
            id: self.endpoint.id().to_string(),
            nickname: self.nickname.borrow().clone(),
            ticket: self.ticket.as_ref().map(Ticket::to_string).unwrap_or_default(),
            lan: self.lan.clone(),
            warning: self.lan.as_ref().map(|name| lan_warning(name)),
            hosts_index: self.hosts_index,
            index: self.index.status(),
            addrs: endpoint::own_addr(&self.endpoint).ip.iter().map(|a| a.to_string()).collect(),
            shares: self.shares.list().len(),
            neighbors: neighbours.iter().map(|n| n.fmt_short().to_string()).collect(),
            links: neighbours
                .iter()
                .map(|n| LinkStatus { id: n.fmt_short().to_string(), path: self.paths.of(n, paths::OVERLAY) })
                .collect(),
            index_path: if self.hosts_index { None } else { self.paths.of(&self.index.index_id(), paths::INDEX) },
            relays: self.relays(),
            relay_server: self.relay.as_ref().map(|r| {
                let (admitted, refused) = r.counters();
                RelayServerStatus { url: r.info().url.clone(), quic_port: r.info().quic_port, admitted, refused }
            }),
            dropped_events: self.overlay.dropped(),
            flood_handled,
            flood_duplicates,
            flood_over_budget: self.flood.over_budget(),
            flood_oversized: self.flood.oversized(),
            blobs_refused: self.serving.refused(),
            flood_sends_dropped: self.flood.sends_dropped(),
            flood_queue_full: self.flood.queue_full(),
            index_bounds: self.index_metrics.as_ref().map(|m| index_bounds(m)).unwrap_or_default(),
            provider_faults: self.peer_metrics.provider_fault_counts(),
            connections_refused: self.connections.refused(),
            node_tasks: self.tasks.len(),
            runtime_tasks: tasks::runtime_alive_tasks(),
            connections: self.paths.live(),
            refused_outsiders: admission.refused_outsiders,
            refused_proofs: admission.refused_proofs,
            admissions: admission.admissions,
            admitted_keys: admission.admitted_keys,
            data_dir: self.data_dir.root().to_owned(),
            downloads: self.downloads.clone(),
            dht: self.dht.as_ref().map(DhtLayer::status),
        }
    }

    /// The peers online and their files, from the index, page by page.
    /// On a LAN network, the members the room sees online, without their
    /// files (search finds those).
    pub async fn online(&self) -> Result<Vec<OnlinePeer>, NetworkError> {
        if !self.index.exists() {
            let online = self.overlay.members().into_iter().filter(|m| m.online);
            return Ok(online
                .map(|m| OnlinePeer {
                    peer: PeerInfo { addr: PeerAddr { id: m.id, ip: Vec::new(), relay: None }, nickname: m.nickname },
                    files: Vec::new(),
                    lease_until: 0,
                })
                .collect());
        }
        let mut peers = Vec::new();
        let mut page = Some(0);
        while let Some(p) = page.filter(|p| *p < MAX_ONLINE_PAGES) {
            match self.index.request(Request::Online { page: p }).await? {
                Response::Online { peers: more, next_page } => {
                    peers.extend(more);
                    page = next_page;
                }
                _ => return Err(IndexError::Unexpected.into()),
            }
        }
        Ok(peers)
    }

    /// Where this peer stands with the index now.
    pub fn index_status(&self) -> IndexStatus {
        self.index.status()
    }

    /// The map of the network: from the index, or, on a LAN network, from
    /// the links members report in the room (ours we know first hand),
    /// showing only the peers reached over links both ends report.
    pub async fn topology(&self) -> Result<Graph, NetworkError> {
        if !self.index.exists() {
            let me = self.endpoint.id();
            let mut reports: Vec<Report> = self
                .overlay
                .members()
                .into_iter()
                .filter(|m| m.online && m.id != me)
                .map(|m| Report { id: m.id, nickname: m.nickname, links: m.links })
                .collect();
            // Ours first: the first report of a link with a path wins.
            reports.insert(0, Report { id: me, nickname: self.nickname.borrow().clone(), links: self.overlay.links() });
            return Ok(Graph::seen_from(me, &reports));
        }
        match self.index.request(Request::LinkMap).await? {
            Response::LinkMap(m) => Ok(Graph::from_link_map(&m)),
            _ => Err(IndexError::Unexpected.into()),
        }
    }

    /// Closes the whole network: only the root can. The close event is
    /// signed with the root's key; every peer verifies it and leaves.
    pub async fn stop(&self) -> Result<(), NetworkError> {
        if !self.hosts_index {
            return Err(NetworkError::NotRoot);
        }
        self.overlay.close_network().await?;
        let closed = self.closed.clone();
        self.tasks.spawn(async move {
            // Give the event time to spread before this peer goes away.
            tokio::time::sleep(CLOSE_GRACE).await;
            closed.cancel();
        });
        Ok(())
    }

    /// Resolves when the root has closed the network.
    /// Who is a member: the admitted keys and the refusal counters.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    pub async fn closed(&self) {
        self.closed.cancelled().await
    }
}

/// The hosted index's bounds that bit, by name, for `status`.
fn index_bounds(m: &peernet_index::metrics::IndexMetrics) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for reason in peernet_index::protocol::UNJOINED_CLOSE_REASONS {
        let n = m.unjoined_closed.get_or_create(&peernet_index::metrics::ReasonLabel { reason }).get();
        if n > 0 {
            out.insert(format!("closed_{reason}"), n);
        }
    }
    for (name, n) in [
        ("peers_forgotten", m.peers_forgotten.get()),
        ("answers_too_large", m.answers_too_large.get()),
        ("refused_rate", m.refused_rate.get()),
        ("refused_address", m.refused_address.get()),
    ] {
        if n > 0 {
            out.insert(name.to_string(), n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_warning_calls_out_short_names() {
        assert!(lan_name_is_short("ab") && lan_warning("ab").contains("a name of 2 characters"), "{}", lan_warning("ab"));
        assert!(lan_name_is_short("   ab        "), "blanks around the name do not count, as in its key");
        assert!(lan_warning("kitchen").contains("guessed"), "every LAN warning says a name can be guessed");
        let long = "heron over the weir";
        assert!(!lan_name_is_short(long));
        assert!(lan_warning(long).contains("guessed") && !lan_warning(long).contains("characters"), "{}", lan_warning(long));
    }
}
