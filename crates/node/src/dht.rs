//! The DHT layer (`--dht`): a mainline DHT node (n0-mainline, in server
//! mode) that the members of a network run together, as one more way to
//! find each other and files when the index is gone and the overlay has
//! no path.
//!
//! - [`DhtNode`]: the UDP node itself, bootstrapped from `--dht-bootstrap`,
//!   the nodes remembered from the last run, and members' hellos; a node
//!   that knows nobody starts alone, learning whoever contacts it, and is
//!   rebuilt on the same port once a member tells it where another node
//!   listens. [`HelloProtocol`] answers that question for other members
//!   (a QUIC protocol, so admission applies to it like to any other).
//! - [`DhtLayer`]: signed announces under keys derived from the network
//!   key ([`peernet_proto::dht`]) for the network and the newest shares,
//!   refreshed on a schedule; lookups of a file's providers and of the
//!   network's members; and iroh's own address records
//!   (`iroh-mainline-address-lookup`) published on the same DHT, so a
//!   member found by key can be dialed.
//!
//! The DHT only says whom to ask: every connection still proves
//! membership, and every file is still verified by its hash.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddrV4,
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use iroh::{
    address_lookup::AddrFilter,
    endpoint::Connection,
    protocol::{AcceptError, ProtocolHandler},
    Endpoint, EndpointId, SecretKey,
};
use iroh_blobs::Hash;
use iroh_mainline_address_lookup::DhtAddressLookup;
use n0_future::StreamExt;
use n0_mainline::{Dht, Id};
use peernet_proto::{
    dht::{self as pure, Announces, DhtKey, Hello},
    key::NetworkKey,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    data_dir::{DataDir, DhtMemory},
    endpoint,
    overlay::Overlay,
    shares::Shares,
};

/// How often the layer looks at its node, its announces and its neighbours.
const TICK: Duration = Duration::from_secs(2);
/// How long a member's hello may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A member asked for its DHT address is not asked again for this long.
const ASK_AGAIN: Duration = Duration::from_secs(30);
/// Members asked for their DHT address in one tick.
const ASKS_PER_TICK: usize = 4;
/// Longest a lookup (providers or members) may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer stays without overlay neighbours before it asks the DHT
/// for members (the index's referrals come first). `PEERNET_DHT_MEET_AFTER`
/// (seconds) changes it; it exists so tests can keep a peer alone.
const MEET_AFTER: Duration = Duration::from_secs(3);
/// Members found through the DHT that one meeting attaches to.
const MEET_FANOUT: usize = 8;
/// How many times a failed restart is retried on the same port before
/// the node moves to a new one.
const REBIND_TRIES: u32 = 3;
/// A peer alone asks the DHT for members at most this often.
const MEET_AGAIN: Duration = Duration::from_secs(10);
/// How often the nodes this node knows are written down for the next run.
const SAVE_EVERY: Duration = Duration::from_secs(60);
/// Most nodes remembered for the next run.
pub const MAX_REMEMBERED_NODES: usize = 64;
/// How long a rebuilt node waits for its old socket to be released: a
/// lookup under way holds the old node until it ends.
const REBIND_WAIT: Duration = Duration::from_secs(LOOKUP_TIMEOUT.as_secs() + 2);
/// Members whose hello (where their DHT node listens) is kept; the newest
/// hello of each replaces its last one.
const MAX_LEARNED: usize = 16;
/// Most providers of one file asked directly, and most members one
/// meeting attaches to, picked at random among those the DHT names: anyone
/// in the DHT can announce under a key it has seen, so neither the first
/// ids in order nor all of them are taken.
pub const MAX_PROVIDERS_ASKED: usize = 16;

