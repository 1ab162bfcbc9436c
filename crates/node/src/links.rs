//! Connections this peer opens to others for small frames (flood queries
//! and answers), kept and reused: one QUIC handshake per pair of peers, not
//! one per frame. A burst of thousands of queries to the same neighbours
//! then costs thousands of streams, not thousands of connections.
//!
//! Bounded: at most [`MAX_LINKS`] connections; one unused for [`LINK_IDLE`]
//! is closed (the endpoint's keep-alive would otherwise hold it forever).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use iroh::{endpoint::Connection, Endpoint, EndpointAddr, EndpointId};

/// Most connections kept open at once; the least recently used goes first.
pub const MAX_LINKS: usize = 64;
/// A link unused for this long is closed.
pub const LINK_IDLE: Duration = Duration::from_secs(30);
/// After a failed dial, frames to the same peer fail at once for this long
/// instead of each dialing again.
pub const DIAL_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Link {
    conn: Option<Connection>,
    failed: Option<(Instant, String)>,
}

type Slot = Arc<tokio::sync::Mutex<Link>>;

#[derive(Debug)]
struct Entry {
    slot: Slot,
    last_used: Instant,
}

#[derive(Debug, Clone)]
pub struct Links {
    endpoint: Endpoint,
    alpn: &'static [u8],
    entries: Arc<Mutex<HashMap<EndpointId, Entry>>>,
}

impl Links {
    pub fn new(endpoint: Endpoint, alpn: &'static [u8]) -> Self {
        Self { endpoint, alpn, entries: Default::default() }
    }

    /// A connection to `to`: the open one, or a new one. Concurrent callers
    /// for the same peer wait for one dial instead of each dialing.
    pub async fn get(&self, to: impl Into<EndpointAddr>) -> Result<Connection, String> {
        let to = to.into();
        let slot = {
            let mut entries = self.entries.lock().expect("links lock");
            let now = Instant::now();
            let entry = entries.entry(to.id).or_insert_with(|| Entry { slot: Default::default(), last_used: now });
            entry.last_used = now;
            let slot = entry.slot.clone();
            evict(&mut entries, now);
            slot
        };
        let mut link = slot.lock().await;
        if let Some(c) = link.conn.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(c.clone());
        }
        if let Some((at, why)) = link.failed.as_ref().filter(|(at, _)| at.elapsed() < DIAL_BACKOFF) {
            return Err(format!("{why} ({:?} ago)", at.elapsed()));
        }
        match self.endpoint.connect(to, self.alpn).await {
            Ok(fresh) => {
                *link = Link { conn: Some(fresh.clone()), failed: None };
                Ok(fresh)
            }
            Err(e) => {
                link.failed = Some((Instant::now(), e.to_string()));
                Err(e.to_string())
            }
        }
    }

    /// Closes links unused for [`LINK_IDLE`]; call now and then.
    pub fn prune(&self) {
        evict(&mut self.entries.lock().expect("links lock"), Instant::now());
    }

    /// Open links, for status and tests.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("links lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops idle entries and, above the cap, the least recently used ones,
/// closing their connections (a dial still in progress is left to finish
/// and is dropped with its slot).
fn evict(entries: &mut HashMap<EndpointId, Entry>, now: Instant) {
    let mut gone: Vec<EndpointId> =
        entries.iter().filter(|(_, e)| now.duration_since(e.last_used) >= LINK_IDLE).map(|(id, _)| *id).collect();
    if entries.len() - gone.len() > MAX_LINKS {
        let mut by_age: Vec<(Instant, EndpointId)> =
            entries.iter().filter(|(id, _)| !gone.contains(id)).map(|(id, e)| (e.last_used, *id)).collect();
        by_age.sort();
        let excess = by_age.len() - MAX_LINKS;
        gone.extend(by_age.into_iter().take(excess).map(|(_, id)| id));
    }
    for id in gone {
        if let Some(entry) = entries.remove(&id) {
            if let Ok(link) = entry.slot.try_lock() {
                if let Some(c) = link.conn.as_ref() {
                    c.close(0u32.into(), b"idle");
                }
            }
        }
    }
}
