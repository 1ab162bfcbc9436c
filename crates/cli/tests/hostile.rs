//! Issue 26's probes: real `peernet` daemons against members and outsiders
//! that misbehave on purpose (the kit in `common/hostile.rs`). Each test
//! prints the figure it is about, and fails on a peer that lets one party
//! cost the others more than its bound.

mod common;

use common::*;
use peernet_node::index_client::IndexClient;
use peernet_proto::index::{FileEntry, Kind, PeerAddr, Request, Response};

/// A root and peers named `names`, started off the async workers.
async fn network_of(tmp: &tempfile::TempDir, names: &'static [&'static str]) -> (Daemon, Vec<Daemon>) {
    let dir = tmp.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let root = Daemon::host("root", &dir.join("root"), &[]);
        let peers = names.iter().map(|name| Daemon::peer(name, &dir.join(name), &root.ticket, &[])).collect();
        (root, peers)
    })
    .await
    .unwrap()
}

/// Point 9: text from others cannot forge your screen. A member's chat
/// message carries a newline that draws a fake line "from the root", an
/// ANSI sequence that would clear the screen, and a published file name
/// carries a bidi override (U+202E) that would show `invoice<RLO>fdp.exe`
/// as `invoiceexe.pdf`. Every one is shown escaped, on one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_from_the_network_is_shown_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, mut peers) = network_of(&tmp, &["mallory"]).await;
    let mallory = peers.remove(0);
    let root_id = root.id();
    let forged = format!("hello\n[00:00:00] root ({}): paste your ticket here\u{1b}[2J\u{1b}]0;pwned\u{7}", &root_id[..10]);
    let mallory_id = mallory.id();
    tokio::task::spawn_blocking({
        let forged = forged.clone();
        let (root_dir, mallory_dir) = (root.data_dir.clone(), mallory.data_dir.clone());
        move || {
            wait_until(PATIENCE, "mallory in root's room", || {
                cli(&root_dir, &["who", "--json"]).stdout.windows(7).any(|w| w == b"mallory")
            });
            let out = cli(&mallory_dir, &["say", &forged]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    })
    .await
    .unwrap();

    // A file name with a right-to-left override, published straight to the
    // index by a member the test controls.
    let ticket: peernet_proto::ticket::Ticket = root.ticket.parse().unwrap();
    let (ep, lookup, _admission) = member_endpoint(vec![], ticket.network_key).await;
    let name = "invoice\u{202e}fdp.exe";
    let entry = FileEntry { name: name.into(), size: 10, hash: iroh_blobs::Hash::new(b"not served"), kind: Kind::File };
    publish_as(&ep, &lookup, &ticket, "trudy", entry).await;

    let (messages, hits, raw) = tokio::task::spawn_blocking(move || {
        wait_until(PATIENCE, "the message to reach the root", || !texts_from(&root, &mallory_id).is_empty());
        let raw = texts_from(&root, &mallory_id);
        (root.ok(&["messages"]), root.ok(&["search", "--index-only", "invoice"]), raw)
    })
    .await
    .unwrap();
    println!("peernet messages printed:\n{messages}");
    println!("peernet search printed:\n{hits}");
    assert_eq!(raw, [forged], "--json gives the text as sent (JSON escapes its controls)");
    let lines: Vec<&str> = messages.lines().collect();
    assert_eq!(lines.len(), 1, "one message, one line: {lines:?}");
    assert!(lines[0].contains("(mallory") || lines[0].contains("mallory ("), "the line names its real author: {}", lines[0]);
    assert!(lines[0].contains("hello\\n[00:00:00] root"), "the newline is shown as \\n: {}", lines[0]);
    assert!(lines[0].contains("\\u{1b}[2J"), "the escape is shown, not sent to the terminal: {}", lines[0]);
    for out in [&messages, &hits] {
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\u{202e}'), "no raw control reaches the terminal");
    }
    assert!(hits.contains("invoice\\u{202e}fdp.exe"), "the override is shown as its escape: {hits}");
    ep.close().await;
}

/// Point 4: flood search costs what it should. Twenty keys minted by one
/// member each send alice a burst of 100 flood queries of 60 KiB (which
/// alice used to fold again for each of her 400 files) and then 2,000 of
/// 200 bytes. Bob, an overlay neighbour of alice, searches meanwhile and
/// is answered; the minted keys share one budget between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_keys_flooding_queries_do_not_silence_a_neighbour() {
    const KEYS: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let (root, mut peers) = network_of(&tmp, &["alice", "bob"]).await;
    let (bob, alice) = (peers.pop().unwrap(), peers.pop().unwrap());
    let dir = tmp.path().to_owned();
    let (alice, bob) = tokio::task::spawn_blocking(move || {
        let folder = dir.join("tracks");
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..400 {
            std::fs::write(folder.join(format!("track {i:03} live recording.ogg")), format!("track {i}")).unwrap();
        }
        alice.ok(&["share", folder.to_str().unwrap()]);
        let alice_id = alice.id();
        wait_until(PATIENCE, "alice and bob to be overlay neighbours", || {
            bob.json(&["status"])["neighbors"].as_array().unwrap().iter().any(|n| alice_id.starts_with(n.as_str().unwrap()))
        });
        (alice, bob)
    })
    .await
    .unwrap();
    let alice_addr = tokio::task::block_in_place(|| alice.addr());

    let mut keys = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..KEYS {
        let h = hostile::Hostile::member(&root.ticket).await;
        conns.push(h.dial(&alice_addr, peernet_proto::flood::ALPN).await);
        keys.push(h);
    }
    let before = tokio::task::block_in_place(|| alice.json(&["status"]));
    let long = "recording ".repeat(6 * 1024);
    let started = std::time::Instant::now();
    let flood = tokio::spawn({
        let conns = conns.clone();
        async move {
            let mut sent = 0usize;
            for conn in &conns {
                for _ in 0..100 {
                    sent += usize::from(hostile::Hostile::flood_query(conn, &long, 2).await.is_ok());
                }
            }
            for round in 0..100 {
                for conn in &conns {
                    let text = format!("live {round} {}", "x".repeat(190));
                    sent += usize::from(hostile::Hostile::flood_query(conn, &text, 2).await.is_ok());
                }
            }
            sent
        }
    });
    // Bob asks while the flood is on its way.
    let (hits, took) = tokio::task::spawn_blocking({
        let bob_dir = bob.data_dir.clone();
        move || {
            let asked = std::time::Instant::now();
            let out = cli(&bob_dir, &["search", "--flood-only", "--ttl", "1", "--wait", "3s", "track 007", "--json"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let hits: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            (hits, asked.elapsed())
        }
    })
    .await
    .unwrap();
    let sent = flood.await.unwrap();
    let flooded_for = started.elapsed();
    let after = tokio::task::block_in_place(|| alice.json(&["status"]));
    let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    let names: Vec<&str> = hits.as_array().unwrap().iter().filter_map(|h| h["name"].as_str()).collect();
    println!(
        "{KEYS} minted keys sent alice {sent} flood queries in {flooded_for:?}: she handled {}, dropped {} as too long and {} over budget; \
         bob's search during the flood found {names:?} in {took:?}",
        delta("flood_handled"),
        delta("flood_oversized"),
        delta("flood_over_budget"),
    );
    assert!(names.iter().any(|n| n.contains("track 007")), "a neighbour is answered during the flood: {hits}");
    assert!(delta("flood_oversized") >= 1, "queries over 256 bytes are dropped");
    // All minted keys together get one budget: its burst of 100 and 20 a
    // second (and bob's own query).
    let bound = 100 + 20 * (flooded_for.as_secs() + 2) + 1;
    assert!(delta("flood_handled") <= bound, "the minted keys shared one budget: handled {} > {bound}", delta("flood_handled"));
    for h in keys {
        h.close().await;
    }
    drop((root, alice, bob));
}

/// Point 1: the index spends nothing on a connection that has not joined.
/// An outsider (no ticket, another host) opens 4,200 connections to the
/// index and sends nothing on them; a newcomer then joins. On an index
/// that let silent connections hold its 4,096 slots forever, the newcomer
/// was turned away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_outsider_connections_cannot_keep_a_newcomer_out() {
    const ATTEMPTS: usize = 4200;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    // The connection budget is lifted so the outsider can open as fast as
    // it likes: this is about holding slots, not opening them.
    let root = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || Daemon::host("root", &dir.join("root"), &["--connection-rate", "100000/100000"])
    })
    .await
    .unwrap();
    let outsider = hostile::Hostile::outsider(&root.ticket, "127.0.0.2:0".parse().unwrap()).await;
    let index = outsider.ticket.index.to_endpoint_addr();
    let started = std::time::Instant::now();
    let mut held = Vec::new();
    let mut refused = 0usize;
    for batch in 0..ATTEMPTS / 50 {
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (ep, index) = (outsider.ep.clone(), index.clone());
            attempts.spawn(async move { ep.connect(index, peernet_proto::index::ALPN).await });
        }
        while let Some(conn) = attempts.join_next().await {
            match conn.unwrap() {
                Ok(conn) => held.push(conn),
                Err(_) => refused += 1,
            }
        }
        if batch % 20 == 19 {
            held.retain(|c| c.close_reason().is_none());
        }
    }
    // Whatever the index closes at once (over its pool) is not held.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    held.retain(|c| c.close_reason().is_none());
    println!("the outsider opened {ATTEMPTS} idle connections in {:?}: {} still open, {refused} refused", started.elapsed(), held.len());

    let joined = tokio::task::spawn_blocking({
        let (dir, ticket) = (dir.clone(), root.ticket.clone());
        move || {
            let asked = std::time::Instant::now();
            let newcomer = Daemon::peer("newcomer", &dir.join("newcomer"), &ticket, &[]);
            wait_until(PATIENCE, "the newcomer to join", || newcomer.json(&["status"])["index"]["state"] == "joined");
            (asked.elapsed(), newcomer)
        }
    })
    .await
    .unwrap();
    let still_held = held.iter().filter(|c| c.close_reason().is_none()).count();
    println!("a newcomer joined in {:?} while the outsider held {still_held} connections", joined.0);
    assert!(
        still_held <= peernet_proto::limits::MAX_UNJOINED_PER_ADDRESS,
        "one address holds at most its share of the newcomers' pool ({still_held} held)"
    );
    let names = tokio::task::block_in_place(|| online_nicks(&root));
    assert!(names.contains(&"newcomer".to_string()), "the newcomer is online: {names:?}");
    // The deadline: a connection that never joins is closed.
    let closed = tokio::time::timeout(PATIENCE, async {
        for c in &held {
            c.closed().await;
        }
    })
    .await;
    assert!(closed.is_ok(), "silent connections are closed after the join deadline");
    println!("every silent connection was closed {:?} after the outsider began", started.elapsed());
    outsider.close().await;
    drop((joined, root));
}