/// What `--dht` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhtConfig {
    /// `HOST:PORT` of DHT nodes to start from (`--dht-bootstrap`).
    pub bootstrap: Vec<String>,
    /// UDP port of the DHT node; 0 reuses the last run's, or picks one.
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    #[error("cannot listen for the DHT on UDP port {port}: {why}; choose another with --dht-port")]
    Bind { port: u16, why: String },
    #[error("cannot listen for the DHT on any UDP port: {0}")]
    BindAny(String),
    #[error("cannot use DHT bootstrap node '{addr}': {why}; give it as HOST:PORT")]
    Bootstrap { addr: String, why: String },
}

/// What `status` says about the DHT.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DhtStatus {
    /// Where other members reach the node (UDP; it listens on every IPv4
    /// address of this host): what a newcomer gives as `--dht-bootstrap`.
    pub addr: Option<String>,
    /// DHT nodes in its routing table; 0 means it is alone so far.
    pub nodes: usize,
    /// Keys announced (the network, and files), refreshed on schedule.
    pub announced: usize,
    /// Bootstrap addresses known (given, remembered, learned from members).
    pub bootstrap: usize,
    /// Providers and members found through the DHT since start.
    pub found: u64,
    pub error: Option<String>,
}

#[derive(Debug)]
struct NodeState {
    dht: Option<Dht>,
    /// Bootstrap addresses given (`--dht-bootstrap`) and remembered.
    given: BTreeSet<SocketAddrV4>,
    /// The newest hello of up to [`MAX_LEARNED`] members.
    learned: BTreeMap<EndpointId, Vec<SocketAddrV4>>,
    /// What the node was built with.
    used: BTreeSet<SocketAddrV4>,
    /// Failed restarts since the last good one.
    failed_rebinds: u32,
    error: Option<String>,
}

/// The UDP DHT node; cheap to clone.
#[derive(Debug, Clone)]
pub struct DhtNode {
    state: Arc<Mutex<NodeState>>,
    port: Arc<AtomicU16>,
    data_dir: DataDir,
}

fn build(port: u16, bootstrap: &BTreeSet<SocketAddrV4>) -> std::io::Result<Dht> {
    let mut builder = Dht::builder();
    builder.server_mode().port(port);
    // Without either, the builder would use the public DHT's routers.
    if bootstrap.is_empty() {
        builder.no_bootstrap();
    } else {
        builder.bootstrap(&bootstrap.iter().collect::<Vec<_>>());
    }
    builder.build()
}

/// Resolves `HOST:PORT` to the IPv4 addresses the mainline DHT can use.
async fn resolve(addr: &str) -> Result<Vec<SocketAddrV4>, DhtError> {
    let err = |why: String| DhtError::Bootstrap { addr: addr.to_string(), why };
    let found = tokio::net::lookup_host(addr).await.map_err(|e| err(e.to_string()))?;
    let v4: Vec<SocketAddrV4> = found
        .filter_map(|a| match a {
            std::net::SocketAddr::V4(v4) => Some(v4),
            std::net::SocketAddr::V6(_) => None,
        })
        .collect();
    if v4.is_empty() {
        return Err(err("it has no IPv4 address, and the DHT is IPv4 only".into()));
    }
    Ok(v4)
}

