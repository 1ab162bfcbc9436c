//! Flood search bookkeeping (the Gnutella design): a query travels from
//! neighbour to neighbour with a TTL; every peer handles a query id once; a
//! peer with matches answers, and the answer travels back along the path
//! the query came (Gnutella's QueryHit), hop by hop, to the asker.
//!
//! [`Flood`] is the state machine: what to do with a query, given who
//! delivered it and who our neighbours are, and where an answer goes next.
//! The caller moves bytes. Time is an argument.
//!
//! Wire: on [`ALPN`], one unidirectional stream carries one frame
//! ([`crate::frame`]) holding a [`FloodFrame`]. A query is sent that way to
//! each chosen overlay neighbour (the gossip layer's own neighbour broadcast
//! reaches only its spanning-tree peers, not every neighbour, so it is not
//! used); an answer is sent that way to the neighbour that handed us the
//! query.
//!
//! Who may make a peer send what: a query names no address, and a peer
//! only ever sends flood frames to its overlay neighbours (queries) and to
//! the neighbour a query came from (answers), so nobody can aim the network
//! at a third party. An answer names its provider's address for `get`; it
//! is signed by the provider's key and believed only for that key, so a
//! peer on the path cannot put words in another's mouth. What remains: a
//! provider can name any address as its own; the asker dials it only if it
//! runs `get` on that provider's file (one connection attempt, not one per
//! peer the query reached).

use std::collections::{HashMap, VecDeque};

use iroh::{EndpointId, SecretKey, Signature};
use serde::{Deserialize, Serialize};

use crate::{
    index::{FileEntry, PeerAddr},
    limits::MAX_QUERY_BYTES,
};

/// ALPN of the flood protocol. Version 2 routes answers back along the
/// query's path; version 1 sent them to an address named in the query.
pub const ALPN: &[u8] = b"peernet/flood/2";
/// Most files one peer reports in one answer.
pub const MAX_ANSWER_FILES: usize = 100;
/// Largest flood frame (an answer with [`MAX_ANSWER_FILES`] long names fits).
pub const MAX_FLOOD_FRAME: usize = 64 * 1024;
/// Most answers one peer passes back for one query; more are dropped, so a
/// liar cannot flood the path back with answers.
pub const MAX_ANSWERS_PER_QUERY: u16 = 256;

/// Domain separation for answer signatures.
const ANSWER_CONTEXT: &[u8] = b"peernet flood answer v2";

/// One frame of the flood protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FloodFrame {
    /// A query, passed from neighbour to neighbour.
    Query(Query),
    /// Matches, passed back toward the asker along the query's path.
    Answer(Answer),
}

/// A provider's answer to a flood query, signed by the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub query: [u8; 16],
    pub provider: PeerAddr,
    pub nickname: String,
    pub files: Vec<FileEntry>,
    pub signature: Signature,
}

fn answer_bytes(query: &[u8; 16], provider: &PeerAddr, nickname: &str, files: &[FileEntry]) -> Vec<u8> {
    postcard::to_stdvec(&(ANSWER_CONTEXT, query, provider, nickname, files)).expect("in-memory values always encode")
}

impl Answer {
    /// An answer from the holder of `key`, who is `provider`.
    pub fn signed(key: &SecretKey, query: [u8; 16], provider: PeerAddr, nickname: String, files: Vec<FileEntry>) -> Self {
        let signature = key.sign(&answer_bytes(&query, &provider, &nickname, &files));
        Self { query, provider, nickname, files, signature }
    }

    /// Whether the provider's own key signed this answer, and it is within
    /// the limits.
    pub fn verify(&self) -> bool {
        self.files.len() <= MAX_ANSWER_FILES
            && self.provider.id.verify(&answer_bytes(&self.query, &self.provider, &self.nickname, &self.files), &self.signature).is_ok()
    }
}

