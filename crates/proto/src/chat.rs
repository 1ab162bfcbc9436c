//! Chat and presence events, and the room state every peer keeps.
//!
//! Every event is signed by its author's key and carries the network's topic,
//! a per-process session id, a sequence number, a random nonce and the send
//! time. A receiver ([`Room::receive`]) drops events that are too large,
//! badly signed, meant for another network, too old or from the future, or
//! already seen (replays), and delivers each author's messages in the order
//! the author sent them.
//!
//! Wire format: postcard of [`SignedEvent`], whose `event` field holds the
//! postcard of [`Event`]; the signature covers exactly those bytes. At most
//! [`MAX_EVENT_BYTES`] on the wire.
//!
//! Pure state: time is an argument, nothing here touches the network.
//!
//! Every number that came off the wire (`seq`, `sent_at_ms`, `session`) or
//! from the caller's clock may be anything from 0 to `u64::MAX`, and the
//! clock may jump backwards; all arithmetic on them saturates, so extreme
//! values are refused or delivered, never a panic. Sequence numbers:
//! `u64::MAX` is a valid last number (the counter then stays there), and an
//! event numbered more than [`MAX_SEQ_BEHIND`] below what was already
//! delivered for its session restarts the numbering instead of being dropped,
//! so an author whose counter once jumped to the top is not silenced for the
//! rest of its session.

use std::collections::{BTreeMap, HashMap, VecDeque};

use iroh::{EndpointId, SecretKey, Signature};
use serde::{Deserialize, Serialize};

use crate::names::validate_nickname;

/// Longest chat message, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Largest signed event on the wire (a maximal message plus headers).
pub const MAX_EVENT_BYTES: usize = MAX_TEXT_BYTES + 512;
/// Events older than this (by the author's clock vs ours) are dropped, so a
/// replay needs a seen-set only this long.
pub const REPLAY_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Tolerated clock skew into the future.
pub const MAX_FUTURE_SKEW_MS: u64 = 60 * 1000;
/// How long an out-of-order message waits for the ones before it.
pub const REORDER_WAIT_MS: u64 = 2000;
/// Out-of-order messages held per author at most.
pub const MAX_PENDING_PER_AUTHOR: usize = 256;
/// Recent messages kept for `peernet messages`.
pub const HISTORY: usize = 1000;
/// An event numbered this far below its author's next expected number is
/// not a late arrival (no author sends that many events within
/// [`REPLAY_WINDOW_MS`]) but a restarted numbering: ordering starts over at it.
pub const MAX_SEQ_BEHIND: u64 = 1 << 32;
/// Most (author, nonce) pairs remembered for replay detection. Past it the
/// events closest to leaving the replay window are forgotten first, which
/// only lets a replay of those through to the per-author order check.
pub const MAX_SEEN_EVENTS: usize = 1 << 16;
/// Neighbours kept of one member's Links report (an overlay's active view
/// is far smaller; a longer list is cut).
pub const MAX_REPORTED_LINKS: usize = 32;
/// The seen-set is not swept below this size.
const SEEN_SWEEP_FLOOR: usize = 4096;
/// Most members a room remembers. A new author beyond it takes the place
/// of the member silent longest among those offline; when every member is
/// online, its events are dropped (`RoomFull`) until one goes quiet. Keys
/// cost a member nothing to mint, so the table needs a bound of its own.
pub const MAX_MEMBERS: usize = 1024;
/// A member silent for this many presence TTLs (offline, or gone after a
/// leave) is forgotten; it is a new member when it speaks again.
pub const FORGET_AFTER_TTLS: u64 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A peer entered the room (also sent when its overlay reconnects).
    Hello {
        nickname: String,
    },
    /// Periodic "still here".
    Presence {
        nickname: String,
    },
    Message {
        text: String,
    },
    Rename {
        nickname: String,
    },
    /// A graceful leave.
    Leave,
    /// The whole network is closed; only valid from the root's key.
    Close,
    /// "Still here", with this peer's overlay neighbours: how a network
    /// without an index (a LAN network) draws its map.
    Links {
        nickname: String,
        links: Vec<crate::index::LinkReport>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub author: EndpointId,
    pub topic: [u8; 32],
    pub session: u64,
    pub seq: u64,
    pub nonce: [u8; 16],
    pub sent_at_ms: u64,
    pub body: Body,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedEvent {
    pub event: Vec<u8>,
    pub signature: Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("event of {0} bytes exceeds the limit of {MAX_EVENT_BYTES}")]
    TooLarge(usize),
    #[error("event does not decode")]
    Malformed,
    #[error("signature does not match the author's key")]
    BadSignature,
    #[error("event belongs to another network")]
    WrongTopic,
    #[error("event is outside the accepted time window")]
    Stale,
    #[error("event was already seen")]
    Replay,
    #[error("message text exceeds {MAX_TEXT_BYTES} bytes")]
    TextTooLong,
    #[error("invalid nickname in event")]
    BadNickname,
    #[error("close event not signed by the network's root")]
    ForgedClose,
    #[error("the author sends events faster than its budget")]
    OverBudget,
    #[error("the neighbour that delivered it introduced more new authors than its budget")]
    TooManyNewAuthors,
    #[error("the room holds its most members, all of them online")]
    RoomFull,
}

/// Signs `event` with `key`. The caller sets `event.author` to `key`'s public key.
pub fn seal(key: &SecretKey, event: &Event) -> Vec<u8> {
    let bytes = postcard::to_stdvec(event).expect("events always encode");
    let signature = key.sign(&bytes);
    postcard::to_stdvec(&SignedEvent { event: bytes, signature }).expect("events always encode")
}

