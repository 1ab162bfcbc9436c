//! A running peer: one endpoint serving blobs (and the index when this peer
//! hosts it), a session with the index, the shared files, and the control
//! API. [`Node`] is a cheap cloneable handle; [`Node::shutdown`] leaves the
//! network gracefully and stops every task.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::http::StatusCode;
use iroh::{address_lookup::memory::MemoryLookup, protocol::Router, Endpoint, RelayUrl};
use iroh_blobs::{api::downloader::Downloader, store::fs::FsStore, BlobsProtocol};
use iroh_gossip::net::Gossip;
use peernet_index::IndexProtocol;
use peernet_proto::{
    chat::{ChatMessage, Member},
    flood::{Action as FloodAction, Answer, FloodFrame, Query},
    names::validate_nickname,
    topo::Graph,
};
use peernet_proto::{
    index::{ErrorCode, Hit, OnlinePeer, PeerAddr, Request, Response},
    key::NetworkKey,
    ticket::Ticket,
};
use std::sync::OnceLock;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    control::{self, GetEvent, ShareReply, Status},
    data_dir::{ControlInfo, DataDir, DataDirError, Membership, State},
    endpoint::{self, EndpointConfig},
    index_client::{IndexClient, IndexError},
    overlay::{Hooks, Overlay, OverlayError},
    resolve::{self, ResolveError},
    shares::{self, Share, ShareError, Shares},
};

/// How long `up` waits for the first join before carrying on in the background.
const FIRST_JOIN_WAIT: Duration = Duration::from_secs(10);
/// How long a graceful leave may take before shutdown goes on without it.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for a leave event to spread before the endpoint closes.
const LEAVE_GRACE: Duration = Duration::from_millis(500);
/// Time for the root's close event to spread before the root goes away.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Gossip message cap: a signed chat event of the largest allowed text fits.
const GOSSIP_MAX_MESSAGE: usize = peernet_proto::chat::MAX_EVENT_BYTES + 1024;
/// Flood queries from neighbours waiting to be handled; more are dropped.
const FLOOD_QUERY_BUFFER: usize = 256;
/// How long a flood search collects answers.
pub const FLOOD_WINDOW: Duration = Duration::from_millis(1500);

/// Where a search looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    Both,
    Index,
    Flood,
}

/// The gossip configuration. `PEERNET_OVERLAY_DEGREE` caps the active view
/// (the number of overlay neighbours); it exists so tests can build long,
/// thin overlays, and is not needed otherwise.
fn gossip_builder() -> iroh_gossip::net::Builder {
    let mut builder = Gossip::builder().max_message_size(GOSSIP_MAX_MESSAGE);
    if let Some(degree) = std::env::var("PEERNET_OVERLAY_DEGREE").ok().and_then(|d| d.parse::<usize>().ok()) {
        let membership = iroh_gossip::proto::HyparviewConfig { active_view_capacity: degree.max(1), ..Default::default() };
        builder = builder.membership_config(membership);
    }
    builder
}

/// Most online pages fetched for one `online` call.
const MAX_ONLINE_PAGES: u32 = 256;

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub join: Option<Ticket>,
    pub nickname: Option<String>,
    pub share: Vec<PathBuf>,
    pub downloads: Option<PathBuf>,
    /// Address to bind; port 0 reuses the port of the last run (or picks one).
    pub bind: SocketAddr,
    pub relay: Option<RelayUrl>,
    /// Lease timing, used when this peer hosts the index.
    pub index: peernet_index::Config,
    /// Most bytes per second served to other peers, all together.
    pub upload_limit: Option<u64>,
    /// Run only the index (the root), without sharing or registering as a peer.
    pub index_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
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
    Resolve(#[from] ResolveError),
    #[error("no online provider has '{0}' right now; try again when one of them is back")]
    NoProvider(String),
    #[error("{0}")]
    Download(String),
    #[error("cannot save the download: {0}")]
    Save(String),
    #[error("cannot start the control API: {0}")]
    Control(String),
    #[error("{0}")]
    Overlay(String),
    #[error("{0}")]
    Chat(String),
    #[error("{0}")]
    Nickname(String),
    #[error("only the root can close the network: run stop-network with the data directory of the peer or index that started it")]
    NotRoot,
}

