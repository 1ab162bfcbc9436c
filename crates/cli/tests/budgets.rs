//! The index's budgets: a key that sends too fast is told to slow down, an
//! address cannot register more keys than its cap, and an honest peer
//! notices neither.

mod common;

use std::time::Instant;

use common::*;
use peernet_node::index_client::IndexClient;
use peernet_proto::{
    index::{ErrorCode, PeerAddr, Request, Response},
    ticket::Ticket,
};

/// A client of the index from the test's own endpoint, joined as `nick`.
async fn client(ticket: &Ticket, nick: &str) -> (iroh::Endpoint, IndexClient, Result<(), String>) {
    let (ep, lookup) = test_endpoint(vec![]).await;
    peernet_node::endpoint::remember(&lookup, &ticket.index);
    let me = PeerAddr { id: ep.id(), ip: ep.bound_sockets(), relay: None };
    let client = IndexClient::remote(ep.clone(), me, ticket.index.clone(), ticket.network_key);
    let joined = client.join(nick).await.map_err(|e| e.to_string());
    (ep, client, joined)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_key_is_slowed_down_and_an_address_holds_at_most_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let root = Daemon::host("root", &dir.path().join("root"), &["--index-rate", "20/40", "--keys-per-address", "3"]);
    let honest = Daemon::peer("honest", &dir.path().join("honest"), &root.ticket, &[]);
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"budget").unwrap();
    honest.ok(&["share", file.to_str().unwrap()]);
    let ticket: Ticket = root.ticket.parse().unwrap();

    // One key asks as fast as it can, 16 requests at a time.
    let (ep, greedy, joined) = client(&ticket, "greedy").await;
    joined.expect("the greedy peer joins");
    let started = Instant::now();
    let mut slowed = 0;
    let mut answered = 0;
    let mut message = String::new();
    for _ in 0..25 {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let greedy = greedy.clone();
            calls.spawn(async move { greedy.call(Request::Search { query: "notes".into(), limit: 5 }).await });
        }
        while let Some(response) = calls.join_next().await {
            match response.unwrap().expect("the index answers") {
                Response::Error { code: ErrorCode::SlowDown, message: m } => {
                    slowed += 1;
                    message = m;
                }
                Response::Hits(_) => answered += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
    }
    println!("400 requests in {:?}: {answered} answered, {slowed} told to slow down", started.elapsed());
    assert!(slowed > 0, "a key over its budget is slowed down");
    assert!(message.contains("slow down"), "the refusal says what to do: {message}");
    // The client honours the refusal: `request` pauses and tries again,
    // so ten requests made at once, with the budget spent, all get answers.
    let waited = Instant::now();
    let mut polite = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let greedy = greedy.clone();
        polite.spawn(async move { greedy.request(Request::Search { query: "notes".into(), limit: 5 }).await });
    }
    while let Some(answer) = polite.join_next().await {
        assert!(matches!(answer.unwrap(), Ok(Response::Hits(_))), "a request that slows down when told is answered");
    }
    println!("ten polite requests answered within {:?}", waited.elapsed());
    // The honest peer is served as usual.
    let hits = search(&honest, "notes");
    assert_eq!(hits.len(), 1, "an honest peer's search is answered");

    // The address 127.0.0.1 holds the honest peer and the greedy one: one
    // more key fits under the cap of 3, the next does not.
    let (ep3, _third, joined) = client(&ticket, "third").await;
    joined.expect("a third key from this address fits the cap");
    let (ep4, _fourth, joined) = client(&ticket, "fourth").await;
    let refusal = joined.expect_err("a fourth key from this address is refused");
    assert!(refusal.contains("already has 3 peers registered"), "{refusal}");
    assert!(online_nicks(&honest).contains(&"honest".to_string()));
    for ep in [ep, ep3, ep4] {
        ep.close().await;
    }
}

/// A request flood: one member sends 10,000 index requests as fast as it
/// can; it is throttled, and another member's searches stay fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_is_throttled_and_others_stay_fast() {
    const REQUESTS: usize = 10_000;
    const IN_FLIGHT: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let root = Daemon::host("root", &dir.path().join("root"), &[]);
    let sharer = Daemon::peer("sharer", &dir.path().join("sharer"), &root.ticket, &[]);
    let file = dir.path().join("quiet.txt");
    std::fs::write(&file, b"quiet").unwrap();
    sharer.ok(&["share", file.to_str().unwrap()]);
    let ticket: Ticket = root.ticket.parse().unwrap();
    let (ep1, greedy, joined) = client(&ticket, "greedy").await;
    joined.unwrap();
    let (ep2, honest, joined) = client(&ticket, "honest").await;
    joined.unwrap();

    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    // The honest member searches every 20 ms while the flood runs.
    let probe = {
        let flooding = flooding.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let answer = honest.request(Request::Search { query: "quiet".into(), limit: 5 }).await;
                latencies.push(t.elapsed());
                assert!(matches!(answer, Ok(Response::Hits(ref h)) if h.len() == 1), "{answer:?}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            latencies
        })
    };
    let started = Instant::now();
    let (mut slowed, mut answered) = (0usize, 0usize);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        if calls.len() >= IN_FLIGHT {
            match calls.join_next().await.unwrap().unwrap() {
                Ok(Response::Error { code: ErrorCode::SlowDown, .. }) => slowed += 1,
                Ok(_) => answered += 1,
                Err(e) => panic!("the index stopped answering the flood: {e}"),
            }
        }
        let greedy = greedy.clone();
        calls.spawn(async move { greedy.call(Request::Search { query: format!("flood {i}"), limit: 5 }).await });
    }
    while let Some(done) = calls.join_next().await {
        match done.unwrap() {
            Ok(Response::Error { code: ErrorCode::SlowDown, .. }) => slowed += 1,
            Ok(_) => answered += 1,
            Err(e) => panic!("the index stopped answering the flood: {e}"),
        }
    }
    let took = started.elapsed();
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = probe.await.unwrap();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{REQUESTS} requests in {took:?} ({:.0}/s): {answered} answered, {slowed} told to slow down; \
         the other member's {} searches meanwhile: p50 {:?}, p99 {:?}, max {:?}",
        REQUESTS as f64 / took.as_secs_f64(),
        latencies.len(),
        at(0.5),
        at(0.99),
        latencies.last().unwrap()
    );
    assert!(slowed > REQUESTS / 2, "the flooding member is throttled");
    let slowest = *latencies.last().expect("the other member searched during the flood");
    assert!(slowest < std::time::Duration::from_millis(100), "the other member's searches stay under 100 ms throughout: {slowest:?}");
    ep1.close().await;
    ep2.close().await;
}
