//! The index dies hard and comes back: nothing acknowledged is lost and the
//! peers re-attach by themselves.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Acceptance: SIGKILL the index and restart it: no acknowledged
/// registration is lost, and every running peer re-joins by itself within
/// two heartbeat intervals.
#[test]
fn index_kill9_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let index_dir = tmp.path().join("index");
    let mut index = Daemon::index(&index_dir);
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let peers: Vec<Daemon> = (0..3)
        .map(|i| {
            let f = files.join(format!("file-{i}.dat"));
            random_file(&f, 10_000 + i, i as u64);
            Daemon::peer(&format!("p{i}"), &tmp.path().join(format!("p{i}")), &index.ticket, &["--share", f.to_str().unwrap()])
        })
        .collect();
    // Registrations acknowledged after start-up too.
    let late = files.join("late-report.pdf");
    random_file(&late, 5000, 99);
    peers[0].ok(&["share", late.to_str().unwrap()]);
    assert_eq!(search(&peers[1], "file").len(), 3);

    let ticket = index.ticket.clone();
    index.kill9();
    // While the index is down, asking it fails with a clear sentence...
    let err = peers[1].fails(&["search", "--index-only", "file"]);
    assert!(err.contains("index is unreachable"), "{err}");
    // ...while a plain search still finds files through the overlay.
    let flooded = peers[1].json(&["search", "--wait", "3s", "file"]);
    assert!(!flooded.as_array().unwrap().is_empty(), "the overlay answers while the index is down");
    // A peer that starts now does not claim it joined.
    let newcomer = Daemon::peer("newcomer", &tmp.path().join("newcomer"), &ticket, &[]);
    assert!(
        newcomer.greeting.contains("the index has not answered yet") && !newcomer.greeting.contains("joined the network"),
        "{}",
        newcomer.greeting
    );
    assert!(peers[0].greeting.contains("joined the network"), "{}", peers[0].greeting);
    drop(newcomer);

    let before_restart = now_ms();
    let index = Daemon::index(&index_dir);
    let listening = Instant::now();
    assert_eq!(index.ticket, ticket, "same key and ticket across restarts");

    // Leases survive in the database, so `online` alone cannot tell a
    // re-join; each peer's own session must report a join with the new
    // index process.
    let rejoined = |d: &Daemon| {
        let s = d.json(&["status"]);
        s["index"]["state"] == "joined" && s["index"]["since_ms"].as_u64().unwrap() >= before_restart
    };
    wait_until(PATIENCE, "all peers to re-join", || peers.iter().all(rejoined));
    let took = listening.elapsed();
    // Two heartbeat intervals (1 s each), plus slack for a busy machine.
    let limit = Duration::from_secs(2) + Duration::from_secs(2);
    eprintln!("peers re-joined {took:?} after the index was back");
    assert!(took <= limit, "peers took {took:?} to re-join; expected about two heartbeats");
    // And they stay online past a full lease of the new index process.
    std::thread::sleep(LEASE_TTL_DURATION + Duration::from_secs(1));
    assert_eq!(online_nicks(&peers[2]).len(), 3);
    // Nothing acknowledged was lost.
    assert_eq!(search(&peers[2], "file").len(), 3);
    assert_eq!(search(&peers[2], "late").len(), 1);
}
