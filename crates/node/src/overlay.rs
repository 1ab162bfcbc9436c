//! The overlay: an iroh-gossip topic derived from the network key, carrying
//! signed chat and presence events ([`peernet_proto::chat`]).
//!
//! HyParView keeps each peer's active view (its neighbours) and notices
//! failed links; PlumTree spreads broadcasts along a tree with lazy repair.
//! Neighbours are bootstrapped from the index's Referral; a peer that has
//! lost all its neighbours asks the index for a new Referral by itself. The
//! overlay keeps working while the index is down. When presence goes out
//! and when to ask for a referral is decided by
//! [`peernet_proto::timers::Timers`]; this module moves the bytes. Every
//! neighbour change is passed on to the index session, so the map learns it
//! at once.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use iroh::{EndpointId, SecretKey};
use iroh_gossip::{
    api::{Event as GossipEvent, GossipSender},
    net::Gossip,
    proto::TopicId,
};
use n0_future::StreamExt;
use peernet_index::{
    budget::{Budget, Rate},
    now_ms,
};
use peernet_proto::{
    chat::{Author, Body, Change, ChatMessage, Member, Rejected, Room, MAX_EVENT_BYTES, MAX_TEXT_BYTES},
    index::{LinkReport, Request, Response},
    key::NetworkKey,
    timers::{self, Timers},
};
use rand::{rngs::StdRng, SeedableRng};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{endpoint, index_client::IndexClient, relink::Relinks};

/// How many peers to ask the index for when (re)attaching.
const REFERRAL_K: u32 = 5;
/// How many of them we join through at once. HyParView's join makes the
/// contact forward us to each of its neighbours, and every one of those
/// walks ends in a neighbour request to us: joining through all five
/// referred peers asked about 30 peers to link to us, evicting each
/// other's links and leaving a connection behind each time (iroh-gossip
/// keeps connections it no longer uses). One contact is what the protocol
/// describes, but a room of 50 started at once then split into 9 parts
/// that never met (peers that join together can pick each other before
/// either is attached). Two contacts kept it whole, with a third of the
/// connections: a random graph in which each node links to two others is
/// connected with high probability. The rest are kept as spares, tried in
/// turn while we stay alone ([`timers::LONELY_AFTER`]) and the index does
/// not answer.
const JOIN_CONTACTS: usize = 2;
/// Room housekeeping: at least this often (the room's size and the
/// index's timing are read again, lost neighbours dialled and former
/// neighbours' connections closed: [`crate::relink`]), and at
/// once when a presence, a referral or a message held back for order is
/// due. An idle member wakes up about once per `HOUSEKEEPING`, not four
/// times a second; each wake-up of an idle daemon costs more CPU (thread
/// and timer wake-ups) than the work it does.
const HOUSEKEEPING: Duration = Duration::from_secs(2);
/// The shortest gap between two housekeepings, which is also how long a
/// neighbour change waits before the room hears of it (changes that come
/// together make one report).
const TICK: Duration = Duration::from_millis(250);
/// Presence interval and TTL before the index has told us its timing.
const DEFAULT_PRESENCE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("a chat message has at most {MAX_TEXT_BYTES} bytes; this one has {0}")]
    TooLong(usize),
    #[error("a chat message cannot be empty")]
    Empty,
    #[error("the overlay is not running: {0}")]
    Down(String),
}

#[derive(Debug)]
struct Shared {
    room: Room,
    neighbors: BTreeSet<EndpointId>,
    author: Author,
    /// Presence and re-referral. Every signed event we send shows we are
    /// here, so a peer that talks needs no separate presence: in a busy room
    /// that saves a broadcast to everyone per peer and period.
    timers: Timers<StdRng>,
}

