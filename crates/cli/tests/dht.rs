//! The DHT layer (`--dht`), on loopback with real processes and a DHT of
//! their own (no internet): an outsider's DHT node, which takes part in
//! the members' DHT and stores their announces, sees only keys derived
//! from the network key, never a file's hash; then, with the outsider and
//! the index gone, a peer without overlay neighbours finds a file's
//! provider through the members' DHT and fetches it byte-identical, and a
//! newcomer whose index is dead meets members through it.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use iroh_blobs::Hash;
use n0_future::StreamExt;
use n0_mainline::{DatagramHook, Dht, Id};
use peernet_proto::ticket::Ticket;

/// The UDP port of a daemon's DHT node, from its status.
fn dht_port(d: &Daemon) -> u16 {
    let addr = d.json(&["status"])["dht"]["addr"].as_str().map(str::to_string);
    let addr = addr.unwrap_or_else(|| panic!("{} reports no DHT address", d.name));
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn dht_field(d: &Daemon, field: &str) -> u64 {
    d.json(&["status"])["dht"][field].as_u64().unwrap_or(0)
}

fn neighbours(d: &Daemon) -> usize {
    d.json(&["status"])["neighbors"].as_array().unwrap().len()
}

/// `peernet up --join TICKET --dht ...`, with environment variables.
fn dht_peer(name: &str, dir: &std::path::Path, ticket: &str, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
    let downloads = dir.join("downloads");
    let mut args =
        vec!["up", "--join", ticket, "--nick", name, "--bind", "127.0.0.1:0", "--downloads", downloads.to_str().unwrap(), "--dht"];
    args.extend_from_slice(extra);
    Daemon::start_with_env(name, dir, &args, env)
}

/// Keeps a peer from meeting members through the DHT during the test.
const ALONE: &[(&str, &str)] = &[("PEERNET_DHT_MEET_AFTER", "3600")];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Endpoint ids that announced `key` on the DHT, each with the time of
/// its announce (µs since the epoch), as `node` finds them.
async fn announced(node: &Dht, key: [u8; 20]) -> Vec<([u8; 32], u64)> {
    let mut stream = node.get_signed_peers(Id::from(key)).await.unwrap();
    let mut found = Vec::new();
    while let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
        found.extend(batch.iter().map(|a| (*a.key(), a.timestamp())));
    }
    found
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dht_finds_files_and_members_when_the_index_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let root_args = ["index", "--bind", "127.0.0.1:0", "--heartbeat", HEARTBEAT, "--lease-ttl", LEASE_TTL, "--dht"];
    let mut root = Daemon::start_with_env("root", &dir.path().join("root"), &root_args, &[]);
    wait_until(PATIENCE, "the root's control API", || root.cli(&["status"]).status.success());
    let ticket: Ticket = root.ticket.parse().unwrap();

    // The outsider: a DHT node without the ticket that joins the members'
    // DHT through the root's node (its port is open to anyone) and records
    // every datagram it receives.
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Default::default();
    let outsider = {
        let mut builder = Dht::builder();
        builder.server_mode().port(0).bootstrap(&[format!("127.0.0.1:{}", dht_port(&root))]);
        builder.build().unwrap()
    };
    let record = seen.clone();
    let hook = DatagramHook::new(move |bytes, _| {
        record.lock().unwrap().push(bytes.to_vec());
        false
    });
    outsider.set_datagram_hook(Some(hook)).await.unwrap();
    assert!(outsider.bootstrapped().await.unwrap(), "the outsider's node joins the members' DHT");

    let file = dir.path().join("song.bin");
    random_file(&file, 3 << 20, 41);
    // Alice and bob are kept from meeting each other through the DHT, so
    // that bob has no overlay path to alice: only the DHT can tell him
    // who has the file.
    let alice = dht_peer("alice", &dir.path().join("alice"), &root.ticket, &["--share", file.to_str().unwrap()], ALONE);
    let hash_hex = alice.json(&["ls"])[0]["hash"].as_str().unwrap().to_string();
    let hash: Hash = hash_hex.parse().unwrap();
    wait_until(PATIENCE, "alice announces the network and her file on the DHT", || {
        dht_field(&alice, "nodes") > 0 && dht_field(&alice, "announced") >= 2
    });
    let alice_dht = format!("127.0.0.1:{}", dht_port(&alice));
    let alice_id: iroh::EndpointId = alice.id().parse().unwrap();

    // Dave, another member, joins the DHT. A put is stored by other nodes,
    // never by the announcer, so in a DHT this small alice must announce
    // again once it has grown, or her announce would live only on the
    // root and the outsider.
    let dave_joined = now_us();
    let dave = dht_peer("dave", &dir.path().join("dave"), &root.ticket, &[], ALONE);
    wait_until(PATIENCE, "dave's DHT node meets the others", || dht_field(&dave, "nodes") > 0);
    let file_key = peernet_proto::dht::file_key(&ticket.network_key, &hash);
    let mut renewed = false;
    for _ in 0..60 {
        renewed = announced(&outsider, file_key).await.iter().any(|(k, at)| k == alice_id.as_bytes() && *at >= dave_joined);
        if renewed {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(renewed, "alice announces again when her DHT grows");

    // The outsider stored and relayed the members' announces, but all it
    // saw were derived keys: not the file's hash, in any form.
    let datagrams = seen.lock().unwrap().clone();
    assert!(datagrams.iter().any(|d| contains(d, &file_key)), "the outsider's node took part: it saw the file's derived key");
    assert!(datagrams.iter().any(|d| contains(d, &peernet_proto::dht::network_key(&ticket.network_key))));
    for d in &datagrams {
        assert!(!contains(d, &hash.as_bytes()[..20]), "a datagram carried the file's hash");
        assert!(!contains(d, hash_hex.as_bytes()), "a datagram carried the file's hash in hex");
        assert!(!contains(d, ticket.network_key.as_bytes()), "a datagram carried the network key");
    }
    // Knowing the hash is not enough to look its providers up...
    let mut naive = [0u8; 20];
    naive.copy_from_slice(&hash.as_bytes()[..20]);
    assert!(announced(&outsider, naive).await.is_empty(), "nobody announced under the bare hash");
    // ...the derived key, which takes the network key, is.
    assert!(announced(&outsider, file_key).await.iter().any(|(k, _)| k == alice_id.as_bytes()), "alice's announce is stored, blind");

    // From here on the members' DHT has to do without the outsider's node
    // (and what it stored), and without the index.
    drop(outsider);
    root.kill9();

    // Bob joins after the index died, knowing one DHT node.
    let bob = dht_peer("bob", &dir.path().join("bob"), &root.ticket, &["--dht-bootstrap", &alice_dht], ALONE);
    let bob_downloads = bob.downloads();
    wait_until(PATIENCE, "bob's DHT node meets the members' nodes", || dht_field(&bob, "nodes") > 0);
    assert!(bob.fails(&["search", "--dht-only", "song"]).contains("whole hash"), "the DHT is asked by hash only");
    let status = bob.ok(&["status"]);
    assert!(status.contains("index down") && status.contains("overlay down") && status.contains("dht up"), "{status}");
    assert_eq!(neighbours(&bob), 0, "bob has no overlay neighbours");

    let got = bob.ok(&["get", &hash_hex]);
    assert!(same_bytes(&file, &bob_downloads.join("song.bin")), "bob's copy is byte-identical: {got}");
    assert_eq!(neighbours(&bob), 0, "the file came through the DHT, not the overlay");
    let hits = bob.json(&["search", "--dht-only", &hash_hex]);
    let providers = providers_of(hits.as_array().unwrap(), "song.bin");
    assert!(providers.contains(&"alice".to_string()), "the DHT names alice (and bob, a source now): {providers:?}");

    // Carol is new; her index is dead and she knows one DHT node: she
    // finds the members there and enters the room.
    let carol = dht_peer("carol", &dir.path().join("carol"), &root.ticket, &["--dht-bootstrap", &alice_dht], &[]);
    wait_until(PATIENCE, "carol meets members through the DHT", || neighbours(&carol) > 0);
    wait_until(PATIENCE, "carol sees alice in the room", || online_members(&carol).contains(&"alice".to_string()));
    drop(dave);
}
