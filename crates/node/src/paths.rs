//! Which way each link goes: straight to the peer's address, or through a
//! relay, and its round-trip time, as iroh's connections report them.
//!
//! Every connection the endpoint makes or accepts passes
//! [`PathHooks::after_handshake`], which keeps a weak handle to it (the
//! tracker never keeps a connection open). [`Paths::of`] reads the
//! selected path of the live connections to a peer: `status`, `get` and
//! the map use it to say "direct" or "relayed". A connection to a relay-only
//! peer that later punches a hole through both NATs moves from relayed to
//! direct by itself; the next read shows it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use iroh::{
    endpoint::{AfterHandshakeOutcome, Connection, EndpointHooks, WeakConnectionHandle},
    EndpointId,
};
use peernet_proto::index::LinkReport;

/// Peers whose connections are tracked at once; beyond it, peers without a
/// live connection are forgotten first.
pub const MAX_TRACKED_PEERS: usize = 4096;
/// Connections kept per peer (the newest).
const MAX_PER_PEER: usize = 16;

pub use peernet_proto::topo::{PathInfo, Via};

/// The protocols whose connections describe each kind of link.
pub const OVERLAY: &[u8] = iroh_gossip::ALPN;
pub const INDEX: &[u8] = b"peernet/index/";
pub const BLOBS: &[u8] = iroh_blobs::ALPN;

/// The connections of this endpoint, by peer; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Paths(Arc<Mutex<HashMap<EndpointId, Vec<WeakConnectionHandle>>>>);

impl Paths {
    pub fn new() -> Self {
        Self::default()
    }

    /// The hooks to install on the endpoint builder.
    pub fn hooks(&self) -> PathHooks {
        PathHooks(self.clone())
    }

    fn track(&self, conn: &Connection) {
        let mut peers = self.lock();
        let handles = peers.entry(conn.remote_id()).or_default();
        handles.retain(|h| h.upgrade().is_some());
        handles.push(conn.weak_handle());
        if handles.len() > MAX_PER_PEER {
            handles.remove(0);
        }
        if peers.len() > MAX_TRACKED_PEERS {
            peers.retain(|_, handles| handles.iter().any(|h| h.upgrade().is_some()));
            while peers.len() > MAX_TRACKED_PEERS {
                let Some(any) = peers.keys().next().copied() else { break };
                peers.remove(&any);
            }
        }
    }

    /// The path of the link to `peer` that speaks `alpn` (a prefix):
    /// the newest live such connection that has selected a path, else the
    /// newest other one; `None` when there is no live connection.
    ///
    /// The protocol matters: an idle connection (a pooled download's, say)
    /// sends nothing, so it notices last that its path died, and would
    /// still say "direct" for a link whose busy connections have moved to
    /// the relay.
    pub fn of(&self, peer: &EndpointId, alpn: &[u8]) -> Option<PathInfo> {
        // A closed connection keeps the path it last used; it is no link.
        let conns: Vec<Connection> = open(self.lock().get(peer)?.iter().rev()).collect();
        let (first, rest): (Vec<&Connection>, Vec<&Connection>) = conns.iter().partition(|c| c.alpn().starts_with(alpn));
        first.into_iter().chain(rest).find_map(selected)
    }

    /// Our overlay links to `peers`, each with its path now, as the map
    /// wants them.
    pub fn report(&self, peers: &[EndpointId]) -> Vec<LinkReport> {
        peers.iter().map(|&id| LinkReport { id, path: self.of(&id, OVERLAY) }).collect()
    }

    /// The ids of the open connections speaking `alpn` (a prefix) to `peer`.
    pub fn open_ids(&self, peer: &EndpointId, alpn: &[u8]) -> Vec<usize> {
        match self.lock().get(peer) {
            Some(handles) => open(handles.iter()).filter(|c| c.alpn().starts_with(alpn)).map(|c| c.stable_id()).collect(),
            None => Vec::new(),
        }
    }

    /// Closes those of `ids` ([`Paths::open_ids`]) still open to `peer`;
    /// returns how many.
    ///
    /// For the links to a former neighbour: iroh-gossip 0.101 forgets a
    /// peer that leaves its neighbours (both sides do, when one drops the
    /// other), but never ends the connection it used: its send loop does
    /// not stop when its queue closes (upstream iroh-gossip issue 145).
    /// Our keep-alive then keeps that connection up for good, so members
    /// slowly gain links, each with a keep-alive every few seconds, to much
    /// of the room. Gossip dials anew when it next has something for that
    /// peer, and a connection that is no longer the one gossip sends on
    /// can close without gossip noticing. Any other connection must be left
    /// alone: one that gossip still sends on, closed under it, leaves a
    /// peer it can no longer reach, and the other side drops us from its
    /// spare peers.
    pub fn close(&self, peer: &EndpointId, ids: &[usize], why: &'static [u8]) -> usize {
        let conns: Vec<Connection> = match self.lock().get(peer) {
            Some(handles) => open(handles.iter()).filter(|c| ids.contains(&c.stable_id())).collect(),
            None => Vec::new(),
        };
        for conn in &conns {
            conn.close(0u32.into(), why);
        }
        conns.len()
    }

    /// The live connections, counted by protocol (ALPN).
    pub fn live(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for conn in open(self.lock().values().flatten()) {
            *counts.entry(String::from_utf8_lossy(conn.alpn()).into_owned()).or_default() += 1;
        }
        counts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, Vec<WeakConnectionHandle>>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The path a connection sends on now.
///
/// Right after the selected path is abandoned (the direct path between two
/// NATs cut, say), iroh can report no path as selected while the
/// connection goes on over the path that is left; that path is the one
/// the data takes, so it is the one reported.
pub fn selected(conn: &Connection) -> Option<PathInfo> {
    let paths = conn.paths();
    let path = paths.iter().find(|p| p.is_selected()).or_else(|| paths.iter().next())?;
    let via = if path.is_relay() { Via::Relayed } else { Via::Direct };
    Some(PathInfo { via, rtt_ms: path.rtt().as_millis() as u64 })
}

/// Endpoint hooks that record every connection.
#[derive(Debug, Clone)]
pub struct PathHooks(Paths);

impl EndpointHooks for PathHooks {
    async fn after_handshake<'a>(&'a self, conn: &'a Connection) -> AfterHandshakeOutcome {
        self.0.track(conn);
        AfterHandshakeOutcome::Accept
    }
}

/// The connections behind `handles` that are still open. A closed
/// connection keeps the path it last used and its protocol; it is no link.
fn open<'a>(handles: impl Iterator<Item = &'a WeakConnectionHandle>) -> impl Iterator<Item = Connection> {
    handles.filter_map(WeakConnectionHandle::upgrade).filter(|c| c.close_reason().is_none())
}
