//! Starting a peer: the data directory and which network it belongs to,
//! the endpoint, the blob store, the router with every protocol, the hosted
//! index, the session with the index, the overlay, and the sub-APIs. A
//! start that fails stops everything it had started, so the same data
//! directory can be started again at once.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use iroh::{
    address_lookup::memory::MemoryLookup,
    endpoint::{Incoming, IncomingAddr},
    protocol::{IncomingFilter, IncomingFilterOutcome, Router},
    Endpoint, RelayUrl,
};
use iroh_blobs::{store::fs::FsStore, BlobsProtocol};
use iroh_gossip::net::Gossip;
use peernet_index::budget::{Budget, Rate};
use peernet_proto::{index::FileEntry, key::NetworkKey, ticket::Ticket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    admission::Admission,
    board::Board,
    chat::Chat,
    data_dir::{ControlInfo, DataDir, DataDirError, Membership, State},
    dht::{self, DhtConfig, DhtError, DhtLayer, DhtNode, HelloProtocol},
    endpoint::{self, EndpointConfig},
    files::Files,
    flood::{FloodProtocol, FloodSearch, Pending},
    gossip,
    index_client::{IndexClient, IndexError},
    metrics::{Metrics, PeerMetrics},
    network::{self, Network},
    node::{Inner, Node},
    overlay::{Hooks, Overlay, OverlayError},
    paths::Paths,
    relay::{self, RootRelay},
    search::Search,
    serving::Serving,
    shares::{ShareError, Shares},
    tasks::Tasks,
    transfers::{self, BoxFuture, Publisher, Transfers},
};

/// How long `up` waits for the first join before carrying on in the background.
const FIRST_JOIN_WAIT: Duration = Duration::from_secs(10);
/// How long a connection to a provider may take to come up, membership
/// proof included. The blob downloader's pool gives up after 1 s by
/// default, shorter than a relayed connect to a distant peer (several
/// round trips through the relay) or a connect while iroh still holds a
/// direct path that just died and has yet to fall back to the relay.
const PROVIDER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failed start waits for what it started to stop.
const ABORT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub join: Option<Ticket>,
    pub nickname: Option<String>,
    pub share: Vec<PathBuf>,
    pub downloads: Option<PathBuf>,
    /// Address to bind; port 0 reuses the port of the last run (or picks one).
    pub bind: SocketAddr,
    /// A relay the user named (`--relay URL`), used beside the network's own.
    pub relay: Option<RelayUrl>,
    /// Run the network's relay beside its index (the root only).
    pub relay_server: Option<relay::ServeConfig>,
    /// Be a peer of the LAN network of this name: no index, no ticket;
    /// peers find each other with mDNS.
    pub lan: Option<String>,
    /// Announce this peer and find others on the LAN with mDNS (in a ticket
    /// network, to learn members' current addresses).
    pub mdns: bool,
    /// QUIC's congestion controller.
    pub congestion: endpoint::Congestion,
    /// Lease timing, used when this peer hosts the index.
    pub index: peernet_index::Config,
    /// Most bytes per second served to other peers, all together.
    pub upload_limit: Option<u64>,
    /// Run only the index (the root), without sharing or registering as a peer.
    pub index_only: bool,
    /// What one author or neighbour may send this peer.
    pub budgets: Budgets,
    /// Where the control API and web interface listen (default: 127.0.0.1
    /// with a random port).
    pub ui: Option<SocketAddr>,
    /// Where Prometheus metrics are served, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Run a DHT node with the other members (`--dht`).
    pub dht: Option<DhtConfig>,
}

/// What one chat author, or one overlay neighbour, may send this peer;
/// beyond it, events are dropped and counted in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Signed chat events (messages, presence, renames) per author.
    pub chat: Rate,
    /// Flood queries per neighbour.
    pub flood_queries: Rate,
    /// New connections per source IP address, refused before any handshake.
    pub connections: Rate,
}

/// New connections one IP address may open: generous for a household of
/// peers behind one router, far below a connection flood.
pub const DEFAULT_CONNECTION_RATE: Rate = Rate::new(20, 100);

