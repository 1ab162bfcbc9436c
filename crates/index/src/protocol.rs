//! The QUIC side of the index: accept connections on `peernet/index/1`,
//! read one request frame per stream, answer it through [`Service`].
//!
//! A connection that sends a bad frame is closed with a close code and a
//! reason; nothing else is affected. Each connection has at most
//! [`MAX_STREAMS_PER_CONNECTION`] requests in flight.
//!
//! Who may hold a connection, and for how long: a connection whose key has
//! a lease comes from the members' pool ([`MAX_INDEX_CONNECTIONS`], at most
//! [`MAX_CONNECTIONS_PER_KEY`] per key). Any other connection (a newcomer,
//! a member whose lease ran out, an outsider) comes from a small pool of
//! its own ([`MAX_UNJOINED_CONNECTIONS`], [`MAX_UNJOINED_PER_ADDRESS`] per
//! address or, through the relay, per key) and must join within
//! [`JOIN_DEADLINE`]; once its Join succeeds it moves to the members' pool.
//! So an outsider, with any number of keys, can hold a few newcomer slots
//! for a few seconds at a time, and never a member's slot. Addresses are
//! the ones connections come from (never one a peer claims), IPv6 grouped
//! by /64, since one host can have a whole /64.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use iroh::{
    endpoint::{Connection, VarInt},
    protocol::{AcceptError, ProtocolHandler},
    EndpointId, TransportAddr,
};
use peernet_proto::{
    frame::{self, FrameError},
    index::{close_code, ErrorCode, Request, Response},
    limits::{
        MAX_CONNECTIONS_PER_KEY, MAX_INDEX_CONNECTIONS, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, MAX_STREAMS_PER_CONNECTION,
        MAX_UNJOINED_CONNECTIONS, MAX_UNJOINED_PER_ADDRESS,
    },
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tracing::debug;

use crate::{
    budget::Budget,
    frame_io::{read_frame, FrameIoError},
    metrics::ReasonLabel,
    now_ms,
    service::Service,
};

/// How long the index waits for a whole request frame once a stream is open.
pub const REQUEST_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a connection whose key holds no lease may stay open without a
/// successful Join.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(10);
/// Why a connection's slot was refused or taken back, as counted in
/// `unjoined_closed`.
pub const UNJOINED_CLOSE_REASONS: [&str; 5] = ["key_cap", "members_full", "address_cap", "newcomers_full", "join_deadline"];

#[derive(Debug, Clone)]
pub struct IndexProtocol {
    service: Arc<Service>,
    pools: Arc<Pools>,
    budgets: Arc<Budgets>,
}

/// What one remote key, or one address, may ask of the index.
#[derive(Debug)]
struct Budgets {
    requests: Budget<EndpointId>,
    addresses: Addresses,
}

/// Where a connection comes from, for the limits per address: the IP
/// address its packets come from (IPv6 by /64), or, through the relay, the
/// key the relay authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(std::net::Ipv4Addr),
    V6Prefix(u64),
    Relayed(EndpointId),
}

impl Source {
    pub fn of(ip: Option<IpAddr>, key: EndpointId) -> Source {
        match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => Source::V4(v4),
            Some(IpAddr::V6(v6)) => Source::V6Prefix((v6.to_bits() >> 64) as u64),
            None => Source::Relayed(key),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::V4(ip) => write!(f, "{ip}"),
            Source::V6Prefix(p) => write!(f, "{}/64", std::net::Ipv6Addr::from_bits(u128::from(*p) << 64)),
            Source::Relayed(key) => write!(f, "relayed key {}", key.fmt_short()),
        }
    }
}

/// Concurrent holders per key, each under a cap.
#[derive(Debug)]
struct Tally<K: Hash + Eq + Clone>(Arc<Mutex<HashMap<K, usize>>>);

/// One place in a [`Tally`], given back on drop.
#[derive(Debug)]
struct Held<K: Hash + Eq + Clone> {
    tally: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Tally<K> {
    fn new() -> Self {
        Self(Default::default())
    }

    fn take(&self, key: K, cap: usize) -> Option<Held<K>> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = all.entry(key.clone()).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Held { tally: self.0.clone(), key })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl<K: Hash + Eq + Clone> Drop for Held<K> {
    fn drop(&mut self) {
        let mut all = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = all.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                all.remove(&self.key);
            }
        }
    }
}