/// Handle to the overlay; cheap to clone.
#[derive(Debug, Clone)]
pub struct Overlay {
    shared: Arc<Mutex<Shared>>,
    /// Serializes broadcasts so events leave in sequence order.
    sender: Arc<tokio::sync::Mutex<GossipSender>>,
    /// Whether this node takes part in chat (a standalone index does not).
    chatty: bool,
    /// Set once our leave is announced: no presence may follow it, or
    /// receivers would count us back in.
    leaving: Arc<AtomicBool>,
    /// Time zero for the timers.
    started: tokio::time::Instant,
    /// Which way each link goes, for links reports.
    paths: crate::paths::Paths,
}

/// The peers of the last non-empty referral that we have not joined
/// through yet.
#[derive(Debug, Default)]
struct Contacts(Vec<EndpointId>);

impl Contacts {
    /// Takes the peers to join through now from a fresh referral, and keeps
    /// the rest as spares.
    fn take(&mut self, mut referred: Vec<EndpointId>) -> Vec<EndpointId> {
        let now: Vec<EndpointId> = referred.drain(..JOIN_CONTACTS.min(referred.len())).collect();
        if !referred.is_empty() {
            self.0 = referred;
        }
        now
    }

    /// The next spare, when no fresh referral could be had.
    fn spare(&mut self) -> Vec<EndpointId> {
        self.0.pop().into_iter().collect()
    }
}

/// What the overlay asks of the node.
pub struct Hooks {
    /// Current nickname, for presence.
    pub nickname: tokio::sync::watch::Receiver<String>,
    /// Fired when the root closes the network.
    pub closed: CancellationToken,
    /// Presence interval and TTL, from the index once joined.
    pub timing: Box<dyn Fn() -> Option<(Duration, Duration)> + Send + Sync>,
    /// Events one author may send the room; more are dropped and counted
    /// (`OverBudget` in `status`'s dropped events).
    pub chat_rate: Rate,
    /// Report our neighbours in the room (as Links instead of Presence,
    /// and soon after they change): a network without an index draws its
    /// map from these reports.
    pub report_links: bool,
    /// Which way each link goes, for the reports.
    pub paths: crate::paths::Paths,
}

/// The default budget of one chat author: a burst of 200 (a pasted page of
/// lines, with presence and renames), then 20 a second; far below a flood.
pub const DEFAULT_CHAT_RATE: Rate = Rate::new(20, 200);
/// Events one overlay neighbour may deliver, whoever their authors: a busy
/// room of hundreds passes through a handful of neighbours, far below this;
/// a member that mints keys to multiply its chat budget meets it.
pub const CARRIED_PER_NEIGHBOUR: Rate = Rate::new(200, 2000);
/// Authors new to this peer's room that one neighbour may introduce: all of
/// a room of 300 at once, then one a second.
pub const NEW_AUTHORS_PER_NEIGHBOUR: Rate = Rate::new(1, 300);

