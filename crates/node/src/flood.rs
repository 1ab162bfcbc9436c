//! Flood search on this peer: the `peernet/flood/1` protocol handler, the
//! runtime that answers and forwards queries from neighbours, and our own
//! queries with their answer window. The bookkeeping (ids, TTL, seen-set)
//! is [`peernet_proto::flood`] and the merging of answers is
//! [`peernet_proto::answers`]; this module moves bytes.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use iroh::EndpointId;
use iroh::{address_lookup::memory::MemoryLookup, Endpoint};
use iroh::{
    endpoint::Connection,
    protocol::{AcceptError, ProtocolHandler},
};
use peernet_index::frame_io::{read_frame, write_frame};
use peernet_index::now_ms;
use peernet_proto::{
    flood::{Action, Answer, Flood, FloodFrame, Query, MAX_ANSWER_FILES, MAX_FLOOD_FRAME},
    index::Hit,
    search::Matcher,
};
use tokio::sync::{mpsc, watch};

use peernet_index::budget::{Budget, Rate};

use crate::{
    endpoint,
    links::{Links, LINK_IDLE},
    overlay::Overlay,
    shares::Shares,
    tasks::Tasks,
};
use tracing::debug;

/// How long an answer may take to arrive once its stream is open.
const ANSWER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one frame may take to leave, dial included: a neighbour that
/// stops reading costs a task for this long, not forever.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames on their way to one peer at once; more are dropped and counted
/// (a peer that reads slowly cannot make us hold a task per frame).
pub const MAX_SENDS_IN_FLIGHT: usize = 16;
/// Answers buffered per pending query.
const ANSWER_BUFFER: usize = 256;

/// Our queries still collecting answers, by id.
#[derive(Debug, Clone, Default)]
pub struct Pending(Arc<Mutex<HashMap<[u8; 16], mpsc::Sender<Answer>>>>);

impl Pending {
    pub fn open(&self, id: [u8; 16]) -> mpsc::Receiver<Answer> {
        let (tx, rx) = mpsc::channel(ANSWER_BUFFER);
        self.0.lock().expect("pending lock").insert(id, tx);
        rx
    }

    pub fn close(&self, id: &[u8; 16]) {
        self.0.lock().expect("pending lock").remove(id);
    }

    fn sender(&self, id: &[u8; 16]) -> Option<mpsc::Sender<Answer>> {
        self.0.lock().expect("pending lock").get(id).cloned()
    }
}

/// Serves the flood protocol: frames from neighbours (queries, and answers
/// on their way back to whoever asked) are passed to the runtime through
/// `frames`. Answers whose signature does not hold are dropped here.
#[derive(Debug, Clone)]
pub struct FloodProtocol {
    pub frames: mpsc::Sender<(FloodFrame, EndpointId)>,
    /// Frames dropped because [`FRAME_BUFFER`] were already waiting.
    pub queue_full: Arc<AtomicU64>,
}

impl ProtocolHandler for FloodProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let from = conn.remote_id();
        while let Ok(mut recv) = conn.accept_uni().await {
            let read = tokio::time::timeout(ANSWER_READ_TIMEOUT, read_frame::<FloodFrame>(&mut recv, MAX_FLOOD_FRAME)).await;
            let frame = match read {
                Ok(Ok(frame)) => frame,
                _ => {
                    debug!("unreadable flood frame from {}", from.fmt_short());
                    break;
                }
            };
            if let FloodFrame::Answer(answer) = &frame {
                // Believed only for the key that signed it: a peer on the
                // path cannot speak for another.
                if !answer.verify() {
                    debug!("dropped a flood answer from {} not signed by its provider", from.fmt_short());
                    continue;
                }
            }
            // A full queue means we are flooded: dropping is the right answer.
            if self.frames.try_send((frame, from)).is_err() {
                self.queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
        conn.close(0u32.into(), b"done");
        Ok(())
    }
}

/// Sends one frame (a query to a neighbour, an answer back toward the asker) on its
/// own stream of a reused link, and waits until the receiver has it.
async fn send_frame(links: &Links, frame: FloodFrame, to: impl Into<iroh::EndpointAddr>) -> Result<(), String> {
    let conn = links.get(to).await?;
    let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
    write_frame(&mut send, &frame, MAX_FLOOD_FRAME).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    match tokio::time::timeout(ANSWER_READ_TIMEOUT, send.stopped()).await {
        Ok(Ok(None)) => Ok(()),
        Ok(Ok(Some(code))) => Err(format!("the receiver refused the frame (code {code})")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("not acknowledged within {ANSWER_READ_TIMEOUT:?}")),
    }
}

