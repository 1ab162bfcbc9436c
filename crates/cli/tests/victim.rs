//! Nobody can aim the network at a third party: a hostile member sends
//! flood queries, frames in the old version-1 layout that named an address
//! for the answers, and signed answers naming a victim's address as their
//! provider's, and no peer sends a single datagram to that address.
//!
//! The victim is a UDP socket on loopback that counts every datagram. The
//! hostile member is the test's own endpoint: it proves membership like any
//! member and serves the flood protocol, so answers to its queries come
//! back to it along the queries' paths (and are counted).

mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::*;
use iroh::{
    endpoint::Connection,
    protocol::{AcceptError, ProtocolHandler, Router},
    SecretKey,
};
use peernet_index::frame_io::{read_frame, write_frame};
use peernet_proto::{
    flood::{Answer, FloodFrame, Query, ALPN as FLOOD_ALPN, MAX_FLOOD_FRAME, MAX_TTL},
    index::{FileEntry, PeerAddr},
    ticket::Ticket,
    Hash,
};
use serde::Serialize;

/// Queries the hostile sends; each matches every peer's files.
const QUERIES: usize = 200;
/// Queries sent before waiting for the receiving member to catch up, so
/// that its frame buffer (256) does not simply drop the rest.
const BATCH: usize = 25;
/// Frames in the version-1 layout, each naming the victim as the origin.
const OLD_FRAMES: usize = 20;
/// Signed answers naming the victim as their provider's address.
const FORGED_ANSWERS: usize = 200;
/// The honest searcher's answer window, and how long the victim is
/// watched once the peers are quiet: long enough for any answer (or, in
/// version 1, any dial to a named origin) to have gone out.
const ANSWER_WINDOW: Duration = Duration::from_secs(5);
/// The word every peer's shared file has in its name.
const WORD: &str = "anthem";

/// A version-1 flood query (`peernet/flood/1`): answers went straight to
/// `origin`, an address the sender merely named.
#[derive(Serialize)]
struct QueryV1 {
    id: [u8; 16],
    origin: PeerAddr,
    text: String,
    ttl: u8,
}

/// The version-1 frame, as an old (or hostile) sender encodes it.
#[derive(Serialize)]
enum FloodFrameV1 {
    Query(QueryV1),
}

