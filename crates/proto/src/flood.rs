//! Flood search bookkeeping (the Gnutella design): a query travels from
//! neighbour to neighbour with a TTL; every peer handles a query id once; a
//! peer with matches answers the origin directly.
//!
//! [`Flood`] is the state machine: what to do with a query, given who
//! delivered it and who our neighbours are. The caller moves bytes. Time is
//! an argument.
//!
//! Wire: on [`ALPN`], one unidirectional stream carries one frame
//! ([`crate::frame`]) holding a [`FloodFrame`]. A query is sent that way to
//! each chosen overlay neighbour (the gossip layer's own neighbour broadcast
//! reaches only its spanning-tree peers, not every neighbour, so it is not
//! used); an answer is sent that way straight to the query's origin.

use std::collections::{HashMap, VecDeque};

use iroh::EndpointId;
use serde::{Deserialize, Serialize};

use crate::index::{FileEntry, PeerAddr};

/// ALPN for answers to flood queries.
pub const ALPN: &[u8] = b"peernet/flood/1";
/// Most files one peer reports in one answer.
pub const MAX_ANSWER_FILES: usize = 100;
/// Largest flood frame (an answer with [`MAX_ANSWER_FILES`] long names fits).
pub const MAX_FLOOD_FRAME: usize = 64 * 1024;

/// One frame of the flood protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FloodFrame {
    /// A query, passed from neighbour to neighbour.
    Query(Query),
    /// Matches, sent by a provider straight to the query's origin.
    Answer(Answer),
}

/// A peer's answer to a flood query, sent straight to the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub query: [u8; 16],
    pub provider: PeerAddr,
    pub nickname: String,
    pub files: Vec<FileEntry>,
}

/// TTL when the user gives none.
pub const DEFAULT_TTL: u8 = 4;
/// Highest TTL accepted; larger requests are clamped, so a query can never
/// sweep an unbounded part of a large network.
pub const MAX_TTL: u8 = 7;
/// Most neighbours a query is forwarded to from one peer.
pub const MAX_FANOUT: usize = 8;
/// How long a query id is remembered.
pub const SEEN_WINDOW_MS: u64 = 60_000;
/// Most query ids remembered at once; the oldest are forgotten first.
pub const MAX_SEEN: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub id: [u8; 16],
    /// Where answers go, straight back over a direct connection.
    pub origin: PeerAddr,
    pub text: String,
    /// Hops left, counting the one that delivers it.
    pub ttl: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Look for local matches and send them to `query.origin`.
    Answer(Query),
    /// Send `query` (its TTL already lowered) to these neighbours.
    Forward { query: Query, to: Vec<EndpointId> },
}

/// Clamps a requested TTL into `1..=MAX_TTL`.
pub fn clamp_ttl(ttl: u8) -> u8 {
    ttl.clamp(1, MAX_TTL)
}

#[derive(Debug, Default)]
pub struct Flood {
    seen: HashMap<[u8; 16], u64>,
    order: VecDeque<([u8; 16], u64)>,
    /// Queries handled (first sight), for metrics and tests.
    pub handled: u64,
    /// Copies of already handled queries that were dropped.
    pub duplicates: u64,
}

impl Flood {
    fn forget_old(&mut self, now_ms: u64) {
        while let Some((id, at)) = self.order.front().copied() {
            if self.order.len() <= MAX_SEEN && at.saturating_add(SEEN_WINDOW_MS) > now_ms {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&id) == Some(&at) {
                self.seen.remove(&id);
            }
        }
    }

    /// Marks `id` seen; false if it already was.
    fn first_sight(&mut self, id: [u8; 16], now_ms: u64) -> bool {
        self.forget_old(now_ms);
        if self.seen.contains_key(&id) {
            return false;
        }
        self.seen.insert(id, now_ms);
        self.order.push_back((id, now_ms));
        true
    }

    /// Starts a query of our own: returns it and the neighbours to send it to.
    pub fn start(&mut self, id: [u8; 16], origin: PeerAddr, text: String, ttl: u8, neighbors: &[EndpointId], now_ms: u64) -> Action {
        self.first_sight(id, now_ms);
        let query = Query { id, origin, text, ttl: clamp_ttl(ttl) };
        let to = fan_out(neighbors, &[query.origin.id]);
        Action::Forward { query, to }
    }