/// Flood frames from neighbours waiting to be handled; more are dropped.
pub const FRAME_BUFFER: usize = 256;
/// The default budget of flood queries one neighbour may hand us: a busy
/// searcher's share of a neighbourhood, far below a flood.
pub const DEFAULT_QUERY_RATE: Rate = Rate::new(20, 100);

/// This peer's part in flood search; cheap to clone.
#[derive(Debug, Clone)]
pub struct FloodSearch {
    endpoint: Endpoint,
    links: Links,
    lookup: MemoryLookup,
    /// Who our neighbours are (the overlay owns that); the flood state is ours.
    overlay: Overlay,
    state: Arc<Mutex<Flood>>,
    pending: Pending,
    shares: Arc<Shares>,
    nickname: watch::Receiver<String>,
    /// A standalone index forwards queries but has no files to answer with.
    answers: bool,
    /// Queries each overlay neighbour may hand us; more are dropped and
    /// counted. A neighbour's slot is scarce (the overlay keeps a handful),
    /// so this budget cannot be multiplied by minting keys.
    queries: Arc<Budget<EndpointId>>,
    /// One budget, the same size, shared by every member that is not a
    /// neighbour (a member asking directly, a one-sided overlay link): a
    /// new key brings no new budget.
    strangers: Arc<Budget<()>>,
    /// Frames on their way, per peer, and those dropped over the cap.
    in_flight: Arc<Mutex<HashMap<EndpointId, usize>>>,
    sends_dropped: Arc<AtomicU64>,
    /// Shared with [`FloodProtocol`]: frames it dropped on a full queue.
    queue_full: Arc<AtomicU64>,
    tasks: Tasks,
}

