//! Joining, leaving and owning registrations, end to end.

mod common;

use common::*;

/// Acceptance: a peer started without --join hosts the index; a second peer
/// joins with the printed ticket; a wrong ticket is refused clearly.
#[test]
fn host_join_and_wrong_tickets() {
    let tmp = tempfile::tempdir().unwrap();
    let host = Daemon::host("root", &tmp.path().join("host"), &[]);
    assert_eq!(host.json(&["status"])["hosts_index"], true);
    let guest = Daemon::peer("guest", &tmp.path().join("guest"), &host.ticket, &[]);
    assert_eq!(guest.json(&["status"])["hosts_index"], false);
    let mut nicks = online_nicks(&guest);
    nicks.sort();
    assert_eq!(nicks, ["guest", "root"]);

    // Not a ticket at all.
    let out = cli(&tmp.path().join("x"), &["up", "--join", "hello", "--bind", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a peernet ticket"), "{err}");

    // A damaged ticket (one character changed).
    let mut damaged: Vec<char> = host.ticket.chars().collect();
    let mid = damaged.len() / 2;
    damaged[mid] = if damaged[mid] == 'a' { 'b' } else { 'a' };
    let damaged: String = damaged.into_iter().collect();
    let out = cli(&tmp.path().join("y"), &["up", "--join", &damaged, "--bind", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged"));

    // A well-formed ticket for the right index but another network key.
    let other = Daemon::host("other", &tmp.path().join("other"), &[]);
    let forged = forge_ticket(&host.ticket, &other.ticket);
    let out = cli(&tmp.path().join("z"), &["up", "--join", &forged, "--bind", "127.0.0.1:0"]);
    assert!(!out.status.success(), "a wrong network key must not get in");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a member of this network"), "{err}");
    // The host keeps serving.
    assert_eq!(online_nicks(&guest).len(), 2);
}

/// Tickets of the first format (`peernet1`, before tickets had versions)
/// still join, and a data directory whose state.json holds one still
/// rejoins with no flags.
#[test]
fn first_format_tickets_and_old_data_dirs_still_work() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Daemon::host("root", &tmp.path().join("root"), &[]);
    let old = first_format(&root.ticket);
    assert!(old.starts_with("peernet1"));
    let joined = Daemon::peer("oldticket", &tmp.path().join("oldticket"), &old, &[]);
    assert_eq!(joined.json(&["status"])["index"]["state"], "joined");

    let dir = tmp.path().join("olddir");
    std::fs::create_dir_all(&dir).unwrap();
    let state = serde_json::json!({ "membership": { "member": { "ticket": old } }, "nickname": "olddir", "port": null });
    std::fs::write(dir.join("state.json"), serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    let rejoined = Daemon::restart_peer("olddir", &dir);
    wait_until(PATIENCE, "all three online", || {
        let mut nicks = online_nicks(&root);
        nicks.sort();
        nicks == ["olddir", "oldticket", "root"]
    });
    assert_eq!(rejoined.json(&["status"])["nickname"], "olddir");
}

/// `ticket` written the way peernet wrote tickets before they had versions:
/// `peernet1`, base32 of the postcard of (index, key) and a BLAKE3 checksum.
fn first_format(ticket: &str) -> String {
    let t: peernet_proto::ticket::Ticket = ticket.parse().unwrap();
    let mut bytes = postcard::to_stdvec(&(t.index, t.network_key)).unwrap();
    let sum = blake3::hash(&bytes);
    bytes.extend_from_slice(&sum.as_bytes()[..4]);
    format!("peernet1{}", data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase())
}

/// The index address of `addr_from` with the network key of `key_from`.
fn forge_ticket(addr_from: &str, key_from: &str) -> String {
    use peernet_proto::ticket::Ticket;
    let a: Ticket = addr_from.parse().unwrap();
    let k: Ticket = key_from.parse().unwrap();
    Ticket { index: a.index, network_key: k.network_key, relay: a.relay }.to_string()
}

/// Acceptance: `down` removes all of a peer's registrations at once, and
/// another peer cannot unpublish a file it does not own.
#[test]
fn down_deregisters_and_only_owners_unpublish() {
    let tmp = tempfile::tempdir().unwrap();
    let index = Daemon::index(&tmp.path().join("index"));
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut shares = Vec::new();
    for name in ["alpha.txt", "beta.txt", "gamma.txt"] {
        std::fs::write(files.join(name), name.repeat(100)).unwrap();
        shares.push("--share".to_string());
        shares.push(files.join(name).to_str().unwrap().to_string());
    }
    let shares: Vec<&str> = shares.iter().map(String::as_str).collect();
    let mut a = Daemon::peer("alice", &tmp.path().join("a"), &index.ticket, &shares);
    let b = Daemon::peer("bob", &tmp.path().join("b"), &index.ticket, &[]);
    assert_eq!(search(&b, "txt").len(), 3);

    // Bob tries to unshare Alice's file, by name and by hash.
    let err = b.fails(&["unshare", "alpha.txt"]);
    assert!(err.contains("only the peer that shared it can unshare it"), "{err}");
    let hash = search(&b, "alpha")[0]["hash"].as_str().unwrap().to_string();
    let err = b.fails(&["unshare", &hash]);
    assert!(err.contains("only the peer that shared it can unshare it"), "{err}");
    assert_eq!(search(&b, "txt").len(), 3, "nothing was removed");

    // Alice unshares one herself.
    a.ok(&["unshare", "gamma.txt"]);
    assert_eq!(search(&b, "txt").len(), 2);

    // `down`: everything goes at once, and the process exits 0.
    a.ok(&["down"]);
    assert!(a.wait_exit(PATIENCE).success());
    assert!(search(&b, "txt").is_empty(), "down must de-register at once, not after the lease");
    assert_eq!(online_nicks(&b), ["bob"]);

    // SIGTERM is just as graceful.
    let mut c = Daemon::peer("carol", &tmp.path().join("c"), &index.ticket, &shares[..2]);
    assert_eq!(search(&b, "alpha").len(), 1);
    assert!(c.terminate().success());
    assert!(search(&b, "alpha").is_empty());
}
