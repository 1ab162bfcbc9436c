//! Request handling for the index, independent of sockets: `(caller,
//! request, now) -> response`. The QUIC side ([`crate::protocol`]) only
//! moves frames; everything a request means is decided here, so it is tested
//! with plain values.

use std::{
    collections::{HashMap, HashSet},
    sync::{mpsc, Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use iroh::EndpointId;
use peernet_proto::{
    index::{ErrorCode, Join, LinkMap, LinkReport, LinkedPeer, Request, Response, Topology, TopologyPeer},
    key::NetworkKey,
    limits::{MAX_ADDRS_PER_PEER, MAX_FILES_PER_PUBLISH, MAX_QUERY_BYTES, MAX_REFERRAL, MAX_RELAY_URL_BYTES, MAX_SEARCH_LIMIT},
    names::{validate_file_name, validate_nickname},
};

use crate::{
    catalog::Catalog,
    metrics::IndexMetrics,
    store::{self, PeerRecord, Store, StoreError},
    Config,
};
use tokio::sync::oneshot;

/// Links kept of one heartbeat (an overlay's active view is far smaller).
const MAX_LINKS: usize = MAX_REFERRAL as usize * 4;

/// A request waiting for the next group commit, with where its answer goes.
struct Job {
    from: EndpointId,
    request: Request,
    now: u64,
    answer: oneshot::Sender<Response>,
}

/// At most this many requests share one transaction, so that the first of
/// a batch is not kept waiting behind an unbounded queue.
pub const MAX_BATCH: usize = 256;

/// How often the store thread recounts the online peers for the metrics.
const ONLINE_GAUGE_PERIOD: Duration = Duration::from_secs(1);
/// How often the store thread forgets peers whose lease ran out more than
/// a lease ago ([`Store::purge_expired`]), and how many at most each time.
const PURGE_PERIOD: Duration = Duration::from_secs(1);
const PURGE_BATCH: usize = 256;

/// The index's request handler. Requests that change something go through
/// a channel to one thread that owns the database and handles everything
/// waiting in one transaction (group commit): one disk sync for many
/// requests, and still no answer before its change is on disk. A dedicated
/// thread rather than a blocking task per request: under load the thread
/// never sleeps between batches, so requests cost no thread hand-offs of
/// their own. Requests that only read are answered at once, by the
/// caller, from the catalog of what is committed ([`crate::catalog`]), so
/// they never wait for a batch.
#[derive(Debug)]
pub struct Service {
    logic: Arc<Logic>,
    /// Taken on drop: closing the queue is what ends the store thread.
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Service {
    /// Ends the store thread and waits for it, so that nothing touches the
    /// database once the service is gone (the batch in progress commits).
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the index store thread panicked");
            }
        }
    }
}

/// What a request means, given the store: everything the store thread needs.
#[derive(Debug)]
struct Logic {
    store: Mutex<Store>,
    /// What is committed, answering every read.
    catalog: Arc<RwLock<Catalog>>,
    key: NetworkKey,
    me: EndpointId,
    config: Config,
    /// The paths of each peer's links, from its last version-2 heartbeat.
    /// They change by the second and mean nothing after a restart, so they
    /// stay in memory; the links themselves are stored with the lease.
    paths: Mutex<HashMap<EndpointId, Vec<LinkReport>>>,
    metrics: Arc<IndexMetrics>,
}

impl Service {
    /// Starts the store thread; it ends, and is joined, when the service is
    /// dropped.
    pub fn new(store: Store, key: NetworkKey, me: EndpointId, config: Config) -> Self {
        let catalog = store.shared_catalog();
        let logic =
            Arc::new(Logic { store: Mutex::new(store), catalog, key, me, config, paths: Default::default(), metrics: Default::default() });
        let (jobs, queue) = mpsc::channel();
        let worker = logic.clone();
        let thread = std::thread::Builder::new()
            .name("index-store".into())
            .spawn(move || worker.serve(queue))
            .expect("the index store thread could not start");
        Self { logic, jobs: Some(jobs), thread: Some(thread) }
    }

    pub fn config(&self) -> &Config {
        &self.logic.config
    }

    pub fn id(&self) -> EndpointId {
        self.logic.me
    }

    /// What the index counts, for `--metrics`.
    pub fn metrics(&self) -> &Arc<IndexMetrics> {
        &self.logic.metrics
    }

    /// Whether `id` is a member whose lease runs now (or the index
    /// itself): its connections come from the members' pool.
    pub fn is_joined(&self, id: &EndpointId, now: u64) -> bool {
        *id == self.logic.me || self.logic.catalog().has_lease(id, now)
    }