/// TTL when the user gives none.
pub const DEFAULT_TTL: u8 = 4;
/// Highest TTL accepted; larger requests are clamped, so a query can never
/// sweep an unbounded part of a large network.
pub const MAX_TTL: u8 = 7;
/// Most neighbours a query is forwarded to from one peer.
pub const MAX_FANOUT: usize = 8;
/// How long a query id is remembered (and its answers passed back).
pub const SEEN_WINDOW_MS: u64 = 60_000;
/// Most query ids remembered at once; the oldest are forgotten first.
pub const MAX_SEEN: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub id: [u8; 16],
    pub text: String,
    /// Hops left, counting the one that delivers it.
    pub ttl: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Look for local matches and send an answer to `back`, the neighbour
    /// that handed us the query.
    Answer { query: Query, back: EndpointId },
    /// Send `query` (its TTL already lowered) to these neighbours.
    Forward { query: Query, to: Vec<EndpointId> },
    /// An answer to a query of our own.
    Deliver(Answer),
    /// Pass an answer on toward the asker.
    Reply { answer: Answer, to: EndpointId },
}

/// Clamps a requested TTL into `1..=MAX_TTL`.
pub fn clamp_ttl(ttl: u8) -> u8 {
    ttl.clamp(1, MAX_TTL)
}

/// What we remember of a query id.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: u64,
    /// The neighbour that handed it to us; `None` for our own queries.
    back: Option<EndpointId>,
    /// Answers passed back (or delivered) so far.
    answers: u16,
}

#[derive(Debug, Default)]
pub struct Flood {
    seen: HashMap<[u8; 16], Seen>,
    order: VecDeque<([u8; 16], u64)>,
    /// Queries handled (first sight), for metrics and tests.
    pub handled: u64,
    /// Copies of already handled queries that were dropped.
    pub duplicates: u64,
    /// Answers dropped: for a query we do not know (or forgot), from the
    /// direction the query came, or beyond [`MAX_ANSWERS_PER_QUERY`].
    pub answers_dropped: u64,
    /// Queries dropped for text longer than the index allows
    /// ([`MAX_QUERY_BYTES`]): nobody asks that, and every peer on the way
    /// would match it against every file it shares.
    pub oversized: u64,
}

impl Flood {
    fn forget_old(&mut self, now_ms: u64) {
        while let Some((id, at)) = self.order.front().copied() {
            if self.order.len() <= MAX_SEEN && at.saturating_add(SEEN_WINDOW_MS) > now_ms {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&id).is_some_and(|s| s.at == at) {
                self.seen.remove(&id);
            }
        }
    }

    /// Marks `id` seen, coming from `back`; false if it already was.
    fn first_sight(&mut self, id: [u8; 16], back: Option<EndpointId>, now_ms: u64) -> bool {
        self.forget_old(now_ms);
        if self.seen.contains_key(&id) {
            return false;
        }
        self.seen.insert(id, Seen { at: now_ms, back, answers: 0 });
        self.order.push_back((id, now_ms));
        true
    }

    /// Starts a query of our own: returns it and the neighbours to send it to.
    pub fn start(&mut self, id: [u8; 16], text: String, ttl: u8, neighbors: &[EndpointId], now_ms: u64) -> Action {
        self.first_sight(id, None, now_ms);
        let query = Query { id, text, ttl: clamp_ttl(ttl) };
        Action::Forward { query, to: fan_out(neighbors, &[]) }
    }

    /// Handles a query delivered by `from` (a neighbour, or a member asking
    /// directly, as a DHT lookup does; the caller's budgets decide whose
    /// queries get this far).
    pub fn handle(&mut self, mut query: Query, from: EndpointId, neighbors: &[EndpointId], now_ms: u64) -> Vec<Action> {
        if query.text.len() > MAX_QUERY_BYTES {
            self.oversized += 1;
            return Vec::new();
        }
        if query.ttl == 0 || !self.first_sight(query.id, Some(from), now_ms) {
            self.duplicates += 1;
            return Vec::new();
        }
        self.handled += 1;
        // Never trust a TTL larger than we would send ourselves.
        query.ttl = query.ttl.min(MAX_TTL);
        let mut actions = vec![Action::Answer { query: query.clone(), back: from }];
        if query.ttl > 1 {
            let to = fan_out(neighbors, &[from]);
            if !to.is_empty() {
                actions.push(Action::Forward { query: Query { ttl: query.ttl - 1, ..query }, to });
            }
        }
        actions
    }