/// Peers and files rows in an index database (read beside the writer: WAL).
fn index_rows(db: &std::path::Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    (count("SELECT count(*) FROM peers"), count("SELECT count(*) FROM files"))
}

/// Point 5: the index keeps only what it bounds. A member mints 40 keys a
/// round for six rounds; each key joins, registers 250 files and goes
/// silent without leaving. A key whose lease ran out a lease ago is
/// forgotten with its files, so the database and the index's memory stay
/// flat; and a 200 KiB relay URL is refused, not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_come_and_go_leave_the_index_flat() {
    const ROUNDS: usize = 6;
    const KEYS: usize = 40;
    const FILES: usize = 250;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let root = tokio::task::spawn_blocking(move || Daemon::host("root", &dir.join("root"), &[])).await.unwrap();
    let db = root.data_dir.join("index.db");
    let ticket = root.ticket.clone();

    // A relay URL a megabyte long would ride in every answer naming its peer.
    let liar = hostile::Hostile::member(&ticket).await;
    let me = PeerAddr { id: liar.id(), ip: liar.ep.bound_sockets(), relay: Some(format!("https://{}.example", "r".repeat(200 * 1024))) };
    let client = IndexClient::remote(liar.ep.clone(), me, liar.ticket.index.clone(), liar.ticket.network_key);
    let refused = client.join("liar").await.expect_err("a 200 KiB relay URL is refused");
    println!("a 200 KiB relay URL: {refused}");
    assert!(refused.to_string().contains("relay URL has at most"), "{refused}");
    liar.close().await;

    let mut sizes = Vec::new();
    for round in 0..ROUNDS {
        let mut keys = Vec::new();
        for k in 0..KEYS {
            let h = hostile::Hostile::member(&ticket).await;
            let client = h.index();
            client.join(&format!("r{round}k{k}")).await.unwrap();
            let files: Vec<FileEntry> = (0..FILES)
                .map(|f| FileEntry {
                    name: format!("round {round} key {k} file {f} with a longish name to take some room.bin"),
                    size: 1000 + f as u64,
                    hash: iroh_blobs::Hash::new(format!("{round}/{k}/{f}")),
                    kind: Kind::File,
                })
                .collect();
            let published = client.request(Request::Publish { files }).await.unwrap();
            assert!(matches!(published, Response::Published { .. }), "{published:?}");
            keys.push(h);
        }
        let (peers, files) = index_rows(&db);
        // Silent from now on: no heartbeat, no leave.
        for h in keys {
            h.close().await;
        }
        let waited = tokio::task::block_in_place(|| wait_until(PATIENCE, "the silent keys to be forgotten", || index_rows(&db).0 <= 1));
        let size = std::fs::metadata(&db).unwrap().len();
        let rss = rss_kb(root.pid());
        println!(
            "round {round}: {peers} peers and {files} files registered; forgotten {waited:?} after the keys went silent; \
             index.db {} KiB, root RSS {rss} KiB",
            size / 1024
        );
        sizes.push((size, rss));
    }
    let (rows_peers, rows_files) = index_rows(&db);
    assert_eq!((rows_peers, rows_files), (1, 0), "only the root is left, with no files");
    let (first, last) = (sizes[1], sizes[ROUNDS - 1]);
    assert!(
        last.0 <= first.0 + 2 * 1024 * 1024,
        "index.db stays flat: {} KiB after round 1, {} KiB at the end",
        first.0 / 1024,
        last.0 / 1024
    );
    assert!(last.1 <= first.1 + 24 * 1024, "the index's memory stays flat: {} KiB after round 1, {} KiB at the end", first.1, last.1);
    drop(root);
}

