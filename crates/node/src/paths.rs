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
    collections::HashMap,
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

    /// The path of the newest live connection to `peer` that has selected
    /// one; `None` when there is no live connection.
    pub fn of(&self, peer: &EndpointId) -> Option<PathInfo> {
        let conns: Vec<Connection> = self.lock().get(peer)?.iter().rev().filter_map(WeakConnectionHandle::upgrade).collect();
        conns.iter().find_map(selected)
    }

    /// Our links to `peers`, each with its path now, as the map wants them.
    pub fn report(&self, peers: &[EndpointId]) -> Vec<LinkReport> {
        peers.iter().map(|&id| LinkReport { id, path: self.of(&id) }).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, Vec<WeakConnectionHandle>>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The path a connection sends on now.
pub fn selected(conn: &Connection) -> Option<PathInfo> {
    let paths = conn.paths();
    let path = paths.iter().find(|p| p.is_selected())?;
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
