//! The map learns a new overlay link at once: a neighbour change sends a
//! heartbeat within a second, instead of waiting for the next periodic one.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// How soon after a peer's neighbour comes up the root's map must show the
/// link. The periodic heartbeat here is 30 s (at least 22.5 s with jitter),
/// so only the heartbeat sent for the change can meet this.
const FRESH: Duration = Duration::from_secs(5);

fn has_link(graph: &serde_json::Value, a: &str, b: &str) -> bool {
    graph["edges"].as_array().unwrap().iter().any(|e| {
        let (x, y) = (e[0].as_str().unwrap(), e[1].as_str().unwrap());
        (x == a && y == b) || (x == b && y == a)
    })
}

#[test]
fn the_map_shows_a_new_link_within_seconds_despite_a_long_heartbeat() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Daemon::start_with_env(
        "root",
        &tmp.path().join("root"),
        &["up", "--nick", "root", "--bind", "127.0.0.1:0", "--heartbeat", "30s", "--lease-ttl", "90s"],
        &[],
    );
    let started = Instant::now();
    let peer = Daemon::peer("peer", &tmp.path().join("peer"), &root.ticket, &[]);
    let (root_id, peer_id) = (root.id(), peer.id());

    // `status` names neighbours by a short prefix of their id.
    wait_until(PATIENCE, "the peer's overlay neighbour to come up", || {
        peer.json(&["status"])["neighbors"].as_array().unwrap().iter().any(|n| root_id.starts_with(n.as_str().unwrap()))
    });
    let up_after = started.elapsed();
    let waited = wait_until(FRESH, "the root's map to show the root-peer link", || has_link(&root.json(&["topo"]), &root_id, &peer_id));
    eprintln!("neighbour up {up_after:?} after the root; link on the map {waited:?} later");
}
