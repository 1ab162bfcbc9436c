//! A closed network: an outsider that knows a member's id and addresses, but
//! holds no ticket, gets nothing from it on any protocol; a member that
//! joined a second ago gets everything.

mod common;

use std::{path::PathBuf, time::Duration};

use common::*;
use iroh::{
    endpoint::{Connection, ConnectionError},
    Endpoint, EndpointId,
};
use iroh_blobs::{store::mem::MemStore, Hash};
use iroh_gossip::proto::TopicId;
use peernet_proto::{
    admission::{close_code, NOT_MEMBER_REASON},
    flood::{FloodFrame, Query, MAX_FLOOD_FRAME},
    index::PeerAddr,
    ticket::Ticket,
};

/// Bound on each thing the outsider tries.
const ATTEMPT: Duration = Duration::from_secs(30);
/// How long the outsider's gossip join is given once the member has refused
/// it: a member would have become its neighbour within a round trip.
const GOSSIP_GRACE: Duration = Duration::from_secs(5);

fn refused(s: &serde_json::Value) -> u64 {
    s["refused_outsiders"].as_u64().unwrap_or_else(|| panic!("status counts refused outsiders: {s}"))
}

/// How the member closed a connection: its close code and reason.
async fn close_of(conn: &Connection) -> (u64, String) {
    match tokio::time::timeout(ATTEMPT, conn.closed()).await.expect("the member closes the connection") {
        ConnectionError::ApplicationClosed(close) => (close.error_code.into_inner(), String::from_utf8_lossy(&close.reason).to_string()),
        other => panic!("expected an application close, got {other}"),
    }
}

fn assert_not_member(what: &str, (code, reason): (u64, String)) {
    assert_eq!(code, close_code::NOT_MEMBER as u64, "{what}: close code");
    assert_eq!(reason, NOT_MEMBER_REASON, "{what}: close reason");
    assert!(reason.starts_with("not a member of this network: "));
}

/// Acceptance (issue 10): an outsider with a member's id and addresses gets
/// no blob, no flood answer and no gossip neighbour, each refusal is counted
/// in the member's status, and a member that joined a second ago fetches
/// the file byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_gets_nothing_and_a_new_member_gets_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_owned();
    let file = dir.join("atlas.bin");
    random_file(&file, 4 * 1024 * 1024, 10);
    let (root, member) = {
        let (dir, file) = (dir.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            let root = Daemon::host("root", &dir.join("root"), &[]);
            let member = Daemon::peer("member", &dir.join("member"), &root.ticket, &["--share", file.to_str().unwrap()]);
            (root, member)
        })
        .await
        .unwrap()
    };
    let ticket: Ticket = root.ticket.parse().unwrap();
    let status = member.json(&["status"]);
    let member_addr = PeerAddr {
        id: status["id"].as_str().unwrap().parse::<EndpointId>().unwrap(),
        ip: status["addrs"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().parse().unwrap()).collect(),
        relay: None,
    };
    let hash: Hash = member.json(&["ls"]).as_array().unwrap().iter().find(|s| s["name"] == "atlas.bin").unwrap()["hash"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let refused_before = refused(&status);

    // The outsider: a fresh key, no ticket, no hooks; it knows where the member is.
    let (ep, lookup) = test_endpoint(vec![iroh_gossip::ALPN.to_vec(), peernet_proto::flood::ALPN.to_vec()]).await;
    peernet_node::endpoint::remember(&lookup, &member_addr);

    // (a) The blob, by hash: the download fails and nothing is stored.
    let store = MemStore::new();
    let download = tokio::time::timeout(ATTEMPT, store.downloader(&ep).download(hash, vec![member_addr.id])).await;
    assert!(!matches!(download, Ok(Ok(()))), "the outsider downloaded the blob");
    assert!(!store.blobs().has(hash).await.unwrap(), "nothing of the blob is stored");
    let conn = ep.connect(member_addr.to_endpoint_addr(), iroh_blobs::ALPN).await.expect("the handshake itself completes");
    assert_not_member("blobs", close_of(&conn).await);

    // (b) A flood query for the shared file: the connection is closed with
    // the reason, and no answer comes back on it.
    let conn = ep.connect(member_addr.to_endpoint_addr(), peernet_proto::flood::ALPN).await.expect("the handshake itself completes");
    let query = Query { id: *blake3::hash(b"outsider query").as_bytes().first_chunk().unwrap(), text: "atlas".into(), ttl: 2 };
    if let Ok(mut send) = conn.open_uni().await {
        peernet_index::frame_io::write_frame(&mut send, &FloodFrame::Query(query), MAX_FLOOD_FRAME).await.ok();
        send.finish().ok();
    }
    assert!(conn.accept_uni().await.is_err(), "no answer stream from the member");
    assert_not_member("flood", close_of(&conn).await);

    // (c) Gossip on the network's topic (assume the outsider guessed it),
    // with the member as bootstrap: no neighbour.
    let gossip = iroh_gossip::net::Gossip::builder().spawn(ep.clone());
    let router = iroh::protocol::Router::builder(ep.clone()).accept(iroh_gossip::ALPN, gossip.clone()).spawn();
    let before_gossip = refused(&member.json(&["status"]));
    let mut topic = gossip.subscribe(TopicId::from_bytes(ticket.network_key.topic()), vec![member_addr.id]).await.unwrap();
    let gossip_refused = {
        let member_dir = member.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            wait_until(ATTEMPT, "the member to refuse the outsider's gossip", || {
                refused(&serde_json::from_slice(&cli(&member_dir, &["status", "--json"]).stdout).unwrap()) > before_gossip
            })
        })
    };
    gossip_refused.await.unwrap();
    let joined = tokio::time::timeout(GOSSIP_GRACE, topic.joined()).await;
    assert!(!matches!(joined, Ok(Ok(()))), "the outsider got a gossip neighbour");
    let outsider_short = ep.id().fmt_short().to_string();
    let neighbors = member.json(&["status"])["neighbors"].clone();
    assert!(!neighbors.as_array().unwrap().iter().any(|n| n == outsider_short.as_str()), "{neighbors}");

    // (d) The member counted every refusal: the downloader's, the blob
    // connection, the flood connection and the gossip join.
    let after = member.json(&["status"]);
    assert!(refused(&after) >= refused_before + 4, "refusals counted: {after}");
    let text = member.ok(&["status"]);
    assert!(text.contains("outsider connections refused"), "{text}");

    // (e) Meanwhile a member that joined a second ago gets the file.
    let (late, out) = {
        let (dir, ticket) = (dir.clone(), root.ticket.clone());
        tokio::task::spawn_blocking(move || {
            let late = Daemon::peer("late", &dir.join("late"), &ticket, &[]);
            let out = late.json(&["get", "atlas.bin"]);
            (late, out)
        })
        .await
        .unwrap()
    };
    assert!(same_bytes(&file, &late.downloads().join("atlas.bin")), "byte-identical: {out}");
    assert!(late.json(&["status"])["admissions"].as_u64().unwrap() >= 1, "the late member proved itself");

    drop(topic);
    tokio::time::timeout(Duration::from_secs(10), router.shutdown()).await.ok();
    close(ep).await;
    drop((late, member, root));
}

async fn close(ep: Endpoint) {
    tokio::time::timeout(Duration::from_secs(10), ep.close()).await.ok();
}