/// The index's connection slots: the members' and the newcomers'.
#[derive(Debug)]
struct Pools {
    members: Arc<Semaphore>,
    per_key: Tally<EndpointId>,
    newcomers: Arc<Semaphore>,
    per_source: Tally<Source>,
}

/// The slot a connection holds; dropping it frees the slot.
#[derive(Debug)]
enum Place {
    Member { _slot: OwnedSemaphorePermit, _key: Held<EndpointId> },
    Newcomer { _slot: OwnedSemaphorePermit, _source: Held<Source>, deadline: tokio::time::Instant },
}

impl Pools {
    fn new() -> Self {
        Self {
            members: Arc::new(Semaphore::new(MAX_INDEX_CONNECTIONS)),
            per_key: Tally::new(),
            newcomers: Arc::new(Semaphore::new(MAX_UNJOINED_CONNECTIONS)),
            per_source: Tally::new(),
        }
    }

    /// A member's slot for `key`, or why there is none.
    fn member(&self, key: EndpointId) -> Result<Place, (&'static str, String)> {
        let Some(held) = self.per_key.take(key, MAX_CONNECTIONS_PER_KEY) else {
            return Err((
                "key_cap",
                format!("this key already holds {MAX_CONNECTIONS_PER_KEY} connections to the index; close one and retry"),
            ));
        };
        let Ok(slot) = self.members.clone().try_acquire_owned() else {
            return Err(("members_full", "the index is at its connection limit; try again later".to_string()));
        };
        Ok(Place::Member { _slot: slot, _key: held })
    }

    /// A newcomer's slot for a connection from `source`, or why there is none.
    fn newcomer(&self, source: Source) -> Result<Place, (&'static str, String)> {
        let Some(held) = self.per_source.take(source, MAX_UNJOINED_PER_ADDRESS) else {
            return Err((
                "address_cap",
                format!("{source} already has {MAX_UNJOINED_PER_ADDRESS} connections waiting to join; join over one of them"),
            ));
        };
        let Ok(slot) = self.newcomers.clone().try_acquire_owned() else {
            return Err(("newcomers_full", "the index has too many connections waiting to join; try again in a few seconds".to_string()));
        };
        Ok(Place::Newcomer { _slot: slot, _source: held, deadline: tokio::time::Instant::now() + JOIN_DEADLINE })
    }
}

/// How a request stream ended, for its connection.
enum Ended {
    Answered,
    /// The key joined: the connection may move to the members' pool.
    Joined,
    /// The connection must close, with this code and reason.
    Close(u32, String),
}

impl IndexProtocol {
    pub fn new(service: Arc<Service>) -> Self {
        let config = service.config();
        let budgets =
            Budgets { requests: Budget::new(config.request_rate), addresses: Addresses::new(config.keys_per_address, config.lease_ttl) };
        Self { service, pools: Arc::new(Pools::new()), budgets: Arc::new(budgets) }
    }

    /// Requests refused for coming too fast, and Joins refused because their
    /// address already holds as many keys as allowed.
    pub fn refusals(&self) -> (u64, u64) {
        (self.budgets.requests.refused(), self.budgets.addresses.refused())
    }

    /// Whether `from` (at `source`) may have `request` handled now; the
    /// refusal otherwise. A Join is checked against the keys its address
    /// holds, and counts there only once it succeeds, so an outsider's
    /// refused Joins take no member's place under the cap.
    fn admit(&self, from: EndpointId, source: Source, request: &Request) -> Result<(), Response> {
        if let Err(wait) = self.budgets.requests.allow(&from) {
            self.service.metrics().refused_rate.inc();
            return Err(Response::error(
                ErrorCode::SlowDown,
                format!(
                    "this peer sends the index more than {} requests; slow down and retry in {} ms",
                    self.budgets.requests.rate(),
                    wait.as_millis().max(1)
                ),
            ));
        }
        if matches!(request, Request::Join(_)) && !self.budgets.addresses.has_room(source, from, now_ms()) {
            self.service.metrics().refused_address.inc();
            return Err(Response::error(
                ErrorCode::LimitExceeded,
                format!(
                    "the address {source} already has {} peers registered, the most one address may hold; \
                     join from another address, or ask the index's operator to raise --keys-per-address",
                    self.budgets.addresses.cap
                ),
            ));
        }
        Ok(())
    }

