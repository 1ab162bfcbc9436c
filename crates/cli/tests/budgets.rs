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
