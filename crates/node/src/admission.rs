//! Who is a member: the admission exchange ([`peernet_proto::admission`])
//! and its enforcement on every connection.
//!
//! [`Admission`] holds the network key, a bounded cache of admitted keys
//! ([`Admitted`]) and the counters `status` shows. It gives out:
//! - [`AdmitProtocol`], the handler for the admission ALPN: it checks a
//!   dialer's proof, remembers the dialer and proves back;
//! - [`AdmissionHooks`], installed on the endpoint before it binds: after
//!   every TLS handshake it closes connections from keys that have not
//!   proved membership (the index's ALPN, which has its own Join proof, and
//!   the admission ALPN are the exceptions); before every outgoing connect it
//!   proves membership to the remote first (and learns that the remote is a
//!   member), unless that happened within
//!   [`REPROVE_AFTER_SECS`](peernet_proto::admission::REPROVE_AFTER_SECS).
//!
//! The hooks live inside the endpoint, and proving needs the endpoint to dial:
//! [`Admission::attach`] lends it to them right after binding, and
//! [`Admission::detach`] takes it back on shutdown or a failed start, so the
//! two never keep each other alive.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use iroh::{
    endpoint::{AfterHandshakeOutcome, BeforeConnectOutcome, Connection, EndpointHooks},
    protocol::{AcceptError, ProtocolHandler},
    Endpoint, EndpointAddr, EndpointId,
};
use peernet_index::frame_io::{read_frame, write_frame};
use peernet_proto::{
    admission::{close_code, Hello, Reply, ADMIT_TIMEOUT_SECS, ALPN, MAX_ADMITTED, MAX_ADMIT_FRAME, NOT_MEMBER_REASON, REPROVE_AFTER_SECS},
    key::NetworkKey,
};
use serde::{Deserialize, Serialize};
use tracing::debug;

/// How long one whole exchange may take, connect included.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(ADMIT_TIMEOUT_SECS);
/// How long a dialer trusts that a peer still remembers it.
const REPROVE_AFTER: Duration = Duration::from_secs(REPROVE_AFTER_SECS);
/// How long the receiving side waits for the dialer to read the answer and
/// close, before closing itself.
const LINGER: Duration = Duration::from_secs(2);

/// Why proving membership to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("cannot reach {peer} to prove membership: {why}")]
    Unreachable { peer: String, why: String },
    #[error("{peer} refused our membership proof: {reason}; check that the ticket is this network's")]
    Refused { peer: String, reason: String },
    #[error("{peer} could not prove that it is a member of this network")]
    NotAMember { peer: String },
    #[error("{peer} broke off the admission exchange: {why}")]
    Exchange { peer: String, why: String },
    #[error("{peer} did not finish the admission exchange within {ADMIT_TIMEOUT_SECS} s")]
    Timeout { peer: String },
    #[error("the endpoint is shutting down")]
    Closed,
}

/// Proves membership to `to` over the admission ALPN and checks its proof
/// back. On success both sides know the other is a member. Usable by tools
/// and tests that play a member from an endpoint of their own.
pub async fn admit(endpoint: &Endpoint, key: &NetworkKey, to: EndpointAddr) -> Result<(), AdmissionError> {
    let peer = to.id.fmt_short().to_string();
    match tokio::time::timeout(ADMIT_TIMEOUT, exchange(endpoint, key, to)).await {
        Ok(result) => result,
        Err(_) => Err(AdmissionError::Timeout { peer }),
    }
}

async fn exchange(endpoint: &Endpoint, key: &NetworkKey, to: EndpointAddr) -> Result<(), AdmissionError> {
    let remote = to.id;
    let peer = remote.fmt_short().to_string();
    let broke = |why: String| AdmissionError::Exchange { peer: peer.clone(), why };
    let conn = endpoint.connect(to, ALPN).await.map_err(|e| AdmissionError::Unreachable { peer: peer.clone(), why: e.to_string() })?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| broke(e.to_string()))?;
    let hello = Hello { proof: key.admit_proof(&endpoint.id(), &remote) };
    write_frame(&mut send, &hello, MAX_ADMIT_FRAME).await.map_err(|e| broke(e.to_string()))?;
    send.finish().map_err(|e| broke(e.to_string()))?;
    let reply: Reply = read_frame(&mut recv, MAX_ADMIT_FRAME).await.map_err(|e| broke(e.to_string()))?;
    match reply {
        Reply::Welcome { proof } if key.verify_admit(&remote, &endpoint.id(), &proof) => {
            conn.close(close_code::ADMITTED.into(), b"admitted");
            Ok(())
        }
        Reply::Welcome { .. } => {
            conn.close(close_code::REFUSED.into(), b"your proof does not match this network's key");
            Err(AdmissionError::NotAMember { peer })
        }
        Reply::Refused { reason } => {
            conn.close(close_code::REFUSED.into(), b"refused");
            Err(AdmissionError::Refused { peer, reason })
        }
    }
}