/// Point 7: unshared means no longer served. A member fetches alice's file
/// and a file of her folder by hash; alice unshares both (the folder with
/// everything in it); the same fetches are refused, and nothing of the
/// folder is listed or searchable any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unshared_files_and_folders_are_no_longer_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let (root, alice, file_hash, child_hash, folder_hash) = tokio::task::spawn_blocking(move || {
        let root = Daemon::host("root", &dir.join("root"), &[]);
        let alice = Daemon::peer("alice", &dir.join("alice"), &root.ticket, &[]);
        let file = dir.join("secret-plans.bin");
        random_file(&file, 200_000, 7);
        let album = dir.join("album");
        std::fs::create_dir_all(&album).unwrap();
        for i in 0..3 {
            random_file(&album.join(format!("song {i}.ogg")), 50_000, 10 + i);
        }
        let file_hash = alice.json(&["share", file.to_str().unwrap()])["share"]["hash"].as_str().unwrap().to_string();
        let folder_hash = alice.json(&["share", album.to_str().unwrap()])["share"]["hash"].as_str().unwrap().to_string();
        let shared = alice.json(&["ls"]);
        let child_hash =
            shared.as_array().unwrap().iter().find(|s| s["name"] == "song 1.ogg").unwrap()["hash"].as_str().unwrap().to_string();
        (root, alice, file_hash, child_hash, folder_hash)
    })
    .await
    .unwrap();
    let alice_addr = tokio::task::block_in_place(|| alice.addr());
    let mallory = hostile::Hostile::member(&root.ticket).await;
    let raw = |h: &str| iroh_blobs::HashAndFormat::raw(h.parse().unwrap());
    let folder = iroh_blobs::HashAndFormat::hash_seq(folder_hash.parse().unwrap());
    assert_eq!(mallory.fetch(&alice_addr, raw(&file_hash)).await.unwrap(), 200_000, "served while shared");
    assert_eq!(mallory.fetch(&alice_addr, raw(&child_hash)).await.unwrap(), 50_000, "a folder's file is served while shared");

    let (listed, hits) = tokio::task::spawn_blocking({
        let (alice_dir, root_dir, file_hash) = (alice.data_dir.clone(), root.data_dir.clone(), file_hash.clone());
        move || {
            for target in [file_hash.as_str(), "album"] {
                let out = cli(&alice_dir, &["unshare", target]);
                assert!(out.status.success(), "unshare {target}: {}", String::from_utf8_lossy(&out.stderr));
            }
            let listed = String::from_utf8(cli(&alice_dir, &["ls", "--json"]).stdout).unwrap();
            let hits = String::from_utf8(cli(&root_dir, &["search", "--index-only", "--json", "song"]).stdout).unwrap();
            (listed, hits)
        }
    })
    .await
    .unwrap();
    println!("alice's shares after unsharing: {listed}");
    assert!(!listed.contains("song") && !listed.contains("secret-plans"), "nothing unshared is listed: {listed}");
    assert!(!hits.contains("song"), "nothing of the folder is searchable: {hits}");
    for (what, content) in [("the file", raw(&file_hash)), ("a file of the folder", raw(&child_hash)), ("the folder", folder)] {
        let refused = mallory.fetch(&alice_addr, content).await;
        println!(
            "fetching {what} by hash after unshare: {}",
            refused.as_ref().map(|n| format!("{n} bytes")).unwrap_or_else(|e| format!("refused ({e:#})"))
        );
        assert!(refused.is_err(), "{what} is no longer served");
    }
    let refused = tokio::task::block_in_place(|| alice.json(&["status"])["blobs_refused"].as_u64().unwrap());
    assert!(refused >= 3, "each refusal is counted ({refused})");
    mallory.close().await;
    drop(root);
}