    /// Online peers with their reported neighbours (for the map).
    pub fn online_peers(&self, now: u64) -> Vec<PeerRecord> {
        self.logic.catalog().online_peers(now)
    }

    /// Handles one request from the authenticated key `from`, answering
    /// only after what it changed is committed.
    pub async fn call(&self, from: EndpointId, request: Request, now: u64) -> Response {
        let (kind, started) = (request.kind(), Instant::now());
        let response = match self.submit(from, request, now) {
            Ok(answered) => answered,
            Err(Some(rx)) => rx.await.unwrap_or_else(|_| stopped()),
            Err(None) => stopped(),
        };
        self.logic.metrics.answered(kind, started.elapsed().as_secs_f64());
        response
    }

    /// [`Service::call`] for callers outside an async runtime (tests, tools).
    pub fn handle(&self, from: EndpointId, request: Request, now: u64) -> Response {
        match self.submit(from, request, now) {
            Ok(answered) => answered,
            Err(Some(rx)) => rx.blocking_recv().unwrap_or_else(|_| stopped()),
            Err(None) => stopped(),
        }
    }

    /// Answers a request that only reads at once, from the catalog; queues
    /// any other for the store thread (`Err(None)` if that thread is gone).
    fn submit(&self, from: EndpointId, request: Request, now: u64) -> Result<Response, Option<oneshot::Receiver<Response>>> {
        if only_reads(&request) {
            return Ok(self.logic.read(from, request, now));
        }
        let (answer, rx) = oneshot::channel();
        let job = Job { from, request, now, answer };
        Err(self.jobs.as_ref().and_then(|jobs| jobs.send(job).ok()).map(|_| rx))
    }
}

/// Whether `request` only reads, so the catalog answers it.
fn only_reads(request: &Request) -> bool {
    matches!(request, Request::Search { .. } | Request::Online { .. } | Request::Referral { .. } | Request::Topology | Request::LinkMap)
}

/// The answer when the store thread is gone (it only ends on a panic or at
/// shutdown).
fn stopped() -> Response {
    Response::error(ErrorCode::Internal, "the index is shutting down or failed; try again")
}