/// Checks size, signature, topic, time window and body limits.
pub fn open(bytes: &[u8], topic: &[u8; 32], now_ms: u64) -> Result<Event, Rejected> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(Rejected::TooLarge(bytes.len()));
    }
    let signed: SignedEvent = postcard::from_bytes(bytes).map_err(|_| Rejected::Malformed)?;
    let event: Event = postcard::from_bytes(&signed.event).map_err(|_| Rejected::Malformed)?;
    event.author.verify(&signed.event, &signed.signature).map_err(|_| Rejected::BadSignature)?;
    if &event.topic != topic {
        return Err(Rejected::WrongTopic);
    }
    let too_old = now_ms.saturating_sub(event.sent_at_ms) > REPLAY_WINDOW_MS;
    let too_new = event.sent_at_ms.saturating_sub(now_ms) > MAX_FUTURE_SKEW_MS;
    if too_old || too_new {
        return Err(Rejected::Stale);
    }
    match &event.body {
        Body::Message { text } if text.len() > MAX_TEXT_BYTES => return Err(Rejected::TextTooLong),
        Body::Hello { nickname } | Body::Presence { nickname } | Body::Rename { nickname } => {
            validate_nickname(nickname).map_err(|_| Rejected::BadNickname)?
        }
        _ => {}
    }
    Ok(event)
}

/// A chat message as delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Position in this peer's history (1, 2, ...), for polling.
    pub index: u64,
    pub author: EndpointId,
    pub nickname: String,
    pub text: String,
    pub sent_at_ms: u64,
    pub received_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: EndpointId,
    pub nickname: String,
    pub online: bool,
    pub last_seen_ms: u64,
    /// Left gracefully (as opposed to vanished).
    pub left: bool,
    /// Its overlay links, as it last reported them (LAN networks).
    #[serde(default)]
    pub links: Vec<crate::index::LinkReport>,
}

/// What a received event changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Message(ChatMessage),
    Joined(EndpointId),
    Renamed { id: EndpointId, from: String, to: String },
    Left(EndpointId),
    Closed,
}

#[derive(Debug, Default)]
struct AuthorOrder {
    session: u64,
    next_seq: u64,
    /// seq -> (event, arrived at)
    pending: BTreeMap<u64, (Event, u64)>,
}

/// The room as one peer sees it.
#[derive(Debug)]
pub struct Room {
    topic: [u8; 32],
    /// The only key whose Close is obeyed; a LAN network has none.
    root: Option<EndpointId>,
    presence_ttl_ms: u64,
    members: BTreeMap<EndpointId, Member>,
    order: HashMap<EndpointId, AuthorOrder>,
    seen: HashMap<(EndpointId, [u8; 16]), u64>,
    /// Size of `seen` at which it is swept next (doubling, so sweeps are
    /// amortised over the inserts).
    seen_sweep_at: usize,
    history: VecDeque<ChatMessage>,
    next_index: u64,
    /// Events dropped, by reason, for metrics and tests.
    pub dropped: BTreeMap<String, u64>,
}

impl Room {
    pub fn new(topic: [u8; 32], root: Option<EndpointId>, presence_ttl_ms: u64) -> Self {
        Self {
            topic,
            root,
            presence_ttl_ms,
            members: BTreeMap::new(),
            order: HashMap::new(),
            seen: HashMap::new(),
            seen_sweep_at: SEEN_SWEEP_FLOOR,
            history: VecDeque::new(),
            next_index: 1,
            dropped: BTreeMap::new(),
        }
    }

    pub fn set_presence_ttl(&mut self, ttl_ms: u64) {
        self.presence_ttl_ms = ttl_ms;
    }

    pub fn presence_ttl_ms(&self) -> u64 {
        self.presence_ttl_ms
    }

    pub fn members(&self, now_ms: u64) -> Vec<Member> {
        self.members
            .values()
            .map(|m| Member { online: !m.left && m.last_seen_ms.saturating_add(self.presence_ttl_ms) > now_ms, ..m.clone() })
            .collect()
    }

    /// Members heard from within `within_ms` that have not left: the
    /// room's size as this peer knows it, which sets the presence period
    /// ([`crate::timers::scaled`]). A window wider than the TTL keeps a
    /// newcomer's count from lagging behind the room for long.
    pub fn recent_members(&self, now_ms: u64, within_ms: u64) -> usize {
        self.members.values().filter(|m| !m.left && m.last_seen_ms.saturating_add(within_ms) > now_ms).count()
    }

    pub fn nickname_of(&self, id: &EndpointId) -> Option<&str> {
        self.members.get(id).map(|m| m.nickname.as_str())
    }

    pub fn messages_after(&self, index: u64) -> Vec<ChatMessage> {
        self.history.iter().filter(|m| m.index > index).cloned().collect()
    }

    fn reject(&mut self, why: Rejected) -> Result<Vec<Change>, Rejected> {
        *self.dropped.entry(format!("{why:?}").split('(').next().unwrap_or("?").to_string()).or_default() += 1;
        Err(why)
    }

    /// Handles raw bytes from the overlay.
    pub fn receive(&mut self, bytes: &[u8], now_ms: u64) -> Result<Vec<Change>, Rejected> {
        self.receive_within(bytes, now_ms, |_, _| Ok(()))
    }

    /// [`Room::receive`], but the caller's `budget` sees each (verified)
    /// event's author first, with whether the room knows it, and may refuse
    /// it (`OverBudget`, `TooManyNewAuthors`): the caller keeps the budgets
    /// (per author, per delivering neighbour), this type stays free of
    /// clocks.
    pub fn receive_within(
        &mut self,
        bytes: &[u8],
        now_ms: u64,
        budget: impl FnOnce(&EndpointId, bool) -> Result<(), Rejected>,
    ) -> Result<Vec<Change>, Rejected> {
        let event = match open(bytes, &self.topic, now_ms) {
            Ok(e) => e,
            Err(e) => return self.reject(e),
        };
        let known = self.members.contains_key(&event.author);
        if let Err(why) = budget(&event.author, known) {
            return self.reject(why);
        }
        self.accept(event, now_ms)
    }

