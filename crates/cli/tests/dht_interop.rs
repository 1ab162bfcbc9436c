//! The DHT speaks mainline to everyone: libtorrent's DHT (Debian's
//! python3-libtorrent, an implementation of BEP 5 that owes peernet
//! nothing) takes a peernet DHT node into its routing table, on loopback.
//! libtorrent does so only after it has matched one of the node's answers
//! to its own query by transaction id; peernet's DHT once answered
//! libtorrent's two-byte ids with four bytes, and libtorrent dropped every
//! answer (vendor/n0-mainline/PEERNET.md).

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

/// Debian's interpreter, for which python3-libtorrent installs the module
/// (a `python3` earlier on PATH, pyenv's or a venv's, lacks it).
/// `PEERNET_PYTHON` names another.
const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dht_interop.py");
/// How long libtorrent gets to take the node in; on loopback it takes a
/// few milliseconds, so this only bounds a failing run.
const LIBTORRENT_DEADLINE: Duration = Duration::from_secs(20);

fn python() -> String {
    std::env::var("PEERNET_PYTHON").unwrap_or_else(|_| PYTHON.to_string())
}

/// Why libtorrent cannot be used from Python here, if it cannot.
fn libtorrent_missing() -> Option<String> {
    match Command::new(python()).args(["-c", "import libtorrent"]).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("").to_string()),
        Err(e) => Some(e.to_string()),
    }
}

/// The script's process, killed by its PID when the test ends, whichever
/// way it ends.
struct Script(std::process::Child);

impl Drop for Script {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// The UDP port of a daemon's DHT node, from its status.
fn dht_port(d: &Daemon) -> Option<u16> {
    let addr = d.json(&["status"])["dht"]["addr"].as_str().map(str::to_string)?;
    addr.rsplit(':').next()?.parse().ok()
}

#[test]
fn libtorrent_takes_a_peernet_dht_node_into_its_routing_table() {
    if let Some(why) = libtorrent_missing() {
        let why = format!("`{} -c 'import libtorrent'` fails ({why}): apt-get install python3-libtorrent (.ci/run installs it)", python());
        // CI installs the package, so there a missing one is a failure.
        assert!(std::env::var("CI").as_deref() != Ok("true"), "the libtorrent interop test cannot run on CI: {why}");
        eprintln!("SKIPPED libtorrent_takes_a_peernet_dht_node_into_its_routing_table: {why}");
        println!("SKIPPED libtorrent_takes_a_peernet_dht_node_into_its_routing_table: {why}");
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    // A network of one, whose DHT node knows nobody: all libtorrent talks
    // to is peernet's node.
    let host = Daemon::host("host", &dir.path().join("host"), &["--dht"]);
    let mut port = None;
    wait_until(PATIENCE, "the host's DHT node to listen", || {
        port = dht_port(&host);
        port.is_some()
    });
    // The node listens on every IPv4 address; libtorrent reaches it on
    // loopback.
    let node = format!("127.0.0.1:{}", port.unwrap());

    let out_path = dir.path().join("libtorrent.out");
    let err_path = dir.path().join("libtorrent.err");
    let mut script = Script(
        Command::new(python())
            .args([SCRIPT, &node, &LIBTORRENT_DEADLINE.as_secs().to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("spawn python"),
    );
    // The script stops by itself at its deadline; this one is for a script
    // that hangs (libtorrent's teardown, say), which `Script` then kills.
    let deadline = Instant::now() + LIBTORRENT_DEADLINE + PATIENCE;
    let status = loop {
        if let Some(status) = script.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    println!("libtorrent, bootstrapped from peernet's DHT node {node}:\n{out}");
    // What the script printed (libtorrent's routing table, and its DHT log
    // when the node is missing) is above.
    assert!(status.is_some(), "the libtorrent script did not end in time\n{err}");
    assert!(
        status.unwrap().success() && out.lines().any(|l| l == "found"),
        "libtorrent's routing table lacks peernet's DHT node {node}\n{err}\n--- peernet log ---\n{}",
        host.log_text()
    );
}