    /// The request handler, for callers in the same process (a peer that
    /// hosts the index cannot dial its own endpoint).
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    fn closed_unjoined(&self, reason: &'static str) {
        self.service.metrics().unjoined_closed.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Reads, admits and answers one request stream.
    async fn serve_stream(
        &self,
        from: EndpointId,
        source: Source,
        observed: Option<std::net::SocketAddr>,
        joined: bool,
        mut send: iroh::endpoint::SendStream,
        mut recv: iroh::endpoint::RecvStream,
    ) -> Ended {
        // A client that opens a stream and never finishes its frame
        // must not hold one of the connection's slots forever.
        let read = tokio::time::timeout(REQUEST_READ_TIMEOUT, read_frame::<Request>(&mut recv, MAX_REQUEST_FRAME));
        let request = match read.await {
            Ok(Ok(Request::Join(mut join))) => {
                if let Some(observed) = observed {
                    join.addr.ip = with_observed(&join.addr.ip, observed);
                }
                Request::Join(join)
            }
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return close_for(e).map_or(Ended::Answered, |(code, reason)| Ended::Close(code, reason)),
            Err(_) => return Ended::Close(close_code::MALFORMED, format!("request frame not received within {REQUEST_READ_TIMEOUT:?}")),
        };
        let kind = request.kind();
        let response = match self.admit(from, source, &request) {
            Ok(()) => self.service.call(from, request, now_ms()).await,
            Err(refusal) => refusal,
        };
        let ended = match &response {
            Response::Joined { .. } => {
                self.budgets.addresses.record(source, from, now_ms());
                Ended::Joined
            }
            _ if joined => {
                self.budgets.addresses.record(source, from, now_ms());
                Ended::Answered
            }
            _ => Ended::Answered,
        };
        // An answer that would not fit the frame is refused in words, so the
        // asker learns why instead of seeing its stream end.
        let bytes = match frame::encode(&response, MAX_RESPONSE_FRAME) {
            Ok(bytes) => bytes,
            Err(FrameError::TooLarge { len, max }) => {
                self.service.metrics().answers_too_large.inc();
                let refusal = Response::error(
                    ErrorCode::LimitExceeded,
                    format!("the answer to this {kind} request would be {len} bytes, over the {max}-byte limit; ask for less"),
                );
                frame::encode(&refusal, MAX_RESPONSE_FRAME).expect("a one-sentence error fits any frame")
            }
            Err(e) => {
                debug!("could not encode an answer for {}: {e}", from.fmt_short());
                return ended;
            }
        };
        if let Err(e) = send.write_all(&bytes).await {
            debug!("could not answer {}: {e}", from.fmt_short());
        }
        send.finish().ok();
        ended
    }
}

impl ProtocolHandler for IndexProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let from = conn.remote_id();
        // The address the connection comes from (not one the peer claims).
        let observed = conn.paths().iter().find_map(|p| match p.remote_addr() {
            TransportAddr::Ip(addr) => Some(*addr),
            _ => None,
        });
        let source = Source::of(observed.map(|a| a.ip()), from);
        let place = if self.service.is_joined(&from, now_ms()) { self.pools.member(from) } else { self.pools.newcomer(source) };
        let mut place = match place {
            Ok(place) => place,
            Err((why, reason)) => {
                self.closed_unjoined(why);
                conn.close(VarInt::from_u32(close_code::BUSY), reason.as_bytes());
                return Ok(());
            }
        };
        let mut streams = JoinSet::new();
        loop {
            let deadline = match &place {
                Place::Newcomer { deadline, .. } => Some(*deadline),
                Place::Member { .. } => None,
            };
            let joined = deadline.is_none();
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    self.closed_unjoined("join_deadline");
                    let reason = format!("no successful Join within {JOIN_DEADLINE:?}; join with a current ticket");
                    conn.close(VarInt::from_u32(close_code::JOIN_TIMEOUT), reason.as_bytes());
                    break;
                }
                // Bound requests in flight: stop accepting while the set is full.
                stream = conn.accept_bi(), if streams.len() < MAX_STREAMS_PER_CONNECTION as usize => {
                    let Ok((send, recv)) = stream else { break };
                    let this = self.clone();
                    streams.spawn(async move { this.serve_stream(from, source, observed, joined, send, recv).await });
                }
                Some(done) = streams.join_next(), if !streams.is_empty() => match done {
                    Ok(Ended::Joined) if !joined => match self.pools.member(from) {
                        // The newcomer's slot is given back as the member's is taken.
                        Ok(member) => place = member,
                        Err((why, reason)) => {
                            self.closed_unjoined(why);
                            conn.close(VarInt::from_u32(close_code::BUSY), reason.as_bytes());
                            break;
                        }
                    },
                    Ok(Ended::Close(code, reason)) => {
                        debug!("closing index connection of {}: {reason}", from.fmt_short());
                        conn.close(VarInt::from_u32(code), reason.as_bytes());
                        break;
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }
}

/// The addresses the index records for a joining peer: the one its Join
/// came from first (the only one the index saw work), then those it
/// claims (a LAN address, say), unchanged and at most as many as allowed.
/// A claimed address list longer than the limit is left for the service
/// to refuse.
pub fn with_observed(claimed: &[std::net::SocketAddr], observed: std::net::SocketAddr) -> Vec<std::net::SocketAddr> {
    if claimed.len() > peernet_proto::limits::MAX_ADDRS_PER_PEER {
        return claimed.to_vec();
    }
    let mut addrs = vec![observed];
    addrs.extend(claimed.iter().copied().filter(|a| *a != observed));
    addrs.truncate(peernet_proto::limits::MAX_ADDRS_PER_PEER);
    addrs
}

/// Maps a failed read to the close code and reason for the whole connection,
/// or `None` when the stream merely ended (the client went away).
fn close_for(e: FrameIoError) -> Option<(u32, String)> {
    match e {
        FrameIoError::Frame(FrameError::TooLarge { len, max }) => {
            Some((close_code::TOO_LARGE, format!("request frame of {len} bytes exceeds the limit of {max} bytes")))
        }
        FrameIoError::Frame(FrameError::Malformed(why)) => Some((close_code::MALFORMED, format!("malformed request frame: {why}"))),
        FrameIoError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Some((close_code::MALFORMED, "request frame ended early".to_string()))
        }
        FrameIoError::Io(_) => None,
    }
}