/// The admitted keys: a cache of at most `cap` entries, the least recently
/// seen forgotten first. Time is an argument, so it is tested without
/// sleeping.
#[derive(Debug)]
pub struct Admitted {
    cap: usize,
    entries: HashMap<EndpointId, Entry>,
    /// Recency stamp -> key, oldest first.
    by_recency: BTreeMap<u64, EndpointId>,
    next_stamp: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    stamp: u64,
    /// When the last exchange with this key completed (in either direction).
    proved_at: Instant,
}

impl Admitted {
    pub fn new(cap: usize) -> Self {
        Self { cap: cap.max(1), entries: HashMap::new(), by_recency: BTreeMap::new(), next_stamp: 0 }
    }

    /// Records a completed exchange with `id` at `now`.
    pub fn insert(&mut self, id: EndpointId, now: Instant) {
        let stamp = self.bump(id);
        self.entries.insert(id, Entry { stamp, proved_at: now });
        while self.entries.len() > self.cap {
            let Some((_, oldest)) = self.by_recency.pop_first() else { break };
            self.entries.remove(&oldest);
        }
    }

    /// Whether `id` proved membership; a hit counts as a use.
    pub fn is_member(&mut self, id: &EndpointId) -> bool {
        self.touch(id).is_some()
    }

    /// Whether `id` is a member whose exchange with us is younger than
    /// `window` at `now`, so it still remembers us; a hit counts as a use.
    pub fn is_fresh(&mut self, id: &EndpointId, now: Instant, window: Duration) -> bool {
        self.touch(id).is_some_and(|proved_at| now.saturating_duration_since(proved_at) < window)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn touch(&mut self, id: &EndpointId) -> Option<Instant> {
        let proved_at = self.entries.get(id)?.proved_at;
        let stamp = self.bump(*id);
        if let Some(entry) = self.entries.get_mut(id) {
            entry.stamp = stamp;
        }
        Some(proved_at)
    }

    /// Moves `id` to the most recent place and returns its new stamp.
    fn bump(&mut self, id: EndpointId) -> u64 {
        if let Some(old) = self.entries.get(&id) {
            self.by_recency.remove(&old.stamp);
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.by_recency.insert(stamp, id);
        stamp
    }
}

/// Admission figures, as `status` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Connections closed because their key never proved membership.
    pub refused_outsiders: u64,
    /// Admission exchanges refused (a proof for another key, or garbage).
    pub refused_proofs: u64,
    /// Admission exchanges that succeeded, in either direction.
    pub admissions: u64,
    /// Keys in the admitted cache now (at most
    /// [`MAX_ADMITTED`](peernet_proto::admission::MAX_ADMITTED)).
    pub admitted_keys: usize,
}

#[derive(Debug)]
struct Shared {
    key: NetworkKey,
    me: EndpointId,
    admitted: Mutex<Admitted>,
    /// Lent by [`Admission::attach`] for proving on outgoing connects.
    endpoint: Mutex<Option<Endpoint>>,
    /// One exchange at a time per remote; others wait and reuse its result.
    in_flight: Mutex<HashMap<EndpointId, Arc<tokio::sync::Mutex<()>>>>,
    refused_outsiders: AtomicU64,
    refused_proofs: AtomicU64,
    admissions: AtomicU64,
}

/// A peer's admission state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission(Arc<Shared>);

impl Admission {
    /// Admission into the network of `key`, for the endpoint whose id is `me`.
    pub fn new(key: NetworkKey, me: EndpointId) -> Self {
        Self(Arc::new(Shared {
            key,
            me,
            admitted: Mutex::new(Admitted::new(MAX_ADMITTED)),
            endpoint: Mutex::new(None),
            in_flight: Mutex::new(HashMap::new()),
            refused_outsiders: AtomicU64::new(0),
            refused_proofs: AtomicU64::new(0),
            admissions: AtomicU64::new(0),
        }))
    }

