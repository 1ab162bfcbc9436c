//! Lies from a member: sizes of 2^63 and u64::MAX, a folder listing a
//! million entries, chat events numbered u64::MAX or sent at u64::MAX ms.
//! Each is refused or handled with no panic, the daemons keep serving, and
//! their memory (VmRSS) stays within a stated bound.

mod common;

use std::time::Duration;

use common::*;
use iroh_blobs::{format::collection::Collection, store::mem::MemStore, BlobsProtocol, Hash};
use peernet_node::index_client::IndexClient;
use peernet_proto::{
    index::{FileEntry, Kind, PeerAddr, Request, Response},
    ticket::Ticket,
};

/// How much a daemon's resident memory may grow while handling the lies.
const RSS_BOUND_KB: u64 = 50 * 1024;

/// Deterministic pseudo-random hashes (nobody has their content).
fn fake_hashes(n: usize) -> impl Iterator<Item = Hash> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n).map(move |_| {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        Hash::from_bytes(bytes)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_sizes_and_a_million_entry_folder_are_handled_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().to_owned();
    let (root, honest) = tokio::task::spawn_blocking(move || {
        let root = Daemon::host("root", &tmp_path.join("root"), &[]);
        let honest = Daemon::peer("honest", &tmp_path.join("honest"), &root.ticket, &[]);
        (root, honest)
    })
    .await
    .unwrap();
    let ticket: Ticket = root.ticket.parse().unwrap();
    let before = (rss_kb(root.pid()), rss_kb(honest.pid()));

    // The liar: a member serving blobs of its own.
    let store = MemStore::new();
    let small = store.blobs().add_slice(b"ten bytes!").temp_tag().await.unwrap();
    let other = store.blobs().add_slice(b"another ten").temp_tag().await.unwrap();
    let started = std::time::Instant::now();
    let big = Collection::from_iter(fake_hashes(1_000_000).enumerate().map(|(i, h)| (format!("f{i}"), h)));
    let big = big.store(&store).await.unwrap();
    println!("built a collection of 1,000,000 entries in {:?}", started.elapsed());
    let (ep, lookup, admission) = member_endpoint(vec![iroh_blobs::ALPN.to_vec()], ticket.network_key).await;
    let router = iroh::protocol::Router::builder(ep.clone())
        .accept(peernet_proto::admission::ALPN, admission.protocol())
        .accept(iroh_blobs::ALPN, BlobsProtocol::new(&store, None))
        .spawn();
    peernet_node::endpoint::remember(&lookup, &ticket.index);
    let me = PeerAddr { id: ep.id(), ip: ep.bound_sockets(), relay: None };
    let liar = IndexClient::remote(ep.clone(), me, ticket.index.clone(), ticket.network_key);
    liar.join("mallory").await.unwrap();

    // (a) Sizes of 2^63 and u64::MAX for blobs of ten-odd bytes.
    let mut outcomes = Vec::new();
    for (name, size, hash) in [("huge.bin", 1u64 << 63, small.hash()), ("max.bin", u64::MAX, other.hash())] {
        let entry = FileEntry { name: name.into(), size, hash, kind: Kind::File };
        let answer = liar.request(Request::Publish { files: vec![entry] }).await.unwrap();
        let honest_get = match answer {
            Response::Published { .. } => {
                let h = honest.cli(&["get", name, "--json"]);
                if h.status.success() {
                    let saved: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
                    let path = saved["path"].as_str().unwrap().to_string();
                    let on_disk = std::fs::metadata(&path).unwrap().len();
                    assert!(on_disk < 64, "only the real bytes were written: {on_disk}");
                    format!("accepted; get saved the real {on_disk} bytes")
                } else {
                    format!("accepted; get failed: {}", String::from_utf8_lossy(&h.stderr).trim())
                }
            }
            Response::Error { message, .. } => format!("refused: {message}"),
            other => panic!("unexpected answer {other:?}"),
        };
        println!("size {size}: {honest_get}");
        outcomes.push(honest_get);
    }

    // (b) A folder whose listing claims a million entries.
    let entry = FileEntry { name: "million".into(), size: 1_000_000, hash: big.hash(), kind: Kind::Folder };
    let answer = liar.request(Request::Publish { files: vec![entry] }).await.unwrap();
    assert!(matches!(answer, Response::Published { .. }), "{answer:?}");
    let started = std::time::Instant::now();
    let got = tokio::task::block_in_place(|| honest.cli(&["get", "million"]));
    let folder = if got.status.success() {
        format!("get succeeded: {}", String::from_utf8_lossy(&got.stdout).trim())
    } else {
        format!("get failed: {}", String::from_utf8_lossy(&got.stderr).trim())
    };
    println!("million-entry folder after {:?}: {folder}", started.elapsed());

    // The daemons keep serving, within the memory bound.
    tokio::task::block_in_place(|| {
        root.ok(&["status"]);
        honest.ok(&["status"]);
    });
    let after = (rss_kb(root.pid()), rss_kb(honest.pid()));
    println!("VmRSS root {} -> {} KiB, honest {} -> {} KiB (bound +{} KiB)", before.0, after.0, before.1, after.1, RSS_BOUND_KB);
    assert!(after.0 <= before.0 + RSS_BOUND_KB, "root memory grew too much");
    assert!(after.1 <= before.1 + RSS_BOUND_KB, "honest peer's memory grew too much");
    assert!(!got.status.success(), "a folder of a million entries is not saved");
    assert!(folder.contains("a peernet folder may hold"), "refused for what it is, in one sentence: {folder}");

    tokio::time::timeout(Duration::from_secs(10), router.shutdown()).await.ok();
    admission.detach();
    liar.leave().await.ok();
    ep.close().await;
}

/// (c) Chat events numbered u64::MAX or sent at u64::MAX ms, signed by a
/// real member key, fed to the room state machine every daemon runs (in
/// process: a gossip instance of the test's own would add nothing the
/// room does not already decide; the proptest in peernet-proto covers
/// arbitrary events).
#[test]
fn chat_events_at_the_ends_of_the_numbers_are_handled() {
    use peernet_proto::chat::{seal, Body, Event, Room};
    const TOPIC: [u8; 32] = [7; 32];
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let key = iroh::SecretKey::generate();
    let mut room = Room::new(TOPIC, Some(iroh::SecretKey::generate().public()), 30_000);
    let mut nonce = 0u8;
    let mut event = |seq: u64, sent_at_ms: u64, body: Body| {
        nonce += 1;
        Event { author: key.public(), topic: TOPIC, session: 1, seq, nonce: [nonce; 16], sent_at_ms, body }
    };
    let cases = [
        ("hello at seq u64::MAX", event(u64::MAX, now, Body::Hello { nickname: "mallory".into() })),
        ("message at seq u64::MAX", event(u64::MAX, now, Body::Message { text: "last".into() })),
        ("message sent at u64::MAX ms", event(5, u64::MAX, Body::Message { text: "future".into() })),
        ("hello sent at u64::MAX ms, seq u64::MAX", event(u64::MAX, u64::MAX, Body::Hello { nickname: "m2".into() })),
        ("message at seq 0 after u64::MAX", event(0, now, Body::Message { text: "again".into() })),
    ];
    for (what, e) in cases {
        let outcome = room.receive(&seal(&key, &e), now);
        println!("{what}: {outcome:?}");
        if e.sent_at_ms == u64::MAX {
            assert!(outcome.is_err(), "an event from the far future is dropped");
        }
    }
    // The room still works for an honest author afterwards.
    let mut alice = peernet_proto::chat::Author::new(iroh::SecretKey::generate(), TOPIC);
    room.receive(&alice.event(Body::Hello { nickname: "alice".into() }, now).1, now).unwrap();
    let changes = room.receive(&alice.event(Body::Message { text: "hi".into() }, now).1, now).unwrap();
    assert!(!changes.is_empty(), "an honest message is accepted after the lies");
    println!("members after: {}", room.members(now).len());
}
