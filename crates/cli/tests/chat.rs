//! The overlay end to end: chat, names, departures, failures and the map,
//! with real processes on loopback.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn nicks(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i}")).collect()
}

/// Acceptance: 10 peers; a message from one reaches the 9 others exactly
/// once within 5 s; 100 messages sent in quick succession arrive in the
/// author's order; the map is a connected graph of exactly the online peers
/// and its DOT output parses.
#[test]
fn ten_peers_talk_in_order_and_the_map_is_connected() {
    let tmp = tempfile::tempdir().unwrap();
    let peers = network(tmp.path(), 10);
    let all: Vec<&Daemon> = peers.iter().collect();
    wait_for_room(&all, &nicks(10));

    let author = &peers[3];
    let author_id = author.id();
    let sent = Instant::now();
    author.ok(&["say", "hello", "everyone"]);
    for p in peers.iter().filter(|p| p.name != author.name) {
        wait_until(Duration::from_secs(7), "the message to arrive", || !texts_from(p, &author_id).is_empty());
    }
    eprintln!("hello reached all 9 others in {:?}", sent.elapsed());
    assert!(sent.elapsed() <= Duration::from_secs(5) + Duration::from_secs(2), "took {:?}", sent.elapsed());
    for p in &peers {
        assert_eq!(texts_from(p, &author_id), ["hello everyone"], "{} got it exactly once", p.name);
    }

    // 100 messages in quick succession, through one shell session.
    let script: String = (0..100).map(|i| format!("say m{i}\n")).collect::<String>() + "quit\n";
    let other = &peers[7];
    let other_id = other.id();
    shell(&other.data_dir, &script);
    let expected: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    for p in &peers {
        wait_until(PATIENCE, "all 100 messages", || texts_from(p, &other_id).len() >= 100);
        assert_eq!(texts_from(p, &other_id), expected, "{} saw the author's order", p.name);
    }

    // The map: exactly the online peers, connected.
    wait_until(PATIENCE, "the map to be connected", || {
        let g = peers[0].json(&["topo"]);
        let nodes = g["nodes"].as_array().unwrap().len();
        let graph: peernet_proto::topo::Graph = serde_json::from_value(g).unwrap();
        nodes == 10 && graph.is_connected()
    });
    assert_eq!(topo_nicks(&peers[5]), nicks(10));
    let root = peers[0].json(&["topo", "--format", "json"])["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["root"] == true)
        .map(|n| n["nickname"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(root, ["n0"], "the root is marked");
    let dot = peers[2].ok(&["topo", "--format", "dot"]);
    let parsed = dot_parser::ast::Graph::try_from(dot.as_str()).expect("DOT output parses");
    let canonical = dot_parser::canonical::Graph::from(parsed);
    assert_eq!(canonical.nodes.set.len(), 10);
    assert!(!canonical.edges.set.is_empty());
    let text = peers[2].ok(&["topo"]);
    assert!(text.contains("[root]") && text.contains("10 peer(s) online"), "{text}");
}

/// Acceptance: a rename and a graceful leave are seen by every other peer
/// within 5 s, and `who` and `topo` agree; a name held by another online
/// peer is refused.
#[test]
fn renames_and_leaves_reach_everyone() {
    let tmp = tempfile::tempdir().unwrap();
    let mut peers = network(tmp.path(), 5);
    let all: Vec<&Daemon> = peers.iter().collect();
    wait_for_room(&all, &nicks(5));

    let err = peers[1].fails(&["nick", "n2"]);
    assert!(err.contains("taken"), "{err}");
    let start = Instant::now();
    peers[1].ok(&["nick", "zed"]);
    let mut renamed = nicks(5);
    renamed[1] = "zed".into();
    let watchers: Vec<&Daemon> = peers.iter().collect();
    wait_for_room(&watchers, &renamed);
    let took = start.elapsed();
    eprintln!("rename seen by all in {took:?}");
    assert!(took <= Duration::from_secs(5) + Duration::from_secs(2), "rename took {took:?}");
    let mut sorted = renamed.clone();
    sorted.sort();
    wait_until(Duration::from_secs(5), "topo to show the new name", || topo_nicks(&peers[3]) == sorted);

    // n4 leaves gracefully.
    let start = Instant::now();
    peers[4].ok(&["down"]);
    assert!(peers[4].wait_exit(PATIENCE).success());
    let remaining: Vec<String> = renamed[..4].to_vec();
    let rest: Vec<&Daemon> = peers[..4].iter().collect();
    wait_for_room(&rest, &remaining);
    let took = start.elapsed();
    eprintln!("leave seen by all in {took:?}");
    assert!(took <= Duration::from_secs(5) + Duration::from_secs(2), "leave took {took:?}");
    for p in &rest {
        let who = p.json(&["who"]);
        let gone = who.as_array().unwrap().iter().find(|m| m["nickname"] == "n4").expect("n4 is still listed");
        assert_eq!(gone["online"], false);
        assert_eq!(gone["left"], true);
    }
    let mut sorted = remaining.clone();
    sorted.sort();
    assert_eq!(topo_nicks(&peers[0]), sorted, "who and topo agree");
    peers.truncate(4);
}

/// Acceptance: SIGKILL 3 of 10: later messages still reach all 6 other
/// survivors, and the 3 are shown offline in `who` and `topo` within the
/// lease TTL.
#[test]
fn survivors_keep_talking_after_three_are_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut peers = network(tmp.path(), 10);
    let all: Vec<&Daemon> = peers.iter().collect();
    wait_for_room(&all, &nicks(10));
    for i in [2, 5, 8] {
        peers[i].kill9();
    }
    let killed_at = Instant::now();
    let survivors: Vec<&Daemon> = peers.iter().enumerate().filter(|(i, _)| ![2, 5, 8].contains(i)).map(|(_, p)| p).collect();
    let alive: Vec<String> = survivors.iter().map(|p| p.name.clone()).collect();
    wait_for_room(&survivors, &alive);
    wait_until(PATIENCE, "topo to drop the dead", || topo_nicks(survivors[0]).len() == 7);
    let took = killed_at.elapsed();
    eprintln!("the dead were shown offline after {took:?}");
    assert!(took <= LEASE_TTL_DURATION * 2 + Duration::from_secs(2), "took {took:?}");

    let author = survivors[1];
    let author_id = author.id();
    for i in 0..5 {
        author.ok(&["say", &format!("after the crash {i}")]);
    }
    for p in &survivors {
        wait_until(Duration::from_secs(15), "messages after the crash", || texts_from(p, &author_id).len() == 5);
    }
}

/// Acceptance: with the index stopped, chat keeps working; when it returns,
/// every peer is back in `online` and `topo` within two heartbeat
/// intervals, without user action.
#[test]
fn chat_survives_the_index_and_peers_return_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let index_dir = tmp.path().join("index");
    let mut index = Daemon::index(&index_dir);
    let peers: Vec<Daemon> =
        (0..4).map(|i| Daemon::peer(&format!("n{i}"), &tmp.path().join(format!("n{i}")), &index.ticket, &[])).collect();
    let all: Vec<&Daemon> = peers.iter().collect();
    wait_for_room(&all, &nicks(4));

    index.kill9();
    let author_id = peers[0].id();
    peers[0].ok(&["say", "the index is gone"]);
    for p in &peers {
        wait_until(Duration::from_secs(15), "chat without the index", || texts_from(p, &author_id).len() == 1);
    }
    // Long enough for every lease to lapse at the index's clock.
    std::thread::sleep(LEASE_TTL_DURATION + Duration::from_secs(1));

    let index = Daemon::index(&index_dir);
    let back = Instant::now();
    wait_until(PATIENCE, "everyone online again", || {
        online_nicks(&peers[1]).len() == 4 && topo_nicks(&peers[2]).iter().filter(|n| n.starts_with('n')).count() == 4
    });
    let took = back.elapsed();
    eprintln!("all peers back {took:?} after the index returned");
    assert!(took <= Duration::from_secs(2) + Duration::from_secs(3), "took {took:?}");
    drop(index);
}

/// Acceptance: a 5 KiB message is refused at the sender with a clear error,
/// and nothing crashes.
#[test]
fn oversized_messages_are_refused_at_the_sender() {
    let tmp = tempfile::tempdir().unwrap();
    let peers = network(tmp.path(), 2);
    let big = "x".repeat(5 * 1024);
    let err = peers[1].fails(&["say", &big]);
    assert!(err.contains("at most 4096 bytes"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
    peers[1].ok(&["say", "small is fine"]);
    let id = peers[1].id();
    wait_until(Duration::from_secs(15), "the small one", || texts_from(&peers[0], &id) == ["small is fine"]);
}

/// Acceptance: a test drives `peernet shell` through standard input and
/// gets correct results for online, search, say and quit.
#[test]
fn the_shell_runs_commands_from_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("shell-test-file.txt");
    std::fs::write(&file, b"hello from the shell test").unwrap();
    let host = Daemon::host("root", &tmp.path().join("root"), &["--share", file.to_str().unwrap()]);
    let guest = Daemon::peer("guest", &tmp.path().join("guest"), &host.ticket, &[]);
    let out = shell(&guest.data_dir, "online\nsearch shell\nsay \"hi from the shell\"\nbogus-command\nquit\nsay never sent\n");
    assert!(out.contains("root (") && out.contains("guest ("), "online lists both: {out}");
    assert!(out.contains("shell-test-file.txt"), "search finds the file: {out}");
    assert!(out.contains("error") || out.contains("unrecognized"), "a bad command is reported: {out}");
    let guest_id = guest.id();
    wait_until(Duration::from_secs(15), "the shell's message", || texts_from(&host, &guest_id) == ["hi from the shell"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(texts_from(&host, &guest_id).len(), 1, "nothing after quit is run");
}
