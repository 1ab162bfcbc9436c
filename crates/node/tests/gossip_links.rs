//! The gossip layer ends the connections it no longer uses
//! (vendor/iroh-gossip/PEERNET.md): real endpoints on loopback, two peers
//! in one topic, one leaves it. Upstream iroh-gossip 0.101 keeps that
//! connection open for as long as both endpoints run, and with our
//! keep-alives it costs packets for good.

use std::time::{Duration, Instant};

use iroh::{protocol::Router, Endpoint};
use iroh_gossip::{api::Event, net::Gossip, proto::TopicId};
use n0_future::StreamExt;
use peernet_node::{
    endpoint::{self, EndpointConfig},
    paths::{Paths, OVERLAY},
};

async fn peer() -> (Router, Gossip, Paths, iroh::address_lookup::memory::MemoryLookup) {
    let paths = Paths::new();
    let (ep, lookup): (Endpoint, _) = endpoint::bind_tracked(
        EndpointConfig {
            secret_key: iroh::SecretKey::generate(),
            bind: "127.0.0.1:0".parse().unwrap(),
            relay: None,
            alpns: vec![OVERLAY.to_vec()],
            congestion: Default::default(),
        },
        &paths,
    )
    .await
    .unwrap();
    let gossip = Gossip::builder().spawn(ep.clone());
    let router = Router::builder(ep).accept(OVERLAY, gossip.clone()).spawn();
    (router, gossip, paths, lookup)
}

fn gossip_links(paths: &Paths) -> usize {
    paths.live().get(&String::from_utf8_lossy(OVERLAY).into_owned()).copied().unwrap_or(0)
}

/// Waits (at most `limit`) until `done` holds; says what it waited for.
async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "gave up after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_connection_gossip_stopped_using_is_closed() {
    let (a_router, a_gossip, a_paths, a_lookup) = peer().await;
    let (b_router, b_gossip, b_paths, b_lookup) = peer().await;
    endpoint::remember(&b_lookup, &endpoint::own_addr(a_router.endpoint()));
    endpoint::remember(&a_lookup, &endpoint::own_addr(b_router.endpoint()));
    let topic = TopicId::from_bytes([7; 32]);

    let mut a_topic = a_gossip.subscribe(topic, vec![]).await.unwrap();
    let b_topic = tokio::time::timeout(Duration::from_secs(60), b_gossip.subscribe_and_join(topic, vec![a_router.endpoint().id()]))
        .await
        .expect("b joined a within 60 s")
        .unwrap();
    wait_until(Duration::from_secs(60), "a gossip link on both sides", || gossip_links(&a_paths) >= 1 && gossip_links(&b_paths) >= 1).await;

    // b leaves the topic: it tells a, and neither has a use for the link.
    drop(b_topic);
    let down = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = a_topic.next().await {
            if matches!(event, Ok(Event::NeighborDown(_))) {
                return;
            }
        }
    });
    down.await.expect("a saw b leave within 60 s");

    // Closed after the linger (20 s of silence), not kept for good.
    wait_until(Duration::from_secs(90), "the unused gossip connection to close", || {
        gossip_links(&a_paths) == 0 && gossip_links(&b_paths) == 0
    })
    .await;
    a_router.shutdown().await.ok();
    b_router.shutdown().await.ok();
}
