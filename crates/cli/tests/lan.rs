//! A LAN network with no server at all: three peers on one bridge, started
//! with `--lan` and no ticket, find each other with mDNS, then chat,
//! flood-search, fetch a 20 MB file byte for byte, list who is there and
//! draw the map from their own reports; a fourth peer with another network
//! name on the same LAN sees none of them. Needs root (network namespaces,
//! so that multicast never leaves the test); skips visibly without it.

mod common;

use std::time::{Duration, Instant};

use common::{netns::Hosts, *};

/// How fast LAN peers must find each other (the bound).
const FIND_EACH_OTHER: Duration = Duration::from_secs(10);

fn lan_peer(hosts: &[String], i: usize, dir: &std::path::Path, network: &str) -> Daemon {
    let name = format!("p{}", i + 1);
    let data = dir.join(&name);
    let downloads = data.join("downloads");
    let args = ["up", "--lan", "--network", network, "--nick", &name, "--bind", "0.0.0.0:0", "--downloads", downloads.to_str().unwrap()];
    Daemon::start_in(Some(&hosts[i]), &name, &data, &args, &[])
}

#[test]
fn lan_peers_find_each_other_and_share_without_any_server() {
    if common::netns::skip("lan") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut net = Hosts::new("lan");
    let hosts = net.segment("10.10.0", 4);

    let kitchen: Vec<Daemon> = (0..3).map(|i| lan_peer(&hosts, i, dir.path(), "kitchen")).collect();
    let started = Instant::now();
    let garage = lan_peer(&hosts, 3, dir.path(), "garage");
    let names: Vec<String> = kitchen.iter().map(|d| d.name.clone()).collect();
    let everyone: Vec<&Daemon> = kitchen.iter().collect();
    wait_until(FIND_EACH_OTHER, "the three kitchen peers to see each other", || everyone.iter().all(|d| online_members(d) == names));
    println!("three LAN peers saw each other {:.1} s after the last one started", started.elapsed().as_secs_f64());

    let status = kitchen[0].json(&["status"]);
    assert_eq!(status["lan"], "kitchen");
    assert_eq!(status["index"]["state"], "none");
    assert!(status["warning"].as_str().unwrap().contains("guessed"), "status says what a LAN name does not protect: {status}");

    // Chat.
    let p1 = kitchen[0].id();
    kitchen[0].ok(&["say", "anyone for tea?"]);
    for d in &kitchen[1..] {
        wait_until(PATIENCE, "the message to reach every kitchen peer", || texts_from(d, &p1).contains(&"anyone for tea?".to_string()));
    }

    // Flood search and a verified download, no index anywhere.
    let file = dir.path().join("recipes.bin");
    random_file(&file, 20 << 20, 11);
    kitchen[2].ok(&["share", file.to_str().unwrap()]);
    let hits = kitchen[0].json(&["search", "recipes"]);
    assert_eq!(providers_of(hits.as_array().unwrap(), "recipes.bin"), vec!["p3"], "{hits}");
    let got = kitchen[0].json(&["get", "recipes.bin"]);
    assert!(same_bytes(&file, got["path"].as_str().unwrap().as_ref()), "{got}");
    let refusal = kitchen[0].fails(&["search", "--index-only", "recipes"]);
    assert!(refusal.contains("LAN network") && refusal.contains("no index"), "{refusal}");

    // Who is there and the map, from the peers' own reports.
    wait_until(PATIENCE, "the map to show the three kitchen peers, linked directly", || {
        let topo = kitchen[0].json(&["topo", "--format", "json"]);
        let nodes = topo["nodes"].as_array().unwrap().len();
        let links = topo["links"].as_array().unwrap();
        nodes == 3 && links.len() >= 2 && links.iter().all(|l| l["path"]["via"] == "direct")
    });
    let mut online = online_nicks(&kitchen[1]);
    online.sort();
    assert_eq!(online, names);

    // The garage network on the same LAN stays apart.
    assert_eq!(online_members(&garage), vec!["p4".to_string()]);
    assert_eq!(garage.json(&["topo"])["nodes"].as_array().unwrap().len(), 1);
    assert!(garage.json(&["search", "recipes"]).as_array().unwrap().is_empty(), "another LAN network finds nothing of the kitchen's");
    for d in &kitchen {
        assert!(!online_members(d).contains(&"p4".to_string()), "{} sees a peer of another network", d.name);
    }
}