    /// Handles a query delivered by neighbour `from`.
    pub fn handle(&mut self, mut query: Query, from: EndpointId, neighbors: &[EndpointId], now_ms: u64) -> Vec<Action> {
        if query.ttl == 0 || !self.first_sight(query.id, now_ms) {
            self.duplicates += 1;
            return Vec::new();
        }
        self.handled += 1;
        // Never trust a TTL larger than we would send ourselves.
        query.ttl = query.ttl.min(MAX_TTL);
        let mut actions = vec![Action::Answer(query.clone())];
        if query.ttl > 1 {
            let to = fan_out(neighbors, &[from, query.origin.id]);
            if !to.is_empty() {
                actions.push(Action::Forward { query: Query { ttl: query.ttl - 1, ..query }, to });
            }
        }
        actions
    }
}

fn fan_out(neighbors: &[EndpointId], except: &[EndpointId]) -> Vec<EndpointId> {
    let mut to: Vec<EndpointId> = neighbors.iter().copied().filter(|n| !except.contains(n)).collect();
    to.sort();
    to.dedup();
    to.truncate(MAX_FANOUT);
    to
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seed: u8) -> EndpointId {
        iroh::SecretKey::from_bytes(&[seed; 32]).public()
    }

    fn origin() -> PeerAddr {
        PeerAddr { id: id(1), ip: vec![], relay: None }
    }

    fn query(qid: u8, ttl: u8) -> Query {
        Query { id: [qid; 16], origin: origin(), text: "song".into(), ttl }
    }

    #[test]
    fn ttl_is_clamped() {
        assert_eq!(clamp_ttl(0), 1);
        assert_eq!(clamp_ttl(4), 4);
        assert_eq!(clamp_ttl(200), MAX_TTL);
        let mut f = Flood::default();
        let Action::Forward { query: started, .. } = f.start([1; 16], origin(), "x".into(), 99, &[id(2)], 0) else { panic!() };
        assert_eq!(started.ttl, MAX_TTL);
        // A neighbour sending an inflated TTL is clamped too.
        let actions = f.handle(query(5, 250), id(2), &[id(3)], 0);
        let Some(Action::Forward { query: forwarded, .. }) = actions.last() else { panic!("{actions:?}") };
        assert_eq!(forwarded.ttl, MAX_TTL - 1);
    }

    #[test]
    fn each_query_is_handled_once() {
        let mut f = Flood::default();
        assert_eq!(f.handle(query(7, 3), id(2), &[id(3)], 0).len(), 2);
        assert!(f.handle(query(7, 3), id(3), &[id(2)], 1).is_empty(), "second copy dropped");
        assert!(f.handle(query(7, 2), id(4), &[id(2)], 2).is_empty(), "even with another TTL");
        assert_eq!((f.handled, f.duplicates), (1, 2));
        // Our own query coming back is a duplicate as well.
        f.start([9; 16], origin(), "x".into(), 3, &[id(2)], 3);
        assert!(f.handle(query(9, 2), id(2), &[id(2)], 4).is_empty());
    }

    #[test]
    fn ttl_one_answers_but_does_not_forward() {
        let mut f = Flood::default();
        let actions = f.handle(query(1, 1), id(2), &[id(3), id(4)], 0);
        assert_eq!(actions, vec![Action::Answer(query(1, 1))]);
    }

    #[test]
    fn forwarding_skips_sender_and_origin_and_is_bounded() {
        let mut f = Flood::default();
        let neighbors: Vec<EndpointId> = (1..=20).map(id).collect();
        let actions = f.handle(query(1, 4), id(2), &neighbors, 0);
        let Some(Action::Forward { query: q, to }) = actions.last() else { panic!() };
        assert_eq!(q.ttl, 3);
        assert_eq!(to.len(), MAX_FANOUT);
        assert!(!to.contains(&id(2)) && !to.contains(&id(1)));
    }

    #[test]
    fn ids_are_forgotten_after_the_window_and_the_cap() {
        let mut f = Flood::default();
        f.handle(query(1, 2), id(2), &[], 0);
        assert!(f.handle(query(1, 2), id(2), &[], SEEN_WINDOW_MS - 1).is_empty());
        assert!(!f.handle(query(1, 2), id(2), &[], SEEN_WINDOW_MS + 1).is_empty(), "old ids expire");
        for i in 0..(MAX_SEEN as u32 + 10) {
            let mut q = query(0, 2);
            q.id[..4].copy_from_slice(&i.to_be_bytes());
            f.handle(q, id(2), &[], SEEN_WINDOW_MS + 2);
        }
        assert!(f.seen.len() <= MAX_SEEN + 1, "memory stays bounded");
    }
}