impl From<OverlayError> for NodeError {
    fn from(e: OverlayError) -> Self {
        match e {
            OverlayError::TooLong(_) | OverlayError::Empty => Self::Chat(e.to_string()),
            other => Self::Overlay(other.to_string()),
        }
    }
}

impl NodeError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Share(ShareError::Unknown(_)) | Self::Resolve(ResolveError::Unknown(_)) | Self::NoProvider(_) => StatusCode::NOT_FOUND,
            Self::Share(_) | Self::Resolve(_) | Self::Chat(_) | Self::Nickname(_) => StatusCode::BAD_REQUEST,
            Self::NotRoot => StatusCode::FORBIDDEN,
            Self::Index(IndexError::Refused { code: ErrorCode::NotOwner, .. }) => StatusCode::FORBIDDEN,
            Self::Index(IndexError::Refused { code: ErrorCode::NotFound, .. }) => StatusCode::NOT_FOUND,
            Self::Index(IndexError::Refused { .. }) => StatusCode::BAD_REQUEST,
            Self::Index(IndexError::Unreachable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) data_dir: DataDir,
    pub(crate) endpoint: Endpoint,
    pub(crate) router: Router,
    pub(crate) lookup: MemoryLookup,
    pub(crate) store: FsStore,
    pub(crate) downloader: Downloader,
    pub(crate) index: IndexClient,
    pub(crate) hosted: Option<IndexProtocol>,
    pub(crate) shares: Arc<Shares>,
    pub(crate) nickname: watch::Sender<String>,
    pub(crate) downloads: PathBuf,
    pub(crate) ticket: Ticket,
    pub(crate) gossip: Gossip,
    pending: crate::flood::Pending,
    pub(crate) overlay: Arc<OnceLock<Overlay>>,
    index_only: bool,
    /// Fired when the root closes the network.
    closed: CancellationToken,
    cancel: CancellationToken,
    /// Stops the index session (heartbeats, re-joins) alone, so that
    /// nothing renews our lease after we leave.
    session: CancellationToken,
    shutdown_requested: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