    /// Where an answer delivered by neighbour `from` goes: to us, if the
    /// query is ours, or on to the neighbour that handed us the query.
    /// Checking the answer's signature is the caller's job (it is costly,
    /// and done before this).
    pub fn answer_arrived(&mut self, answer: Answer, from: EndpointId, now_ms: u64) -> Option<Action> {
        self.forget_old(now_ms);
        let Some(seen) = self.seen.get_mut(&answer.query) else {
            self.answers_dropped += 1;
            return None;
        };
        if seen.back == Some(from) || seen.answers >= MAX_ANSWERS_PER_QUERY {
            self.answers_dropped += 1;
            return None;
        }
        seen.answers += 1;
        Some(match seen.back {
            None => Action::Deliver(answer),
            Some(to) => Action::Reply { answer, to },
        })
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

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes(&[seed; 32])
    }

    fn id(seed: u8) -> EndpointId {
        key(seed).public()
    }

    fn query(qid: u8, ttl: u8) -> Query {
        Query { id: [qid; 16], text: "song".into(), ttl }
    }

    fn answer(qid: u8, provider: u8) -> Answer {
        let addr = PeerAddr { id: id(provider), ip: vec!["127.0.0.1:4000".parse().unwrap()], relay: None };
        Answer::signed(&key(provider), [qid; 16], addr, format!("p{provider}"), Vec::new())
    }

    #[test]
    fn ttl_is_clamped() {
        assert_eq!(clamp_ttl(0), 1);
        assert_eq!(clamp_ttl(4), 4);
        assert_eq!(clamp_ttl(200), MAX_TTL);
        let mut f = Flood::default();
        let Action::Forward { query: started, .. } = f.start([1; 16], "x".into(), 99, &[id(2)], 0) else { panic!() };
        assert_eq!(started.ttl, MAX_TTL);
        // A neighbour sending an inflated TTL is clamped too.
        let actions = f.handle(query(5, 250), id(2), &[id(2), id(3)], 0);
        let Some(Action::Forward { query: forwarded, .. }) = actions.last() else { panic!("{actions:?}") };
        assert_eq!(forwarded.ttl, MAX_TTL - 1);
    }

    #[test]
    fn each_query_is_handled_once() {
        let mut f = Flood::default();
        assert_eq!(f.handle(query(7, 3), id(2), &[id(2), id(3)], 0).len(), 2);
        assert!(f.handle(query(7, 3), id(3), &[id(2)], 1).is_empty(), "second copy dropped");
        assert!(f.handle(query(7, 2), id(4), &[id(2)], 2).is_empty(), "even with another TTL");
        assert_eq!((f.handled, f.duplicates), (1, 2));
        // Our own query coming back is a duplicate as well.
        f.start([9; 16], "x".into(), 3, &[id(2)], 3);
        assert!(f.handle(query(9, 2), id(2), &[id(2)], 4).is_empty());
    }

    #[test]
    fn ttl_one_answers_toward_the_sender_but_does_not_forward() {
        let mut f = Flood::default();
        let actions = f.handle(query(1, 1), id(2), &[id(3), id(4)], 0);
        assert_eq!(actions, vec![Action::Answer { query: query(1, 1), back: id(2) }]);
    }

    #[test]
    fn query_text_longer_than_the_index_allows_is_dropped() {
        let mut f = Flood::default();
        let long = Query { id: [1; 16], text: "a".repeat(MAX_QUERY_BYTES + 1), ttl: 3 };
        assert!(f.handle(long, id(2), &[id(2), id(3)], 0).is_empty());
        let longest = Query { id: [2; 16], text: "a".repeat(MAX_QUERY_BYTES), ttl: 3 };
        assert_eq!(f.handle(longest, id(2), &[id(2), id(3)], 0).len(), 2);
        assert_eq!((f.oversized, f.handled), (1, 1));
    }

    #[test]
    fn forwarding_skips_the_sender_and_is_bounded() {
        let mut f = Flood::default();
        let neighbors: Vec<EndpointId> = (1..=20).map(id).collect();
        let actions = f.handle(query(1, 4), id(2), &neighbors, 0);
        let Some(Action::Forward { query: q, to }) = actions.last() else { panic!() };
        assert_eq!(q.ttl, 3);
        assert_eq!(to.len(), MAX_FANOUT);
        assert!(!to.contains(&id(2)));
    }