    /// The hooks to install on the endpoint builder.
    pub fn hooks(&self) -> AdmissionHooks {
        AdmissionHooks(self.clone())
    }

    /// The handler to serve on [`ALPN`].
    pub fn protocol(&self) -> AdmitProtocol {
        AdmitProtocol(self.clone())
    }

    /// Lends the bound endpoint to the hooks, for proving on outgoing connects.
    pub fn attach(&self, endpoint: &Endpoint) {
        *lock(&self.0.endpoint) = Some(endpoint.clone());
    }

    /// Takes the endpoint back (on shutdown): the hooks live inside it.
    pub fn detach(&self) {
        lock(&self.0.endpoint).take();
    }

    pub fn counters(&self) -> Counters {
        Counters {
            refused_outsiders: self.0.refused_outsiders.load(Ordering::Relaxed),
            refused_proofs: self.0.refused_proofs.load(Ordering::Relaxed),
            admissions: self.0.admissions.load(Ordering::Relaxed),
            admitted_keys: lock(&self.0.admitted).len(),
        }
    }

    /// Whether `id` has proved membership to us.
    pub fn is_member(&self, id: &EndpointId) -> bool {
        lock(&self.0.admitted).is_member(id)
    }

    /// Proves membership to `to` unless an exchange with it is recent
    /// enough; concurrent calls for one remote share one exchange.
    pub async fn ensure(&self, to: &EndpointAddr) -> Result<(), AdmissionError> {
        let id = to.id;
        if self.fresh(&id) {
            return Ok(());
        }
        let gate = lock(&self.0.in_flight).entry(id).or_default().clone();
        let result = {
            let _turn = gate.lock().await;
            if self.fresh(&id) {
                Ok(())
            } else {
                let endpoint = lock(&self.0.endpoint).clone();
                match endpoint {
                    Some(endpoint) => {
                        let result = admit(&endpoint, &self.0.key, to.clone()).await;
                        if result.is_ok() {
                            self.remember(id);
                        }
                        result
                    }
                    None => Err(AdmissionError::Closed),
                }
            }
        };
        let mut in_flight = lock(&self.0.in_flight);
        if in_flight.get(&id).is_some_and(|g| Arc::ptr_eq(g, &gate)) && Arc::strong_count(&gate) == 2 {
            in_flight.remove(&id);
        }
        result
    }

    fn fresh(&self, id: &EndpointId) -> bool {
        lock(&self.0.admitted).is_fresh(id, Instant::now(), REPROVE_AFTER)
    }