    /// Makes room for a new author when the table is full: the member
    /// silent longest among those offline goes. False when every member is
    /// online.
    fn make_room(&mut self, now_ms: u64) -> bool {
        if self.members.len() < MAX_MEMBERS {
            return true;
        }
        let ttl = self.presence_ttl_ms;
        let oldest = self
            .members
            .values()
            .filter(|m| m.left || m.last_seen_ms.saturating_add(ttl) <= now_ms)
            .min_by_key(|m| m.last_seen_ms)
            .map(|m| m.id);
        match oldest {
            Some(id) => {
                self.forget(&id);
                true
            }
            None => false,
        }
    }

    fn forget(&mut self, id: &EndpointId) {
        self.members.remove(id);
        self.order.remove(id);
    }

    /// Forgets members silent for [`FORGET_AFTER_TTLS`] presence TTLs.
    fn forget_silent(&mut self, now_ms: u64) {
        let after = self.presence_ttl_ms.saturating_mul(FORGET_AFTER_TTLS);
        let silent: Vec<EndpointId> =
            self.members.values().filter(|m| m.last_seen_ms.saturating_add(after) <= now_ms).map(|m| m.id).collect();
        for id in silent {
            self.forget(&id);
        }
    }

    /// Members remembered (online or not), for status and tests.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Handles an event that already passed [`open`] (our own, for instance).
    pub fn accept(&mut self, event: Event, now_ms: u64) -> Result<Vec<Change>, Rejected> {
        if matches!(event.body, Body::Close) && Some(event.author) != self.root {
            return self.reject(Rejected::ForgedClose);
        }
        if !self.members.contains_key(&event.author) && !self.make_room(now_ms) {
            return self.reject(Rejected::RoomFull);
        }
        if self.seen.insert((event.author, event.nonce), event.sent_at_ms).is_some() {
            return self.reject(Rejected::Replay);
        }
        self.expire_seen(now_ms);
        let mut changes = Vec::new();
        let author = event.author;
        // Membership facts apply at once; only chat text waits for order.
        let nickname = match &event.body {
            Body::Hello { nickname } | Body::Presence { nickname } | Body::Rename { nickname } | Body::Links { nickname, .. } => {
                Some(nickname.clone())
            }
            _ => None,
        };
        let known = self.members.get(&author).cloned();
        let member = self.members.entry(author).or_insert_with(|| Member {
            id: author,
            nickname: nickname.clone().unwrap_or_else(|| format!("peer-{}", author.fmt_short())),
            online: true,
            last_seen_ms: now_ms,
            left: false,
            links: Vec::new(),
        });
        member.last_seen_ms = now_ms;
        if let Body::Links { links, .. } = &event.body {
            member.links = links.iter().take(MAX_REPORTED_LINKS).copied().collect();
        }
        match &event.body {
            Body::Leave => {
                member.left = true;
                changes.push(Change::Left(author));
            }
            Body::Close => changes.push(Change::Closed),
            _ => {
                let was_away = known.as_ref().is_none_or(|k| k.left || k.last_seen_ms.saturating_add(self.presence_ttl_ms) <= now_ms);
                member.left = false;
                if was_away {
                    changes.push(Change::Joined(author));
                }
            }
        }
        if let Some(nick) = nickname {
            if member.nickname != nick {
                let from = std::mem::replace(&mut member.nickname, nick.clone());
                if known.is_some() {
                    changes.push(Change::Renamed { id: author, from, to: nick });
                }
            }
        }
        changes.extend(self.order_and_deliver(event, now_ms));
        Ok(changes)
    }

    fn expire_seen(&mut self, now_ms: u64) {
        if self.seen.len() <= self.seen_sweep_at {
            return;
        }
        // An event can pass `open` again while it is inside the window.
        self.seen.retain(|_, sent| sent.saturating_add(REPLAY_WINDOW_MS + MAX_FUTURE_SKEW_MS) >= now_ms);
        if self.seen.len() > MAX_SEEN_EVENTS {
            // Still too many (a flood of fresh events, or a clock that went
            // backwards): keep the newest three quarters.
            let mut sent: Vec<u64> = self.seen.values().copied().collect();
            let drop = sent.len() - MAX_SEEN_EVENTS / 4 * 3;
            let (_, &mut cutoff, _) = sent.select_nth_unstable(drop - 1);
            let mut excess = drop;
            self.seen.retain(|_, s| {
                let forget = excess > 0 && *s <= cutoff;
                excess -= usize::from(forget);
                !forget
            });
        }
        self.seen_sweep_at = (self.seen.len() * 2).clamp(SEEN_SWEEP_FLOOR, MAX_SEEN_EVENTS);
    }

    fn order_and_deliver(&mut self, event: Event, now_ms: u64) -> Vec<Change> {
        let author = event.author;
        let state = self.order.entry(author).or_insert_with(|| AuthorOrder {
            session: event.session,
            next_seq: event.seq,
            pending: BTreeMap::new(),
        });
        // A new process of this author, or a numbering restarted far below
        // the one we follow: ordering starts over at this event.
        if state.session != event.session || event.seq.saturating_add(MAX_SEQ_BEHIND) < state.next_seq {
            *state = AuthorOrder { session: event.session, next_seq: event.seq, pending: BTreeMap::new() };
        }
        if event.seq < state.next_seq {
            return Vec::new();
        }
        state.pending.insert(event.seq, (event, now_ms));
        while state.pending.len() > MAX_PENDING_PER_AUTHOR {
            state.pending.pop_first();
        }
        self.drain(author, now_ms, false)
    }

