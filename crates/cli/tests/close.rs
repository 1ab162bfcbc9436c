//! Closing the whole network from its root, and forged close events.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use iroh::SecretKey;
use iroh_gossip::proto::TopicId;
use peernet_proto::{
    chat::{Author, Body},
    index::PeerAddr,
    ticket::Ticket,
};

/// Joins the network's overlay as an outsider-with-the-ticket and
/// broadcasts a Close event signed by a key that is not the root's.
async fn forge_close(ticket: &str, via: &serde_json::Value) {
    let ticket: Ticket = ticket.parse().unwrap();
    let key = SecretKey::generate();
    // A member: it proves the network key before each connect.
    let admission = peernet_node::admission::Admission::new(ticket.network_key, key.public());
    let config = peernet_node::endpoint::EndpointConfig {
        secret_key: key.clone(),
        bind: "127.0.0.1:0".parse().unwrap(),
        relay: None,
        alpns: vec![iroh_gossip::ALPN.to_vec()],
        congestion: Default::default(),
    };
    let (ep, lookup) = peernet_node::endpoint::bind_member(config, &admission, &peernet_node::paths::Paths::new()).await.unwrap();
    let gossip = iroh_gossip::net::Gossip::builder().max_message_size(8192).spawn(ep.clone());
    let router = iroh::protocol::Router::builder(ep.clone())
        .accept(peernet_proto::admission::ALPN, admission.protocol())
        .accept(iroh_gossip::ALPN, gossip.clone())
        .spawn();
    let peer = PeerAddr {
        id: via["id"].as_str().unwrap().parse().unwrap(),
        ip: via["addrs"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().parse().unwrap()).collect(),
        relay: None,
    };
    peernet_node::endpoint::remember(&lookup, &peer);
    let topic = ticket.network_key.topic();
    let mut sub = tokio::time::timeout(Duration::from_secs(30), gossip.subscribe_and_join(TopicId::from_bytes(topic), vec![peer.id]))
        .await
        .expect("joined the overlay in time")
        .unwrap();
    let mut mallory = Author::new(key, topic);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let (_, bytes) = mallory.event(Body::Close, now);
    sub.broadcast(Bytes::from(bytes)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    router.shutdown().await.ok();
    admission.detach();
}

/// Acceptance: a forged close (signed by a non-root key) makes no peer
/// exit; `stop-network` from the root makes every peer of a 5-peer network
/// exit (status 0) within 10 s.
#[test]
fn only_the_root_closes_the_network() {
    let tmp = tempfile::tempdir().unwrap();
    let mut peers = network(tmp.path(), 5);
    let all: Vec<&Daemon> = peers.iter().collect();
    wait_for_room(&all, &(0..5).map(|i| format!("n{i}")).collect::<Vec<_>>());

    // A member that is not the root cannot ask for it either.
    let err = peers[2].fails(&["stop-network"]);
    assert!(err.contains("only the root can close the network"), "{err}");

    let status = peers[1].json(&["status"]);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(forge_close(&peers[0].ticket, &status));
    // Every peer saw the forgery and dropped it.
    wait_until(Duration::from_secs(15), "the forged close to be dropped everywhere", || {
        peers.iter().all(|p| p.json(&["status"])["dropped_events"]["ForgedClose"].as_u64().unwrap_or(0) >= 1)
    });
    std::thread::sleep(Duration::from_secs(1));
    for p in &peers {
        assert!(p.cli(&["status"]).status.success(), "{} must still be running", p.name);
    }

    peers[0].ok(&["stop-network"]);
    for p in peers.iter_mut() {
        let status = p.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{} exited with {status}", p.name);
        assert!(p.log_text().contains("closed"), "{} says why it left", p.name);
    }
}

/// `stop-network` works from a standalone `peernet index` too: the index
/// takes part in the overlay only to carry its close event.
#[test]
fn a_standalone_index_closes_its_network() {
    let tmp = tempfile::tempdir().unwrap();
    let mut index = Daemon::index(&tmp.path().join("index"));
    let mut peers: Vec<Daemon> =
        (0..3).map(|i| Daemon::peer(&format!("n{i}"), &tmp.path().join(format!("n{i}")), &index.ticket, &[])).collect();
    let all: Vec<&Daemon> = peers.iter().collect();
    wait_for_room(&all, &(0..3).map(|i| format!("n{i}")).collect::<Vec<_>>());
    // The index joins the overlay once peers are there to refer it to.
    wait_until(PATIENCE, "the index to have overlay neighbours", || !index.json(&["status"])["neighbors"].as_array().unwrap().is_empty());
    index.ok(&["stop-network"]);
    for p in peers.iter_mut() {
        assert!(p.wait_exit(Duration::from_secs(10)).success(), "{} left", p.name);
    }
    assert!(index.wait_exit(Duration::from_secs(10)).success());
}