/// Point 2: no download waits forever, and bad providers lose their turn.
/// Two members the test controls provide the same two files: one serves
/// them, the other registered later (so the index names it first) and
/// accepts every request without sending a byte. Bob's first get moves on
/// from the staller after the stall deadline; his second get tries it last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_provider_in_front_costs_one_deadline_then_goes_last() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, mut peers) = network_of(&tmp, &["bob"]).await;
    let bob = peers.remove(0);
    let store = iroh_blobs::store::mem::MemStore::new();
    let mut entries = Vec::new();
    for (i, name) in ["first.bin", "second.bin"].into_iter().enumerate() {
        let bytes = noise(1_000_000, i as u32);
        let tag = store.blobs().add_slice(&bytes).temp_tag().await.unwrap();
        entries.push((FileEntry { name: name.into(), size: bytes.len() as u64, hash: tag.hash(), kind: Kind::File }, tag, bytes));
    }
    let honest = hostile::Hostile::member_serving(&root.ticket, hostile::Serve::Blobs(store.clone())).await;
    let staller = hostile::Hostile::member_serving(&root.ticket, hostile::Serve::Stall).await;
    for (who, nick) in [(&honest, "honest"), (&staller, "staller")] {
        publish_and_stay(who, nick, entries.iter().map(|(e, _, _)| e.clone()).collect()).await;
    }
    let staller_short = staller.id().fmt_short().to_string();
    let mut times = Vec::new();
    for (entry, _, bytes) in &entries {
        let (report, took) = tokio::task::spawn_blocking({
            let (bob_dir, hash) = (bob.data_dir.clone(), entry.hash.to_hex());
            move || {
                let started = std::time::Instant::now();
                let out = cli(&bob_dir, &["get", &hash, "--json"]);
                assert!(out.status.success(), "get: {}", String::from_utf8_lossy(&out.stderr));
                (serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), started.elapsed())
            }
        })
        .await
        .unwrap();
        let saved = std::fs::read(report["path"].as_str().unwrap()).unwrap();
        assert_eq!(&saved, bytes, "{} arrived whole and verified", entry.name);
        println!("get {} with a staller in front: {took:?}; providers that lost their turn: {}", entry.name, report["failures"]);
        times.push((took, report["failed_providers"].clone()));
        if times.len() == 1 {
            let failures = report["failures"].to_string();
            assert!(
                failures.contains(&staller_short) && failures.contains("no verified bytes"),
                "the staller is named, and why: {failures}"
            );
        }
    }
    assert_eq!(times[1].1, serde_json::json!([]), "the second get tried the staller last, so never needed it");
    honest.close().await;
    staller.close().await;
    drop((root, bob));
}