impl FloodSearch {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        endpoint: Endpoint,
        lookup: MemoryLookup,
        overlay: Overlay,
        pending: Pending,
        shares: Arc<Shares>,
        nickname: watch::Receiver<String>,
        answers: bool,
        query_rate: Rate,
        queue_full: Arc<AtomicU64>,
        tasks: Tasks,
    ) -> Self {
        let links = Links::new(endpoint.clone(), peernet_proto::flood::ALPN);
        Self {
            endpoint,
            links,
            lookup,
            overlay,
            state: Default::default(),
            pending,
            shares,
            nickname,
            answers,
            queries: Arc::new(Budget::new(query_rate)),
            strangers: Arc::new(Budget::new(query_rate)),
            in_flight: Default::default(),
            sends_dropped: Default::default(),
            queue_full,
            tasks,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Flood> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a query from `from` is within its budget: a neighbour's
    /// own, or the one all other members share.
    fn within_budget(&self, from: &EndpointId, neighbors: &[EndpointId]) -> bool {
        if neighbors.contains(from) {
            self.queries.allow(from).is_ok()
        } else {
            self.strangers.allow(&()).is_ok()
        }
    }

    /// Handles frames from neighbours until the channel closes or the node
    /// stops: answer a query if we match and pass it on while the TTL
    /// lasts; take an answer to our own query, or pass it back.
    pub fn start(&self, mut frames: mpsc::Receiver<(FloodFrame, EndpointId)>) {
        let links = self.links.clone();
        self.tasks.spawn(async move {
            let mut prune = tokio::time::interval(LINK_IDLE);
            loop {
                prune.tick().await;
                links.prune();
            }
        });
        let this = self.clone();
        self.tasks.spawn(async move {
            while let Some((frame, from)) = frames.recv().await {
                let actions = match frame {
                    FloodFrame::Query(query) => {
                        let neighbors = this.overlay.neighbors();
                        if !this.within_budget(&from, &neighbors) {
                            continue;
                        }
                        this.state().handle(query, from, &neighbors, now_ms())
                    }
                    FloodFrame::Answer(answer) => this.state().answer_arrived(answer, from, now_ms()).into_iter().collect(),
                };
                for action in actions {
                    this.act(action);
                }
            }
        });
    }

    fn act(&self, action: Action) {
        match action {
            Action::Answer { query, back } => self.answer(query, back),
            Action::Forward { query, to } => {
                for neighbour in to {
                    self.send(FloodFrame::Query(query.clone()), neighbour);
                }
            }
            Action::Deliver(answer) => {
                if let Some(tx) = self.pending.sender(&answer.query) {
                    tx.try_send(answer).ok();
                }
            }
            Action::Reply { answer, to } => self.send(FloodFrame::Answer(answer), to),
        }
    }

    fn send(&self, frame: FloodFrame, to: EndpointId) {
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let n = in_flight.entry(to).or_default();
            if *n >= MAX_SENDS_IN_FLIGHT {
                self.sends_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            *n += 1;
        }
        let (links, in_flight) = (self.links.clone(), self.in_flight.clone());
        self.tasks.spawn(async move {
            match tokio::time::timeout(SEND_TIMEOUT, send_frame(&links, frame, to)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!("could not send a flood frame to {}: {e}", to.fmt_short()),
                Err(_) => debug!("gave up sending a flood frame to {} after {SEND_TIMEOUT:?}", to.fmt_short()),
            }
            let mut in_flight = in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = in_flight.get_mut(&to) {
                *n -= 1;
                if *n == 0 {
                    in_flight.remove(&to);
                }
            }
        });
    }

    /// Answers a flood query with our matching files, if any, signed, to
    /// the neighbour that handed us the query.
    fn answer(&self, query: Query, back: EndpointId) {
        if !self.answers {
            return;
        }
        // Folded once here, not once per shared file.
        let matcher = Matcher::new(&query.text);
        let files: Vec<_> = self.shares.entries().into_iter().filter(|e| matcher.matches(e)).take(MAX_ANSWER_FILES).collect();
        if files.is_empty() {
            return;
        }
        let nickname = self.nickname.borrow().clone();
        let me = endpoint::own_addr(&self.endpoint);
        let answer = Answer::signed(self.endpoint.secret_key(), query.id, me, nickname, files);
        self.send(FloodFrame::Answer(answer), back);
    }

    /// Asks the overlay: the query goes from neighbour to neighbour with a
    /// TTL, and peers with matches answer us directly within `window`.
    pub async fn search(&self, text: &str, ttl: u8, window: Duration) -> Vec<Hit> {
        self.query(text, ttl, &[], window).await
    }

    /// Asks `peers` directly (whoever the DHT says has a file), and our
    /// neighbours, without passing the query on: a TTL of one.
    pub async fn ask(&self, text: &str, peers: &[EndpointId], window: Duration) -> Vec<Hit> {
        self.query(text, 1, peers, window).await
    }

    async fn query(&self, text: &str, ttl: u8, also: &[EndpointId], window: Duration) -> Vec<Hit> {
        let id: [u8; 16] = rand::random();
        let mut answers_rx = self.pending.open(id);
        let start = self.state().start(id, text.to_string(), ttl, &self.overlay.neighbors(), now_ms());
        if let Action::Forward { query, to } = &start {
            for peer in also.iter().filter(|p| !to.contains(p)) {
                self.send(FloodFrame::Query(query.clone()), *peer);
            }
        }
        self.act(start);
        let mut answers = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(answer)) = tokio::time::timeout_at(deadline, answers_rx.recv()).await {
            answers.push(answer);
        }
        self.pending.close(&id);
        let hits = peernet_proto::answers::from_answers(answers);
        for h in &hits {
            for p in &h.providers {
                endpoint::remember(&self.lookup, &p.peer.addr);
            }
        }
        hits
    }

    /// Flood queries handled here (first sight) and copies dropped as seen.
    pub fn counters(&self) -> (u64, u64) {
        let s = self.state();
        (s.handled, s.duplicates)
    }

    /// Flood queries dropped because their sender was over its budget
    /// (a neighbour's own, or the one other members share).
    pub fn over_budget(&self) -> u64 {
        self.queries.refused() + self.strangers.refused()
    }

    /// Flood queries dropped for text over the index's query limit.
    pub fn oversized(&self) -> u64 {
        self.state().oversized
    }

    /// Frames not sent because [`MAX_SENDS_IN_FLIGHT`] were already on
    /// their way to that peer.
    pub fn sends_dropped(&self) -> u64 {
        self.sends_dropped.load(Ordering::Relaxed)
    }

    /// Frames from others dropped unread because the queue was full.
    pub fn queue_full(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
    }
}