impl Logic {
    fn paths(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, Vec<LinkReport>>> {
        self.paths.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        store::read(&self.catalog)
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock leaves SQLite consistent (the
        // transaction rolls back), so the poisoned guard is safe to reuse.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store thread: waits for a request, takes whatever else arrived
    /// meanwhile (up to [`MAX_BATCH`]) and handles them in one transaction.
    fn serve(&self, queue: mpsc::Receiver<Job>) {
        let mut counted_at: Option<Instant> = None;
        let mut purged_at = Instant::now();
        loop {
            if purged_at.elapsed() >= PURGE_PERIOD {
                purged_at = Instant::now();
                self.purge(crate::now_ms());
            }
            // Leases run out silently: an idle index recounts once a second.
            let first = match queue.recv_timeout(ONLINE_GAUGE_PERIOD) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.count_online(crate::now_ms());
                    counted_at = Some(Instant::now());
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            batch.extend(queue.try_iter().take(MAX_BATCH - 1));
            self.metrics.batch_size.observe(batch.len() as f64);
            let now = batch[0].now;
            let membership_changed = batch.iter().any(|j| matches!(j.request, Request::Join(_) | Request::Leave));
            self.run_batch(&mut self.store(), batch);
            // Counting online peers is a query of its own: after a join or
            // leave, otherwise at most once a second.
            if membership_changed || counted_at.is_none_or(|t| t.elapsed() >= ONLINE_GAUGE_PERIOD) {
                counted_at = Some(Instant::now());
                self.count_online(now);
            }
        }
    }

    /// Forgets peers gone for more than a lease: the database and the
    /// catalog hold the peers of now, not every key that ever joined.
    fn purge(&self, now: u64) {
        let before = now.saturating_sub(self.config.lease_ttl.as_millis() as u64);
        match self.store().purge_expired(before, PURGE_BATCH) {
            Ok(0) => {}
            Ok(n) => {
                self.metrics.peers_forgotten.inc_by(n as u64);
                let catalog = self.catalog();
                self.paths().retain(|id, _| catalog.is_member(id));
            }
            Err(e) => tracing::warn!("could not forget expired peers: {e}"),
        }
    }

    fn count_online(&self, now: u64) {
        let n = self.catalog().online_count(now);
        self.metrics.peers_online.set(n as i64);
    }

    fn run_batch(&self, store: &mut Store, batch: Vec<Job>) {
        if let Err(e) = store.begin_batch() {
            let failed = internal(e);
            for job in batch {
                job.answer.send(failed.clone()).ok();
            }
            return;
        }
        let answers: Vec<_> = batch.into_iter().map(|j| (self.handle_one(store, j.from, j.request, j.now), j.answer)).collect();
        // Nothing is answered before the commit; if it fails, nobody in the
        // batch is told their change was kept.
        let failed = store.commit_batch().err().map(|e| {
            store.rollback_batch();
            internal(e)
        });
        for (response, answer) in answers {
            answer.send(failed.clone().unwrap_or(response)).ok();
        }
    }

    /// Answers a request that may change something, on the store thread,
    /// inside its batch.
    fn handle_one(&self, store: &mut Store, from: EndpointId, request: Request, now: u64) -> Response {
        if let Request::Join(join) = request {
            return self.join(store, from, join, now);
        }
        // The batch's own joins count: the database, not the catalog.
        if let Some(refusal) = self.refuse_outsider(|| store.is_member(&from), from) {
            return refusal;
        }
        let ttl = self.config.lease_ttl.as_millis() as u64;
        let outcome = match request {
            Request::Heartbeat { mut neighbors } => {
                neighbors.truncate(MAX_LINKS);
                self.paths().remove(&from);
                store.heartbeat(&from, &neighbors, now, ttl).map(|_| Response::Ok)
            }
            Request::HeartbeatLinks { mut links } => {
                links.truncate(MAX_LINKS);
                let neighbors: Vec<EndpointId> = links.iter().map(|l| l.id).collect();
                let renewed = store.heartbeat(&from, &neighbors, now, ttl).map(|_| Response::Ok);
                if renewed.is_ok() {
                    self.paths().insert(from, links);
                }
                renewed
            }
            Request::Publish { files } => {
                if files.len() > MAX_FILES_PER_PUBLISH {
                    return Response::error(
                        ErrorCode::LimitExceeded,
                        format!("one publish carries at most {MAX_FILES_PER_PUBLISH} files; send them in batches"),
                    );
                }
                if let Some((f, e)) = files.iter().find_map(|f| validate_file_name(&f.name).err().map(|e| (f, e))) {
                    return Response::error(ErrorCode::InvalidFileName, format!("cannot publish {:?}: {e}", f.name));
                }
                store.publish(&from, &files, now).map(|count| Response::Published { count })
            }
            Request::Unpublish { hash } => store.unpublish(&from, &hash).map(|_| Response::Ok),
            Request::Rename { nickname } => {
                if let Err(e) = validate_nickname(&nickname) {
                    return Response::error(ErrorCode::InvalidNickname, e.to_string());
                }
                store.rename(&from, &nickname, now).map(|_| Response::Ok)
            }
            Request::Leave => {
                self.paths().remove(&from);
                store.leave(&from).map(|_| Response::Ok)
            }
            request @ (Request::Search { .. }
            | Request::Online { .. }
            | Request::Referral { .. }
            | Request::Topology
            | Request::LinkMap) => return self.read(from, request, now),
            Request::Join(_) => unreachable!("handled above"),
        };
        outcome.unwrap_or_else(store_error)
    }

    /// The refusal for a key that has not joined; `None` for a member and
    /// for the index itself (a hosting peer's overlay may ask anything).
    /// Checked before anything else, so that a non-member learns nothing
    /// about the network's contents.
    fn refuse_outsider(&self, is_member: impl FnOnce() -> Result<bool, StoreError>, from: EndpointId) -> Option<Response> {
        if from == self.me {
            return None;
        }
        match is_member() {
            Ok(true) => None,
            Ok(false) => Some(Response::error(ErrorCode::NotJoined, "this peer has not joined the network yet; join with a ticket first")),
            Err(e) => Some(internal(e)),
        }
    }

    /// Answers a request that only reads ([`only_reads`]) from the catalog.
    fn read(&self, from: EndpointId, request: Request, now: u64) -> Response {
        let catalog = self.catalog();
        if let Some(refusal) = self.refuse_outsider(|| Ok(catalog.is_member(&from)), from) {
            return refusal;
        }
        match request {
            Request::Search { query, limit } => {
                if query.len() > MAX_QUERY_BYTES {
                    return Response::error(ErrorCode::LimitExceeded, format!("a search query has at most {MAX_QUERY_BYTES} bytes"));
                }
                let limit = limit.clamp(1, MAX_SEARCH_LIMIT);
                Response::Hits(catalog.search(&query, limit, now))
            }
            Request::Online { page } => {
                let (peers, next_page) = catalog.online_page(page, now);
                Response::Online { peers, next_page }
            }
            Request::Referral { k } => Response::Peers(catalog.referral(&from, k.min(MAX_REFERRAL), now)),
            Request::Topology => Response::Topology(Topology {
                root: self.me,
                peers: catalog.online_peers(now).into_iter().map(|p| TopologyPeer { peer: p.info, neighbors: p.neighbors }).collect(),
            }),
            Request::LinkMap => {
                let peers = catalog.online_peers(now);
                drop(catalog);
                let mut paths = self.paths();
                // Forget the paths of peers whose lease ran out.
                let online: HashSet<EndpointId> = peers.iter().map(|p| p.info.addr.id).collect();
                paths.retain(|id, _| online.contains(id));
                let peers = peers
                    .into_iter()
                    .map(|p| {
                        let links = match paths.get(&p.info.addr.id) {
                            Some(links) => links.clone(),
                            None => p.neighbors.into_iter().map(LinkReport::unknown).collect(),
                        };
                        LinkedPeer { peer: p.info, links }
                    })
                    .collect();
                Response::LinkMap(LinkMap { root: self.me, peers })
            }
            other => Response::error(ErrorCode::Internal, format!("a {} request does not only read", other.kind())),
        }
    }

    fn join(&self, store: &mut Store, from: EndpointId, join: Join, now: u64) -> Response {
        if !self.key.verify_join(&from, &self.me, &join.proof) {
            return Response::error(
                ErrorCode::NotMember,
                "not a member of this network: the ticket's network key does not match; ask for a current ticket",
            );
        }
        if join.addr.id != from {
            return Response::error(ErrorCode::InvalidRequest, "the advertised address belongs to another key");
        }
        if join.addr.ip.len() > MAX_ADDRS_PER_PEER {
            return Response::error(ErrorCode::LimitExceeded, format!("a peer advertises at most {MAX_ADDRS_PER_PEER} addresses"));
        }
        if let Some(relay) = join.addr.relay.as_ref().filter(|r| r.len() > MAX_RELAY_URL_BYTES) {
            return Response::error(
                ErrorCode::LimitExceeded,
                format!("a relay URL has at most {MAX_RELAY_URL_BYTES} bytes; this one has {}: name a shorter one", relay.len()),
            );
        }
        if let Err(e) = validate_nickname(&join.nickname) {
            return Response::error(ErrorCode::InvalidNickname, e.to_string());
        }
        let ttl = self.config.lease_ttl.as_millis() as u64;
        match store.join(&join.addr, &join.nickname, now, ttl) {
            Ok(()) => Response::Joined { heartbeat_ms: self.config.heartbeat.as_millis() as u64, lease_ttl_ms: ttl },
            Err(e) => store_error(e),
        }
    }
}

fn internal(e: StoreError) -> Response {
    tracing::error!("index store failed: {e}");
    Response::error(ErrorCode::Internal, "the index could not complete the request; try again")
}

fn store_error(e: StoreError) -> Response {
    let code = match &e {
        StoreError::NotJoined => ErrorCode::NotJoined,
        StoreError::NicknameTaken(_) => ErrorCode::NicknameTaken,
        StoreError::TooManyFiles => ErrorCode::LimitExceeded,
        StoreError::NotOwner => ErrorCode::NotOwner,
        StoreError::NotFound => ErrorCode::NotFound,
        StoreError::Sqlite(_) => return internal(e),
    };
    let message = match &e {
        StoreError::NicknameTaken(n) => format!("the nickname '{n}' is taken by another online peer; choose another with --nick"),
        other => other.to_string(),
    };
    Response::error(code, message)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use iroh::SecretKey;
    use peernet_proto::index::{FileEntry, PeerAddr};
    use peernet_proto::Hash;

    use super::*;

    const TTL: u64 = 3_000;

    struct World {
        service: Service,
        key: NetworkKey,
        index: EndpointId,
    }

    fn world() -> World {
        let key = NetworkKey::generate();
        let index = SecretKey::generate().public();
        let config = Config { heartbeat: Duration::from_secs(1), lease_ttl: Duration::from_millis(TTL), ..Config::default() };
        World { service: Service::new(Store::open_in_memory().unwrap(), key, index, config), key, index }
    }

    fn peer(seed: u8) -> EndpointId {
        SecretKey::from_bytes(&[seed; 32]).public()
    }

    fn file(name: &str) -> FileEntry {
        FileEntry { name: name.into(), size: name.len() as u64, hash: Hash::new(name.as_bytes()), kind: Default::default() }
    }

    impl World {
        fn join(&self, id: EndpointId, nick: &str, now: u64) -> Response {
            let proof = self.key.join_proof(&id, &self.index);
            let addr = PeerAddr { id, ip: vec!["127.0.0.1:1".parse().unwrap()], relay: None };
            self.service.handle(id, Request::Join(Join { nickname: nick.into(), proof, addr }), now)
        }
        fn publish(&self, id: EndpointId, files: &[FileEntry], now: u64) -> Response {
            self.service.handle(id, Request::Publish { files: files.to_vec() }, now)
        }
        fn search(&self, id: EndpointId, q: &str, now: u64) -> Vec<peernet_proto::index::Hit> {
            match self.service.handle(id, Request::Search { query: q.into(), limit: 10 }, now) {
                Response::Hits(h) => h,
                other => panic!("search failed: {other:?}"),
            }
        }
    }

    /// A store on disk at `db` that `id` has joined as "a".
    fn joined_store(db: &std::path::Path, id: EndpointId) -> Store {
        let mut s = Store::open(db).unwrap();
        s.join(&PeerAddr { id, ip: vec![], relay: None }, "a", 0, TTL).unwrap();
        s
    }

    fn code(r: &Response) -> Option<ErrorCode> {
        match r {
            Response::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    #[test]
    fn wrong_network_key_is_not_a_member() {
        let w = world();
        let a = peer(1);
        let bad = NetworkKey::generate().join_proof(&a, &w.index);
        let addr = PeerAddr { id: a, ip: vec![], relay: None };
        let r = w.service.handle(a, Request::Join(Join { nickname: "a".into(), proof: bad, addr }), 0);
        assert_eq!(code(&r), Some(ErrorCode::NotMember));
        // And without joining nothing else is answered.
        let r = w.service.handle(a, Request::Search { query: "x".into(), limit: 5 }, 0);
        assert_eq!(code(&r), Some(ErrorCode::NotJoined));
    }

    #[test]
    fn a_peer_cannot_advertise_another_key() {
        let w = world();
        let (a, b) = (peer(1), peer(2));
        let proof = w.key.join_proof(&a, &w.index);
        let addr = PeerAddr { id: b, ip: vec![], relay: None };
        let r = w.service.handle(a, Request::Join(Join { nickname: "a".into(), proof, addr }), 0);
        assert_eq!(code(&r), Some(ErrorCode::InvalidRequest));
    }

    #[test]
    fn nicknames_are_unique_among_online_peers() {
        let w = world();
        assert!(matches!(w.join(peer(1), "alice", 0), Response::Joined { .. }));
        assert_eq!(code(&w.join(peer(2), "Alice", 10)), Some(ErrorCode::NicknameTaken));
        assert_eq!(code(&w.join(peer(2), "", 10)), Some(ErrorCode::InvalidNickname));
        // The same key may re-join under its own name.
        assert!(matches!(w.join(peer(1), "alice", 20), Response::Joined { .. }));
        // Once alice's lease has run out, the name is free.
        assert!(matches!(w.join(peer(2), "alice", 20 + TTL + 1), Response::Joined { .. }));
    }

    #[test]
    fn registrations_belong_to_their_key() {
        let w = world();
        let (a, b) = (peer(1), peer(2));
        w.join(a, "a", 0);
        w.join(b, "b", 0);
        let f = file("song.ogg");
        assert_eq!(w.publish(a, std::slice::from_ref(&f), 1), Response::Published { count: 1 });
        let r = w.service.handle(b, Request::Unpublish { hash: f.hash }, 2);
        assert_eq!(code(&r), Some(ErrorCode::NotOwner));
        let r = w.service.handle(b, Request::Unpublish { hash: Hash::new(b"nothing") }, 2);
        assert_eq!(code(&r), Some(ErrorCode::NotFound));
        assert_eq!(w.search(b, "song", 3).len(), 1, "b's attempt changed nothing");
        assert_eq!(w.service.handle(a, Request::Unpublish { hash: f.hash }, 4), Response::Ok);
        assert!(w.search(b, "song", 5).is_empty());
    }

    #[test]
    fn publishing_twice_is_idempotent_and_sources_multiply() {
        let w = world();
        let (a, b) = (peer(1), peer(2));
        w.join(a, "a", 0);
        w.join(b, "b", 0);
        let f = file("movie.mkv");
        w.publish(a, std::slice::from_ref(&f), 10);
        w.publish(a, std::slice::from_ref(&f), 20);
        let hits = w.search(a, "movie", 30);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].providers.len(), 1);
        assert_eq!(hits[0].providers[0].registered_at, 10, "a repeat keeps the first registration");
        w.publish(b, std::slice::from_ref(&f), 40);
        let hits = w.search(a, "movie", 50);
        let nicks: Vec<_> = hits[0].providers.iter().map(|p| p.peer.nickname.as_str()).collect();
        assert_eq!(nicks, ["b", "a"], "most recent registration first");
    }

    #[test]
    fn search_by_words_prefixes_case_and_hash() {
        let w = world();
        let a = peer(1);
        w.join(a, "a", 0);
        let files = [file("Holiday-Photos_2024.tar.gz"), file("holiday notes.txt"), file("taxes.pdf")];
        w.publish(a, &files, 1);
        let names = |q: &str| {
            let mut v: Vec<String> = w.search(a, q, 2).into_iter().map(|h| h.name).collect();
            v.sort();
            v
        };
        assert_eq!(names("holiday"), ["Holiday-Photos_2024.tar.gz", "holiday notes.txt"]);
        assert_eq!(names("HOLI"), names("holiday"), "prefix, any case");
        assert_eq!(names("holiday photos"), ["Holiday-Photos_2024.tar.gz"], "all words must match");
        assert_eq!(names("2024"), ["Holiday-Photos_2024.tar.gz"]);
        assert!(names("nothing").is_empty());
        assert!(names("\"*)(").is_empty(), "FTS syntax in a query is just text");
        let hex = files[2].hash.to_hex();
        assert_eq!(names(&hex), ["taxes.pdf"], "full hash");
        assert_eq!(names(&hex[..10].to_uppercase()), ["taxes.pdf"], "hash prefix");
    }

    #[test]
    fn expired_leases_hide_files_until_the_next_heartbeat() {
        let w = world();
        let (a, b) = (peer(1), peer(2));
        w.join(a, "a", 0);
        w.join(b, "b", 0);
        w.publish(a, &[file("report.pdf")], 1);
        let later = TTL + 1;
        w.service.handle(b, Request::Heartbeat { neighbors: vec![] }, later - 10);
        assert!(w.search(b, "report", later).is_empty());
        let Response::Online { peers, .. } = w.service.handle(b, Request::Online { page: 0 }, later) else { panic!() };
        assert_eq!(peers.len(), 1, "only b is online");
        assert_eq!(w.service.handle(a, Request::Heartbeat { neighbors: vec![] }, later + 1), Response::Ok);
        assert_eq!(w.search(b, "report", later + 2).len(), 1, "back without publishing again");
    }

    #[test]
    fn the_link_map_carries_the_paths_peers_reported() {
        use peernet_proto::topo::{PathInfo, Via};
        let w = world();
        let (a, b, c) = (peer(1), peer(2), peer(3));
        for (id, nick) in [(a, "a"), (b, "b"), (c, "c")] {
            w.join(id, nick, 0);
        }
        let relayed = Some(PathInfo { via: Via::Relayed, rtt_ms: 80 });
        let links = vec![LinkReport { id: b, path: relayed }, LinkReport { id: c, path: None }];
        assert_eq!(w.service.handle(a, Request::HeartbeatLinks { links: links.clone() }, 1), Response::Ok);
        assert_eq!(w.service.handle(b, Request::Heartbeat { neighbors: vec![a] }, 1), Response::Ok);
        let Response::LinkMap(map) = w.service.handle(c, Request::LinkMap, 2) else { panic!("a link map") };
        let of = |id| map.peers.iter().find(|p| p.peer.addr.id == id).unwrap().links.clone();
        assert_eq!(of(a), links);
        assert_eq!(of(b), vec![LinkReport { id: a, path: None }], "a version-1 heartbeat has links without paths");
        // The old question still gets the old answer.
        let Response::Topology(t) = w.service.handle(c, Request::Topology, 2) else { panic!("a topology") };
        assert_eq!(t.peers.iter().find(|p| p.peer.addr.id == a).unwrap().neighbors, vec![b, c]);
        // A version-1 heartbeat forgets the paths reported before it.
        w.service.handle(a, Request::Heartbeat { neighbors: vec![b] }, 3);
        let Response::LinkMap(map) = w.service.handle(c, Request::LinkMap, 4) else { panic!("a link map") };
        assert_eq!(map.peers.iter().find(|p| p.peer.addr.id == a).unwrap().links, vec![LinkReport { id: b, path: None }]);
    }

    #[test]
    fn leave_removes_everything_at_once() {
        let w = world();
        let (a, b) = (peer(1), peer(2));
        w.join(a, "a", 0);
        w.join(b, "b", 0);
        w.publish(a, &[file("one"), file("two")], 1);
        assert_eq!(w.service.handle(a, Request::Leave, 2), Response::Ok);
        assert!(w.search(b, "one", 3).is_empty());
        assert!(w.search(b, "two", 3).is_empty());
        let Response::Peers(p) = w.service.handle(b, Request::Referral { k: 5 }, 3) else { panic!() };
        assert!(p.is_empty());
        // A heartbeat that was on its way does not bring the peer back.
        let late = w.service.handle(a, Request::Heartbeat { neighbors: vec![] }, 4);
        assert_eq!(code(&late), Some(ErrorCode::NotJoined));
        let Response::Peers(p) = w.service.handle(b, Request::Referral { k: 5 }, 5) else { panic!() };
        assert!(p.is_empty(), "still gone after the late heartbeat");
        // Joining again does.
        assert!(matches!(w.join(a, "a", 6), Response::Joined { .. }));
        assert_eq!(w.service.handle(a, Request::Heartbeat { neighbors: vec![] }, 7), Response::Ok);
    }

    #[test]
    fn referral_excludes_the_caller_and_caps_k() {
        let w = world();
        for i in 1..=40u8 {
            w.join(peer(i), &format!("p{i}"), 0);
        }
        let Response::Peers(p) = w.service.handle(peer(1), Request::Referral { k: 1000 }, 1) else { panic!() };
        assert_eq!(p.len(), peernet_proto::limits::MAX_REFERRAL as usize);
        assert!(p.iter().all(|x| x.addr.id != peer(1)));
    }

    #[test]
    fn online_pages_cover_every_peer_once() {
        let w = world();
        for i in 1..=10u8 {
            w.join(peer(i), &format!("p{i}"), i as u64);
        }
        let mut seen = Vec::new();
        let mut page = Some(0);
        while let Some(p) = page {
            let Response::Online { peers, next_page } = w.service.handle(peer(1), Request::Online { page: p }, 20) else { panic!() };
            seen.extend(peers.into_iter().map(|p| p.peer.nickname));
            page = next_page;
        }
        assert_eq!(seen.len(), 10);
        seen.dedup();
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn limits_are_enforced_with_clear_errors() {
        let w = world();
        let a = peer(1);
        w.join(a, "a", 0);
        let too_many: Vec<_> = (0..=MAX_FILES_PER_PUBLISH).map(|i| file(&format!("f{i}"))).collect();
        assert_eq!(code(&w.publish(a, &too_many, 1)), Some(ErrorCode::LimitExceeded));
        assert_eq!(code(&w.publish(a, &[file("../etc/passwd")], 1)), Some(ErrorCode::InvalidFileName));
        let per_peer = peernet_proto::limits::MAX_FILES_PER_PEER;
        for chunk in (0..per_peer).collect::<Vec<_>>().chunks(MAX_FILES_PER_PUBLISH) {
            let files: Vec<_> = chunk.iter().map(|i| file(&format!("g{i}"))).collect();
            assert!(matches!(w.publish(a, &files, 2), Response::Published { .. }));
        }
        assert_eq!(code(&w.publish(a, &[file("one-too-many")], 3)), Some(ErrorCode::LimitExceeded));
        // Unsharing one makes room for one.
        assert_eq!(w.service.handle(a, Request::Unpublish { hash: file("g0").hash }, 3), Response::Ok);
        assert!(matches!(w.publish(a, &[file("one-more")], 3), Response::Published { count: 1 }));
        assert_eq!(code(&w.publish(a, &[file("one-too-many")], 3)), Some(ErrorCode::LimitExceeded));
        let long = "x".repeat(MAX_QUERY_BYTES + 1);
        let r = w.service.handle(a, Request::Search { query: long, limit: 1 }, 4);
        assert_eq!(code(&r), Some(ErrorCode::LimitExceeded));
    }

    #[test]
    fn registrations_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let a = peer(1);
        {
            let mut s = joined_store(&db, a);
            s.publish(&a, &[file("kept.bin")], 1).unwrap();
        }
        let s = Store::open(&db).unwrap();
        assert_eq!(s.search("kept", 10, 2).unwrap().len(), 1);
    }

    /// A batch's changes reach the catalog in order: a file removed and
    /// another added in the same batch (which may reuse its row id) leaves
    /// exactly the new file's words searchable. Outside a batch a change is
    /// searchable at once, and everything is found after reopening.
    #[test]
    fn changes_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let a = peer(1);
        {
            let mut s = joined_store(&db, a);
            s.begin_batch().unwrap();
            s.publish(&a, &[file("holiday-beach.jpg")], 1).unwrap();
            s.unpublish(&a, &file("holiday-beach.jpg").hash).unwrap();
            s.publish(&a, &[file("holiday-mountain.jpg")], 1).unwrap();
            s.commit_batch().unwrap();
            assert_eq!(s.search("holiday", 10, 2).unwrap().len(), 1);
            assert!(s.search("beach", 10, 2).unwrap().is_empty());
            s.publish(&a, &[file("notes.txt")], 3).unwrap();
            assert_eq!(s.search("notes", 10, 4).unwrap().len(), 1);
        }
        let s = Store::open(&db).unwrap();
        let hits = s.search("holiday", 10, 4).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].name, "holiday-mountain.jpg");
        assert_eq!(s.search("notes", 10, 4).unwrap().len(), 1, "searchable after the restart too");
    }

