//! The spine end to end: an index and three peers as separate processes on
//! loopback, sharing, finding and fetching real files.

mod common;

use common::*;

/// Acceptance: A shares 3 files (one of 50+ MB); B finds them by a word and
/// by hash, gets the large one byte for byte, and then both are providers.
/// Then A is SIGKILLed: C still gets the file (from B); A's files vanish
/// after the lease TTL; A restarts with the same data dir and is back with
/// its files without sharing again.
#[test]
fn share_search_get_kill_and_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let index = Daemon::index(&root.join("index"));

    let files = root.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let big = files.join("holiday-video.mkv");
    random_file(&big, 52 * 1024 * 1024, 1);
    let small1 = files.join("holiday-notes.txt");
    std::fs::write(&small1, b"sunscreen, hat, passport\n").unwrap();
    let small2 = files.join("recipe.md");
    random_file(&small2, 100_000, 2);

    let mut a = Daemon::peer(
        "alice",
        &root.join("a"),
        &index.ticket,
        &["--share", big.to_str().unwrap(), "--share", small1.to_str().unwrap(), "--share", small2.to_str().unwrap()],
    );
    let b = Daemon::peer("bob", &root.join("b"), &index.ticket, &[]);
    let c = Daemon::peer("carol", &root.join("c"), &index.ticket, &[]);

    // One word of the name finds both holiday files.
    let hits = search(&b, "holiday");
    let mut names: Vec<_> = hits.iter().map(|h| h["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, ["holiday-notes.txt", "holiday-video.mkv"]);
    assert_eq!(providers_of(&hits, "holiday-video.mkv"), ["alice"]);
    // ... and the hash finds the recipe.
    let recipe_hash =
        a.json(&["ls"]).as_array().unwrap().iter().find(|s| s["name"] == "recipe.md").unwrap()["hash"].as_str().unwrap().to_string();
    let by_hash = search(&b, &recipe_hash);
    assert_eq!(by_hash.len(), 1);
    assert_eq!(by_hash[0]["name"], "recipe.md");
    assert_eq!(search(&b, &recipe_hash[..12]).len(), 1, "a hash prefix works too");

    // B gets the large file; bytes are identical.
    b.ok(&["get", "holiday-video.mkv"]);
    let got = b.downloads().join("holiday-video.mkv");
    assert!(same_bytes(&big, &got), "downloaded bytes differ");
    // B is now a source as well, most recent first.
    assert_eq!(providers_of(&search(&c, "video"), "holiday-video.mkv"), ["bob", "alice"]);

    // A dies without a goodbye.
    a.kill9();
    c.ok(&["get", "holiday-video.mkv"]);
    assert!(same_bytes(&big, &c.downloads().join("holiday-video.mkv")));

    // After the lease runs out, A's files and A itself are gone.
    wait_until(LEASE_TTL_DURATION * 4, "alice's lease to expire", || !online_nicks(&b).contains(&"alice".to_string()));
    assert!(search(&b, "holiday-notes").is_empty(), "alice's files must vanish with her lease");
    assert_eq!(providers_of(&search(&b, "video"), "holiday-video.mkv"), ["carol", "bob"]);

    // A comes back with the same data dir and no --share: its files return.
    let a = Daemon::restart_peer("alice", &root.join("a"));
    wait_until(PATIENCE, "alice's files to return", || search(&b, "holiday-notes").len() == 1);
    assert!(online_nicks(&b).contains(&"alice".to_string()));
    assert_eq!(a.json(&["ls"]).as_array().unwrap().len(), 3);

    // The daemons' logs went to files: plain text, no terminal colour codes.
    for d in [&index, &a, &b, &c] {
        let log = d.log_text();
        assert!(!log.is_empty(), "{} logged something", d.name);
        assert!(!log.contains('\u{1b}'), "{}'s log has ANSI escape codes:\n{}", d.name, &log[..log.len().min(500)]);
    }
    drop(index);
}
