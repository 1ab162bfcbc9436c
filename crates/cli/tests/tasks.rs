//! Nothing is spawned and forgotten: 5,000 flood queries through a peer
//! leave its runtime with as many live tasks as before.

mod common;

use common::*;
use peernet_proto::{
    flood::{FloodFrame, Query, MAX_FLOOD_FRAME},
    index::PeerAddr,
};

const QUERIES: usize = 5_000;
/// Queries sent before waiting for the peer to have handled them, so the
/// peer's query buffer (256) never overflows and every query is handled.
const BATCH: usize = 100;
/// Tasks that may come and go in an idle daemon (timers of iroh's own
/// connections); the check is that 5,000 queries leave nothing behind.
const IDLE_SLACK: u64 = 8;

fn status(d: &Daemon) -> serde_json::Value {
    d.json(&["status"])
}

fn counter(s: &serde_json::Value, key: &str) -> u64 {
    s[key].as_u64().unwrap_or_else(|| panic!("status has {key}: {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_flood_queries_leave_no_task_behind() {
    let dir = tempfile::tempdir().unwrap();
    // Both take every query: the test measures tasks, not the flood budget.
    let unlimited = ["--flood-rate", "100000/100000"];
    let root = Daemon::host("root", &dir.path().join("root"), &unlimited);
    let peer = Daemon::peer("peer", &dir.path().join("peer"), &root.ticket, &unlimited);
    let file = dir.path().join("tune.ogg");
    random_file(&file, 10_000, 1);
    peer.ok(&["share", file.to_str().unwrap()]);
    wait_until(PATIENCE, "the overlay links the peer to the root", || !status(&peer)["neighbors"].as_array().unwrap().is_empty());

    // The idle level: the lowest of a few readings, once the network is quiet.
    let idle = (0..5).map(|_| counter(&status(&peer), "runtime_tasks")).min().unwrap();

    // Play a neighbour: every query matches the peer's file, so it answers
    // each (back to us, who do not take answers: each answer task fails)
    // and passes each on to the root.
    let (ep, lookup) = test_endpoint(vec![]).await;
    let s = status(&peer);
    let id: iroh::EndpointId = s["id"].as_str().unwrap().parse().unwrap();
    let ip = s["addrs"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().parse().unwrap()).collect();
    let peer_addr = PeerAddr { id, ip, relay: None };
    peernet_node::endpoint::remember(&lookup, &peer_addr);
    // Only members are served: prove it first, as a neighbour would.
    let ticket: peernet_proto::ticket::Ticket = root.ticket.parse().unwrap();
    peernet_node::admission::admit(&ep, &ticket.network_key, peer_addr.to_endpoint_addr()).await.unwrap();
    let conn = ep.connect(peer_addr.to_endpoint_addr(), peernet_proto::flood::ALPN).await.unwrap();
    let handled_before = counter(&s, "flood_handled");
    let mut peak = 0;
    for batch in 0..QUERIES / BATCH {
        for i in 0..BATCH {
            let n = (batch * BATCH + i) as u64;
            let mut qid = [7u8; 16];
            qid[..8].copy_from_slice(&n.to_be_bytes());
            let query = Query { id: qid, text: "tune".into(), ttl: 2 };
            let mut send = conn.open_uni().await.unwrap();
            peernet_index::frame_io::write_frame(&mut send, &FloodFrame::Query(query), MAX_FLOOD_FRAME).await.unwrap();
            send.finish().unwrap();
        }
        let sent = ((batch + 1) * BATCH) as u64;
        wait_until(PATIENCE, "the peer handled the batch", || {
            let s = status(&peer);
            peak = peak.max(counter(&s, "runtime_tasks"));
            counter(&s, "flood_handled") >= handled_before + sent
        });
    }
    conn.close(0u32.into(), b"done");
    println!("flood queries handled: {QUERIES}; live tasks: idle {idle}, peak {peak}");

    let waited = wait_until(PATIENCE, "the live task count is back at its idle level", || {
        counter(&status(&peer), "runtime_tasks") <= idle + IDLE_SLACK
    });
    let after = counter(&status(&peer), "runtime_tasks");
    println!("live tasks back to {after} (idle {idle}) {waited:?} after the last query");
    assert!(counter(&status(&peer), "node_tasks") <= counter(&status(&peer), "runtime_tasks"));
    ep.close().await;
}