    /// Delivers in-order events; with `force`, also gives up on gaps older
    /// than [`REORDER_WAIT_MS`].
    fn drain(&mut self, author: EndpointId, now_ms: u64, force: bool) -> Vec<Change> {
        let mut ready = Vec::new();
        if let Some(state) = self.order.get_mut(&author) {
            while let Some((&seq, &(_, arrived))) = state.pending.first_key_value() {
                // A clock that went backwards counts as waited out, rather
                // than holding this author's messages until it catches up.
                let waited_out = force && now_ms.checked_sub(arrived).is_none_or(|waited| waited >= REORDER_WAIT_MS);
                if seq != state.next_seq && !waited_out {
                    break;
                }
                let (_, (event, _)) = state.pending.pop_first().expect("checked above");
                // u64::MAX is a last number: the counter stays there, so a
                // second event numbered u64::MAX is still delivered.
                state.next_seq = seq.saturating_add(1);
                ready.push(event);
            }
        }
        ready.into_iter().filter_map(|e| self.deliver(e, now_ms)).collect()
    }

    fn deliver(&mut self, event: Event, now_ms: u64) -> Option<Change> {
        let Body::Message { text } = event.body else { return None };
        let nickname = self.nickname_of(&event.author).unwrap_or("?").to_string();
        let msg = ChatMessage {
            index: self.next_index,
            author: event.author,
            nickname,
            text,
            sent_at_ms: event.sent_at_ms,
            received_at_ms: now_ms,
        };
        self.next_index += 1;
        self.history.push_back(msg.clone());
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        Some(Change::Message(msg))
    }

    /// Periodic work: release messages whose predecessors never came.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Change> {
        self.forget_silent(now_ms);
        // Only authors with messages waiting: a large quiet room has
        // hundreds of authors and nothing to drain.
        let authors: Vec<EndpointId> = self.order.iter().filter(|(_, s)| !s.pending.is_empty()).map(|(a, _)| *a).collect();
        authors.into_iter().flat_map(|a| self.drain(a, now_ms, true)).collect()
    }

    /// When [`Room::tick`] will next give up on a gap and deliver what
    /// waits behind it (`None` while nothing waits), so the caller can
    /// sleep until then instead of ticking.
    pub fn next_tick_ms(&self) -> Option<u64> {
        self.order
            .values()
            .filter_map(|s| s.pending.first_key_value())
            .map(|(_, (_, arrived))| arrived.saturating_add(REORDER_WAIT_MS))
            .min()
    }
}

/// Builds this peer's events: session id, sequence numbers, nonces.
#[derive(Debug)]
pub struct Author {
    key: SecretKey,
    topic: [u8; 32],
    session: u64,
    next_seq: u64,
}

impl Author {
    pub fn new(key: SecretKey, topic: [u8; 32]) -> Self {
        Self { key, topic, session: rand::random(), next_seq: 0 }
    }

    pub fn id(&self) -> EndpointId {
        self.key.public()
    }

