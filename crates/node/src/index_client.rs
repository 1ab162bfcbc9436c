//! The peer's side of the index protocol.
//!
//! [`IndexClient::call`] sends one request, over QUIC to a remote index or
//! straight into the [`Service`] when this process hosts the index (an
//! endpoint cannot dial itself). [`IndexClient::run_session`] keeps the
//! membership alive: join, publish every share, heartbeat; when a heartbeat
//! fails it reconnects with capped exponential backoff and joins and
//! publishes again by itself. When the overlay tells it the neighbours
//! changed ([`IndexClient::neighbours_changed`]) a heartbeat carries them to
//! the index within a second, so the map shows new links at once. The
//! decisions are [`peernet_proto::session::Session`]'s; this module only
//! performs them.

use std::{
    collections::{BTreeSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use iroh::{
    endpoint::{Connection, ConnectionError},
    Endpoint, EndpointId,
};
use iroh_blobs::Hash;
use peernet_index::{
    frame_io::{read_frame, write_frame},
    now_ms, Service,
};
use peernet_proto::{
    index::{close_code, ErrorCode, FileEntry, Join, LinkReport, PeerAddr, Request, Response, ALPN, ALPN_V2},
    key::NetworkKey,
    limits::{MAX_FILES_PER_PUBLISH, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME},
    session::{self, Session},
};
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Tries of a request the index keeps answering with "slow down", and the
/// first pause between them (doubling: 100, 200, 400 ms).
pub const SLOW_DOWN_TRIES: u32 = 4;
/// Tries of a request whose connection the index turned away as busy, and
/// the first pause between them (doubling: 0.1 to 1.6 s, 3.1 s in all).
const BUSY_TRIES: u32 = 6;
const BUSY_PAUSE: Duration = Duration::from_millis(100);
const BUSY_PREFIX: &str = "the index is busy";
const SLOW_DOWN_PAUSE: Duration = Duration::from_millis(100);
/// Timeout for one request before the index has told us its heartbeat.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, thiserror::Error)]
pub enum IndexError {
    #[error("the index is unreachable ({0}); peernet keeps retrying in the background, try again shortly")]
    Unreachable(String),
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    #[error("the index sent an unexpected answer; this peer and the index may run different versions")]
    Unexpected,
    #[error("this is a LAN network, which has no index: peers find each other on the LAN, and search asks them (drop --index-only)")]
    NoIndex,
}

impl IndexError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What `peernet status` shows about the index link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IndexStatus {
    Connecting,
    Joined {
        since_ms: u64,
        heartbeat_ms: u64,
        lease_ttl_ms: u64,
    },
    Unreachable {
        error: String,
    },
    Refused {
        error: String,
    },
    /// A LAN network has no index.
    None,
}

#[derive(Debug)]
enum Route {
    Remote {
        endpoint: Endpoint,
        index: PeerAddr,
    },
    Local(Arc<Service>),
    /// A LAN network: every request fails with [`IndexError::NoIndex`].
    None,
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    heartbeat: Duration,
    lease_ttl: Duration,
}

#[derive(Debug)]
struct Inner {
    me: PeerAddr,
    index_id: EndpointId,
    key: NetworkKey,
    route: Route,
    conn: tokio::sync::Mutex<Option<Connection>>,
    timing: Mutex<Option<Timing>>,
    status: watch::Sender<IndexStatus>,
    /// Unshares that could not reach the index; sent after the next join.
    pending_unpublish: Mutex<BTreeSet<Hash>>,
    /// Rung by the overlay when its neighbours change; the session then
    /// tells the index soon. A ring while the session is busy is kept.
    neighbours_changed: Notify,
}

#[derive(Debug, Clone)]
pub struct IndexClient {
    inner: Arc<Inner>,
}

impl IndexClient {
    pub fn remote(endpoint: Endpoint, me: PeerAddr, index: PeerAddr, key: NetworkKey) -> Self {
        Self::new(me, index.id, key, Route::Remote { endpoint, index })
    }

    pub fn local(service: Arc<Service>, me: PeerAddr, key: NetworkKey) -> Self {
        Self::new(me, service.id(), key, Route::Local(service))
    }

    /// The client of a network without an index (a LAN network).
    pub fn none(me: PeerAddr, key: NetworkKey) -> Self {
        let client = Self::new(me.clone(), me.id, key, Route::None);
        client.inner.status.send_replace(IndexStatus::None);
        client
    }

    /// Whether this network has an index at all.
    pub fn exists(&self) -> bool {
        !matches!(self.inner.route, Route::None)
    }

    fn new(me: PeerAddr, index_id: EndpointId, key: NetworkKey, route: Route) -> Self {
        Self {
            inner: Arc::new(Inner {
                me,
                index_id,
                key,
                route,
                conn: Default::default(),
                timing: Mutex::new(None),
                status: watch::channel(IndexStatus::Connecting).0,
                pending_unpublish: Default::default(),
                neighbours_changed: Notify::new(),
            }),
        }
    }

    pub fn status(&self) -> IndexStatus {
        self.inner.status.borrow().clone()
    }

    pub fn watch_status(&self) -> watch::Receiver<IndexStatus> {
        self.inner.status.subscribe()
    }

    pub fn index_id(&self) -> EndpointId {
        self.inner.index_id
    }

    /// Tells the session that the overlay's neighbours changed, so the
    /// index's map learns it without waiting for the next heartbeat.
    pub fn neighbours_changed(&self) {
        self.inner.neighbours_changed.notify_one();
    }

    fn timing(&self) -> Option<Timing> {
        *self.inner.timing.lock().expect("timing lock")
    }

    /// The index's heartbeat interval and lease TTL, once joined.
    pub fn lease_timing(&self) -> Option<(Duration, Duration)> {
        self.timing().map(|t| (t.heartbeat, t.lease_ttl))
    }

    fn request_timeout(&self) -> Duration {
        // A request that takes longer than a heartbeat interval means the
        // link is dead; waiting longer would delay re-joining.
        self.timing().map(|t| t.heartbeat.clamp(Duration::from_secs(1), DEFAULT_REQUEST_TIMEOUT)).unwrap_or(DEFAULT_REQUEST_TIMEOUT)
    }

    /// Sends one request and maps an error response to [`IndexError::Refused`].
    /// When the index says "slow down", the request is sent again after a
    /// pause that doubles each time, up to [`SLOW_DOWN_TRIES`] tries.
    pub async fn request(&self, request: Request) -> Result<Response, IndexError> {
        let mut pause = SLOW_DOWN_PAUSE;
        for _ in 1..SLOW_DOWN_TRIES {
            match self.call(request.clone()).await? {
                Response::Error { code: ErrorCode::SlowDown, message } => {
                    debug!("the index asks us to slow down: {message}");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Response::Error { code, message } => return Err(IndexError::Refused { code, message }),
                other => return Ok(other),
            }
        }
        match self.call(request).await? {
            Response::Error { code, message } => Err(IndexError::Refused { code, message }),
            other => Ok(other),
        }
    }

    /// Sends one request and returns the raw response. When the index
    /// turns the connection away as busy (its pool for keys that have not
    /// joined is full, or this address's share of it), the request is sent
    /// again on a new connection after a pause that doubles, a few times:
    /// peers behind one address that start together all get in.
    pub async fn call(&self, request: Request) -> Result<Response, IndexError> {
        let mut pause = BUSY_PAUSE;
        for _ in 1..BUSY_TRIES {
            match self.call_once(request.clone()).await {
                Err(IndexError::Unreachable(why)) if why.starts_with(BUSY_PREFIX) => {
                    debug!("{why}; trying again in {pause:?}");
                    // Spread the retries of peers that were turned away together.
                    let wait = peernet_proto::timers::jittered(pause, &mut rand::rng());
                    tokio::time::sleep(wait).await;
                    pause *= 2;
                }
                other => return other,
            }
        }
        self.call_once(request).await
    }

    async fn call_once(&self, request: Request) -> Result<Response, IndexError> {
        match &self.inner.route {
            Route::None => Err(IndexError::NoIndex),
            Route::Local(service) => Ok(service.call(self.inner.me.id, request, now_ms()).await),
            Route::Remote { endpoint, index } => {
                let timeout = self.request_timeout();
                let conn = tokio::time::timeout(timeout, self.connection(endpoint, index))
                    .await
                    .map_err(|_| IndexError::Unreachable(format!("no answer within {timeout:?}")))??;
                // An index of version 1 gets version-1 questions.
                let old = conn.alpn() != ALPN_V2;
                let (request, asked_map) = if old { downgrade(request) } else { (request, false) };
                let result = tokio::time::timeout(timeout, exchange(&conn, &request)).await;
                match result {
                    Ok(Ok(Response::Topology(t))) if asked_map => Ok(Response::LinkMap(t.into())),
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(e)) => {
                        self.drop_connection(&conn).await;
                        Err(describe_failure(&conn, e))
                    }
                    Err(_) => {
                        self.drop_connection(&conn).await;
                        Err(IndexError::Unreachable(format!("no answer within {timeout:?}")))
                    }
                }
            }
        }
    }

    async fn connection(&self, endpoint: &Endpoint, index: &PeerAddr) -> Result<Connection, IndexError> {
        let mut guard = self.inner.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        // Version 2 first; an older index picks version 1.
        let options = iroh::endpoint::ConnectOptions::new().with_additional_alpns(vec![ALPN.to_vec()]);
        let conn = endpoint
            .connect_with_opts(index.to_endpoint_addr(), ALPN_V2, options)
            .await
            .map_err(|e| IndexError::Unreachable(e.to_string()))?
            .await
            .map_err(|e| IndexError::Unreachable(e.to_string()))?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn drop_connection(&self, failed: &Connection) {
        let mut guard = self.inner.conn.lock().await;
        if guard.as_ref().is_some_and(|c| c.stable_id() == failed.stable_id()) {
            *guard = None;
        }
    }

    /// Joins under `nickname`. On success the index's timing is adopted.
    pub async fn join(&self, nickname: &str) -> Result<(), IndexError> {
        let timing = self.join_for_timing(nickname).await?;
        self.set_status(session::Status::Joined { heartbeat: timing.heartbeat, lease_ttl: timing.lease_ttl });
        Ok(())
    }

    /// Joins and adopts the index's timing, leaving the status to the caller.
    async fn join_for_timing(&self, nickname: &str) -> Result<Timing, IndexError> {
        let proof = self.inner.key.join_proof(&self.inner.me.id, &self.inner.index_id);
        let request = Request::Join(Join { nickname: nickname.to_string(), proof, addr: self.inner.me.clone() });
        match self.request(request).await? {
            Response::Joined { heartbeat_ms, lease_ttl_ms } => {
                let timing =
                    Timing { heartbeat: Duration::from_millis(heartbeat_ms.max(100)), lease_ttl: Duration::from_millis(lease_ttl_ms) };
                *self.inner.timing.lock().expect("timing lock") = Some(timing);
                Ok(timing)
            }
            _ => Err(IndexError::Unexpected),
        }
    }

    fn set_status(&self, status: session::Status<IndexError>) {
        let status = match status {
            session::Status::Joined { heartbeat, lease_ttl } => {
                info!("joined the index {}", self.inner.index_id.fmt_short());
                IndexStatus::Joined {
                    since_ms: now_ms(),
                    heartbeat_ms: heartbeat.as_millis() as u64,
                    lease_ttl_ms: lease_ttl.as_millis() as u64,
                }
            }
            session::Status::Unreachable { error } => {
                debug!("index unavailable: {error}");
                IndexStatus::Unreachable { error: error.to_string() }
            }
            session::Status::Refused { error } => {
                warn!("the index refused this peer: {error}");
                IndexStatus::Refused { error: error.to_string() }
            }
        };
        self.inner.status.send_replace(status);
    }

    /// Publishes `files` in batches the index accepts.
    pub async fn publish(&self, files: &[FileEntry]) -> Result<(), IndexError> {
        for batch in files.chunks(MAX_FILES_PER_PUBLISH) {
            match self.request(Request::Publish { files: batch.to_vec() }).await? {
                Response::Published { .. } => {}
                _ => return Err(IndexError::Unexpected),
            }
        }
        Ok(())
    }

    /// Unpublishes a hash now, or after the next join if the index is unreachable.
    pub async fn unpublish(&self, hash: Hash) -> Result<(), IndexError> {
        match self.request(Request::Unpublish { hash }).await {
            Err(IndexError::Unreachable(e)) => {
                self.inner.pending_unpublish.lock().expect("pending lock").insert(hash);
                Err(IndexError::Unreachable(e))
            }
            other => other.map(|_| ()),
        }
    }

    pub async fn leave(&self) -> Result<(), IndexError> {
        self.request(Request::Leave).await.map(|_| ())
    }

    async fn flush_pending_unpublish(&self) {
        let pending: Vec<Hash> = std::mem::take(&mut *self.inner.pending_unpublish.lock().expect("pending lock")).into_iter().collect();
        for hash in pending {
            if let Err(e @ IndexError::Unreachable(_)) = self.unpublish(hash).await {
                debug!("unpublish of {hash} postponed again: {e}");
            }
        }
    }

    /// Keeps the membership alive until `cancel` fires. `first` learns the
    /// outcome of the first join attempt, so `peernet up` can fail fast on a
    /// wrong ticket or a taken nickname. `neighbors` is read whenever
    /// [`Self::neighbours_changed`] rings.
    pub async fn run_session(
        self,
        nickname: watch::Receiver<String>,
        files: impl Fn() -> Vec<FileEntry> + Send + 'static,
        links: impl Fn() -> Vec<LinkReport> + Send + 'static,
        first: oneshot::Sender<Result<(), IndexError>>,
        cancel: CancellationToken,
    ) {
        let neighbors = || links().iter().map(|l| l.id).collect::<Vec<EndpointId>>();
        let mut session = Session::new(StdRng::from_rng(&mut rand::rng()));
        let start = tokio::time::Instant::now();
        let mut first = Some(first);
        let mut timer: Option<tokio::time::Instant> = None;
        let mut events = VecDeque::from([session::Event::NeighboursChanged(neighbors()), session::Event::Start]);
        loop {
            while let Some(event) = events.pop_front() {
                // Each call re-arms the one timer, or leaves none.
                timer = None;
                for action in session.handle(event, start.elapsed()) {
                    match action {
                        session::Action::SetTimer(at) => timer = Some(start + at),
                        session::Action::Status(status) => self.set_status(status),
                        session::Action::FirstOutcome(outcome) => {
                            if let Some(tx) = first.take() {
                                tx.send(outcome).ok();
                            }
                        }
                        io => {
                            let outcome = tokio::select! {
                                _ = cancel.cancelled() => return,
                                outcome = self.perform(io, &nickname, &files, &links) => outcome,
                            };
                            events.extend(outcome);
                        }
                    }
                }
            }
            let fire = async {
                match timer {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = fire => events.push_back(session::Event::Timer),
                _ = self.inner.neighbours_changed.notified() => events.push_back(session::Event::NeighboursChanged(neighbors())),
            }
        }
    }

    /// Does what the session asked and says how it went.
    async fn perform(
        &self,
        action: session::Action<IndexError>,
        nickname: &watch::Receiver<String>,
        files: &(impl Fn() -> Vec<FileEntry> + Send),
        links: &(impl Fn() -> Vec<LinkReport> + Send),
    ) -> Option<session::Event<IndexError>> {
        let failed = |error: IndexError| session::Event::JoinFailed { refused: matches!(error, IndexError::Refused { .. }), error };
        Some(match action {
            session::Action::Join => {
                let nick = nickname.borrow().clone();
                match self.join_for_timing(&nick).await {
                    Ok(t) => session::Event::Joined { heartbeat: t.heartbeat, lease_ttl: t.lease_ttl },
                    Err(e) => failed(e),
                }
            }
            session::Action::PublishAll => {
                self.flush_pending_unpublish().await;
                match self.publish(&files()).await {
                    Ok(()) => session::Event::Published,
                    Err(e) => failed(e),
                }
            }
            // The links now (the session's copy may be a moment old), with their paths.
            session::Action::Heartbeat { .. } => match self.request(Request::HeartbeatLinks { links: links() }).await {
                Ok(_) => session::Event::HeartbeatOk,
                Err(error) => {
                    info!("heartbeat failed, re-joining: {error}");
                    session::Event::HeartbeatFailed { error }
                }
            },
            session::Action::SetTimer(_) | session::Action::Status(_) | session::Action::FirstOutcome(_) => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("{0}")]
    Frame(#[from] peernet_index::frame_io::FrameIoError),
    #[error("{0}")]
    Connection(#[from] ConnectionError),
    #[error("{0}")]
    Other(String),
}

/// The version-1 form of a version-2 request, and whether it asked for the
/// link map (whose version-1 answer is a topology).
fn downgrade(request: Request) -> (Request, bool) {
    match request {
        Request::HeartbeatLinks { links } => (Request::Heartbeat { neighbors: links.iter().map(|l| l.id).collect() }, false),
        Request::LinkMap => (Request::Topology, true),
        other => (other, false),
    }
}

async fn exchange(conn: &Connection, request: &Request) -> Result<Response, ExchangeError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, request, MAX_REQUEST_FRAME).await?;
    send.finish().map_err(|e| ExchangeError::Other(e.to_string()))?;
    Ok(read_frame(&mut recv, MAX_RESPONSE_FRAME).await?)
}

/// Turns a failed exchange into one sentence, using the index's close reason
/// when it closed the connection on purpose.
fn describe_failure(conn: &Connection, e: ExchangeError) -> IndexError {
    if let Some(ConnectionError::ApplicationClosed(close)) = conn.close_reason() {
        let reason = String::from_utf8_lossy(&close.reason).to_string();
        let code = close.error_code.into_inner();
        if code == close_code::SHUTDOWN as u64 {
            return IndexError::Unreachable("the index is shutting down".into());
        }
        // Busy is not a refusal: try again later, as for an index that
        // does not answer.
        if code == close_code::BUSY as u64 || code == close_code::JOIN_TIMEOUT as u64 {
            return IndexError::Unreachable(format!("{BUSY_PREFIX}: {reason}"));
        }
        return IndexError::Refused { code: ErrorCode::InvalidRequest, message: format!("the index closed the connection: {reason}") };
    }
    IndexError::Unreachable(e.to_string())
}