impl Default for Budgets {
    fn default() -> Self {
        Self {
            chat: crate::overlay::DEFAULT_CHAT_RATE,
            flood_queries: crate::flood::DEFAULT_QUERY_RATE,
            connections: DEFAULT_CONNECTION_RATE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Endpoint(#[from] endpoint::EndpointError),
    #[error("cannot open the blob store: {0}")]
    Store(String),
    #[error("cannot open the index database: {0}")]
    IndexDb(String),
    #[error("this data directory hosts its own network; to join another one, use a different --data-dir")]
    HostsNetwork,
    #[error("this data directory belongs to a peer that joined another network; run the index with its own --data-dir")]
    MemberDataDir,
    #[error("the stored ticket is unreadable ({0}); join again with --join TICKET")]
    StoredTicket(String),
    #[error("{0}")]
    Index(#[from] IndexError),
    #[error("{0}")]
    Share(#[from] ShareError),
    #[error("{0}")]
    Overlay(#[from] OverlayError),
    #[error("cannot start the control API: {0}")]
    Control(String),
    #[error("{0}")]
    Relay(#[from] relay::RelayError),
    #[error("only the root runs the network's relay: drop --relay-server, or start the root with it")]
    RelayNotRoot,
    #[error("this data directory belongs to a network with an index; a LAN network needs its own --data-dir")]
    NotLanDataDir,
    #[error("this data directory belongs to the LAN network '{0}'; use another --data-dir for another network, or start it with --lan --network {0}")]
    LanDataDir(String),
    #[error("a LAN network has no index, so it cannot run one or a relay; drop --lan, or the index options")]
    LanWithoutIndex,
    #[error("a LAN network's name must be 1 to 64 characters")]
    LanName,
    #[error(transparent)]
    LanKey(#[from] peernet_proto::key::LanKeyError),
    #[error("cannot start LAN discovery (mDNS): {0}")]
    Mdns(String),
    #[error("{0}")]
    Dht(#[from] DhtError),
    #[error("a peernet daemon already runs on this data directory (pid {0}); stop it with `peernet down`, or start this one with another --data-dir")]
    AlreadyRunning(u32),
}

impl Publisher for IndexClient {
    fn publish<'a>(&'a self, files: Vec<FileEntry>) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            match IndexClient::publish(self, &files).await {
                // Without an index, sharing is answering flood searches.
                Ok(()) | Err(IndexError::NoIndex) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// What a start has brought up so far, to be stopped if a later step fails.
#[derive(Default)]
struct Started {
    endpoint: Option<Endpoint>,
    store: Option<FsStore>,
    gossip: Option<Gossip>,
    router: Option<Router>,
    tasks: Option<Tasks>,
    admission: Option<Admission>,
    relay: Option<Arc<RootRelay>>,
}

impl Started {
    async fn stop(self) {
        if let Some(tasks) = &self.tasks {
            if !tasks.stop(ABORT_WAIT).await {
                warn!("some tasks did not stop after a failed start");
            }
        }
        match (&self.router, &self.endpoint) {
            // The router shuts its protocols (gossip among them) down and
            // closes the endpoint.
            (Some(router), _) => {
                router.shutdown().await.ok();
            }
            (None, Some(endpoint)) => {
                if let Some(gossip) = &self.gossip {
                    gossip.shutdown().await.ok();
                }
                endpoint.close().await
            }
            (None, None) => {}
        }
        if let Some(store) = &self.store {
            store.shutdown().await.ok();
        }
        self.admission.iter().for_each(Admission::detach);
        if let Some(relay) = &self.relay {
            relay.shutdown().await;
        }
    }
}

/// Starts a peer: hosts a new network, rejoins the one this data directory
/// belongs to, or joins `config.join`.
pub async fn spawn(config: Config) -> Result<Node, StartError> {
    let mut started = Started::default();
    match build(config, &mut started).await {
        Ok(node) => Ok(node),
        Err(e) => {
            started.stop().await;
            Err(e)
        }
    }
}

/// Which network this start belongs to: the one asked for, checked against
/// the one the data directory remembers.
fn membership(config: &Config, stored: Option<&Membership>) -> Result<Membership, StartError> {
    if let Some(name) = &config.lan {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(StartError::LanName);
        }
        return match stored {
            None => Ok(Membership::Lan { name: name.to_string() }),
            Some(Membership::Lan { name: kept }) if kept == name => Ok(Membership::Lan { name: name.to_string() }),
            Some(Membership::Lan { name: kept }) => Err(StartError::LanDataDir(kept.clone())),
            Some(_) => Err(StartError::NotLanDataDir),
        };
    }
    match (&config.join, stored) {
        (Some(_), Some(Membership::Host { .. })) => Err(StartError::HostsNetwork),
        (Some(_), Some(Membership::Lan { name })) => Err(StartError::LanDataDir(name.clone())),
        (Some(ticket), _) => Ok(Membership::Member { ticket: ticket.to_string() }),
        (None, Some(kept)) => Ok(kept.clone()),
        (None, None) => Ok(Membership::Host { network_key: NetworkKey::generate() }),
    }
}

async fn build(config: Config, started: &mut Started) -> Result<Node, StartError> {
    let data_dir = DataDir::open(&config.data_dir)?;
    if let Some(pid) = data_dir.running_daemon() {
        return Err(StartError::AlreadyRunning(pid));
    }
    let secret_key = data_dir.secret_key()?;
    let mut state = data_dir.load_state()?;
    let membership = membership(&config, state.membership.as_ref())?;
    let hosting = matches!(membership, Membership::Host { .. });
    let lan = match &membership {
        Membership::Lan { name } => Some(name.clone()),
        _ => None,
    };
    if config.index_only && !hosting {
        return Err(if lan.is_some() { StartError::LanWithoutIndex } else { StartError::MemberDataDir });
    }
    if config.relay_server.is_some() && !hosting {
        return Err(if lan.is_some() { StartError::LanWithoutIndex } else { StartError::RelayNotRoot });
    }

    // A member's ticket, and the key either way.
    let (member_ticket, network_key) = match &membership {
        Membership::Member { ticket } => {
            let ticket: Ticket = ticket.parse().map_err(|e: peernet_proto::ticket::TicketError| StartError::StoredTicket(e.to_string()))?;
            let key = ticket.network_key;
            (Some(ticket), key)
        }
        Membership::Host { network_key } => (None, *network_key),
        Membership::Lan { name } => {
            // Slow on purpose (Argon2id, a fraction of a second): off the
            // async workers.
            let name = name.clone();
            match tokio::task::spawn_blocking(move || NetworkKey::from_lan_name(&name)).await {
                Ok(key) => (None, key?),
                // Only a panic ends a blocking task early here (the runtime
                // is still running us): pass it on as it was.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    };
    // Before binding: the endpoint admits members only from its first packet.
    let admission = Admission::new(network_key, secret_key.public());
    started.admission = Some(admission.clone());

    // The network's relay, which the endpoint needs before it binds: the
    // root starts it, a member learns it from the ticket.
    let index_id = member_ticket.as_ref().map(|t| t.index.id).unwrap_or_else(|| secret_key.public());
    let root_relay = match &config.relay_server {
        Some(serve) => {
            let relay = Arc::new(RootRelay::spawn(serve, data_dir.root(), network_key, index_id).await?);
            started.relay = Some(relay.clone());
            Some(relay)
        }
        None => None,
    };
    let network_relay = root_relay.as_ref().map(|r| r.info().clone()).or_else(|| member_ticket.as_ref().and_then(|t| t.relay.clone()));
    let relays = relay::client_setup(network_relay.as_ref(), config.relay.as_ref(), &network_key, &secret_key.public(), &index_id)?;
    let paths = Paths::new();

    let mut alpns = vec![iroh_blobs::ALPN.to_vec(), iroh_gossip::ALPN.to_vec(), peernet_proto::flood::ALPN.to_vec()];
    if hosting {
        alpns.push(peernet_proto::index::ALPN_V2.to_vec());
        alpns.push(peernet_proto::index::ALPN.to_vec());
    }
    // A node that fails to start stops when this is dropped.
    let dht_node = match &config.dht {
        Some(dht) => Some(DhtNode::bind(dht, &data_dir).await?),
        None => None,
    };
    if dht_node.is_some() {
        alpns.push(peernet_proto::dht::HELLO_ALPN.to_vec());
    }
    let binding = Binding { bind: config.bind, relay: relays, congestion: config.congestion, hosting };
    let (endpoint, lookup) = bind_endpoint(binding, &state, secret_key.clone(), alpns, &admission, &paths).await?;
    started.endpoint = Some(endpoint.clone());
    let mdns = match (config.mdns, &lan) {
        (true, Some(_)) => Some(crate::lan::announce(&endpoint, &network_key).map_err(StartError::Mdns)?),
        // A ticket network only learns addresses from mDNS: it goes on without.
        (true, None) => crate::lan::announce(&endpoint, &network_key)
            .inspect_err(|e| warn!("LAN discovery (mDNS) is off: {e}; members are found through the index and the overlay"))
            .ok(),
        (false, Some(_)) => return Err(StartError::Mdns("a LAN network finds its peers with mDNS; drop --no-mdns".into())),
        (false, None) => None,
    };
    let mut me = endpoint::own_addr(&endpoint);
    // The home relay may not be chosen yet; peers behind NAT reach us only
    // through it, so advertise the network's relay from the start.
    if me.relay.is_none() {
        me.relay = network_relay.as_ref().map(|r| r.url.clone());
    }
    let cancel = CancellationToken::new();
    let tasks = Tasks::new(cancel.clone());
    started.tasks = Some(tasks.clone());

    let store = FsStore::load(data_dir.blobs()).await.map_err(|e| StartError::Store(e.to_string()))?;
    started.store = Some(store.clone());
    let peer_metrics = Arc::new(PeerMetrics::default());
    let shares = Arc::new(Shares::load(data_dir.shares_file())?);
    let serving = Serving::new(shares.clone(), (*store).clone());
    let provider_events = crate::throttle::provider_events(config.upload_limit, serving.clone(), peer_metrics.clone(), &tasks);
    let blobs = BlobsProtocol::new(&store, Some(provider_events));
    let gossip = gossip::builder().spawn(endpoint.clone());
    started.gossip = Some(gossip.clone());
    let pending = Pending::default();
    let (flood_frames, flood_rx) = mpsc::channel(crate::flood::FRAME_BUFFER);
    let flood_queue_full = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let connections = Arc::new(Budget::new(config.budgets.connections));
    let mut router = Router::builder(endpoint.clone())
        .incoming_filter(connection_filter(connections.clone()))
        .accept(peernet_proto::admission::ALPN, admission.protocol())
        .accept(iroh_blobs::ALPN, blobs)
        .accept(iroh_gossip::ALPN, gossip.clone())
        .accept(peernet_proto::flood::ALPN, FloodProtocol { frames: flood_frames, queue_full: flood_queue_full.clone() });
    if let Some(node) = &dht_node {
        router = router.accept(peernet_proto::dht::HELLO_ALPN, HelloProtocol { node: node.clone(), endpoint: endpoint.clone() });
    }

    let (ticket, hosted, index) = match (&lan, member_ticket) {
        (Some(_), _) => (None, None, IndexClient::none(me.clone(), network_key)),
        (None, None) => {
            let protocol = peernet_index::open(&data_dir.index_db(), network_key, endpoint.id(), config.index.clone())
                .map_err(|e| StartError::IndexDb(e.to_string()))?;
            // Both versions: old peers still join and heartbeat.
            router = router.accept(peernet_proto::index::ALPN_V2, protocol.clone()).accept(peernet_proto::index::ALPN, protocol.clone());
            let client = IndexClient::local(protocol.service().clone(), me.clone(), network_key);
            (Some(Ticket { index: me.clone(), network_key, relay: network_relay.clone() }), Some(protocol), client)
        }
        (None, Some(ticket)) => {
            endpoint::remember(&lookup, &ticket.index);
            let client = IndexClient::remote(endpoint.clone(), me.clone(), ticket.index.clone(), ticket.network_key);
            (Some(ticket), None, client)
        }
    };
    let router = router.spawn();
    started.router = Some(router.clone());

    let nickname = config.nickname.clone().or_else(|| state.nickname.clone()).unwrap_or_else(|| {
        if config.index_only {
            "index".to_string()
        } else {
            format!("peer-{}", endpoint.id().fmt_short())
        }
    });
    for path in &config.share {
        Files::add(&store, &shares, path).await?;
    }

    state.membership = Some(membership);
    state.nickname = Some(nickname.clone());
    state.port = endpoint.bound_sockets().first().map(|s| s.port());
    data_dir.save_state(&state)?;

    let downloads = config.downloads.clone().or_else(dirs_download).unwrap_or_else(|| data_dir.root().join("downloads"));
    let nickname = watch::channel(nickname).0;
    let closed = CancellationToken::new();
    // Stops the index session (heartbeats, re-joins) alone, so that nothing
    // renews our lease after we leave.
    let session = cancel.child_token();
    let overlay_slot: Arc<OnceLock<Overlay>> = Arc::new(OnceLock::new());

    if !config.index_only && index.exists() {
        let first = start_session(&index, &shares, &nickname, &overlay_slot, &tasks, session.clone());
        match tokio::time::timeout(FIRST_JOIN_WAIT, first).await {
            Ok(Ok(Ok(()))) => info!("joined the network"),
            Ok(Ok(Err(e @ IndexError::Refused { .. }))) => return Err(e.into()),
            Ok(Ok(Err(e))) => warn!("{e}"),
            Ok(Err(_)) | Err(_) => warn!("the index has not answered yet; retrying in the background"),
        }
    }

    let hooks = Hooks {
        nickname: nickname.subscribe(),
        closed: closed.clone(),
        timing: Box::new(lease_timing(index.clone())),
        chat_rate: config.budgets.chat,
        report_links: lan.is_some(),
        paths: paths.clone(),
    };
    let (overlay, overlay_task) = Overlay::start(
        &gossip,
        network_key,
        secret_key,
        ticket.as_ref().map(|t| t.index.id),
        index.clone(),
        lookup.clone(),
        !config.index_only,
        hooks,
        cancel.child_token(),
    )
    .await?;
    overlay_slot.set(overlay.clone()).ok();
    tasks.spawn(overlay_task);
    if let (Some(mdns), true) = (&mdns, lan.is_some()) {
        // No index refers anyone: the LAN is how peers meet.
        tasks.spawn(crate::lan::meet(mdns.clone(), overlay.clone(), cancel.child_token()));
    }

    let flood = FloodSearch::new(
        endpoint.clone(),
        lookup.clone(),
        overlay.clone(),
        pending,
        shares.clone(),
        nickname.subscribe(),
        !config.index_only,
        config.budgets.flood_queries,
        flood_queue_full,
        tasks.clone(),
    );
    flood.start(flood_rx);
    let dht = match dht_node {
        Some(node) => {
            let parts = dht::Parts {
                node,
                key: network_key,
                secret: endpoint.secret_key().clone(),
                endpoint: endpoint.clone(),
                overlay: overlay.clone(),
                shares: shares.clone(),
                index: ticket.as_ref().map(|t| t.index.id).filter(|id| *id != endpoint.id()),
                announces_files: !config.index_only,
            };
            let (layer, run) = DhtLayer::start(parts, cancel.child_token());
            tasks.spawn(run);
            Some(layer)
        }
        None => None,
    };
    let search = Search::new(index.clone(), flood.clone(), dht.clone());
    let transfers = Transfers::new(transfers::Parts {
        me: endpoint.id(),
        store: (*store).clone(),
        downloader: {
            let mut pool = iroh_blobs::util::connection_pool::Options::default();
            pool.connect_timeout = PROVIDER_CONNECT_TIMEOUT;
            iroh_blobs::api::downloader::Downloader::builder(&store, &endpoint).pool_options(pool).build()
        },
        lookup: lookup.clone(),
        shares: shares.clone(),
        finder: Arc::new(search.clone()),
        publisher: Arc::new(index.clone()),
        downloads: downloads.clone(),
        tasks: tasks.clone(),
        paths: paths.clone(),
        board: Board::default(),
        metrics: peer_metrics.clone(),
    });
    let files = Files::new((*store).clone(), shares.clone(), index.clone(), search.clone());
    let chat = Chat::new(overlay.clone(), index.clone(), nickname.clone(), data_dir.clone());
    let network = Network::new(network::Parts {
        endpoint: endpoint.clone(),
        ticket: ticket.clone(),
        lan: lan.clone(),
        index: index.clone(),
        hosts_index: hosted.is_some(),
        overlay: overlay.clone(),
        flood,
        shares,
        serving,
        nickname: nickname.subscribe(),
        data_dir: data_dir.clone(),
        downloads,
        closed,
        tasks: tasks.clone(),
        admission,
        connections,
        paths,
        relay: root_relay.clone(),
        dht,
        index_metrics: hosted.as_ref().map(|h| h.service().metrics().clone()),
        peer_metrics: peer_metrics.clone(),
    });
    let metrics = Metrics::new(&endpoint, &gossip, hosted.as_ref().map(|h| h.service().metrics().clone()), peer_metrics);
    let node = Node::from_inner(Inner {
        metrics,
        data_dir,
        endpoint,
        router,
        store,
        index,
        hosted,
        ticket,
        lan,
        index_only: config.index_only,
        overlay,
        nickname,
        files,
        search,
        transfers,
        chat,
        network,
        tasks,
        session,
        shutdown_requested: CancellationToken::new(),
        relay: root_relay,
    });
    start_control(&node, config.ui, config.metrics).await?;
    Ok(node)
}

/// Refuses a new connection from an IP address over its budget before any
/// handshake, silently (a refusal would be a packet the flood caused).
/// Connections through a relay are left to the relay and to admission.
fn connection_filter(budget: Arc<Budget<IpAddr>>) -> IncomingFilter {
    Arc::new(move |incoming: &Incoming| match incoming.remote_addr() {
        IncomingAddr::Ip(addr) if budget.allow(&addr.ip()).is_err() => IncomingFilterOutcome::Ignore,
        _ => IncomingFilterOutcome::Accept,
    })
}

/// The index's heartbeat and lease, which the overlay's presence follows.
fn lease_timing(index: IndexClient) -> impl Fn() -> Option<(Duration, Duration)> + Send + Sync {
    move || index.lease_timing()
}

fn start_session(
    index: &IndexClient,
    shares: &Arc<Shares>,
    nickname: &watch::Sender<String>,
    overlay: &Arc<OnceLock<Overlay>>,
    tasks: &Tasks,
    cancel: CancellationToken,
) -> oneshot::Receiver<Result<(), IndexError>> {
    let (tx, rx) = oneshot::channel();
    let shares = shares.clone();
    let overlay = overlay.clone();
    let session = index.clone().run_session(
        nickname.subscribe(),
        move || shares.entries(),
        move || overlay.get().map(Overlay::links).unwrap_or_default(),
        tx,
        cancel,
    );
    tasks.spawn(session);
    rx
}

/// Serves the control API (and the web interface) as a node task, and
/// the metrics if asked, and writes where they listen, with the token,
/// into the data directory for the CLI.
async fn start_control(node: &Node, ui: Option<SocketAddr>, metrics: Option<SocketAddr>) -> Result<(), StartError> {
    let token = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 32]>());
    let tasks = node.tasks();
    let listen = crate::control::server::Listen {
        addr: ui.unwrap_or((std::net::Ipv4Addr::LOCALHOST, 0).into()),
        token: token.clone(),
        cookie_name: format!("peernet-{}", node.endpoint().id().fmt_short()),
    };
    let (addr, server) = crate::control::server::serve(node.clone(), listen, tasks.cancel_token().child_token())
        .await
        .map_err(|e| StartError::Control(format!("{e} (the web interface's address)")))?;
    tasks.spawn(server);
    let metrics = match metrics {
        Some(at) => {
            let (bound, server) = crate::control::metrics::serve(node.clone(), at, tasks.cancel_token().child_token())
                .await
                .map_err(|e| StartError::Control(format!("cannot serve metrics on {at}: {e}")))?;
            tasks.spawn(server);
            Some(bound)
        }
        None => None,
    };
    node.data_dir().write_control(&ControlInfo { addr, token, pid: std::process::id(), metrics })?;
    Ok(())
}

/// Where and how the endpoint binds.
pub(crate) struct Binding {
    pub bind: SocketAddr,
    pub relay: Option<relay::ClientSetup>,
    pub congestion: endpoint::Congestion,
    /// A host must keep its port, or its ticket would point nowhere.
    pub hosting: bool,
}

/// Binds the endpoint, reusing the port of the last run when none is given.
/// A peer can move to another port; a host must keep its port.
pub(crate) async fn bind_endpoint(
    binding: Binding,
    state: &State,
    secret_key: iroh::SecretKey,
    alpns: Vec<Vec<u8>>,
    admission: &Admission,
    paths: &Paths,
) -> Result<(Endpoint, MemoryLookup), StartError> {
    let Binding { bind, relay, congestion, hosting } = binding;
    let remembered = bind.port() == 0 && state.port.is_some();
    let mut first = bind;
    if remembered {
        first.set_port(state.port.unwrap_or(0));
    }
    let config = |bind| EndpointConfig { secret_key: secret_key.clone(), bind, relay: relay.clone(), alpns: alpns.clone(), congestion };
    match endpoint::bind_member(config(first), admission, paths).await {
        Ok(ok) => Ok(ok),
        Err(e) if remembered && !hosting => {
            warn!("{e}; using a new port");
            Ok(endpoint::bind_member(config(bind), admission, paths).await?)
        }
        Err(e) => Err(e.into()),
    }
}

fn dirs_download() -> Option<PathBuf> {
    std::env::var_os("XDG_DOWNLOAD_DIR").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join("Downloads")))
}