    fn remember(&self, id: EndpointId) {
        lock(&self.0.admitted).insert(id, Instant::now());
        self.0.admissions.fetch_add(1, Ordering::Relaxed);
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The protocols that admit anyone: the index checks its own Join proof,
/// and the admission exchange is how one gets in.
fn open_to_all(alpn: &[u8]) -> bool {
    peernet_proto::index::is_index_alpn(alpn) || alpn == ALPN
}

/// Endpoint hooks that keep outsiders out of every other protocol.
#[derive(Debug, Clone)]
pub struct AdmissionHooks(Admission);

impl EndpointHooks for AdmissionHooks {
    async fn before_connect<'a>(&'a self, remote_addr: &'a EndpointAddr, alpn: &'a [u8]) -> BeforeConnectOutcome {
        if open_to_all(alpn) {
            return BeforeConnectOutcome::Accept;
        }
        match self.0.ensure(remote_addr).await {
            Ok(()) => BeforeConnectOutcome::Accept,
            Err(e) => {
                debug!("not connecting to {} on {}: {e}", remote_addr.id.fmt_short(), String::from_utf8_lossy(alpn));
                BeforeConnectOutcome::Reject
            }
        }
    }

    async fn after_handshake<'a>(&'a self, conn: &'a Connection) -> AfterHandshakeOutcome {
        // Our own connects proved the remote in `before_connect`, and TLS
        // has just confirmed the key.
        if open_to_all(conn.alpn()) || conn.side().is_client() || self.0.is_member(&conn.remote_id()) {
            return AfterHandshakeOutcome::Accept;
        }
        self.0 .0.refused_outsiders.fetch_add(1, Ordering::Relaxed);
        debug!("refused {} on {}: not a member", conn.remote_id().fmt_short(), String::from_utf8_lossy(conn.alpn()));
        AfterHandshakeOutcome::Reject { error_code: close_code::NOT_MEMBER.into(), reason: NOT_MEMBER_REASON.as_bytes().to_vec() }
    }
}

/// The receiving side of the admission exchange.
#[derive(Debug, Clone)]
pub struct AdmitProtocol(Admission);

impl ProtocolHandler for AdmitProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let remote = conn.remote_id();
        let shared = &self.0 .0;
        let answered = tokio::time::timeout(ADMIT_TIMEOUT, async {
            let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
            let reply = match read_frame::<Hello>(&mut recv, MAX_ADMIT_FRAME).await {
                Ok(hello) if shared.key.verify_admit(&remote, &shared.me, &hello.proof) => {
                    self.0.remember(remote);
                    Reply::Welcome { proof: shared.key.admit_proof(&shared.me, &remote) }
                }
                Ok(_) => Reply::refused("the proof does not match this network's key"),
                Err(e) => Reply::refused(&format!("unreadable hello: {e}")),
            };
            write_frame(&mut send, &reply, MAX_ADMIT_FRAME).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            Ok::<_, String>(reply)
        })
        .await;
        match answered {
            Ok(Ok(Reply::Welcome { .. })) => {
                // The dialer closes once it has read our proof.
                tokio::time::timeout(LINGER, conn.closed()).await.ok();
            }
            Ok(Ok(Reply::Refused { reason })) => {
                shared.refused_proofs.fetch_add(1, Ordering::Relaxed);
                debug!("refused the admission of {}: {reason}", remote.fmt_short());
                tokio::time::timeout(LINGER, conn.closed()).await.ok();
                conn.close(close_code::REFUSED.into(), reason.as_bytes());
            }
            Ok(Err(e)) => {
                shared.refused_proofs.fetch_add(1, Ordering::Relaxed);
                debug!("admission exchange with {} failed: {e}", remote.fmt_short());
                conn.close(close_code::REFUSED.into(), b"admission exchange failed");
            }
            Err(_) => {
                shared.refused_proofs.fetch_add(1, Ordering::Relaxed);
                conn.close(close_code::REFUSED.into(), b"no proof in time");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seed: u8) -> EndpointId {
        iroh::SecretKey::from_bytes(&[seed; 32]).public()
    }

    #[test]
    fn the_least_recently_seen_key_is_forgotten_first() {
        let now = Instant::now();
        let mut cache = Admitted::new(3);
        for seed in 1..=3 {
            cache.insert(id(seed), now);
        }
        // Seeing 1 again makes 2 the oldest.
        assert!(cache.is_member(&id(1)));
        cache.insert(id(4), now);
        assert_eq!(cache.len(), 3);
        assert!(!cache.is_member(&id(2)), "the least recently seen went");
        for seed in [1, 3, 4] {
            assert!(cache.is_member(&id(seed)), "{seed} stays");
        }
    }

    #[test]
    fn the_cache_never_grows_past_its_cap() {
        let now = Instant::now();
        let mut cache = Admitted::new(MAX_ADMITTED);
        for n in 0..(MAX_ADMITTED as u32 + 500) {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&n.to_be_bytes());
            cache.insert(iroh::SecretKey::from_bytes(&bytes).public(), now);
        }
        assert_eq!(cache.len(), MAX_ADMITTED);
        assert_eq!(cache.by_recency.len(), MAX_ADMITTED, "no stale recency stamps pile up");
    }

    #[test]
    fn a_proof_goes_stale_for_dialing_but_the_member_stays_admitted() {
        let t0 = Instant::now();
        let mut cache = Admitted::new(8);
        cache.insert(id(1), t0);
        assert!(cache.is_fresh(&id(1), t0 + Duration::from_secs(29), REPROVE_AFTER));
        // Using it does not extend the window: a peer that restarted since
        // must be proved to again.
        assert!(!cache.is_fresh(&id(1), t0 + REPROVE_AFTER, REPROVE_AFTER));
        assert!(cache.is_member(&id(1)));
        cache.insert(id(1), t0 + REPROVE_AFTER);
        assert!(cache.is_fresh(&id(1), t0 + REPROVE_AFTER, REPROVE_AFTER));
        assert!(!cache.is_fresh(&id(2), t0, REPROVE_AFTER));
        assert_eq!(cache.len(), 1);
    }
}