/// `len` bytes that differ with `seed` and do not repeat in any short
/// period (a multiplicative hash of each position).
fn noise(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|n| (n.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect()
}

/// Joins the index as `who` (nickname `nick`), publishes `files` and keeps
/// heartbeating, so `who` stays online for the test's length.
async fn publish_and_stay(who: &hostile::Hostile, nick: &str, files: Vec<FileEntry>) {
    let client = who.index();
    client.join(nick).await.unwrap();
    assert!(matches!(client.request(Request::Publish { files }).await.unwrap(), Response::Published { .. }));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if client.request(Request::Heartbeat { neighbors: vec![] }).await.is_err() {
                break;
            }
        }
    });
}

/// Point 2: a blob larger than its hit's advertised size is cut there and
/// counted as a lie. Mallory serves two real files but advertises each as
/// far smaller than it is. For the one only she has, bob's get stops at the
/// advertised size, says so and writes nothing; for the one an honest
/// member advertises truthfully too (mallory registered last, so her size
/// is the hit's), the get names mallory as a liar and finishes from the
/// honest member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_lies_about_a_size_is_cut_there_and_named() {
    const REAL: usize = 3_000_000;
    const CLAIMED: u64 = 100_000;
    let tmp = tempfile::tempdir().unwrap();
    let (root, mut peers) = network_of(&tmp, &["bob"]).await;
    let bob = peers.remove(0);
    let store = iroh_blobs::store::mem::MemStore::new();
    let mut files = Vec::new();
    for seed in 0..2u32 {
        let bytes = noise(REAL, seed);
        let tag = store.blobs().add_slice(&bytes).temp_tag().await.unwrap();
        files.push((tag.hash(), tag, bytes));
    }
    let entry = |i: usize, size: u64| FileEntry { name: format!("file{i}.bin"), size, hash: files[i].0, kind: Kind::File };
    let honest = hostile::Hostile::member_serving(&root.ticket, hostile::Serve::Blobs(store.clone())).await;
    let mallory = hostile::Hostile::member_serving(&root.ticket, hostile::Serve::Blobs(store.clone())).await;
    publish_and_stay(&honest, "honest", vec![entry(1, REAL as u64)]).await;
    publish_and_stay(&mallory, "mallory", vec![entry(0, CLAIMED), entry(1, CLAIMED)]).await;
    let mallory_short = mallory.id().fmt_short().to_string();

    let allocated_before = disk_usage(&bob.data_dir).2;
    let (alone, shared) = tokio::task::spawn_blocking({
        let bob_dir = bob.data_dir.clone();
        let hashes: Vec<String> = files.iter().map(|(h, _, _)| h.to_hex()).collect();
        move || (cli(&bob_dir, &["get", &hashes[0], "--json"]), cli(&bob_dir, &["get", &hashes[1], "--json"]))
    })
    .await
    .unwrap();
    let alone_error = String::from_utf8_lossy(&alone.stderr).to_string();
    println!("get of the file only the liar serves: {}", alone_error.trim());
    assert!(!alone.status.success(), "a file bigger than advertised is not fetched whole");
    assert!(alone_error.contains(&format!("advertised as {CLAIMED} bytes but its content holds {REAL}")), "and says why: {alone_error}");
    assert!(!bob.downloads().join("file0.bin").exists(), "nothing of it was saved");

    assert!(shared.status.success(), "the file an honest member has arrives: {}", String::from_utf8_lossy(&shared.stderr));
    let report: serde_json::Value = serde_json::from_slice(&shared.stdout).unwrap();
    assert_eq!(std::fs::read(report["path"].as_str().unwrap()).unwrap(), files[1].2, "whole and verified");
    let failures = report["failures"].to_string();
    println!("get of the file the liar and an honest member serve: providers that lost their turn: {failures}");
    assert!(
        failures.contains(&mallory_short) && failures.contains(&format!("advertised {CLAIMED} bytes")),
        "the liar is named: {failures}"
    );
    let faults = tokio::task::block_in_place(|| bob.json(&["status"]))["provider_faults"].clone();
    println!("bob's status counts these provider faults: {faults}");
    assert!(faults["lied"].as_u64().unwrap_or(0) >= 2, "both lies are counted: {faults}");
    // The shared file is saved (3 MB, stored once: the store moves it);
    // the lone one left at most its advertised size and the proof of its
    // real size behind (its last chunk, at the end of a sparse file).
    let grew = disk_usage(&bob.data_dir).2.saturating_sub(allocated_before);
    println!("bob's data directory grew by {grew} bytes for one {REAL}-byte file saved");
    assert!(grew < (REAL as u64) + 4 * CLAIMED, "the lie cost bob about its advertised size, not its real one");
    honest.close().await;
    mallory.close().await;
    drop((root, bob));
}