    /// A database written before peers had a file count gets one, filled
    /// from its files, so the per-peer limit still holds after the upgrade.
    #[test]
    fn an_older_database_gets_its_file_counts() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let a = peer(1);
        let per_peer = peernet_proto::limits::MAX_FILES_PER_PEER;
        {
            let mut s = joined_store(&db, a);
            let files: Vec<_> = (0..per_peer).map(|i| file(&format!("old{i}"))).collect();
            s.publish(&a, &files, 1).unwrap();
        }
        // What the schema looked like before.
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch(
                "DROP TRIGGER files_count_ai; DROP TRIGGER files_count_ad;
                 ALTER TABLE peers DROP COLUMN file_count;",
            )
            .unwrap();
        let mut s = Store::open(&db).unwrap();
        assert_eq!(s.search("old999", 10, 2).unwrap().len(), 1, "nothing was lost");
        assert!(matches!(s.publish(&a, &[file("new")], 2), Err(StoreError::TooManyFiles)));
        s.unpublish(&a, &file("old0").hash).unwrap();
        s.publish(&a, &[file("new")], 2).unwrap();
    }

    /// Group commit: many callers at once, some of whose requests fail;
    /// each gets its own answer, the failures change nothing, every
    /// acknowledged publish is found by the next search (answered from
    /// the catalog, outside the store thread) and is in the database after
    /// reopening it.
    #[test]
    fn concurrent_requests_are_batched_and_each_answered_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let key = NetworkKey::generate();
        let index = SecretKey::generate().public();
        let config = Config { heartbeat: Duration::from_secs(1), lease_ttl: Duration::from_secs(60), ..Config::default() };
        let w = World { service: Service::new(Store::open(&db).unwrap(), key, index, config), key, index };
        let owner = peer(200);
        w.join(owner, "owner", 0);
        w.publish(owner, &[file("owned.bin")], 0);
        std::thread::scope(|scope| {
            for t in 0..8u8 {
                let w = &w;
                scope.spawn(move || {
                    let me = peer(t + 1);
                    assert!(matches!(w.join(me, &format!("t{t}"), 1), Response::Joined { .. }));
                    for k in 0..20 {
                        let f = file(&format!("t{t}-k{k}z.bin"));
                        assert_eq!(w.publish(me, &[f], 2), Response::Published { count: 1 });
                        // Acknowledged means committed: the catalog has it.
                        assert_eq!(w.search(me, &format!("t{t} k{k}z"), 2).len(), 1, "t{t}'s file {k} right after its publish");
                        // Fails inside the same batches as others' publishes.
                        let r = w.service.handle(me, Request::Unpublish { hash: Hash::new(b"owned.bin") }, 2);
                        assert_eq!(code(&r), Some(ErrorCode::NotOwner));
                    }
                });
            }
        });
        drop(w);
        let s = Store::open(&db).unwrap();
        for t in 0..8 {
            assert_eq!(s.search(&format!("t{t}"), 50, 3).unwrap().len(), 20, "all of t{t}'s files were kept");
        }
        assert_eq!(s.search("owned", 10, 3).unwrap().len(), 1, "the refused unpublishes changed nothing");
    }
}