/// Which keys each address has registered lately, to cap how many one
/// address may hold (the sybil cap). A key counts from its successful Join
/// while it keeps sending requests within the lease TTL.
#[derive(Debug)]
struct Addresses {
    cap: usize,
    window_ms: u64,
    keys: Mutex<HashMap<Source, HashMap<EndpointId, u64>>>,
    refused: AtomicU64,
}

impl Addresses {
    fn new(cap: usize, lease_ttl: Duration) -> Self {
        Self { cap, window_ms: lease_ttl.as_millis() as u64, keys: Default::default(), refused: AtomicU64::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Source, HashMap<EndpointId, u64>>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` may join from `source`: it holds a place there already,
    /// or the address holds fewer keys than the cap. Counted when not.
    fn has_room(&self, source: Source, key: EndpointId, now: u64) -> bool {
        let mut all = self.lock();
        let window = self.window_ms;
        let Some(keys) = all.get_mut(&source) else { return true };
        keys.retain(|_, at| at.saturating_add(window) > now);
        if keys.contains_key(&key) || keys.len() < self.cap {
            return true;
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Records a joined key's request from `source`.
    fn record(&self, source: Source, key: EndpointId, now: u64) {
        let mut all = self.lock();
        let window = self.window_ms;
        all.entry(source).or_default().insert(key, now);
        // Addresses whose keys all went quiet are forgotten.
        if all.len() > 1024 {
            all.retain(|_, keys| keys.values().any(|at| at.saturating_add(window) > now));
        }
    }

    fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> EndpointId {
        iroh::SecretKey::from_bytes(&[seed; 32]).public()
    }

    fn v4(s: &str) -> Source {
        Source::V4(s.parse().unwrap())
    }

    #[test]
    fn an_address_holds_at_most_its_cap_of_keys_at_once() {
        let book = Addresses::new(2, Duration::from_secs(30));
        let (ip, other) = (v4("10.0.0.1"), v4("10.0.0.2"));
        for k in [1, 2] {
            assert!(book.has_room(ip, key(k), 0));
            book.record(ip, key(k), 0);
        }
        assert!(!book.has_room(ip, key(3), 1), "a third key from the same address");
        assert!(book.has_room(ip, key(1), 2), "a key it holds may join again");
        assert!(book.has_room(other, key(3), 2), "another address has its own cap");
        assert_eq!(book.refused(), 1);
        // Once key 2 has been quiet for the lease, its place is free.
        assert!(book.has_room(ip, key(3), 31_000));
    }

    #[test]
    fn the_address_a_join_came_from_is_recorded_first() {
        let a = |s: &str| -> std::net::SocketAddr { s.parse().unwrap() };
        let seen = a("203.0.113.7:4433");
        assert_eq!(with_observed(&[a("192.168.1.5:4433")], seen), vec![seen, a("192.168.1.5:4433")]);
        assert_eq!(with_observed(&[seen, a("10.0.0.2:1")], seen), vec![seen, a("10.0.0.2:1")], "no duplicate");
        let full: Vec<_> = (0..16).map(|i| a(&format!("10.0.0.{i}:1"))).collect();
        let recorded = with_observed(&full, seen);
        assert_eq!((recorded.len(), recorded[0]), (16, seen), "the observed one stays when the claims fill the list");
    }

    #[test]
    fn refused_joins_take_no_place_under_the_cap() {
        let book = Addresses::new(1, Duration::from_secs(30));
        let ip = v4("10.0.0.1");
        // An outsider's Joins are checked, never recorded: a member behind
        // the same address still gets in.
        for k in 10..20 {
            assert!(book.has_room(ip, key(k), 0));
        }
        assert!(book.has_room(ip, key(1), 0));
        book.record(ip, key(1), 0);
        assert!(!book.has_room(ip, key(2), 0));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_bit_prefix_and_relayed_ones_by_key() {
        let a = Source::of(Some("2001:db8:1:2::1".parse().unwrap()), key(1));
        let b = Source::of(Some("2001:db8:1:2:ffff::9".parse().unwrap()), key(2));
        let c = Source::of(Some("2001:db8:1:3::1".parse().unwrap()), key(1));
        assert_eq!(a, b, "one /64 is one address");
        assert_ne!(a, c);
        assert_eq!(Source::of(Some("::ffff:10.0.0.1".parse().unwrap()), key(1)), v4("10.0.0.1"), "v4-mapped is v4");
        assert_eq!(Source::of(None, key(3)), Source::Relayed(key(3)));
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn places_are_capped_per_holder_and_given_back_on_drop() {
        let tally = Tally::new();
        let held: Vec<_> = (0..3).map(|_| tally.take(v4("10.0.0.1"), 3).expect("under the cap")).collect();
        assert!(tally.take(v4("10.0.0.1"), 3).is_none(), "the fourth is refused");
        assert!(tally.take(v4("10.0.0.2"), 3).is_some(), "another address is not");
        drop(held);
        assert_eq!(tally.len(), 0, "memory follows the holders of now");
        assert!(tally.take(v4("10.0.0.1"), 3).is_some());
    }

    #[tokio::test]
    async fn newcomers_have_their_own_pool_and_never_take_a_members_slot() {
        let pools = Pools::new();
        let mut newcomers = Vec::new();
        for i in 0..MAX_UNJOINED_CONNECTIONS {
            let source = Source::V4(std::net::Ipv4Addr::from_bits(0x0a00_0000 + i as u32));
            newcomers.push(pools.newcomer(source).expect("room in the newcomers' pool"));
        }
        let (why, _) = pools.newcomer(v4("192.0.2.1")).unwrap_err();
        assert_eq!(why, "newcomers_full");
        let _member = pools.member(key(1)).expect("the members' pool is untouched");
        assert_eq!(pools.members.available_permits(), MAX_INDEX_CONNECTIONS - 1);
        drop(newcomers);
        assert_eq!(pools.newcomers.available_permits(), MAX_UNJOINED_CONNECTIONS);
    }
}