/// A UDP socket standing in for a third party, counting what reaches it.
struct Victim {
    addr: SocketAddr,
    datagrams: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Victim {
    fn listen() -> Victim {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let addr = socket.local_addr().unwrap();
        let (datagrams, bytes, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (d, b, s) = (datagrams.clone(), bytes.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65_536];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, _)) = socket.recv_from(&mut buf) {
                    d.fetch_add(1, Ordering::Relaxed);
                    b.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        });
        Victim { addr, datagrams, bytes, stop, thread: Some(thread) }
    }

    /// Datagrams and bytes received since the probe.
    fn received(&self) -> (u64, u64) {
        (self.datagrams.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    /// Shows that the counting works: one datagram of our own arrives and
    /// is counted, then the count starts from zero.
    fn probe(&self) {
        UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"probe", self.addr).unwrap();
        wait_until(PATIENCE, "the victim to count a probe datagram", || self.received() == (1, 5));
        self.datagrams.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

/// The hostile's flood handler: counts the answers that come back to it,
/// its own forged ones apart.
#[derive(Debug, Clone)]
struct Collect {
    me: iroh::EndpointId,
    answers: Arc<AtomicU64>,
    own: Arc<AtomicU64>,
}

impl ProtocolHandler for Collect {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok(mut recv) = conn.accept_uni().await {
            match read_frame::<FloodFrame>(&mut recv, MAX_FLOOD_FRAME).await {
                Ok(FloodFrame::Answer(answer)) if answer.verify() => {
                    let count = if answer.provider.id == self.me { &self.own } else { &self.answers };
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(())
    }
}

/// Every flood figure a daemon's `status` shows (handled, duplicates, and
/// whatever drop counters it has), to tell when the peers are quiet.
fn flood_figures(d: &Daemon) -> Vec<(String, u64)> {
    let s = d.json(&["status"]);
    s.as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| k.starts_with("flood") && v.is_u64())
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

fn flood_handled(d: &Daemon) -> u64 {
    d.json(&["status"])["flood_handled"].as_u64().unwrap()
}

/// Waits until `figures` gives the same reading over `quiet`.
fn wait_quiet<T: PartialEq>(what: &str, quiet: Duration, mut figures: impl FnMut() -> T) {
    let mut last = (figures(), Instant::now());
    wait_until(PATIENCE, what, || {
        let now = figures();
        if now != last.0 {
            last = (now, Instant::now());
        }
        last.1.elapsed() >= quiet
    });
}

/// Sends one frame on its own stream and waits until the receiver has
/// read it (or dropped the connection).
async fn send<T: Serialize>(conn: &Connection, frame: &T) {
    let mut stream = conn.open_uni().await.unwrap();
    write_frame(&mut stream, frame, MAX_FLOOD_FRAME).await.unwrap();
    stream.finish().unwrap();
    tokio::time::timeout(Duration::from_secs(10), stream.stopped()).await.ok();
}

/// A query id unique to this run.
fn query_id(run: &[u8; 8], kind: u8, n: usize) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(run);
    id[8] = kind;
    id[9..].copy_from_slice(&(n as u64).to_be_bytes()[1..]);
    id
}

/// Acceptance: a flood query (or a version-1 frame, or a signed answer)
/// naming someone else's address makes no peer send anything to that
/// address, while honest flood search keeps working and every peer keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_member_cannot_aim_the_flood_at_a_third_party() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Daemon::host("root", &tmp.path().join("root"), &[]);
    let members: Vec<Daemon> =
        (1..=3).map(|i| Daemon::peer(&format!("m{i}"), &tmp.path().join(format!("m{i}")), &root.ticket, &[])).collect();
    let peers: Vec<&Daemon> = std::iter::once(&root).chain(&members).collect();
    for (i, p) in peers.iter().enumerate() {
        let file = tmp.path().join(format!("{WORD}-{}.ogg", p.name));
        random_file(&file, 20_000, i as u64);
        p.ok(&["share", file.to_str().unwrap()]);
    }
    wait_until(PATIENCE, "the index to list every peer", || online_nicks(&root).len() == peers.len());
    wait_until(PATIENCE, "every peer to have an overlay neighbour", || {
        peers.iter().all(|p| !p.json(&["status"])["neighbors"].as_array().unwrap().is_empty())
    });

    let victim = Victim::listen();
    victim.probe();
    let ticket: Ticket = root.ticket.parse().unwrap();
    // A member endpoint: it proves the network key before every connect,
    // and serves the admission exchange (so that members answering it can
    // prove themselves first) and the flood protocol (to take the answers).
    let (ep, _lookup, admission) = member_endpoint(vec![FLOOD_ALPN.to_vec()], ticket.network_key).await;
    let hostile_key = ep.secret_key().clone();
    let hostile_id = ep.id();
    let collect = Collect { me: hostile_id, answers: Default::default(), own: Default::default() };
    let router = Router::builder(ep.clone())
        .accept(peernet_proto::admission::ALPN, admission.protocol())
        .accept(FLOOD_ALPN, collect.clone())
        .spawn();
    // The hostile talks to m1; m2 searches honestly meanwhile.
    let (target, searcher) = (&members[0], &members[1]);
    let target_addr = target.addr().to_endpoint_addr();
    let run: [u8; 8] = SecretKey::generate().to_bytes()[..8].try_into().unwrap();
    let victim_as_provider = PeerAddr { id: hostile_id, ip: vec![victim.addr], relay: None };
    let handled_before = flood_handled(target);
    let over_budget = |d: &Daemon| d.json(&["status"])["flood_over_budget"].as_u64().unwrap();
    let over_before = over_budget(target);

    // (a) Queries that every peer answers: the answers go back along the
    // path, to the hostile, and nowhere else.
    let conn = ep.connect(target_addr.clone(), FLOOD_ALPN).await.expect("a member may connect on the flood protocol");
    let honest = {
        let dir = searcher.data_dir.clone();
        let window = format!("{}s", ANSWER_WINDOW.as_secs());
        std::thread::spawn(move || cli(&dir, &["search", "--flood-only", "--wait", &window, "--json", WORD]))
    };
    for batch in 0..QUERIES / BATCH {
        for i in 0..BATCH {
            let query = Query { id: query_id(&run, 1, batch * BATCH + i), text: WORD.into(), ttl: MAX_TTL };
            send(&conn, &FloodFrame::Query(query)).await;
        }
        wait_quiet("the member to take in the batch", Duration::from_millis(300), || flood_figures(target));
    }

    // (b) The version-1 layout naming the victim as the origin. A member
    // does not speak version 1, and reads this as a broken frame (it drops
    // the connection), so each goes on a connection of its own.
    for n in 0..OLD_FRAMES {
        let origin = PeerAddr { id: SecretKey::generate().public(), ip: vec![victim.addr], relay: None };
        let old = FloodFrameV1::Query(QueryV1 { id: query_id(&run, 2, n), origin, text: WORD.into(), ttl: MAX_TTL });
        let conn = ep.connect(target_addr.clone(), FLOOD_ALPN).await.unwrap();
        send(&conn, &old).await;
        conn.close(0u32.into(), b"done");
    }
    // Nobody serves version 1 any more.
    let v1 = tokio::time::timeout(Duration::from_secs(10), ep.connect(target_addr.clone(), b"peernet/flood/1")).await;
    assert!(!matches!(v1, Ok(Ok(_))), "a member still accepts the version-1 flood protocol");

    // (c) Signed answers for queries nobody asked, naming the victim as
    // the provider's address, and the same for the hostile's own queries
    // handed to another member, so they travel back along real paths.
    let file = FileEntry { name: format!("{WORD}-bait.ogg"), size: 1 << 20, hash: Hash::new(b"bait"), kind: Default::default() };
    let forge = |id| FloodFrame::Answer(Answer::signed(&hostile_key, id, victim_as_provider.clone(), "bait".into(), vec![file.clone()]));
    let conn = ep.connect(target_addr.clone(), FLOOD_ALPN).await.unwrap();
    for n in 0..FORGED_ANSWERS / 2 {
        send(&conn, &forge(query_id(&run, 3, n))).await;
    }
    let other = ep.connect(members[2].addr().to_endpoint_addr(), FLOOD_ALPN).await.unwrap();
    for n in 0..FORGED_ANSWERS / 2 {
        send(&other, &forge(query_id(&run, 1, n))).await;
    }
    let sent_at = Instant::now();

    // The honest search found others' files while all this went on.
    let out = honest.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hits: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<String> = hits.iter().filter_map(|h| h["name"].as_str()).map(str::to_string).collect();
    assert!(
        found.iter().any(|n| n.starts_with(WORD) && !n.ends_with(&format!("-{}.ogg", searcher.name)) && !n.contains("bait")),
        "the honest search found no other peer's file: {found:?}"
    );
    assert!(!found.iter().any(|n| n.contains("bait")), "a forged answer reached the honest searcher: {found:?}");

    // Quiet: no peer's flood figures move, then one more answer window.
    wait_quiet("every peer's flood figures to stop moving", Duration::from_secs(2), || {
        peers.iter().map(|p| flood_figures(p)).collect::<Vec<_>>()
    });
    let quiet_at = Instant::now();
    wait_until(ANSWER_WINDOW * 2, "an answer window to pass with the victim silent", || {
        assert_eq!(victim.received(), (0, 0), "a peer sent datagrams to the victim's address");
        quiet_at.elapsed() >= ANSWER_WINDOW
    });

    let handled = flood_handled(target) - handled_before;
    let over = over_budget(target) - over_before;
    let answers_back = collect.answers.load(Ordering::Relaxed);
    let forged_back = collect.own.load(Ordering::Relaxed);
    let (datagrams, bytes) = victim.received();
    println!(
        "queries sent: {QUERIES} (handled by the member: {handled}, dropped over its per-neighbour budget: {over}); version-1 frames: {OLD_FRAMES}; forged answers: {FORGED_ANSWERS}; \
         answers the hostile received back: {answers_back} (and {forged_back} of its own forged ones, along the path); honest search found: {found:?}; \
         datagrams at the victim: {datagrams} ({bytes} bytes) over {:?} after the last frame",
        sent_at.elapsed()
    );
    assert!(handled > 0, "the member handled none of the hostile's queries, so the test showed nothing");
    assert_eq!((datagrams, bytes), (0, 0), "no peer sends anything to the victim's address");
    for p in &peers {
        p.ok(&["status"]);
    }
    router.shutdown().await.ok();
    ep.close().await;
}
