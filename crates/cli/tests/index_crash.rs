//! The index killed with SIGKILL while 50 clients publish: after a restart
//! on the same data directory every registration it acknowledged is there,
//! and no row is half-written.

mod common;

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Instant,
};

use common::*;
use peernet_node::index_client::IndexClient;
use peernet_proto::{
    index::{FileEntry, Kind, PeerAddr, Request, Response},
    ticket::Ticket,
};

const CLIENTS: usize = 50;
/// The index is killed once this many publishes have been acknowledged.
const KILL_AFTER: usize = 1000;
/// Each client publishes at most this many files (the per-peer limit is 1000).
const PER_CLIENT: usize = 200;

/// `peernet index` with budgets wide enough for 50 clients on one address,
/// and a lease long enough that nothing expires during the test.
fn index(data_dir: &Path) -> Daemon {
    let args = [
        "index",
        "--bind",
        "127.0.0.1:0",
        "--heartbeat",
        "60s",
        "--lease-ttl",
        "10m",
        "--keys-per-address",
        "1000",
        "--index-rate",
        "100000/100000",
    ];
    Daemon::start_with_env("index", data_dir, &args, &[])
}

/// What one client saw: its key, the hashes it sent, the hashes acknowledged.
struct Outcome {
    peer: [u8; 32],
    sent: Vec<String>,
    acked: Vec<String>,
}

async fn publisher(ticket: Ticket, n: usize, acked_total: Arc<AtomicUsize>) -> (iroh::Endpoint, Outcome) {
    let (ep, lookup) = test_endpoint(vec![]).await;
    peernet_node::endpoint::remember(&lookup, &ticket.index);
    let me = PeerAddr { id: ep.id(), ip: ep.bound_sockets(), relay: None };
    let client = IndexClient::remote(ep.clone(), me, ticket.index.clone(), ticket.network_key);
    client.join(&format!("client{n}")).await.expect("a client joins");
    let mut outcome = Outcome { peer: *ep.id().as_bytes(), sent: Vec::new(), acked: Vec::new() };
    for i in 0..PER_CLIENT {
        let hash = iroh_blobs::Hash::new(format!("client {n} file {i}"));
        let entry = FileEntry { name: format!("c{n}-f{i}.bin"), size: (n * 1000 + i) as u64, hash, kind: Kind::File };
        outcome.sent.push(hash.to_hex().to_string());
        match client.call(Request::Publish { files: vec![entry] }).await {
            Ok(Response::Published { .. }) => {
                outcome.acked.push(hash.to_hex().to_string());
                acked_total.fetch_add(1, Ordering::SeqCst);
            }
            // The index is gone (or answered something else): stop here.
            _ => break,
        }
    }
    (ep, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_registration_survives_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("index");
    let mut first = index(&data);
    let ticket: Ticket = first.ticket.parse().unwrap();

    let acked_total = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..CLIENTS {
        clients.spawn(publisher(ticket.clone(), n, acked_total.clone()));
    }
    let started = Instant::now();
    let counter = acked_total.clone();
    tokio::task::spawn_blocking(move || {
        wait_until(PATIENCE, "1000 acknowledged publishes", || counter.load(Ordering::SeqCst) >= KILL_AFTER)
    })
    .await
    .unwrap();
    let at_kill = acked_total.load(Ordering::SeqCst);
    first.kill9();
    println!("killed the index with SIGKILL after {:?}, {at_kill} publishes acknowledged", started.elapsed());

    let mut outcomes = Vec::new();
    let mut endpoints = Vec::new();
    while let Some(done) = clients.join_next().await {
        let (ep, outcome) = done.unwrap();
        endpoints.push(ep);
        outcomes.push(outcome);
    }
    for ep in endpoints {
        ep.close().await;
    }

    // Restart on the same data directory: same key, same port, same ticket.
    let mut second = index(&data);
    assert_eq!(second.ticket, first.ticket, "the restarted index has the same ticket");
    second.terminate();

    let db = rusqlite::Connection::open_with_flags(data.join("index.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok", "the database is intact");

    // Every row has a peer key of 32 bytes, a 64-digit hex hash, a name and a size.
    let mut rows: HashSet<(Vec<u8>, String)> = HashSet::new();
    let mut malformed = 0;
    {
        let mut stmt = db.prepare("SELECT peer, hash, name, size FROM files").unwrap();
        let mut it = stmt.query([]).unwrap();
        while let Some(r) = it.next().unwrap() {
            let peer: Vec<u8> = r.get(0).unwrap();
            let hash: String = r.get(1).unwrap();
            let name: String = r.get(2).unwrap();
            let size: i64 = r.get(3).unwrap();
            let well_formed = peer.len() == 32
                && hash.len() == 64
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
                && name.starts_with('c')
                && name.ends_with(".bin")
                && size >= 0;
            if !well_formed {
                malformed += 1;
            }
            rows.insert((peer, hash));
        }
    }

    let mut acked = 0;
    let mut found = 0;
    let mut sent_unacked = 0;
    let mut unacked_present = 0;
    for o in &outcomes {
        for h in &o.acked {
            acked += 1;
            if rows.contains(&(o.peer.to_vec(), h.clone())) {
                found += 1;
            }
        }
        for h in o.sent.iter().skip(o.acked.len()) {
            sent_unacked += 1;
            if rows.contains(&(o.peer.to_vec(), h.clone())) {
                unacked_present += 1;
            }
        }
    }
    let clients_registered: i64 = db.query_row("SELECT COUNT(*) FROM peers", [], |r| r.get(0)).unwrap();
    println!(
        "{CLIENTS} clients; acknowledged {acked}, found after restart {found}; sent but unacknowledged {sent_unacked}, \
         of which present {unacked_present}; rows in files {}, malformed {malformed}; peers {clients_registered}",
        rows.len()
    );
    assert!(acked >= KILL_AFTER, "at least {KILL_AFTER} acknowledged");
    assert_eq!(found, acked, "every acknowledged registration survived the kill");
    assert_eq!(malformed, 0, "no row is half-written");
    assert_eq!(rows.len(), found + unacked_present, "no row the clients did not send");
}