impl DhtNode {
    /// Binds the node: on `config.port`, else the last run's port (or any
    /// port if that one is taken), bootstrapped from the given and the
    /// remembered nodes.
    pub async fn bind(config: &DhtConfig, data_dir: &DataDir) -> Result<Self, DhtError> {
        let memory = data_dir.load_dht().unwrap_or_else(|e| {
            warn!("the remembered DHT nodes are unreadable ({e}); starting without them");
            DhtMemory::default()
        });
        let mut bootstrap = BTreeSet::new();
        for addr in &config.bootstrap {
            bootstrap.extend(resolve(addr).await?);
        }
        bootstrap.extend(memory.nodes.iter().filter_map(|n| n.parse::<SocketAddrV4>().ok()));
        let remembered = config.port == 0 && memory.port.is_some();
        let port = if remembered { memory.port.unwrap_or(0) } else { config.port };
        let dht = match build(port, &bootstrap) {
            Ok(dht) => dht,
            Err(e) if remembered => {
                warn!("cannot reuse DHT port {port} ({e}); using a new one");
                build(0, &bootstrap).map_err(|e| DhtError::BindAny(e.to_string()))?
            }
            Err(e) => return Err(DhtError::Bind { port, why: e.to_string() }),
        };
        let bound = dht.info().await.map(|i| i.local_addr().port()).unwrap_or(port);
        let node = Self {
            state: Arc::new(Mutex::new(NodeState {
                dht: Some(dht),
                used: bootstrap.clone(),
                given: bootstrap,
                learned: BTreeMap::new(),
                failed_rebinds: 0,
                error: None,
            })),
            port: Arc::new(AtomicU16::new(bound)),
            data_dir: data_dir.clone(),
        };
        info!("DHT node on udp port {bound}");
        Ok(node)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NodeState> {
        self.state.lock().expect("dht lock")
    }

    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    /// The node, while it runs.
    pub fn dht(&self) -> Option<Dht> {
        self.lock().dht.clone()
    }

    /// Where member `from` says its node listens (its newest hello
    /// replaces its last; at most [`MAX_LEARNED`] members are kept).
    fn learn(&self, from: EndpointId, addrs: &[SocketAddrV4], own: &[SocketAddrV4]) {
        let mut s = self.lock();
        let addrs: Vec<SocketAddrV4> = addrs.iter().filter(|a| !own.contains(a)).copied().collect();
        if s.learned.len() >= MAX_LEARNED && !s.learned.contains_key(&from) {
            return;
        }
        s.learned.insert(from, addrs);
    }

    fn bootstrap(s: &NodeState) -> BTreeSet<SocketAddrV4> {
        s.given.iter().chain(s.learned.values().flatten()).copied().collect()
    }

    /// A node alone is rebuilt when addresses it was not built with are
    /// known (the mainline DHT takes its bootstrap nodes only when it
    /// starts): on the same port, so what other members remember stays
    /// right, or on a new one after [`REBIND_TRIES`] failures.
    async fn rebuild_if_new(&self) {
        let (bootstrap, previous, tries) = {
            let mut s = self.lock();
            let bootstrap = Self::bootstrap(&s);
            if bootstrap.is_subset(&s.used) && s.dht.is_some() {
                return;
            }
            // Dropping our handle stops the old node, and frees its port
            // once any lookup under way has ended too.
            s.dht = None;
            let previous = std::mem::replace(&mut s.used, bootstrap.clone());
            (bootstrap, previous, s.failed_rebinds)
        };
        let port = if tries >= REBIND_TRIES { 0 } else { self.port() };
        let deadline = Instant::now() + REBIND_WAIT;
        let rebuilt = loop {
            match build(port, &bootstrap) {
                Ok(dht) => break Ok(dht),
                Err(e) if Instant::now() >= deadline => break Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let bound = match &rebuilt {
            Ok(dht) => dht.info().await.map(|i| i.local_addr().port()).ok(),
            Err(_) => None,
        };
        let mut s = self.lock();
        match rebuilt {
            Ok(dht) => {
                info!("DHT node restarted from {} bootstrap nodes", bootstrap.len());
                if let Some(bound) = bound {
                    self.port.store(bound, Ordering::Relaxed);
                }
                s.dht = Some(dht);
                s.failed_rebinds = 0;
                s.error = None;
            }
            Err(e) => {
                warn!("cannot restart the DHT node on udp port {port}: {e}");
                // Tried again at the next tick.
                s.used = previous;
                s.failed_rebinds += 1;
                s.error = Some(format!("cannot restart on udp port {port}: {e}"));
            }
        }
    }

    /// Writes down where this node listens and whom it knows, for the next run.
    async fn save(&self) {
        let Some(dht) = self.dht() else { return };
        let mut nodes = dht.to_bootstrap().await.unwrap_or_default();
        nodes.truncate(MAX_REMEMBERED_NODES);
        if let Err(e) = self.data_dir.save_dht(&DhtMemory { port: Some(self.port()), nodes }) {
            debug!("cannot remember the DHT nodes: {e}");
        }
    }

    /// The IPv4 addresses of this host that the node answers on.
    fn own_addrs(&self, endpoint: &Endpoint) -> Vec<SocketAddrV4> {
        let port = self.port();
        endpoint::own_addr(endpoint)
            .ip
            .iter()
            .filter_map(|a| match a {
                std::net::SocketAddr::V4(v4) => Some(SocketAddrV4::new(*v4.ip(), port)),
                std::net::SocketAddr::V6(_) => None,
            })
            .collect()
    }
}

/// Serves `peernet/dht/1`: tells a member where this peer's DHT node
/// listens, so it can bootstrap from it.
#[derive(Debug, Clone)]
pub struct HelloProtocol {
    pub node: DhtNode,
    pub endpoint: Endpoint,
}

impl ProtocolHandler for HelloProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let hello = Hello { addrs: self.node.own_addrs(&self.endpoint) };
        if let Ok(mut send) = conn.open_uni().await {
            if send.write_all(&hello.encode()).await.is_ok() && send.finish().is_ok() {
                tokio::time::timeout(HELLO_TIMEOUT, send.stopped()).await.ok();
            }
        }
        conn.close(0u32.into(), b"done");
        Ok(())
    }
}

/// Asks member `id` where its DHT node listens.
async fn ask_hello(endpoint: &Endpoint, id: EndpointId) -> Result<Hello, String> {
    let conn = endpoint.connect(id, peernet_proto::dht::HELLO_ALPN).await.map_err(|e| e.to_string())?;
    let mut recv = conn.accept_uni().await.map_err(|e| e.to_string())?;
    let bytes = recv.read_to_end(pure::MAX_HELLO_BYTES).await.map_err(|e| e.to_string())?;
    conn.close(0u32.into(), b"thanks");
    Hello::decode(&bytes).map_err(|e| e.to_string())
}

/// At most `n` of `ids`, picked at random.
fn pick(mut ids: Vec<EndpointId>, n: usize) -> Vec<EndpointId> {
    use rand::seq::SliceRandom;
    ids.shuffle(&mut rand::rng());
    ids.truncate(n);
    ids
}

/// What the layer keeps between ticks.
#[derive(Debug, Default)]
struct LayerState {
    announces: Announces,
    asked: HashMap<EndpointId, Instant>,
    alone_since: Option<Instant>,
    met_at: Option<Instant>,
    /// Whether iroh's address records are set up.
    published: bool,
    nodes: usize,
    found: u64,
}

/// The DHT as a layer of the peer; cheap to clone.
#[derive(Debug, Clone)]
pub struct DhtLayer {
    node: DhtNode,
    key: NetworkKey,
    secret: SecretKey,
    endpoint: Endpoint,
    overlay: Overlay,
    shares: Arc<Shares>,
    /// The index's id, the first member asked for a DHT address.
    index: Option<EndpointId>,
    /// Whether this peer shares files (a standalone index does not).
    announces_files: bool,
    meet_after: Duration,
    state: Arc<Mutex<LayerState>>,
}

/// What the layer is built from.
pub struct Parts {
    pub node: DhtNode,
    pub key: NetworkKey,
    pub secret: SecretKey,
    pub endpoint: Endpoint,
    pub overlay: Overlay,
    pub shares: Arc<Shares>,
    pub index: Option<EndpointId>,
    pub announces_files: bool,
}

impl DhtLayer {
    /// Starts the layer: the task that keeps the node, the announces, the
    /// address records and the overlay going until `cancel`.
    pub fn start(parts: Parts, cancel: CancellationToken) -> (Self, impl std::future::Future<Output = ()>) {
        let Parts { node, key, secret, endpoint, overlay, shares, index, announces_files } = parts;
        let meet_after =
            std::env::var("PEERNET_DHT_MEET_AFTER").ok().and_then(|s| s.parse::<u64>().ok()).map(Duration::from_secs).unwrap_or(MEET_AFTER);
        let layer = Self { node, key, secret, endpoint, overlay, shares, index, announces_files, meet_after, state: Default::default() };
        let run = layer.clone().run(cancel);
        (layer, run)
    }

