//! Downloads under stress: a provider dying mid-way, and hostile names.

mod common;

use std::{path::Path, time::Duration};

use common::*;

/// Bytes under `dir`, recursively (how much the downloader has stored).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                bytes_under(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// Acceptance: a get whose provider dies mid-transfer finishes from another
/// provider, and the file is correct.
#[test]
fn provider_dies_mid_transfer() {
    let tmp = tempfile::tempdir().unwrap();
    let index = Daemon::index(&tmp.path().join("index"));
    let file = tmp.path().join("dataset.bin");
    random_file(&file, 40 * 1024 * 1024, 7);
    // Both providers serve at 8 MB/s, so the transfer takes seconds and the
    // kill lands in the middle of it.
    let path = file.to_str().unwrap();
    let slow = ["--share", path, "--upload-limit", "8MB"];
    let _a = Daemon::peer("alice", &tmp.path().join("a"), &index.ticket, &slow);
    let mut b = Daemon::peer("bob", &tmp.path().join("b"), &index.ticket, &slow);
    let c = Daemon::peer("carol", &tmp.path().join("c"), &index.ticket, &[]);
    // Bob registered last, so he is asked first.
    assert_eq!(providers_of(&search(&c, "dataset"), "dataset.bin"), ["bob", "alice"]);

    let c_dir = c.data_dir.clone();
    let getter = std::thread::spawn(move || cli(&c_dir, &["get", "dataset.bin", "--json"]));
    let blobs = c.data_dir.join("blobs");
    wait_until(PATIENCE, "the first 8 MB to arrive", || bytes_under(&blobs) > 8 * 1024 * 1024);
    let arrived = bytes_under(&blobs);
    b.kill9();
    let out = getter.join().unwrap();
    assert!(out.status.success(), "get failed: {}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = result["failed_providers"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "bob's failure is reported: {result}");
    assert!(arrived < 40 * 1024 * 1024, "bob died mid-way, after {arrived} bytes");
    assert!(same_bytes(&file, &c.downloads().join("dataset.bin")));
}

/// Acceptance (end-to-end case): names like `../../etc/x`, `/abs/x` or a
/// name with NUL, even when an index hands them out, never make `get` write
/// outside the downloads directory.
#[test]
fn hostile_names_stay_in_the_downloads_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let index_dir = tmp.path().join("index");
    let mut index = Daemon::index(&index_dir);
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut args = Vec::new();
    for i in 0..3 {
        let f = files.join(format!("plain-{i}.txt"));
        std::fs::write(&f, format!("content {i}")).unwrap();
        args.push("--share".to_string());
        args.push(f.to_str().unwrap().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = Daemon::peer("alice", &tmp.path().join("a"), &index.ticket, &args);
    let b = Daemon::peer("bob", &tmp.path().join("b"), &index.ticket, &[]);
    let mut carol = Daemon::peer("carol", &tmp.path().join("c"), &index.ticket, &[]);

    // A peer cannot publish such names (the index refuses them), so play a
    // compromised index: while it is down, its database gains a newer
    // registration of each of alice's files by carol (gone too, but her
    // lease stretched), under a hostile name. The hit then carries the
    // hostile name, and alice, who registers her own names again when she
    // re-joins, still delivers the bytes once carol fails.
    carol.kill9();
    index.kill9();
    let db = rusqlite::Connection::open(index_dir.join("index.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let hour_ahead = now_ms() as i64 + 3_600_000;
    db.execute("UPDATE peers SET lease_until = ?1 WHERE nickname = 'carol'", [hour_ahead]).unwrap();
    let hostile = ["../../etc/x", "/abs/x", "nul\0name"];
    let mut hashes = Vec::new();
    for (i, name) in hostile.iter().enumerate() {
        let hash: String = db.query_row("SELECT hash FROM files WHERE name = ?1", [format!("plain-{i}.txt")], |r| r.get(0)).unwrap();
        db.execute(
            "INSERT INTO files(peer, hash, name, size, kind, registered_at)
             SELECT (SELECT id FROM peers WHERE nickname = 'carol'), hash, ?1, size, kind, ?2 FROM files WHERE hash = ?3",
            rusqlite::params![name, hour_ahead, hash],
        )
        .unwrap();
        hashes.push(hash);
    }
    drop(db);
    let restarted = now_ms();
    let _index = Daemon::index(&index_dir);
    let rejoined = |d: &Daemon| {
        let s = d.json(&["status"]);
        s["index"]["state"] == "joined" && s["index"]["since_ms"].as_u64().unwrap() >= restarted
    };
    wait_until(PATIENCE, "alice and bob to re-join the restarted index", || rejoined(&a) && rejoined(&b));

    for hash in &hashes {
        b.ok(&["get", hash]);
    }
    let mut saved: Vec<String> =
        std::fs::read_dir(b.downloads()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    saved.sort();
    assert_eq!(saved, ["nul_name", "x", "x (1)"]);
    // Contents are the real files, and nothing appeared anywhere else.
    for i in 0..hashes.len() {
        let want = format!("content {i}");
        assert!(saved.iter().any(|n| std::fs::read_to_string(b.downloads().join(n)).unwrap() == want));
    }
    assert!(!tmp.path().join("etc").exists());
    assert!(!Path::new("/abs/x").exists());
    let _ = a;
}

/// Dead providers: a get from a provider that was killed a moment ago (its
/// lease not yet expired) fails with one clear sentence, and the daemon
/// keeps serving.
#[test]
fn dead_provider_gives_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let index = Daemon::index(&tmp.path().join("index"));
    let file = tmp.path().join("lonely.bin");
    random_file(&file, 1_000_000, 3);
    let mut a = Daemon::peer("alice", &tmp.path().join("a"), &index.ticket, &["--share", file.to_str().unwrap()]);
    let b = Daemon::peer("bob", &tmp.path().join("b"), &index.ticket, &[]);
    a.kill9();
    let err = b.fails(&["get", "lonely.bin"]);
    assert!(err.contains("no provider could deliver the file") && err.contains("run the same get again"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(b.ok(&["status"]).contains("bob"), "the daemon keeps serving");
}

/// Resume: the downloading daemon is killed at about half way, restarted,
/// and `get` run again: the file is correct and what is fetched after the
/// restart is under 60% of the file.
#[test]
fn an_interrupted_get_resumes_from_what_was_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let index = Daemon::index(&tmp.path().join("index"));
    let file = tmp.path().join("big.iso");
    let size = 48 * 1024 * 1024u64;
    random_file(&file, size as usize, 11);
    let _a = Daemon::peer("alice", &tmp.path().join("a"), &index.ticket, &["--share", file.to_str().unwrap(), "--upload-limit", "8MB"]);
    let b_dir = tmp.path().join("b");
    let mut b = Daemon::peer("bob", &b_dir, &index.ticket, &[]);

    let dir = b_dir.clone();
    let first = std::thread::spawn(move || cli(&dir, &["get", "big.iso"]));
    let blobs = b_dir.join("blobs");
    wait_until(PATIENCE, "half of the file", || bytes_under(&blobs) >= size / 2);
    b.kill9();
    assert!(!first.join().unwrap().status.success(), "the first get was cut off");

    let b = Daemon::restart_peer("bob", &b_dir);
    let out = b.json(&["get", "big.iso"]);
    let fetched = out["fetched_bytes"].as_u64().unwrap();
    eprintln!("resumed from {} bytes, fetched {fetched} of {size}", out["resumed_from"]);
    assert!(fetched < size * 6 / 10, "fetched {fetched} of {size} after the restart");
    assert!(same_bytes(&file, &b.downloads().join("big.iso")));
}

/// Swarm: with 3 providers the parts of one download come from more than
/// one of them, and a download still completes when 2 of the 3 are killed
/// mid-way.
#[test]
fn three_providers_share_the_work_and_one_is_enough() {
    let tmp = tempfile::tempdir().unwrap();
    let index = Daemon::index(&tmp.path().join("index"));
    let file = tmp.path().join("swarm.bin");
    let size = 32 * 1024 * 1024u64;
    random_file(&file, size as usize, 21);
    let path = file.to_str().unwrap();
    let slow = ["--share", path, "--upload-limit", "8MB"];
    let mut providers: Vec<Daemon> =
        ["p0", "p1", "p2"].iter().map(|n| Daemon::peer(n, &tmp.path().join(n), &index.ticket, &slow)).collect();

    let d = Daemon::peer("d", &tmp.path().join("d"), &index.ticket, &[]);
    let out = d.json(&["get", "swarm.bin"]);
    let sources = out["sources"].as_array().unwrap();
    eprintln!("parts came from {sources:?} in {}s", out["seconds"]);
    assert!(sources.len() >= 2, "parts came from more than one provider: {out}");
    assert!(same_bytes(&file, &d.downloads().join("swarm.bin")));

    // Again, and kill two of the three once a quarter has arrived.
    let e = Daemon::peer("e", &tmp.path().join("e"), &index.ticket, &[]);
    let e_dir = e.data_dir.clone();
    let getter = std::thread::spawn(move || cli(&e_dir, &["get", "swarm.bin", "--json"]));
    let blobs = e.data_dir.join("blobs");
    wait_until(PATIENCE, "a quarter of the file", || bytes_under(&blobs) >= size / 4);
    // d became a provider too; keep it out of this run by stopping it first.
    drop(d);
    providers[0].kill9();
    providers[1].kill9();
    let out = getter.join().unwrap();
    assert!(out.status.success(), "get failed: {}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("with two providers killed: failed {} sources {}", result["failed_providers"], result["sources"]);
    assert!(same_bytes(&file, &e.downloads().join("swarm.bin")));
}