impl Overlay {
    /// Subscribes to the network's topic and starts the overlay task.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        gossip: &Gossip,
        key: NetworkKey,
        secret: SecretKey,
        root: Option<EndpointId>,
        index: IndexClient,
        lookup: iroh::address_lookup::memory::MemoryLookup,
        chatty: bool,
        hooks: Hooks,
        cancel: CancellationToken,
    ) -> Result<(Self, impl std::future::Future<Output = ()> + Send + 'static), OverlayError> {
        let topic = key.topic();
        let mut contacts = Contacts::default();
        let bootstrap = contacts.take(referral(&index, &lookup).await);
        let sub = gossip.subscribe(TopicId::from_bytes(topic), bootstrap).await.map_err(|e| OverlayError::Down(e.to_string()))?;
        let (sender, mut receiver) = sub.split();
        let ttl = DEFAULT_PRESENCE * 3;
        let shared = Arc::new(Mutex::new(Shared {
            room: Room::new(topic, root, ttl.as_millis() as u64),
            neighbors: BTreeSet::new(),
            author: Author::new(secret, topic),
            timers: Timers::new(chatty, DEFAULT_PRESENCE, Duration::ZERO, StdRng::from_rng(&mut rand::rng())),
        }));
        let overlay = Self {
            shared: shared.clone(),
            sender: Arc::new(tokio::sync::Mutex::new(sender)),
            chatty,
            leaving: Arc::new(AtomicBool::new(false)),
            started: tokio::time::Instant::now(),
            paths: hooks.paths.clone(),
        };
        let me = overlay.clone();
        let authors: Budget<EndpointId> = Budget::new(hooks.chat_rate);
        let carried: Budget<EndpointId> = Budget::new(CARRIED_PER_NEIGHBOUR);
        let introductions: Budget<EndpointId> = Budget::new(NEW_AUTHORS_PER_NEIGHBOUR);
        let task = async move {
            if me.chatty {
                let nick = hooks.nickname.borrow().clone();
                me.broadcast(Body::Hello { nickname: nick }).await.ok();
            }
            let mut last_housekeeping = tokio::time::Instant::now();
            let mut next_housekeeping = last_housekeeping;
            // Set when our neighbours changed and the room has not heard yet.
            let mut links_changed = false;
            // Neighbours that went down: dialled again or their
            // connections closed.
            let mut relinks = Relinks::default();
            loop {
                let mut redial: Vec<EndpointId> = Vec::new();
                let actions = tokio::select! {
                    _ = cancel.cancelled() => break,
                    event = receiver.next() => {
                        let Some(event) = event else { break };
                        match event {
                            Ok(GossipEvent::NeighborUp(id)) => {
                                debug!("neighbour up: {}", id.fmt_short());
                                let actions = {
                                    let mut s = me.lock();
                                    s.neighbors.insert(id);
                                    relinks.up(id);
                                    s.timers.handle(timers::Event::NeighbourUp, me.elapsed())
                                };
                                index.neighbours_changed();
                                links_changed = hooks.report_links;
                                actions
                            }
                            Ok(GossipEvent::NeighborDown(id)) => {
                                debug!("neighbour down: {}", id.fmt_short());
                                relinks.down(id, me.paths.open_ids(&id, crate::paths::OVERLAY), tokio::time::Instant::now());
                                let actions = {
                                    let mut s = me.lock();
                                    s.neighbors.remove(&id);
                                    let left = s.neighbors.len();
                                    s.timers.handle(timers::Event::NeighbourDown { left }, me.elapsed())
                                };
                                index.neighbours_changed();
                                links_changed = hooks.report_links;
                                actions
                            }
                            Ok(GossipEvent::Received(msg)) => {
                                let from = msg.delivered_from;
                                // Everything a neighbour carries, whoever signed it, and
                                // the new authors it introduces, count against that
                                // neighbour (its slot is scarce); the author's own budget
                                // comes after. So new keys buy no new budget.
                                let within = |author: &EndpointId, known: bool| {
                                    if carried.allow(&from).is_err() {
                                        Err(Rejected::OverBudget)
                                    } else if !known && introductions.allow(&from).is_err() {
                                        Err(Rejected::TooManyNewAuthors)
                                    } else if authors.allow(author).is_err() {
                                        Err(Rejected::OverBudget)
                                    } else {
                                        Ok(())
                                    }
                                };
                                let changes = me.lock().room.receive_within(&msg.content, now_ms(), within);
                                match changes {
                                    Ok(changes) => {
                                        if changes.contains(&Change::Closed) {
                                            info!("the network was closed by its root");
                                            hooks.closed.cancel();
                                        }
                                    }
                                    Err(why) => warn!("dropped an event delivered by {}: {why}", msg.delivered_from.fmt_short()),
                                }
                                Vec::new()
                            }
                            Ok(GossipEvent::Lagged) => {
                                warn!("overlay events were lost because this peer fell behind");
                                Vec::new()
                            }
                            Err(e) => {
                                warn!("overlay receiver failed: {e}");
                                break;
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(next_housekeeping) => {
                        last_housekeeping = tokio::time::Instant::now();
                        let (interval, ttl) = (hooks.timing)().unwrap_or((DEFAULT_PRESENCE, DEFAULT_PRESENCE * 3));
                        let now = me.elapsed();
                        let mut s = me.lock();
                        // The room's size (with us) sets how often presence goes out.
                        let members = s.room.recent_members(now_ms(), s.room.presence_ttl_ms() * 2) + 1;
                        let (interval, ttl) = timers::scaled(interval, ttl, members);
                        s.room.set_presence_ttl(ttl.as_millis() as u64);
                        s.room.tick(now_ms());
                        s.timers.handle(timers::Event::PresencePeriod(interval), now);
                        let mut actions = s.timers.handle(timers::Event::Tick, now);
                        let due = relinks.due(tokio::time::Instant::now());
                        redial = due.redial;
                        for (id, links) in due.close {
                            let closed = me.paths.close(&id, &links, b"no longer a neighbour");
                            if closed > 0 {
                                debug!("closed {closed} gossip connections to {}, a former neighbour", id.fmt_short());
                            }
                        }
                        // At most one report per housekeeping, however often the links change.
                        if std::mem::take(&mut links_changed) && me.chatty && !actions.contains(&timers::Action::SendPresence) {
                            actions.push(timers::Action::SendPresence);
                        }
                        actions
                    }
                };
                for action in actions {
                    match action {
                        timers::Action::SendPresence => {
                            let nickname = hooks.nickname.borrow().clone();
                            let body =
                                if hooks.report_links { Body::Links { nickname, links: me.links() } } else { Body::Presence { nickname } };
                            me.send_presence(body).await;
                        }
                        timers::Action::AskReferral => {
                            let mut peers = contacts.take(referral(&index, &lookup).await);
                            if peers.is_empty() {
                                peers = contacts.spare();
                            }
                            if !peers.is_empty() {
                                debug!("no neighbours: re-attaching to {} referred peers", peers.len());
                                me.sender.lock().await.join_peers(peers).await.ok();
                            }
                        }
                    }
                }
                if !redial.is_empty() {
                    debug!("dialling {} neighbours whose connection was lost", redial.len());
                    me.sender.lock().await.join_peers(redial).await.ok();
                }
                next_housekeeping = me.next_housekeeping(last_housekeeping, links_changed);
            }
        };
        Ok((overlay, task))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("overlay lock")
    }

    /// Time since the overlay started, the timers' clock.
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the overlay task next needs to look at the room: at the latest
    /// [`HOUSEKEEPING`] after the last time, sooner when the timers or a
    /// held-back message are due or the room should hear of new links, and
    /// never sooner than [`TICK`] after the last time.
    fn next_housekeeping(&self, last: tokio::time::Instant, links_changed: bool) -> tokio::time::Instant {
        let s = self.lock();
        let mut at = last + if links_changed { TICK } else { HOUSEKEEPING };
        if let Some(due) = s.timers.next_due() {
            at = at.min(self.started + due);
        }
        if let Some(due_ms) = s.room.next_tick_ms() {
            at = at.min(tokio::time::Instant::now() + Duration::from_millis(due_ms.saturating_sub(now_ms())));
        }
        at.max(last + TICK)
    }

    /// Signs and broadcasts an event, and applies it to our own room.
    async fn broadcast(&self, body: Body) -> Result<(), OverlayError> {
        let sender = self.sender.lock().await;
        self.broadcast_with(&sender, body).await
    }

    /// Broadcasts a presence (or links report), unless our leave went out
    /// first (checked under the sender lock, which orders what leaves this
    /// peer).
    async fn send_presence(&self, body: Body) {
        let sender = self.sender.lock().await;
        if !self.leaving.load(Ordering::SeqCst) {
            self.broadcast_with(&sender, body).await.ok();
        }
    }

    /// Attaches to these peers (found on the LAN, for instance).
    pub async fn join(&self, peers: Vec<EndpointId>) {
        if !peers.is_empty() {
            self.sender.lock().await.join_peers(peers).await.ok();
        }
    }

    async fn broadcast_with(&self, sender: &GossipSender, body: Body) -> Result<(), OverlayError> {
        let (event, bytes) = {
            let mut s = self.lock();
            s.timers.handle(timers::Event::Sent, self.elapsed());
            s.author.event(body, now_ms())
        };
        debug_assert!(bytes.len() <= MAX_EVENT_BYTES);
        self.lock().room.accept(event, now_ms()).ok();
        sender.broadcast(Bytes::from(bytes)).await.map_err(|e| OverlayError::Down(e.to_string()))
    }

    pub async fn say(&self, text: &str) -> Result<ChatMessage, OverlayError> {
        if text.trim().is_empty() {
            return Err(OverlayError::Empty);
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(OverlayError::TooLong(text.len()));
        }
        self.broadcast(Body::Message { text: text.to_string() }).await?;
        Ok(self.lock().room.messages_after(0).last().cloned().expect("our own message was just delivered"))
    }

    pub async fn announce_rename(&self, nickname: &str) -> Result<(), OverlayError> {
        self.broadcast(Body::Rename { nickname: nickname.to_string() }).await
    }

    pub async fn announce_leave(&self) {
        if self.chatty && !self.leaving.swap(true, Ordering::SeqCst) {
            self.lock().timers.handle(timers::Event::Leave, self.elapsed());
            self.broadcast(Body::Leave).await.ok();
        }
    }

    pub async fn close_network(&self) -> Result<(), OverlayError> {
        self.broadcast(Body::Close).await
    }

    pub fn members(&self) -> Vec<Member> {
        self.lock().room.members(now_ms())
    }

    pub fn messages_after(&self, index: u64) -> Vec<ChatMessage> {
        self.lock().room.messages_after(index)
    }

    /// This peer's id, as the room knows it.
    pub fn me(&self) -> EndpointId {
        self.lock().author.id()
    }

    /// Our links with the path each takes now (for the map).
    pub fn links(&self) -> Vec<LinkReport> {
        self.paths.report(&self.neighbors())
    }

    pub fn neighbors(&self) -> Vec<EndpointId> {
        self.lock().neighbors.iter().copied().collect()
    }

    pub fn dropped(&self) -> std::collections::BTreeMap<String, u64> {
        self.lock().room.dropped.clone()
    }
}

/// Asks the index for peers to attach to; empty when it is unreachable.
async fn referral(index: &IndexClient, lookup: &iroh::address_lookup::memory::MemoryLookup) -> Vec<EndpointId> {
    match index.request(Request::Referral { k: REFERRAL_K }).await {
        Ok(Response::Peers(peers)) => {
            for p in &peers {
                endpoint::remember(lookup, &p.addr);
            }
            peers.into_iter().map(|p| p.addr.id).collect()
        }
        Ok(_) => Vec::new(),
        Err(e) => {
            debug!("no referral: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u8) -> Vec<EndpointId> {
        (0..n).map(|i| SecretKey::from_bytes(&[i + 1; 32]).public()).collect()
    }

    #[test]
    fn joins_through_few_contacts_and_keeps_the_rest_as_spares() {
        let referred = ids(5);
        let mut contacts = Contacts::default();
        assert_eq!(contacts.take(referred.clone()), referred[..JOIN_CONTACTS].to_vec());
        let mut spares: Vec<EndpointId> = std::iter::from_fn(|| contacts.spare().pop()).collect();
        spares.sort();
        let mut rest = referred[JOIN_CONTACTS..].to_vec();
        rest.sort();
        assert_eq!(spares, rest, "each other referred peer is tried once");
        assert!(contacts.spare().is_empty());
    }

    #[test]
    fn an_empty_referral_keeps_the_spares() {
        let referred = ids(JOIN_CONTACTS as u8 + 1);
        let mut contacts = Contacts::default();
        contacts.take(referred.clone());
        assert!(contacts.take(Vec::new()).is_empty());
        assert_eq!(contacts.spare().len(), 1, "the index's silence does not drop what it said before");
    }
}
