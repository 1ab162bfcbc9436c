//! Local secrets stay local: the ticket can reach `peernet up` without
//! showing in the process list (a file, standard input, the environment),
//! and a ticket written on the command line draws a warning; a daemon's
//! data directory is its owner's alone, and one that others can write is
//! refused; a short LAN network name draws a warning. The LAN part needs
//! root (network namespaces, so that multicast never leaves the test) and
//! skips visibly without it.

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path};

use common::{netns::Hosts, *};

/// What `up` says when the ticket is on its command line.
const VISIBLE: &str = "can read the ticket in the process list";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The daemon's command line as every local user sees it.
fn cmdline(d: &Daemon) -> String {
    let raw = std::fs::read(format!("/proc/{}/cmdline", d.pid())).unwrap();
    String::from_utf8_lossy(&raw).replace('\0', " ").trim_end().to_string()
}

/// Checks that `d` joined `root`'s network and that its process list
/// entry does not give the ticket away; prints what others see.
fn joined_without_showing(root: &Daemon, d: &Daemon) {
    wait_until(PATIENCE, &format!("{} to be online at the root", d.name), || online_nicks(root).contains(&d.name));
    let seen = cmdline(d);
    println!("{}: /proc/{}/cmdline = {seen}", d.name, d.pid());
    assert!(!seen.contains(&root.ticket), "{}'s command line shows the ticket: {seen}", d.name);
    assert!(!d.log_text().contains(VISIBLE), "{} warned of a ticket it was not given on its command line:\n{}", d.name, d.log_text());
}

#[test]
fn the_ticket_stays_out_of_the_process_list() {
    let dir = tempfile::tempdir().unwrap();
    let root = Daemon::host("root", &dir.path().join("root"), &[]);

    // From a file, with the blanks and newline an editor leaves.
    let file = dir.path().join("ticket.txt");
    std::fs::write(&file, format!("  {}\n\n", root.ticket)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let by_file = Daemon::joining("byfile", &dir.path().join("byfile"), &["--join-file", file.to_str().unwrap()], &[], None);
    joined_without_showing(&root, &by_file);

    // From standard input.
    let by_stdin = Daemon::joining("bystdin", &dir.path().join("bystdin"), &["--join", "-"], &[], Some(&format!("{}\n", root.ticket)));
    joined_without_showing(&root, &by_stdin);

    // From the environment, which only its user (and root) can read.
    let by_env = Daemon::joining("byenv", &dir.path().join("byenv"), &[], &[("PEERNET_JOIN", &root.ticket)], None);
    joined_without_showing(&root, &by_env);
    let environ = format!("/proc/{}/environ", by_env.pid());
    println!("{environ}: mode {:o}", mode(Path::new(&environ)));
    assert_eq!(mode(Path::new(&environ)) & 0o077, 0, "the environment is its owner's alone");

    // Written on the command line: it works, and says who can see it.
    let visible = Daemon::peer("visible", &dir.path().join("visible"), &root.ticket, &[]);
    wait_until(PATIENCE, "the peer that was given --join TICKET to be online", || online_nicks(&root).contains(&"visible".to_string()));
    assert!(cmdline(&visible).contains(&root.ticket), "the test shows the ticket where the warning says it is");
    let warning: Vec<String> = visible.log_text().lines().filter(|l| l.contains(VISIBLE)).map(str::to_string).collect();
    println!("visible: {warning:?}");
    assert_eq!(warning.len(), 1, "one warning line:\n{}", visible.log_text());
    for way in ["--join-file", "--join -", "PEERNET_JOIN"] {
        assert!(warning[0].contains(way), "the warning names {way}: {}", warning[0]);
    }

    // A file without a ticket is one clear sentence, and no start; one
    // that others can read (0644 here) draws a warning first.
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cli(&dir.path().join("nothing"), &["up", "--join-file", empty.to_str().unwrap(), "--bind", "127.0.0.1:0"]);
    let said = String::from_utf8_lossy(&out.stderr);
    println!("empty ticket file, exit {:?}:\n{said}", out.status.code());
    assert!(!out.status.success() && said.contains("holds no ticket"), "{said}");
    assert!(said.contains(&format!("chmod 600 {}", empty.display())), "{said}");
    assert!(!dir.path().join("nothing").exists(), "no data directory was made");
}

#[test]
fn a_data_dir_others_can_write_is_refused_and_a_new_one_is_private() {
    let dir = tempfile::tempdir().unwrap();

    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o770)).unwrap();
    let out = cli(&shared, &["up", "--bind", "127.0.0.1:0"]);
    let said = String::from_utf8_lossy(&out.stderr);
    println!("group-writable data dir: exit {:?}, stderr: {said}", out.status.code());
    assert!(!out.status.success(), "a daemon started in a group-writable data directory: {said}");
    assert!(said.contains("can be written by other users"), "{said}");
    assert!(said.contains(&format!("chmod 700 {}", shared.display())), "it says what to do: {said}");
    assert_eq!(said.trim().lines().count(), 1, "one sentence: {said}");
    assert!(!shared.join("secret.key").exists(), "nothing was written into it");

    // Owned by another user: only root can make one to test with.
    if std::os::unix::fs::chown(&shared, Some(65534), Some(65534)).is_ok() {
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700)).unwrap();
        let out = cli(&shared, &["up", "--bind", "127.0.0.1:0"]);
        let said = String::from_utf8_lossy(&out.stderr);
        println!("data dir of another user: exit {:?}, stderr: {said}", out.status.code());
        assert!(!out.status.success() && said.contains("belongs to another user"), "{said}");
    } else {
        println!("SKIPPED the data directory of another user: needs root to make one");
    }

    // Made by peernet itself, with a parent it had to make too.
    let fresh = dir.path().join("new").join("data");
    let d = Daemon::start_fresh("fresh", &fresh, &["up", "--bind", "127.0.0.1:0"]);
    println!("fresh data dir: {:o}, its new parent: {:o}", mode(&fresh), mode(fresh.parent().unwrap()));
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(fresh.parent().unwrap()), 0o700);
    for secret in ["secret.key", "state.json", "control.json"] {
        assert_eq!(mode(&fresh.join(secret)), 0o600, "{secret}");
    }
    drop(d);
}

#[test]
fn a_short_lan_name_draws_a_warning() {
    if common::netns::skip("secrets_lan") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut net = Hosts::new("sec");
    let hosts = net.segment("10.11.0", 2);
    let lan = |i: usize, name: &str| {
        let nick = format!("p{i}");
        let args = ["up", "--lan", "--network", name, "--nick", &nick, "--bind", "0.0.0.0:0"];
        Daemon::start_in(Some(&hosts[i]), &nick, &dir.path().join(&nick), &args, &[])
    };

    let short = lan(0, "ab");
    let warning: Vec<String> = short.log_text().lines().filter(|l| l.starts_with("warning: LAN network")).map(str::to_string).collect();
    println!("--network ab: {warning:?}");
    assert_eq!(warning.len(), 1, "one warning line:\n{}", short.log_text());
    assert!(warning[0].contains("a name of 2 characters") && warning[0].contains("at least 12"), "{}", warning[0]);

    let long = lan(1, "heron over the weir");
    assert!(!long.log_text().contains("warning: LAN network"), "a long name is not warned about:\n{}", long.log_text());
}