    /// Publishes iroh's address record for this endpoint on the DHT, and
    /// finds other members' records there, through a small client node of
    /// its own that reaches the DHT through ours (on loopback, so it keeps
    /// working when ours restarts on the same port). Set up once, when our
    /// node first knows others: set up earlier, the record would be stored
    /// on our own node alone.
    fn publish_addresses(&self) {
        if self.lock().published {
            return;
        }
        let mut client = Dht::builder();
        client.port(0).bootstrap(&[SocketAddrV4::new([127, 0, 0, 1].into(), self.node.port())]);
        let lookup = DhtAddressLookup::builder()
            .dht_builder(client)
            .secret_key(self.secret.clone())
            // Direct addresses too: members on one LAN, or without a relay.
            .addr_filter(AddrFilter::unfiltered())
            .republish_delay(Duration::from_millis(pure::ANNOUNCE_REFRESH_MS))
            .build();
        match (lookup, self.endpoint.address_lookup()) {
            (Ok(lookup), Ok(lookups)) => {
                // Adding it publishes our current addresses at once.
                lookups.add(lookup);
                self.lock().published = true;
            }
            (Err(e), _) => warn!("cannot publish addresses on the DHT: {e}"),
            (_, Err(e)) => warn!("cannot publish addresses on the DHT: {e}"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LayerState> {
        self.state.lock().expect("dht layer lock")
    }

    /// The layer's loop. It is cancelled as a whole when the node stops,
    /// so what must outlive a short run (the port, the nodes known) is
    /// written as soon as the node knows others, then every minute.
    async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        // The first tick would come at once, before the node has had time
        // to meet its bootstrap nodes.
        tick.reset();
        let mut saved: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.refresh().await;
            let nodes = self.lock().nodes;
            if nodes == 0 {
                self.ask_members().await;
                self.node.rebuild_if_new().await;
            } else {
                self.publish_addresses();
                self.lock().announces.nodes_known(nodes, peernet_index::now_ms());
                self.announce().await;
                if saved.is_none_or(|at| at.elapsed() >= SAVE_EVERY) {
                    self.node.save().await;
                    saved = Some(Instant::now());
                }
            }
            self.meet().await;
        }
    }

    /// Reads the node's size for `status` and the schedule.
    async fn refresh(&self) {
        let info = match self.node.dht() {
            Some(dht) => dht.info().await.ok(),
            None => None,
        };
        self.lock().nodes = info.map(|i| i.routing_table_size().max(i.singing_peers_routing_table_size())).unwrap_or(0);
    }

    /// Asks the members this peer knows (the index, then overlay
    /// neighbours) where their DHT nodes listen.
    async fn ask_members(&self) {
        let now = Instant::now();
        let candidates: Vec<EndpointId> = {
            let mut s = self.lock();
            s.asked.retain(|_, at| now.duration_since(*at) < ASK_AGAIN);
            let me = self.endpoint.id();
            let fresh: Vec<EndpointId> = self
                .index
                .into_iter()
                .chain(self.overlay.neighbors())
                .filter(|id| *id != me && !s.asked.contains_key(id))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .take(ASKS_PER_TICK)
                .collect();
            for id in &fresh {
                s.asked.insert(*id, now);
            }
            fresh
        };
        let own = self.node.own_addrs(&self.endpoint);
        for id in candidates {
            match tokio::time::timeout(HELLO_TIMEOUT, ask_hello(&self.endpoint, id)).await {
                Ok(Ok(hello)) => {
                    debug!("{} runs a DHT node at {:?}", id.fmt_short(), hello.addrs);
                    self.node.learn(id, &hello.addrs, &own);
                }
                Ok(Err(e)) => debug!("{} did not say where its DHT node is: {e}", id.fmt_short()),
                Err(_) => debug!("{} did not say where its DHT node is in time", id.fmt_short()),
            }
        }
    }

    /// Makes the announces that are due: the network, then the newest shares.
    async fn announce(&self) {
        let Some(dht) = self.node.dht() else { return };
        let shares: Vec<Hash> =
            if self.announces_files { self.shares.entries().iter().rev().map(|e| e.hash).collect() } else { Vec::new() };
        let due = self.lock().announces.due(&self.key, &shares, peernet_index::now_ms());
        let signer = self.secret.as_signing_key();
        for item in due {
            match dht.announce_signed_peer(Id::from(item.key()), signer).await {
                Ok(_) => self.lock().announces.made(item.key(), peernet_index::now_ms()),
                Err(e) => {
                    debug!("a DHT announce failed: {e}");
                    self.lock().announces.failed(peernet_index::now_ms());
                    break;
                }
            }
        }
    }

    /// A peer without overlay neighbours for a while attaches to members
    /// the DHT knows.
    async fn meet(&self) {
        let now = Instant::now();
        let due = {
            let mut s = self.lock();
            if !self.overlay.neighbors().is_empty() || s.nodes == 0 {
                s.alone_since = None;
                false
            } else {
                let since = *s.alone_since.get_or_insert(now);
                let due = now.duration_since(since) >= self.meet_after && s.met_at.is_none_or(|t| now.duration_since(t) >= MEET_AGAIN);
                if due {
                    s.met_at = Some(now);
                }
                due
            }
        };
        if due {
            let members = pick(self.members().await, MEET_FANOUT);
            if !members.is_empty() {
                info!("attaching to {} members found through the DHT", members.len());
                self.overlay.join(members).await;
            }
        }
    }

    /// Members that announced the network on the DHT.
    pub async fn members(&self) -> Vec<EndpointId> {
        self.lookup(pure::network_key(&self.key)).await
    }

    /// Peers that announced `hash` on the DHT, at most
    /// [`MAX_PROVIDERS_ASKED`] picked at random: whom to ask for it.
    pub async fn providers(&self, hash: &Hash) -> Vec<EndpointId> {
        pick(self.lookup(pure::file_key(&self.key, hash)).await, MAX_PROVIDERS_ASKED)
    }

    async fn lookup(&self, key: DhtKey) -> Vec<EndpointId> {
        let Some(dht) = self.node.dht() else { return Vec::new() };
        let Ok(mut stream) = dht.get_signed_peers(Id::from(key)).await else { return Vec::new() };
        let me = self.endpoint.id();
        let now = peernet_index::now_ms();
        let deadline = tokio::time::Instant::now() + LOOKUP_TIMEOUT;
        let mut found = BTreeSet::new();
        while let Ok(Some(batch)) = tokio::time::timeout_at(deadline, stream.next()).await {
            for announce in batch {
                if !pure::fresh(announce.timestamp(), now) {
                    continue;
                }
                if let Ok(id) = EndpointId::from_bytes(announce.key()) {
                    if id != me {
                        found.insert(id);
                    }
                }
            }
        }
        self.lock().found += found.len() as u64;
        found.into_iter().collect()
    }

    pub fn status(&self) -> DhtStatus {
        let s = self.lock();
        let node = self.node.lock();
        let reach = self.node.own_addrs(&self.endpoint).first().copied();
        let addr = reach.unwrap_or_else(|| SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, self.node.port()));
        DhtStatus {
            addr: Some(addr.to_string()),
            nodes: s.nodes,
            announced: s.announces.count(),
            bootstrap: DhtNode::bootstrap(&node).len(),
            found: s.found,
            error: node.error.clone(),
        }
    }
}