    /// Makes and signs the next event; returns it with its wire bytes.
    pub fn event(&mut self, body: Body, now_ms: u64) -> (Event, Vec<u8>) {
        let event = Event {
            author: self.key.public(),
            topic: self.topic,
            session: self.session,
            seq: self.next_seq,
            nonce: rand::random(),
            sent_at_ms: now_ms,
            body,
        };
        // Numbers never wrap within a session: past the last one, this
        // author becomes a new session that starts again at 0.
        match self.next_seq.checked_add(1) {
            Some(next) => self.next_seq = next,
            None => (self.session, self.next_seq) = (rand::random(), 0),
        }
        let bytes = seal(&self.key, &event);
        (event, bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    const TOPIC: [u8; 32] = [7; 32];
    const NOW: u64 = 1_000_000_000;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes(&[seed; 32])
    }

    fn room() -> Room {
        Room::new(TOPIC, Some(key(100).public()), 30_000)
    }

    fn texts(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::Message(m) => Some(m.text.clone()),
                _ => None,
            })
            .collect()
    }

    fn msg(text: &str) -> Body {
        Body::Message { text: text.into() }
    }

    #[test]
    fn signed_messages_are_delivered_once() {
        let mut alice = Author::new(key(1), TOPIC);
        let mut r = room();
        let (_, hello) = alice.event(Body::Hello { nickname: "alice".into() }, NOW);
        assert!(r.receive(&hello, NOW).unwrap().contains(&Change::Joined(alice.id())));
        let (_, bytes) = alice.event(msg("hi"), NOW);
        assert_eq!(texts(&r.receive(&bytes, NOW).unwrap()), ["hi"]);
        assert_eq!(r.receive(&bytes, NOW + 5), Err(Rejected::Replay), "a replay is dropped");
        assert_eq!(r.messages_after(0).len(), 1);
        assert_eq!(r.messages_after(0)[0].nickname, "alice");
    }

    /// A key minted from a seed number (the hostile member's trick).
    fn minted(n: u32) -> SecretKey {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&n.to_le_bytes());
        seed[31] = 0xAA;
        SecretKey::from_bytes(&seed)
    }

    #[test]
    fn the_member_table_is_bounded_whatever_keys_are_minted() {
        let mut r = room();
        let mut alice = Author::new(key(1), TOPIC);
        let (_, hello) = alice.event(Body::Hello { nickname: "alice".into() }, NOW);
        r.receive(&hello, NOW).unwrap();
        // A burst of minted keys, all online at once: the table fills, and
        // then new authors are refused rather than pushing anyone out.
        let mut refused = 0;
        for n in 0..(MAX_MEMBERS as u32 + 50) {
            let (_, bytes) = Author::new(minted(n), TOPIC).event(Body::Presence { nickname: format!("m{n}") }, NOW);
            refused += usize::from(r.receive(&bytes, NOW) == Err(Rejected::RoomFull));
        }
        assert_eq!(r.member_count(), MAX_MEMBERS);
        assert_eq!(refused, 51, "alice kept her place; the last 51 keys were refused");
        assert!(r.members(NOW).iter().any(|m| m.id == alice.id()));
        // Once the minted keys go quiet past the TTL, a new member takes
        // the place of one of them, not of alice who kept talking.
        let later = NOW + 40_000;
        let (_, still) = alice.event(msg("still here"), later);
        r.receive(&still, later).unwrap();
        let (_, bob) = Author::new(key(2), TOPIC).event(Body::Hello { nickname: "bob".into() }, later);
        assert!(r.receive(&bob, later).is_ok(), "an offline minted key makes room");
        assert!(r.members(later).iter().any(|m| m.id == alice.id()));
        // Silent for three TTLs: forgotten, whatever their number.
        let much_later = later + 3 * 30_000;
        r.tick(much_later);
        assert_eq!(r.member_count(), 0, "every silent member is forgotten");
    }

    #[test]
    fn the_callers_budget_sees_whether_an_author_is_new() {
        let mut r = room();
        let mut alice = Author::new(key(1), TOPIC);
        let (_, first) = alice.event(Body::Hello { nickname: "alice".into() }, NOW);
        assert_eq!(
            r.receive_within(&first, NOW, |_, known| if known { Ok(()) } else { Err(Rejected::TooManyNewAuthors) }),
            Err(Rejected::TooManyNewAuthors)
        );
        assert!(r
            .receive_within(&first, NOW, |_, known| {
                assert!(!known);
                Ok(())
            })
            .is_ok());
        let (_, second) = alice.event(msg("hi"), NOW);
        assert!(r
            .receive_within(&second, NOW, |_, known| {
                assert!(known);
                Ok(())
            })
            .is_ok());
        assert_eq!(r.dropped.get("TooManyNewAuthors"), Some(&1));
    }

    #[test]
    fn forged_events_are_dropped() {
        let mut alice = Author::new(key(1), TOPIC);
        let (mut event, _) = alice.event(msg("I am alice"), NOW);
        // Mallory claims alice's authorship but can only sign with her own key.
        event.nonce = [9; 16];
        let forged = seal(&key(2), &event);
        let mut r = room();
        assert_eq!(r.receive(&forged, NOW), Err(Rejected::BadSignature));
        // Tampering with signed bytes breaks the signature too.
        let (_, good) = alice.event(msg("original"), NOW);
        let mut signed: SignedEvent = postcard::from_bytes(&good).unwrap();
        let last = signed.event.len() - 1;
        signed.event[last] ^= 1;
        let tampered = postcard::to_stdvec(&signed).unwrap();
        assert!(matches!(r.receive(&tampered, NOW), Err(Rejected::BadSignature | Rejected::Malformed)));
        assert!(r.messages_after(0).is_empty());
    }

    #[test]
    fn other_networks_old_events_and_oversized_ones_are_dropped() {
        let mut other = Author::new(key(1), [8; 32]);
        let (_, bytes) = other.event(msg("x"), NOW);
        assert_eq!(room().receive(&bytes, NOW), Err(Rejected::WrongTopic));
        let mut alice = Author::new(key(1), TOPIC);
        let (_, old) = alice.event(msg("old"), NOW - REPLAY_WINDOW_MS - 1);
        assert_eq!(room().receive(&old, NOW), Err(Rejected::Stale));
        let (_, long) = alice.event(msg(&"x".repeat(MAX_TEXT_BYTES + 1)), NOW);
        assert!(matches!(room().receive(&long, NOW), Err(Rejected::TextTooLong | Rejected::TooLarge(_))));
        assert!(matches!(room().receive(&vec![0u8; MAX_EVENT_BYTES + 1], NOW), Err(Rejected::TooLarge(_))));
        assert_eq!(room().receive(&[1, 2, 3], NOW), Err(Rejected::Malformed));
    }

    #[test]
    fn author_order_holds_despite_reordering() {
        let mut alice = Author::new(key(1), TOPIC);
        let events: Vec<_> = (0..5).map(|i| alice.event(msg(&i.to_string()), NOW).1).collect();
        let mut r = room();
        let mut got = Vec::new();
        for i in [0, 2, 4, 1, 3] {
            got.extend(texts(&r.receive(&events[i], NOW).unwrap()));
        }
        assert_eq!(got, ["0", "1", "2", "3", "4"]);
    }

    #[test]
    fn a_lost_message_does_not_block_forever() {
        let mut alice = Author::new(key(1), TOPIC);
        let events: Vec<_> = (0..3).map(|i| alice.event(msg(&i.to_string()), NOW).1).collect();
        let mut r = room();
        assert_eq!(texts(&r.receive(&events[0], NOW).unwrap()), ["0"]);
        assert!(texts(&r.receive(&events[2], NOW).unwrap()).is_empty(), "waits for 1");
        assert!(texts(&r.tick(NOW + 10)).is_empty());
        assert_eq!(r.next_tick_ms(), Some(NOW + REORDER_WAIT_MS), "the gap is given up on then");
        assert_eq!(texts(&r.tick(NOW + REORDER_WAIT_MS)), ["2"], "gives up on 1");
        assert_eq!(r.next_tick_ms(), None, "nothing waits");
    }

    #[test]
    fn renames_leaves_and_presence() {
        let mut alice = Author::new(key(1), TOPIC);
        let mut r = room();
        r.receive(&alice.event(Body::Hello { nickname: "alice".into() }, NOW).1, NOW).unwrap();
        let changes = r.receive(&alice.event(Body::Rename { nickname: "ally".into() }, NOW).1, NOW).unwrap();
        assert!(changes.contains(&Change::Renamed { id: alice.id(), from: "alice".into(), to: "ally".into() }));
        assert_eq!(r.members(NOW)[0].nickname, "ally");
        assert!(r.members(NOW)[0].online);
        assert!(!r.members(NOW + 30_001)[0].online, "silent past the TTL means offline");
        r.receive(&alice.event(Body::Leave, NOW + 1).1, NOW + 1).unwrap();
        let m = &r.members(NOW + 2)[0];
        assert!(!m.online && m.left);
        // Coming back is a join again.
        let changes = r.receive(&alice.event(Body::Presence { nickname: "ally".into() }, NOW + 3).1, NOW + 3).unwrap();
        assert!(changes.contains(&Change::Joined(alice.id())));
    }

    #[test]
    fn links_reports_mark_presence_and_keep_neighbours() {
        let mut alice = Author::new(key(1), TOPIC);
        let mut r = room();
        let report = |seed: u8| crate::index::LinkReport { id: key(seed).public(), path: None };
        let links: Vec<_> = (2..=3).map(report).collect();
        let changes = r.receive(&alice.event(Body::Links { nickname: "alice".into(), links: links.clone() }, NOW).1, NOW).unwrap();
        assert!(changes.contains(&Change::Joined(alice.id())));
        let m = &r.members(NOW)[0];
        assert_eq!((m.nickname.as_str(), m.online, &m.links), ("alice", true, &links));
        // A long list is cut to the limit, and the last report wins.
        let many: Vec<_> = (0..(MAX_REPORTED_LINKS as u8 + 8)).map(|seed| report(seed.wrapping_add(10))).collect();
        let event = alice.event(Body::Links { nickname: "alice".into(), links: many.clone() }, NOW + 1).1;
        r.receive(&event, NOW + 1).unwrap();
        assert_eq!(r.members(NOW + 1)[0].links, many[..MAX_REPORTED_LINKS]);
    }

    #[test]
    fn a_network_without_a_root_cannot_be_closed() {
        let mut r = Room::new(TOPIC, None, 30_000);
        let mut anyone = Author::new(key(100), TOPIC);
        assert_eq!(r.receive(&anyone.event(Body::Close, NOW).1, NOW), Err(Rejected::ForgedClose));
    }

    #[test]
    fn only_the_root_can_close_the_network() {
        let mut mallory = Author::new(key(1), TOPIC);
        let mut r = room();
        assert_eq!(r.receive(&mallory.event(Body::Close, NOW).1, NOW), Err(Rejected::ForgedClose));
        let mut root = Author::new(key(100), TOPIC);
        assert!(r.receive(&root.event(Body::Close, NOW).1, NOW).unwrap().contains(&Change::Closed));
    }

    #[test]
    fn an_author_over_its_budget_is_dropped_and_counted() {
        let mut alice = Author::new(key(1), TOPIC);
        let mut bob = Author::new(key(2), TOPIC);
        let mut r = room();
        let over = alice.id();
        let within = |author: &EndpointId, _known: bool| if *author != over { Ok(()) } else { Err(Rejected::OverBudget) };
        let said = Body::Message { text: "hi".into() };
        assert_eq!(r.receive_within(&alice.event(said.clone(), NOW).1, NOW, within), Err(Rejected::OverBudget));
        assert!(r.receive_within(&bob.event(said, NOW).1, NOW, within).is_ok(), "another author is unaffected");
        assert_eq!(r.dropped.get("OverBudget"), Some(&1));
        // A forgery is refused before any budget is spent on it.
        let mut spent = false;
        let mut forged = alice.event(Body::Message { text: "x".into() }, NOW).1;
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(r
            .receive_within(&forged, NOW, |_, _| {
                spent = true;
                Ok(())
            })
            .is_err());
        assert!(!spent);
    }

    #[test]
    fn a_restarted_author_is_followed() {
        let mut r = room();
        let mut first = Author::new(key(1), TOPIC);
        for i in 0..3 {
            r.receive(&first.event(msg(&format!("a{i}")), NOW).1, NOW).unwrap();
        }
        let mut second = Author::new(key(1), TOPIC);
        assert_eq!(texts(&r.receive(&second.event(msg("b0"), NOW).1, NOW).unwrap()), ["b0"]);
    }

    /// Signs an event with any number and send time, as a buggy or hostile
    /// author could; the author's session is left as it was.
    fn event_at(author: &mut Author, seq: u64, body: Body, sent_at_ms: u64) -> Vec<u8> {
        let session = author.session;
        author.next_seq = seq;
        let (_, bytes) = author.event(body, sent_at_ms);
        author.session = session;
        bytes
    }

    #[test]
    fn send_times_at_the_ends_of_the_range_are_judged_without_overflow() {
        let mut alice = Author::new(key(1), TOPIC);
        let max = u64::MAX;
        for (sent, now, accepted) in [
            (max, NOW, false),
            (0, NOW, false),
            (max, 0, false),
            (0, max, false),
            (max, max, true),
            (0, 0, true),
            (max - MAX_FUTURE_SKEW_MS, 0, false),
            (0, REPLAY_WINDOW_MS, true),
            (0, REPLAY_WINDOW_MS + 1, false),
            (MAX_FUTURE_SKEW_MS, 0, true),
            (MAX_FUTURE_SKEW_MS + 1, 0, false),
            (max, max - MAX_FUTURE_SKEW_MS, true),
            (max, max - MAX_FUTURE_SKEW_MS - 1, false),
            (max - REPLAY_WINDOW_MS, max, true),
            (max - REPLAY_WINDOW_MS - 1, max, false),
        ] {
            let bytes = event_at(&mut alice, 0, msg("t"), sent);
            let got = open(&bytes, &TOPIC, now);
            if accepted {
                assert!(got.is_ok(), "sent {sent} at {now}: {got:?}");
            } else {
                assert_eq!(got, Err(Rejected::Stale), "sent {sent} at {now}");
            }
        }
    }

    #[test]
    fn the_last_sequence_number_is_delivered_and_does_not_silence_the_author() {
        let mut alice = Author::new(key(1), TOPIC);
        let mut r = room();
        let mut say = |r: &mut Room, seq: u64, text: &str| texts(&r.receive(&event_at(&mut alice, seq, msg(text), NOW), NOW).unwrap());
        assert_eq!(say(&mut r, 0, "first"), ["first"]);
        assert!(say(&mut r, u64::MAX, "top").is_empty(), "waits for the gap");
        assert_eq!(texts(&r.tick(NOW + REORDER_WAIT_MS)), ["top"]);
        assert_eq!(say(&mut r, u64::MAX, "top again"), ["top again"], "another event with the last number is still heard");
        // Numbering from low numbers again in the same session is a restart
        // (far below), not a stream of late arrivals.
        assert_eq!(say(&mut r, 1, "again"), ["again"]);
        assert_eq!(say(&mut r, 2, "and on"), ["and on"]);
        assert!(say(&mut r, 0, "late").is_empty(), "a merely late arrival is still dropped");
        assert!(say(&mut r, u64::MAX - 1, "near the top").is_empty());
        assert_eq!(texts(&r.tick(NOW + 2 * REORDER_WAIT_MS)), ["near the top"]);
        assert_eq!(say(&mut r, u64::MAX, "top, in order"), ["top, in order"]);
    }

    #[test]
    fn an_author_never_wraps_its_numbering() {
        let mut alice = Author::new(key(1), TOPIC);
        let session = alice.session;
        alice.next_seq = u64::MAX;
        let (top, top_bytes) = alice.event(msg("top"), NOW);
        let (next, next_bytes) = alice.event(msg("next"), NOW);
        assert_eq!((top.session, top.seq), (session, u64::MAX));
        assert_eq!(next.seq, 0);
        assert_ne!(next.session, session, "past the last number the author is a new session");
        let mut r = room();
        assert_eq!(texts(&r.receive(&top_bytes, NOW).unwrap()), ["top"]);
        assert_eq!(texts(&r.receive(&next_bytes, NOW).unwrap()), ["next"]);
    }

    #[test]
    fn a_clock_that_goes_backwards_does_not_hold_messages() {
        let mut alice = Author::new(key(1), TOPIC);
        let mut r = room();
        r.receive(&event_at(&mut alice, 0, msg("0"), NOW), NOW).unwrap();
        assert!(texts(&r.receive(&event_at(&mut alice, 2, msg("2"), NOW), NOW).unwrap()).is_empty());
        assert_eq!(texts(&r.tick(NOW - 10_000)), ["2"]);
        // And presence arithmetic at the top of the range does not overflow.
        r.set_presence_ttl(u64::MAX);
        r.members(u64::MAX);
        assert!(r.members(u64::MAX - 1)[0].online);
    }

    #[test]
    fn the_replay_memory_is_capped() {
        let mut r = room();
        let mut event = Event {
            author: key(1).public(),
            topic: TOPIC,
            session: 1,
            seq: 0,
            nonce: [0; 16],
            sent_at_ms: NOW,
            body: Body::Presence { nickname: "alice".into() },
        };
        // Fresh events, all inside the replay window, so only the cap can
        // keep the set small.
        for i in 0..(MAX_SEEN_EVENTS as u64 * 3 / 2) {
            event.nonce[..8].copy_from_slice(&i.to_be_bytes());
            event.seq = i;
            event.sent_at_ms = NOW + i / 100;
            r.accept(event.clone(), NOW + i / 100).unwrap();
            assert!(r.seen.len() <= MAX_SEEN_EVENTS);
        }
        assert!(r.seen.len() > MAX_SEEN_EVENTS / 2, "the cap forgets the oldest, not everything");
        assert_eq!(r.accept(event.clone(), event.sent_at_ms), Err(Rejected::Replay), "the newest are still remembered");
    }

    /// A send time: fixed, or relative to the receiver's clock.
    #[derive(Debug, Clone)]
    enum SentAt {
        At(u64),
        Offset(i64),
    }

    #[derive(Debug, Clone)]
    enum Step {
        Send { author: usize, new_session: bool, seq: u64, sent_at: SentAt, now: u64, body: u8 },
        Replay { pick: usize, now: u64 },
        Tick { now: u64 },
    }

    fn seqs() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0), Just(1), Just(u64::MAX - 1), Just(u64::MAX), 0..8u64, any::<u64>()]
    }

    fn clocks() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => Just(NOW),
            1 => Just(0),
            1 => Just(u64::MAX),
            1 => Just(u64::MAX - MAX_FUTURE_SKEW_MS),
            1 => any::<u64>(),
            2 => (NOW - REPLAY_WINDOW_MS)..(NOW + REPLAY_WINDOW_MS),
        ]
    }

    fn send_times() -> impl Strategy<Value = SentAt> {
        let window = REPLAY_WINDOW_MS as i64;
        let skew = MAX_FUTURE_SKEW_MS as i64;
        prop_oneof![
            Just(SentAt::At(0)),
            Just(SentAt::At(u64::MAX)),
            any::<u64>().prop_map(SentAt::At),
            Just(SentAt::Offset(0)),
            Just(SentAt::Offset(-window)),
            Just(SentAt::Offset(-window - 1)),
            Just(SentAt::Offset(skew)),
            Just(SentAt::Offset(skew + 1)),
            (-window..=skew).prop_map(SentAt::Offset),
        ]
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let send = (0..3usize, prop::bool::weighted(0.1), seqs(), send_times(), clocks(), 0..4u8)
            .prop_map(|(author, new_session, seq, sent_at, now, body)| Step::Send { author, new_session, seq, sent_at, now, body });
        let step = prop_oneof![
            6 => send,
            1 => (any::<usize>(), clocks()).prop_map(|(pick, now)| Step::Replay { pick, now }),
            1 => clocks().prop_map(|now| Step::Tick { now }),
        ];
        prop::collection::vec(step, 1..40)
    }

    fn delivered(changes: Vec<Change>, seen: &mut HashSet<String>) -> Result<Vec<String>, TestCaseError> {
        let texts = texts(&changes);
        for t in &texts {
            prop_assert!(seen.insert(t.clone()), "{t} delivered twice");
        }
        Ok(texts)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever numbers and times authors sign and whatever the local
        /// clock says: no panic, every message at most once, bounded memory,
        /// and afterwards each author, going on from where its numbering
        /// stands, is heard again.
        #[test]
        fn extreme_numbers_never_panic_or_silence_an_author(steps in steps()) {
            let mut authors: Vec<Author> = (1..=3).map(|s| Author::new(key(s), TOPIC)).collect();
            // (author, session) -> highest number it signed
            let mut highest: HashMap<(usize, u64), u64> = HashMap::new();
            let mut accepted: Vec<Vec<u8>> = Vec::new();
            let mut heard = HashSet::new();
            let mut r = room();
            for (i, step) in steps.into_iter().enumerate() {
                let now = match step {
                    Step::Send { author, new_session, seq, sent_at, now, body } => {
                        let a = &mut authors[author];
                        if new_session {
                            a.session = a.session.wrapping_add(1);
                        }
                        let sent_at_ms = match sent_at {
                            SentAt::At(t) => t,
                            SentAt::Offset(d) => now.saturating_add_signed(d),
                        };
                        let body = match body {
                            0 | 1 => msg(&format!("m{i}")),
                            2 => Body::Presence { nickname: format!("n{author}") },
                            _ => Body::Leave,
                        };
                        let bytes = event_at(a, seq, body, sent_at_ms);
                        let top = highest.entry((author, a.session)).or_insert(seq);
                        *top = (*top).max(seq);
                        if let Ok(changes) = r.receive(&bytes, now) {
                            delivered(changes, &mut heard)?;
                            accepted.push(bytes);
                        }
                        now
                    }
                    Step::Replay { pick, now } => {
                        if !accepted.is_empty() {
                            prop_assert!(r.receive(&accepted[pick % accepted.len()], now).is_err(), "a replay is never accepted");
                        }
                        now
                    }
                    Step::Tick { now } => {
                        delivered(r.tick(now), &mut heard)?;
                        now
                    }
                };
                r.members(now);
                let history = r.messages_after(0);
                prop_assert!(history.windows(2).all(|w| w[0].index < w[1].index));
                prop_assert!(r.seen.len() <= MAX_SEEN_EVENTS);
                prop_assert!(r.members.len() <= authors.len() && r.order.len() <= authors.len());
                prop_assert!(r.order.values().all(|o| o.pending.len() <= MAX_PENDING_PER_AUTHOR));
                prop_assert!(r.history.len() <= HISTORY);
            }
            // Each author goes on as `Author::event` would, one message per
            // reorder wait, with a clock past everything above.
            let mut now = NOW + 10 * REPLAY_WINDOW_MS;
            for (i, a) in authors.iter_mut().enumerate() {
                match highest.get(&(i, a.session)) {
                    Some(&u64::MAX) => (a.session, a.next_seq) = (a.session.wrapping_add(1), 0),
                    Some(&top) => a.next_seq = top + 1,
                    None => a.next_seq = 0,
                }
                let mut got = Vec::new();
                for k in 0..3 {
                    let (_, bytes) = a.event(msg(&format!("final {i} {k}")), now);
                    got.extend(delivered(r.receive(&bytes, now).expect("a fresh event is accepted"), &mut heard)?);
                    now += REORDER_WAIT_MS;
                    got.extend(delivered(r.tick(now), &mut heard)?);
                }
                let finals: Vec<String> = got.into_iter().filter(|t| t.starts_with("final")).collect();
                prop_assert_eq!(finals, (0..3).map(|k| format!("final {i} {k}")).collect::<Vec<_>>());
            }
        }
    }

    proptest! {
        /// Any bytes off the overlay, at any clock: `open` and a room's
        /// `receive` refuse them or accept them, never panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), now in clocks()) {
            let _ = open(&bytes, &TOPIC, now);
            let mut r = room();
            let _ = r.receive(&bytes, now);
            let _ = r.tick(now);
        }

        /// A real event damaged in one byte: refused, or (if the damage
        /// missed everything signed) exactly the event that was sent.
        #[test]
        fn damaged_events_never_panic_or_change(at in any::<usize>(), xor in 1..=255u8, now in clocks()) {
            let mut alice = Author::new(key(1), TOPIC);
            let (event, mut bytes) = alice.event(Body::Rename { nickname: "alice".into() }, NOW);
            let at = at % bytes.len();
            bytes[at] ^= xor;
            if let Ok(opened) = open(&bytes, &TOPIC, now) {
                prop_assert_eq!(opened, event);
            }
        }
    }
}