impl Node {
    /// Starts a peer: hosts a new network, rejoins the one this data
    /// directory belongs to, or joins `config.join`.
    pub async fn spawn(config: Config) -> Result<Self, NodeError> {
        let data_dir = DataDir::open(&config.data_dir)?;
        let secret_key = data_dir.secret_key()?;
        let secret_for_overlay = secret_key.clone();
        let mut state = data_dir.load_state()?;
        let membership = match (&config.join, &state.membership) {
            (Some(_), Some(Membership::Host { .. })) => return Err(NodeError::HostsNetwork),
            (Some(ticket), _) => Membership::Member { ticket: ticket.to_string() },
            (None, Some(m)) => m.clone(),
            (None, None) => Membership::Host { network_key: NetworkKey::generate() },
        };
        let hosting = matches!(membership, Membership::Host { .. });
        if config.index_only && !hosting {
            return Err(NodeError::MemberDataDir);
        }

        let mut alpns = vec![iroh_blobs::ALPN.to_vec(), iroh_gossip::ALPN.to_vec(), peernet_proto::flood::ALPN.to_vec()];
        if hosting {
            alpns.push(peernet_proto::index::ALPN.to_vec());
        }
        let (endpoint, lookup) = bind_endpoint(config.bind, config.relay.clone(), &state, secret_key, alpns, hosting).await?;
        let me = endpoint::own_addr(&endpoint);

        let store = FsStore::load(data_dir.blobs()).await.map_err(|e| NodeError::Store(e.to_string()))?;
        let blobs = BlobsProtocol::new(&store, config.upload_limit.map(crate::throttle::upload_limiter));
        let gossip = gossip_builder().spawn(endpoint.clone());
        let pending = crate::flood::Pending::default();
        let (flood_queries, flood_rx) = mpsc::channel(FLOOD_QUERY_BUFFER);
        let mut router = Router::builder(endpoint.clone())
            .accept(iroh_blobs::ALPN, blobs)
            .accept(iroh_gossip::ALPN, gossip.clone())
            .accept(peernet_proto::flood::ALPN, crate::flood::FloodProtocol { pending: pending.clone(), queries: flood_queries });

        let (ticket, hosted, index) = match &membership {
            Membership::Host { network_key } => {
                let protocol = peernet_index::open(&data_dir.index_db(), *network_key, endpoint.id(), config.index.clone())
                    .map_err(|e| NodeError::IndexDb(e.to_string()))?;
                router = router.accept(peernet_proto::index::ALPN, protocol.clone());
                let client = IndexClient::local(protocol.service().clone(), me.clone(), *network_key);
                (Ticket { index: me.clone(), network_key: *network_key }, Some(protocol), client)
            }
            Membership::Member { ticket } => {
                let ticket: Ticket =
                    ticket.parse().map_err(|e: peernet_proto::ticket::TicketError| NodeError::StoredTicket(e.to_string()))?;
                endpoint::remember(&lookup, &ticket.index);
                let client = IndexClient::remote(endpoint.clone(), me.clone(), ticket.index.clone(), ticket.network_key);
                (ticket, None, client)
            }
        };
        let router = router.spawn();

        let nickname = config.nickname.clone().or_else(|| state.nickname.clone()).unwrap_or_else(|| {
            if config.index_only {
                "index".to_string()
            } else {
                format!("peer-{}", endpoint.id().fmt_short())
            }
        });
        let shares = Arc::new(Shares::load(data_dir.shares_file())?);
        for path in &config.share {
            if path.is_dir() {
                let (files, folder) = shares::import_dir(&store, path).await?;
                for f in files {
                    shares.insert(f)?;
                }
                shares.insert(folder)?;
            } else {
                shares.insert(shares::import(&store, path).await?)?;
            }
        }

        state.membership = Some(membership);
        state.nickname = Some(nickname.clone());
        state.port = endpoint.bound_sockets().first().map(|s| s.port());
        data_dir.save_state(&state)?;

        let downloads = config.downloads.clone().or_else(|| dirs_download()).unwrap_or_else(|| data_dir.root().join("downloads"));
        let downloader = store.downloader(&endpoint);
        let cancel = CancellationToken::new();
        let node = Node {
            inner: Arc::new(Inner {
                data_dir,
                endpoint,
                router,
                lookup,
                store,
                downloader,
                index,
                hosted,
                shares,
                nickname: watch::channel(nickname).0,
                downloads,
                ticket,
                gossip,
                pending,
                overlay: Arc::new(OnceLock::new()),
                index_only: config.index_only,
                closed: CancellationToken::new(),
                cancel: cancel.clone(),
                session: cancel.child_token(),
                shutdown_requested: CancellationToken::new(),
                tasks: Mutex::new(JoinSet::new()),
            }),
        };

        if !config.index_only {
            let first = node.start_session();
            match tokio::time::timeout(FIRST_JOIN_WAIT, first).await {
                Ok(Ok(Ok(()))) => info!("joined the network"),
                Ok(Ok(Err(e @ IndexError::Refused { .. }))) => {
                    node.shutdown_without_leave().await;
                    return Err(e.into());
                }
                Ok(Ok(Err(e))) => warn!("{e}"),
                Ok(Err(_)) | Err(_) => warn!("the index has not answered yet; retrying in the background"),
            }
        }
        node.start_overlay(secret_for_overlay).await?;
        node.start_flood(flood_rx);
        node.start_control().await?;
        Ok(node)
    }

    fn start_session(&self) -> oneshot::Receiver<Result<(), IndexError>> {
        let (tx, rx) = oneshot::channel();
        let shares = self.inner.shares.clone();
        let overlay = self.inner.overlay.clone();
        let session = self.inner.index.clone().run_session(
            self.inner.nickname.subscribe(),
            move || shares.entries(),
            move || overlay.get().map(Overlay::neighbors).unwrap_or_default(),
            tx,
            self.inner.session.clone(),
        );
        self.spawn_task(session);
        rx
    }