/// Point 3: a room's state is bounded whatever keys a member mints. A
/// member attached to alice signs presence events with 2,000 keys it
/// minted; then bob crashes. Alice's member table stays bounded and bob is
/// shown offline within the capped presence TTL (on a peer whose period
/// grew with every author ever seen, he stayed "online" for minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_keys_cannot_swell_the_room_or_keep_a_crashed_peer_online() {
    const MINTED: usize = 2000;
    let tmp = tempfile::tempdir().unwrap();
    let (root, mut peers) = network_of(&tmp, &["alice", "bob"]).await;
    let (bob, alice) = (peers.pop().unwrap(), peers.pop().unwrap());
    tokio::task::block_in_place(|| wait_for_room(&[&root, &alice, &bob], &["alice".to_string(), "bob".to_string(), "root".to_string()]));
    let alice_addr = tokio::task::block_in_place(|| alice.addr());
    let mut mallory = hostile::RoomMember::join(&root.ticket, &alice_addr).await;
    let started = std::time::Instant::now();
    for n in 0..MINTED {
        let key = iroh::SecretKey::generate();
        mallory.send_as(&key, peernet_proto::chat::Body::Presence { nickname: format!("m{n}") }).await.unwrap();
    }
    println!("mallory signed presence with {MINTED} minted keys in {:?}", started.elapsed());
    let mut bob = bob;
    tokio::task::block_in_place(|| {
        wait_until(PATIENCE, "alice to hear of the minted keys", || alice.json(&["who"]).as_array().unwrap().len() > 3);
        bob.kill9();
        let offline = wait_until(PATIENCE * 2, "alice to show bob offline", || {
            alice.json(&["who"]).as_array().unwrap().iter().any(|m| m["nickname"] == "bob" && m["online"] == false)
        });
        let who = alice.json(&["who"]);
        let status = alice.json(&["status"]);
        let dropped = &status["dropped_events"];
        println!(
            "alice remembers {} members (at most {}); she dropped {} events of new authors over mallory's budget and {} for a full room; \
             bob, crashed, was shown offline {offline:?} later",
            who.as_array().unwrap().len(),
            peernet_proto::chat::MAX_MEMBERS,
            dropped["TooManyNewAuthors"].as_u64().unwrap_or(0),
            dropped["RoomFull"].as_u64().unwrap_or(0),
        );
        assert!(who.as_array().unwrap().len() <= peernet_proto::chat::MAX_MEMBERS, "the member table is bounded");
        assert!(dropped["TooManyNewAuthors"].as_u64().unwrap_or(0) > 0, "one neighbour cannot introduce 2,000 authors at once");
    });
    mallory.close().await;
    drop((root, alice));
}

/// What a directory tree takes: the length of its files, each counted
/// once however many links it has; the sum of the sizes its entries show;
/// and the bytes allocated on disk (a sparse file's holes take none).
fn disk_usage(dir: &std::path::Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut seen, mut on_disk, mut shown, mut allocated) = (std::collections::HashSet::new(), 0, 0, 0);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                shown += meta.len();
                if seen.insert((meta.dev(), meta.ino())) {
                    on_disk += meta.len();
                    allocated += meta.blocks() * 512;
                }
            }
        }
    }
    (on_disk, shown, allocated)
}

