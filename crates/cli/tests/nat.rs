//! Peers behind two home routers (real NAT: iptables masquerade in router
//! namespaces) reach each other through a network whose root runs its own
//! relay: they share and chat, first over a hole punched through both NATs
//! (direct), then, with UDP between the homes blocked, through the relay.
//! Needs root; skips visibly without it.
//! The hosts are `peernet_testnet::NatWorld`.

mod common;

use common::{netns::NatWorld, *};

/// The path `from`'s status reports for its link to the peer `to_id`.
fn path_to(from: &Daemon, to_id: &str) -> Option<String> {
    let status = from.json(&["status"]);
    status["links"].as_array()?.iter().find(|l| l["id"].as_str().is_some_and(|id| to_id.starts_with(id)))?["path"]["via"]
        .as_str()
        .map(str::to_string)
}

/// How `get` says its sources were reached ("direct" or "relayed").
fn reached(got: &serde_json::Value) -> Vec<String> {
    got["reached"].as_array().unwrap().iter().map(|r| r["path"]["via"].as_str().unwrap_or("unknown").to_string()).collect()
}

/// The path the map (`topo --format json`, from the index) gives the link
/// between the peers `a` and `b`.
fn map_path(from: &Daemon, a: &str, b: &str) -> Option<String> {
    let topo = from.json(&["topo", "--format", "json"]);
    let link = topo["links"].as_array()?.iter().find(|l| {
        let ends = [l["a"].as_str().unwrap_or_default(), l["b"].as_str().unwrap_or_default()];
        ends.contains(&a) && ends.contains(&b)
    })?;
    link["path"]["via"].as_str().map(str::to_string)
}

fn get_ok(d: &Daemon, name: &str) -> serde_json::Value {
    let out = d.json(&["get", name]);
    assert!(out["path"].is_string(), "{}: get {name}: {out}", d.name);
    out
}

#[test]
fn peers_behind_two_nats_share_and_chat_directly_then_through_the_relay() {
    if common::netns::skip("nat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = NatWorld::new("nat");
    let root = Daemon::start_in(
        Some(&w.public),
        "root",
        &dir.path().join("root"),
        &[
            "index",
            "--bind",
            &format!("{}:4100", NatWorld::PUBLIC_IP),
            "--relay",
            "3340",
            "--heartbeat",
            HEARTBEAT,
            "--lease-ttl",
            LEASE_TTL,
        ],
        &[],
    );
    let ticket = root.ticket.clone();
    let peer = |i: usize, name: &str| {
        let data = dir.path().join(name);
        let downloads = data.join("downloads");
        Daemon::start_in(
            Some(&w.homes[i]),
            name,
            &data,
            &["up", "--join", &ticket, "--nick", name, "--bind", "0.0.0.0:0", "--downloads", downloads.to_str().unwrap()],
            &[],
        )
    };
    let alice = peer(0, "alice");
    let bob = peer(1, "bob");
    let (alice_id, bob_id) = (alice.id(), bob.id());
    for d in [&alice, &bob] {
        wait_until(PATIENCE, "both homes online at the index", || {
            let nicks = online_nicks(d);
            nicks.contains(&"alice".to_string()) && nicks.contains(&"bob".to_string())
        });
        wait_until(PATIENCE, "each home connected to the root's relay", || {
            d.json(&["status"])["relays"].as_array().unwrap().iter().any(|r| r["connected"] == true)
        });
    }

    // The link between the homes is punched through both NATs.
    wait_until(PATIENCE, "alice's link to bob to go direct", || path_to(&alice, &bob_id).as_deref() == Some("direct"));
    wait_until(PATIENCE, "the map to show the homes' link as direct", || map_path(&bob, &alice_id, &bob_id).as_deref() == Some("direct"));

    // 20 MB each way, byte for byte, straight from home to home.
    let a_file = dir.path().join("from-alice.bin");
    let b_file = dir.path().join("from-bob.bin");
    random_file(&a_file, 20 << 20, 1);
    random_file(&b_file, 20 << 20, 2);
    alice.ok(&["share", a_file.to_str().unwrap()]);
    bob.ok(&["share", b_file.to_str().unwrap()]);
    for (d, name, original) in [(&bob, "from-alice.bin", &a_file), (&alice, "from-bob.bin", &b_file)] {
        let got = get_ok(d, name);
        assert!(same_bytes(original, got["path"].as_str().unwrap().as_ref()));
        println!("{} got {name}, reached {}", d.name, got["reached"]);
        assert_eq!(reached(&got), vec!["direct"], "{}: get says how its source was reached: {got}", d.name);
    }

    // Chat across both NATs.
    alice.ok(&["say", "hello from home one"]);
    wait_until(PATIENCE, "bob to hear alice", || texts_from(&bob, &alice_id).contains(&"hello from home one".to_string()));
    bob.ok(&["say", "hello from home two"]);
    wait_until(PATIENCE, "alice to hear bob", || texts_from(&alice, &bob_id).contains(&"hello from home two".to_string()));

    // Now the routers drop UDP between the homes: only the relay is left.
    w.block_udp_between_homes();
    wait_until(PATIENCE, "bob's link to alice to be relayed", || path_to(&bob, &alice_id).as_deref() == Some("relayed"));
    wait_until(PATIENCE, "the map to show the homes' link as relayed", || {
        map_path(&alice, &alice_id, &bob_id).as_deref() == Some("relayed")
    });
    let c_file = dir.path().join("after-the-wall.bin");
    random_file(&c_file, 5 << 20, 3);
    alice.ok(&["share", c_file.to_str().unwrap()]);
    let got = get_ok(&bob, "after-the-wall.bin");
    assert!(same_bytes(&c_file, got["path"].as_str().unwrap().as_ref()));
    println!("bob got after-the-wall.bin, reached {}", got["reached"]);
    assert_eq!(reached(&got), vec!["relayed"], "get says its source was relayed: {got}");
    bob.ok(&["say", "still here"]);
    wait_until(PATIENCE, "alice to hear bob through the relay", || texts_from(&alice, &bob_id).contains(&"still here".to_string()));
}