    async fn start_overlay(&self, secret: iroh::SecretKey) -> Result<(), NodeError> {
        let index = self.inner.index.clone();
        let timing_source = index.clone();
        let hooks = Hooks {
            nickname: self.inner.nickname.subscribe(),
            closed: self.inner.closed.clone(),
            timing: Box::new(move || timing_source.lease_timing()),
        };
        let (overlay, task) = Overlay::start(
            &self.inner.gossip,
            self.inner.ticket.network_key,
            secret,
            self.inner.ticket.index.id,
            index,
            self.inner.lookup.clone(),
            !self.inner.index_only,
            hooks,
            self.inner.cancel.child_token(),
        )
        .await
        .map_err(|e| NodeError::Overlay(e.to_string()))?;
        self.inner.overlay.set(overlay).ok();
        self.spawn_task(task);
        Ok(())
    }

    pub(crate) fn overlay(&self) -> Result<&Overlay, NodeError> {
        self.inner.overlay.get().ok_or_else(|| NodeError::Overlay("the overlay has not started yet".into()))
    }

    /// Handles flood queries from neighbours: answer if we match, pass on
    /// while the TTL lasts (decided by the flood state machine).
    fn start_flood(&self, mut queries: mpsc::Receiver<(Query, iroh::EndpointId)>) {
        let weak = Arc::downgrade(&self.inner);
        let cancel = self.inner.cancel.child_token();
        self.spawn_task(async move {
            loop {
                let (query, from) = tokio::select! {
                    _ = cancel.cancelled() => break,
                    q = queries.recv() => match q { Some(q) => q, None => break },
                };
                let Some(inner) = weak.upgrade() else { break };
                let node = Node { inner };
                let Ok(overlay) = node.overlay() else { continue };
                for action in overlay.flood_handle(query, from) {
                    match action {
                        FloodAction::Answer(q) => node.answer_flood(q),
                        FloodAction::Forward { query, to } => node.send_query(query, to),
                    }
                }
            }
        });
    }

    fn send_query(&self, query: Query, to: Vec<iroh::EndpointId>) {
        for neighbour in to {
            let endpoint = self.inner.endpoint.clone();
            let frame = FloodFrame::Query(query.clone());
            self.spawn_task(async move {
                if let Err(e) = crate::flood::send_frame(&endpoint, frame, neighbour).await {
                    tracing::debug!("could not pass a flood query to {}: {e}", neighbour.fmt_short());
                }
            });
        }
    }

    /// Answers a flood query with our matching files, if any, straight to
    /// its origin.
    fn answer_flood(&self, query: Query) {
        let files: Vec<_> = self
            .inner
            .shares
            .entries()
            .into_iter()
            .filter(|e| peernet_proto::flood::matches(&query.text, e))
            .take(peernet_proto::flood::MAX_ANSWER_FILES)
            .collect();
        if files.is_empty() || self.inner.index_only {
            return;
        }
        let answer = Answer { query: query.id, provider: endpoint::own_addr(&self.inner.endpoint), nickname: self.nickname(), files };
        let origin = query.origin.to_endpoint_addr();
        let endpoint = self.inner.endpoint.clone();
        self.spawn_task(async move {
            if let Err(e) = crate::flood::send_frame(&endpoint, FloodFrame::Answer(answer), origin).await {
                tracing::debug!("could not answer a flood query: {e}");
            }
        });
    }