/// Point 6: a hostile folder cannot fill a disk. A member serves two
/// folders that each list one 200 KB blob 999 times: one advertised as
/// 200 KB (a lie), one advertised truthfully. The lie is refused before
/// anything is written; the other is written with its 999 identical
/// entries stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_folder_cannot_fill_a_disk() {
    const ENTRY: usize = 200_000;
    const COPIES: usize = 999;
    let tmp = tempfile::tempdir().unwrap();
    let (root, mut peers) = network_of(&tmp, &["bob"]).await;
    let bob = peers.remove(0);
    let store = iroh_blobs::store::mem::MemStore::new();
    let bytes = noise(ENTRY, 0);
    let blob = store.blobs().add_slice(&bytes).temp_tag().await.unwrap();
    let mut folders = Vec::new();
    for (name, advertised) in [("liar", ENTRY as u64), ("repeats", (ENTRY * COPIES) as u64)] {
        let collection =
            iroh_blobs::format::collection::Collection::from_iter((0..COPIES).map(|i| (format!("{name}-{i}.bin"), blob.hash())));
        let tag = collection.store(&store).await.unwrap();
        folders.push((FileEntry { name: name.into(), size: advertised, hash: tag.hash(), kind: Kind::Folder }, tag));
    }
    let mallory = hostile::Hostile::member_serving(&root.ticket, hostile::Serve::Blobs(store.clone())).await;
    let client = mallory.index();
    client.join("mallory").await.unwrap();
    let files = folders.iter().map(|(e, _)| e.clone()).collect();
    assert!(matches!(client.request(Request::Publish { files }).await.unwrap(), Response::Published { .. }));

    let downloads = bob.downloads();
    let (lie, honest) = tokio::task::spawn_blocking({
        let bob_dir = bob.data_dir.clone();
        let hashes: Vec<String> = folders.iter().map(|(e, _)| e.hash.to_hex()).collect();
        move || (cli(&bob_dir, &["get", &hashes[0], "--json"]), cli(&bob_dir, &["get", &hashes[1], "--json"]))
    })
    .await
    .unwrap();
    let lie_error = String::from_utf8_lossy(&lie.stderr).to_string();
    println!("get of the folder that lies about its size: {}", lie_error.trim());
    assert!(!lie.status.success(), "the lie is refused");
    assert!(lie_error.contains("was advertised as"), "and says why: {lie_error}");
    assert!(!downloads.join("liar").exists(), "nothing of it was written");
    assert!(honest.status.success(), "the honest folder arrives: {}", String::from_utf8_lossy(&honest.stderr));
    let (on_disk, shown, _) = disk_usage(&downloads.join("repeats"));
    println!("the folder of {COPIES} identical entries shows {shown} bytes and takes {on_disk} on disk");
    assert_eq!(shown, (ENTRY * COPIES) as u64, "every entry is there");
    assert_eq!(on_disk, ENTRY as u64, "identical entries are stored once");
    drop(blob);
    mallory.close().await;
    drop((root, bob));
}

/// Point 3, the map: on a LAN network (no index) the map is drawn from
/// what members report in the room, and a report is only a claim. Mallory,
/// attached to alice, signs presence with 50 keys she minted; alice's map
/// still shows exactly alice and bob, the peers seen on real connections.
/// Needs root (network namespaces, so that mDNS never leaves the test);
/// skips visibly without it.
#[test]
fn minted_keys_are_not_drawn_on_a_lan_map() {
    const MINTED: usize = 50;
    const NETWORK: &str = "hostile-map";
    if common::netns::skip("minted_keys_are_not_drawn_on_a_lan_map") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut net = common::netns::Hosts::new("hmap");
    let hosts = net.segment("10.12.0", 2);
    let start = |i: usize, nick: &str| {
        let args = ["up", "--lan", "--network", NETWORK, "--nick", nick, "--bind", "0.0.0.0:0"];
        Daemon::start_in(Some(&hosts[i]), nick, &dir.path().join(nick), &args, &[])
    };
    let (alice, bob) = (start(0, "alice"), start(1, "bob"));
    let map_of = |d: &Daemon| {
        let topo = d.json(&["topo", "--format", "json"]);
        let mut nicks: Vec<String> =
            topo["nodes"].as_array().unwrap().iter().map(|n| n["nickname"].as_str().unwrap().to_string()).collect();
        nicks.sort();
        nicks
    };
    wait_until(PATIENCE, "alice's map to show alice and bob", || map_of(&alice) == ["alice", "bob"]);

    // Mallory lives on alice's host, on a thread of her own in its namespace.
    let alice_addr = alice.addr();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let ns = hosts[0].clone();
    let mallory = std::thread::spawn(move || {
        common::netns::enter(&ns).expect("enter alice's host");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let key = peernet_proto::key::NetworkKey::from_lan_name(NETWORK).unwrap();
            let mut mallory = hostile::RoomMember::join_network(key, &alice_addr, "127.0.0.1:0".parse().unwrap()).await;
            for n in 0..MINTED {
                let body = peernet_proto::chat::Body::Presence { nickname: format!("m{n}") };
                mallory.send_as(&iroh::SecretKey::generate(), body).await.unwrap();
            }
            sent_tx.send(()).unwrap();
            tokio::task::spawn_blocking(move || stop_rx.recv()).await.ok();
            mallory.close().await;
        });
    });
    sent_rx.recv().expect("mallory signed her presence events");
    wait_until(PATIENCE, "alice to hear of the minted keys", || online_members(&alice).len() > 2);
    let map = map_of(&alice);
    println!("alice sees {} members online in the room; her map shows {map:?}", online_members(&alice).len());
    assert_eq!(map, ["alice", "bob"], "no minted key is drawn on the map");
    stop_tx.send(()).unwrap();
    mallory.join().unwrap();
    drop((alice, bob));
}