    #[test]
    fn answers_travel_back_along_the_path() {
        // We asked; neighbour 2 passed it to 3, who passed it to 4.
        let (mut me, mut two, mut three) = (Flood::default(), Flood::default(), Flood::default());
        let Action::Forward { query: q, .. } = me.start([5; 16], "song".into(), 3, &[id(2)], 0) else { panic!() };
        two.handle(q.clone(), id(1), &[id(1), id(3)], 0);
        three.handle(Query { ttl: 2, ..q }, id(2), &[id(2), id(4)], 0);
        // 4's answer goes to 3, then to 2, then to us: never to an address.
        let a = answer(5, 4);
        assert_eq!(three.answer_arrived(a.clone(), id(4), 1), Some(Action::Reply { answer: a.clone(), to: id(2) }));
        assert_eq!(two.answer_arrived(a.clone(), id(3), 1), Some(Action::Reply { answer: a.clone(), to: id(1) }));
        assert_eq!(me.answer_arrived(a.clone(), id(2), 1), Some(Action::Deliver(a)));
    }

    #[test]
    fn answers_for_unknown_queries_backwards_or_beyond_the_cap_are_dropped() {
        let mut f = Flood::default();
        assert_eq!(f.answer_arrived(answer(9, 4), id(4), 0), None, "a query we never saw");
        f.handle(query(1, 2), id(2), &[id(2), id(3)], 0);
        assert_eq!(f.answer_arrived(answer(1, 4), id(2), 0), None, "from where the query came");
        for _ in 0..MAX_ANSWERS_PER_QUERY {
            assert!(f.answer_arrived(answer(1, 3), id(3), 0).is_some());
        }
        assert_eq!(f.answer_arrived(answer(1, 3), id(3), 0), None, "beyond the cap");
        assert_eq!(f.answers_dropped, 3);
        // Forgotten with the query.
        assert_eq!(f.answer_arrived(answer(1, 3), id(3), SEEN_WINDOW_MS + 1), None);
    }

    #[test]
    fn an_answer_is_believed_only_for_the_key_that_signed_it() {
        let a = answer(1, 4);
        assert!(a.verify());
        let mut lie = a.clone();
        lie.provider.ip = vec!["192.0.2.1:9".parse().unwrap()];
        assert!(!lie.verify(), "another address under 4's name");
        let mut impostor = answer(1, 5);
        impostor.provider.id = id(4);
        assert!(!impostor.verify(), "5 speaking for 4");
        let mut more = a.clone();
        more.files.push(FileEntry { name: "x".into(), size: 1, hash: crate::Hash::new("x"), kind: Default::default() });
        assert!(!more.verify(), "files added on the way");
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

    proptest::proptest! {
        /// Whatever a neighbour sends as a flood frame: no panic, and an
        /// answer that decodes is checked without panicking too.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Ok(FloodFrame::Answer(a)) = crate::frame::decode::<FloodFrame>(&bytes) {
                let _ = a.verify();
            }
        }

        /// A real answer damaged in one byte on the way: it no longer
        /// decodes, or decodes unchanged, or no longer verifies.
        #[test]
        fn damaged_answers_never_panic_or_verify(at in proptest::prelude::any::<usize>(), xor in 1..=255u8) {
            let files = vec![FileEntry { name: "song.ogg".into(), size: 7, hash: crate::Hash::new("song"), kind: Default::default() }];
            let a = Answer::signed(&key(4), [1; 16], answer(1, 4).provider, "p4".into(), files);
            let mut bytes = postcard::to_stdvec(&FloodFrame::Answer(a.clone())).unwrap();
            let at = at % bytes.len();
            bytes[at] ^= xor;
            match crate::frame::decode::<FloodFrame>(&bytes) {
                Ok(FloodFrame::Answer(b)) if b == a => {}
                Ok(FloodFrame::Answer(b)) => proptest::prop_assert!(!b.verify(), "a damaged answer verified: {b:?}"),
                _ => {}
            }
        }
    }
}