    /// Asks the overlay: the query goes from neighbour to neighbour with a
    /// TTL, and peers with matches answer us directly within `window`.
    pub async fn flood_search(&self, text: &str, ttl: u8, window: Duration) -> Result<Vec<Hit>, NodeError> {
        let overlay = self.overlay()?;
        let id: [u8; 16] = rand::random();
        let mut answers_rx = self.inner.pending.open(id);
        if let FloodAction::Forward { query, to } = overlay.flood_start(id, endpoint::own_addr(&self.inner.endpoint), text.to_string(), ttl)
        {
            self.send_query(query, to);
        }
        let mut answers = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(answer)) = tokio::time::timeout_at(deadline, answers_rx.recv()).await {
            answers.push(answer);
        }
        self.inner.pending.close(&id);
        let hits = crate::flood::hits_from_answers(answers);
        for h in &hits {
            for p in &h.providers {
                self.remember(&p.peer.addr);
            }
        }
        Ok(hits)
    }

    /// Searches the index, the overlay, or both (merging by hash). With
    /// both, an unreachable index is not an error as long as the overlay
    /// answered.
    pub async fn search_with(&self, query: &str, limit: u32, mode: SearchMode, ttl: u8, window: Duration) -> Result<Vec<Hit>, NodeError> {
        match mode {
            SearchMode::Index => self.search(query, limit).await,
            SearchMode::Flood => self.flood_search(query, ttl, window).await,
            SearchMode::Both => {
                let (index, flood) = tokio::join!(self.search(query, limit), self.flood_search(query, ttl, window));
                match (index, flood) {
                    (Ok(mut hits), Ok(more)) => {
                        crate::flood::merge_hits(&mut hits, more);
                        Ok(hits)
                    }
                    (Ok(hits), Err(_)) => Ok(hits),
                    (Err(_), Ok(more)) if !more.is_empty() => Ok(more),
                    (Err(e), _) => Err(e),
                }
            }
        }
    }

    pub fn flood_counters(&self) -> (u64, u64) {
        self.inner.overlay.get().map(Overlay::flood_counters).unwrap_or_default()
    }

    /// Sends a chat message to everybody.
    pub async fn say(&self, text: &str) -> Result<ChatMessage, NodeError> {
        Ok(self.overlay()?.say(text).await?)
    }

    /// Renames this peer: the index checks the name is free, then the room
    /// hears about it.
    pub async fn rename(&self, nickname: &str) -> Result<(), NodeError> {
        validate_nickname(nickname).map_err(|e| NodeError::Nickname(e.to_string()))?;
        match self.inner.index.request(Request::Rename { nickname: nickname.to_string() }).await {
            Ok(_) => {}
            Err(IndexError::Unreachable(e)) => {
                return Err(NodeError::Nickname(format!(
                    "the index is unreachable ({e}); a rename needs the index to check that the name is free, try again shortly"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        self.inner.nickname.send_replace(nickname.to_string());
        let mut state = self.inner.data_dir.load_state()?;
        state.nickname = Some(nickname.to_string());
        self.inner.data_dir.save_state(&state)?;
        self.overlay()?.announce_rename(nickname).await?;
        Ok(())
    }

    pub fn members(&self) -> Result<Vec<Member>, NodeError> {
        Ok(self.overlay()?.members())
    }

    pub fn messages_after(&self, index: u64) -> Result<Vec<ChatMessage>, NodeError> {
        Ok(self.overlay()?.messages_after(index))
    }

    /// The map of the network, from the index.
    pub async fn topology(&self) -> Result<Graph, NodeError> {
        match self.inner.index.request(Request::Topology).await? {
            Response::Topology(t) => Ok(Graph::from_topology(&t)),
            _ => Err(IndexError::Unexpected.into()),
        }
    }

    /// Closes the whole network: only the root can. The close event is
    /// signed with the root's key; every peer verifies it and leaves.
    pub async fn stop_network(&self) -> Result<(), NodeError> {
        if !self.hosts_index() {
            return Err(NodeError::NotRoot);
        }
        self.overlay()?.close_network().await?;
        let node = self.clone();
        self.spawn_task(async move {
            // Give the event time to spread before this peer goes away.
            tokio::time::sleep(CLOSE_GRACE).await;
            node.inner.closed.cancel();
        });
        Ok(())
    }

    /// Resolves when the root has closed the network.
    pub async fn network_closed(&self) {
        self.inner.closed.cancelled().await
    }

    async fn start_control(&self) -> Result<(), NodeError> {
        let token = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 32]>());
        let (addr, handle) = control::server::serve(self.clone(), token.clone(), self.inner.cancel.child_token())
            .await
            .map_err(|e| NodeError::Control(e.to_string()))?;
        self.spawn_task(async move {
            handle.await.ok();
        });
        self.inner.data_dir.write_control(&ControlInfo { addr, token, pid: std::process::id() })?;
        Ok(())
    }

    pub(crate) fn spawn_task(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.tasks.lock().expect("tasks lock").spawn(fut);
    }

    pub fn ticket(&self) -> &Ticket {
        &self.inner.ticket
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    pub fn hosts_index(&self) -> bool {
        self.inner.hosted.is_some()
    }

    /// A standalone root (`peernet index`), not a sharing peer.
    pub fn is_index_only(&self) -> bool {
        self.inner.index_only
    }

    pub fn nickname(&self) -> String {
        self.inner.nickname.borrow().clone()
    }

    pub fn status(&self) -> Status {
        let (flood_handled, flood_duplicates) = self.flood_counters();
        Status {
            id: self.inner.endpoint.id().to_string(),
            nickname: self.nickname(),
            ticket: self.inner.ticket.to_string(),
            hosts_index: self.hosts_index(),
            index: self.inner.index.status(),
            addrs: endpoint::own_addr(&self.inner.endpoint).ip.iter().map(|a| a.to_string()).collect(),
            shares: self.inner.shares.list().len(),
            neighbors: self
                .inner
                .overlay
                .get()
                .map(|o| o.neighbors().iter().map(|n| n.fmt_short().to_string()).collect())
                .unwrap_or_default(),
            dropped_events: self.inner.overlay.get().map(Overlay::dropped).unwrap_or_default(),
            flood_handled,
            flood_duplicates,
            data_dir: self.inner.data_dir.root().to_owned(),
            downloads: self.inner.downloads.clone(),
        }
    }

    pub fn shares(&self) -> Vec<Share> {
        self.inner.shares.list()
    }

    /// Imports and publishes a file. When the index is unreachable the file
    /// is still shared and is published after the next join.
    pub async fn share(&self, path: &Path) -> Result<ShareReply, NodeError> {
        let is_dir = tokio::fs::metadata(path).await.map(|m| m.is_dir()).unwrap_or(false);
        let (files, share) = if is_dir {
            shares::import_dir(&self.inner.store, path).await?
        } else {
            (Vec::new(), shares::import(&self.inner.store, path).await?)
        };
        for f in &files {
            self.inner.shares.insert(f.clone())?;
        }
        self.inner.shares.insert(share.clone())?;
        let mut entries: Vec<_> = files.iter().map(Share::entry).collect();
        entries.push(share.entry());
        let warning = match self.inner.index.publish(&entries).await {
            Ok(()) => None,
            Err(IndexError::Unreachable(e)) => {
                Some(format!("shared, but the index is unreachable ({e}); it will be published when the index is back"))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(ShareReply { share, warning })
    }

    /// Stops sharing a file of ours. For a file we do not share, the index
    /// is asked anyway, so its ownership rule gives the answer.
    pub async fn unshare(&self, target: &str) -> Result<Share, NodeError> {
        match self.inner.shares.find(target) {
            Ok(share) => {
                self.inner.shares.remove(&share.hash)?;
                shares::unprotect(&self.inner.store, &share.hash).await;
                match self.inner.index.unpublish(share.hash).await {
                    Ok(()) | Err(IndexError::Unreachable(_)) => {}
                    Err(IndexError::Refused { code: ErrorCode::NotFound, .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                Ok(share)
            }
            Err(ShareError::Unknown(_)) => {
                let hits = self.search(target, peernet_proto::limits::MAX_SEARCH_LIMIT).await?;
                let hit = resolve::choose(target, hits).map_err(|_| ShareError::Unknown(target.to_string()))?;
                self.inner.index.unpublish(hit.hash).await?;
                // The index accepted: it was ours after all (shared before shares.json existed).
                Ok(Share { name: hit.name, hash: hit.hash, size: hit.size, path: PathBuf::new(), kind: hit.kind })
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn search(&self, query: &str, limit: u32) -> Result<Vec<Hit>, NodeError> {
        match self.inner.index.request(Request::Search { query: query.to_string(), limit }).await? {
            Response::Hits(hits) => Ok(hits),
            _ => Err(IndexError::Unexpected.into()),
        }
    }

    pub async fn online(&self) -> Result<Vec<OnlinePeer>, NodeError> {
        let mut peers = Vec::new();
        let mut page = Some(0);
        while let Some(p) = page.filter(|p| *p < MAX_ONLINE_PAGES) {
            match self.inner.index.request(Request::Online { page: p }).await? {
                Response::Online { peers: more, next_page } => {
                    peers.extend(more);
                    page = next_page;
                }
                _ => return Err(IndexError::Unexpected.into()),
            }
        }
        Ok(peers)
    }

    /// Runs a download as a node task, reporting to `events`.
    pub fn spawn_get(&self, target: String, out: Option<PathBuf>, events: mpsc::Sender<GetEvent>) {
        let node = self.clone();
        self.spawn_task(async move {
            let result = crate::fetch::get(&node, &target, out, &events).await;
            if let Err(e) = result {
                events.send(GetEvent::Failed { error: e.to_string() }).await.ok();
            }
        });
    }

    pub(crate) fn remember(&self, peer: &PeerAddr) {
        endpoint::remember(&self.inner.lookup, peer);
    }

    /// Asks whoever waits on [`Node::shutdown_requested`] to shut down
    /// (`peernet down`).
    pub fn request_shutdown(&self) {
        self.inner.shutdown_requested.cancel();
    }

    pub async fn shutdown_requested(&self) {
        self.inner.shutdown_requested.cancelled().await
    }

    /// Leaves the index (de-registering everything), then stops all tasks,
    /// the router and the store.
    pub async fn shutdown(&self) {
        if let Some(overlay) = self.inner.overlay.get() {
            overlay.announce_leave().await;
            // Let the leave reach the neighbours before the endpoint closes.
            tokio::time::sleep(LEAVE_GRACE).await;
        }
        if self.inner.index_only {
            self.shutdown_without_leave().await;
            return;
        }
        // No heartbeat or re-join may follow the leave and bring us back.
        self.inner.session.cancel();
        match tokio::time::timeout(LEAVE_TIMEOUT, self.inner.index.leave()).await {
            Ok(Ok(())) => info!("left the network"),
            Ok(Err(e)) => warn!("could not leave the index cleanly: {e}"),
            Err(_) => warn!("the index did not answer the leave in time"),
        }
        self.shutdown_without_leave().await;
    }

    async fn shutdown_without_leave(&self) {
        self.inner.cancel.cancel();
        let mut tasks = std::mem::take(&mut *self.inner.tasks.lock().expect("tasks lock"));
        if tokio::time::timeout(Duration::from_secs(2), async { while tasks.join_next().await.is_some() {} }).await.is_err() {
            tasks.abort_all();
        }
        if let Err(e) = self.inner.router.shutdown().await {
            warn!("router shutdown: {e}");
        }
        if let Err(e) = self.inner.store.shutdown().await {
            tracing::debug!("store shutdown: {e}");
        }
        self.inner.data_dir.remove_control(std::process::id());
    }
}

/// Binds the endpoint, reusing the port of the last run when none is given.
/// A peer can move to another port; a host must keep its port, or its
/// ticket would point nowhere.
pub(crate) async fn bind_endpoint(
    bind: SocketAddr,
    relay: Option<RelayUrl>,
    state: &State,
    secret_key: iroh::SecretKey,
    alpns: Vec<Vec<u8>>,
    hosting: bool,
) -> Result<(Endpoint, MemoryLookup), NodeError> {
    let remembered = bind.port() == 0 && state.port.is_some();
    let mut first = bind;
    if remembered {
        first.set_port(state.port.unwrap_or(0));
    }
    let config = |bind| EndpointConfig { secret_key: secret_key.clone(), bind, relay: relay.clone(), alpns: alpns.clone() };
    match endpoint::bind(config(first)).await {
        Ok(ok) => Ok(ok),
        Err(e) if remembered && !hosting => {
            warn!("{e}; using a new port");
            Ok(endpoint::bind(config(bind)).await?)
        }
        Err(e) => Err(e.into()),
    }
}

fn dirs_download() -> Option<PathBuf> {
    std::env::var_os("XDG_DOWNLOAD_DIR").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join("Downloads")))
}