/// Packets the rule `-d ADDR -j DROP` in `ns`'s INPUT chain has dropped.
fn dropped_to(ns: &str, addr: &str) -> u64 {
    let out = std::process::Command::new("ip").args(["netns", "exec", ns, "iptables", "-nvxL", "INPUT"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    table
        .lines()
        .find(|l| l.contains("DROP") && l.split_whitespace().any(|w| w == addr))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no drop rule for {addr} in {ns}: {table}"))
}

/// Point 8: a peer sends at most a handful of packets to an address no
/// member proved. Mallory joins alice's room from a host with two
/// addresses, one of which drops everything (a bystander's address, as far
/// as alice can tell: nothing ever answers there). She advertises both,
/// and then her host's addresses change ten times, so she starts ten rounds
/// of hole punching, each asking alice to probe every address she has.
/// Alice probes the silent address one round's worth for the whole
/// connection, however many rounds mallory starts. Needs root (network
/// namespaces); skips visibly without it.
#[test]
fn a_claimed_address_that_never_answers_gets_a_handful_of_packets() {
    const NETWORK: &str = "hostile-probes";
    const SILENT: &str = "10.13.0.99";
    const ROUNDS: u32 = 10;
    if common::netns::skip("a_claimed_address_that_never_answers_gets_a_handful_of_packets") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut net = common::netns::Hosts::new("hprobe");
    let hosts = net.segment("10.13.0", 2);
    let mallory_host = hosts[1].clone();
    net.exec(&mallory_host, &["ip", "addr", "add", &format!("{SILENT}/24"), "dev", "eth0"]);
    net.exec(&mallory_host, &["iptables", "-A", "INPUT", "-d", SILENT, "-p", "udp", "-j", "DROP"]);
    let args = ["up", "--lan", "--network", NETWORK, "--nick", "alice", "--bind", "0.0.0.0:0"];
    let alice = Daemon::start_in(Some(&hosts[0]), "alice", &dir.path().join("alice"), &args, &[]);
    let alice_addr = alice.addr();

    let (joined_tx, joined_rx) = std::sync::mpsc::channel::<()>();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let ns = mallory_host.clone();
    let mallory = std::thread::spawn(move || {
        common::netns::enter(&ns).expect("enter mallory's host");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let key = peernet_proto::key::NetworkKey::from_lan_name(NETWORK).unwrap();
            let mallory = hostile::RoomMember::join_network(key, &alice_addr, "0.0.0.0:0".parse().unwrap()).await;
            joined_tx.send(()).unwrap();
            tokio::task::spawn_blocking(move || stop_rx.recv()).await.ok();
            mallory.close().await;
        });
    });
    joined_rx.recv().expect("mallory joined alice's room");
    // Each change of mallory's addresses starts a round of hole punching.
    for round in 0..ROUNDS {
        let addr = format!("10.13.0.{}/24", 150 + round);
        net.exec(&mallory_host, &["ip", "addr", "add", &addr, "dev", "eth0"]);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        net.exec(&mallory_host, &["ip", "addr", "del", &addr, "dev", "eth0"]);
    }
    // A round's probes are over within about 4 s of its start; wait for
    // the count to stop moving rather than for a fixed time.
    let mut last = dropped_to(&mallory_host, SILENT);
    wait_until(PATIENCE, "the probes to the silent address to stop", || {
        std::thread::sleep(std::time::Duration::from_secs(5));
        let now = dropped_to(&mallory_host, SILENT);
        let settled = now == last;
        last = now;
        settled
    });
    println!(
        "the address mallory claimed and never answered on got {last} packets over {ROUNDS} address changes (one round of \
         probes is 9, the first flight of a connect 1 or 2)"
    );
    assert!(last > 0, "alice probed the silent address at all, so the count means something");
    assert!(last <= 16, "a silent claimed address gets a handful of packets, not one round per change: {last}");
    stop_tx.send(()).unwrap();
    mallory.join().unwrap();
    drop(alice);
}
