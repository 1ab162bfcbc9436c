//! Test harness: real `peernet` processes on loopback, each with its own
//! data directory, killed by PID when the test ends (even on panic).

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

#[allow(unused_imports)]
pub use peernet_testnet as netns;

pub mod browser;
pub mod hostile;

pub const BIN: &str = env!("CARGO_BIN_EXE_peernet");

/// Lease timing used by tests: short, so expiry is observable, but loose
/// enough for a slow, busy machine.
pub const HEARTBEAT: &str = "1s";
pub const LEASE_TTL: &str = "4s";
pub const LEASE_TTL_DURATION: Duration = Duration::from_secs(4);

/// Generous bound for anything that should happen "soon" on a loaded CI box.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running daemon (`peernet up` or `peernet index`).
pub struct Daemon {
    pub name: String,
    pub data_dir: PathBuf,
    pub ticket: String,
    /// What it printed on standard output before its ticket (or LAN name).
    pub greeting: String,
    /// The network namespace it runs in, if any.
    pub ns: Option<String>,
    child: Option<Child>,
    log: PathBuf,
}

/// `peernet`, inside network namespace `ns` when one is given (`ip netns
/// exec` runs the program in place, so the child's PID is peernet's).
pub fn command(ns: Option<&str>) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    }
}

impl Daemon {
    fn start(name: &str, data_dir: &Path, args: &[&str]) -> Daemon {
        Self::start_with_env(name, data_dir, args, &[])
    }

    /// Starts a daemon with extra environment variables.
    pub fn start_with_env(name: &str, data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::start_in(None, name, data_dir, args, env)
    }

    /// Starts a daemon inside network namespace `ns`, if given.
    pub fn start_in(ns: Option<&str>, name: &str, data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        std::fs::create_dir_all(data_dir).unwrap();
        Self::launch(ns, name, data_dir, &data_dir.with_extension("log"), args, env, None)
    }

    /// `peernet up` joining with `join` (e.g. `["--join-file", PATH]`),
    /// with `env`, and `stdin` written to its standard input.
    pub fn joining(name: &str, data_dir: &Path, join: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Daemon {
        std::fs::create_dir_all(data_dir).unwrap();
        let mut args = vec!["up", "--nick", name, "--bind", "127.0.0.1:0"];
        args.extend_from_slice(join);
        Self::launch(None, name, data_dir, &data_dir.with_extension("log"), &args, env, stdin)
    }

    /// Starts a daemon whose data directory (and its parent) it must make
    /// itself; the log goes beside the parent.
    pub fn start_fresh(name: &str, data_dir: &Path, args: &[&str]) -> Daemon {
        let parent = data_dir.parent().unwrap();
        assert!(!parent.exists(), "{} must not exist yet", parent.display());
        Self::launch(None, name, data_dir, &parent.with_extension("log"), args, &[], None)
    }

    fn launch(
        ns: Option<&str>,
        name: &str,
        data_dir: &Path,
        log: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Daemon {
        let log = log.to_owned();
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = command(ns);
        cmd.args(args).env("PEERNET_DATA_DIR", data_dir).env("RUST_LOG", "warn,peernet_node=debug,peernet_index=debug");
        if ns.is_none() {
            // Multicast stays inside test namespaces, off the host's network.
            cmd.env("PEERNET_NO_MDNS", "1");
        }
        let input = if stdin.is_some() { Stdio::piped() } else { Stdio::null() };
        let mut child = cmd.envs(env.iter().copied()).stdin(input).stdout(Stdio::piped()).stderr(log_file).spawn().expect("spawn peernet");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Dropping the pipe closes it: the daemon sees the end of input.
            // A daemon that died first is reported below, with its log.
            pipe.write_all(text.as_bytes()).ok();
        }
        // Read stdout on a thread until the ticket line shows up.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut greeting = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // A ticket network prints its ticket, a LAN network its name.
                if let Some(t) = line.strip_prefix("ticket: ").or_else(|| line.strip_prefix("lan: ")) {
                    tx.send((t.to_string(), std::mem::take(&mut greeting))).ok();
                } else {
                    greeting.push_str(&line);
                    greeting.push('\n');
                }
            }
        });
        let (ticket, greeting) = match rx.recv_timeout(PATIENCE) {
            Ok(t) => t,
            Err(_) => {
                child.kill().ok();
                child.wait().ok();
                panic!("{name} did not print a ticket; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
        };
        let d = Daemon {
            name: name.to_string(),
            data_dir: data_dir.to_owned(),
            ticket,
            greeting,
            ns: ns.map(str::to_string),
            child: Some(child),
            log,
        };
        if args.first() == Some(&"up") {
            d.wait_for_control();
        }
        d
    }

    /// `peernet up` hosting a new network.
    pub fn host(name: &str, data_dir: &Path, extra: &[&str]) -> Daemon {
        let mut args = vec!["up", "--nick", name, "--bind", "127.0.0.1:0", "--heartbeat", HEARTBEAT, "--lease-ttl", LEASE_TTL];
        args.extend_from_slice(extra);
        Self::start(name, data_dir, &args)
    }

    /// `peernet up --join TICKET`.
    pub fn peer(name: &str, data_dir: &Path, ticket: &str, extra: &[&str]) -> Daemon {
        let downloads = data_dir.join("downloads");
        let mut args = vec!["up", "--join", ticket, "--nick", name, "--bind", "127.0.0.1:0", "--downloads", downloads.to_str().unwrap()];
        args.extend_from_slice(extra);
        Self::start(name, data_dir, &args)
    }

    /// `peernet up` again with the same data directory, no flags.
    pub fn restart_peer(name: &str, data_dir: &Path) -> Daemon {
        let downloads = data_dir.join("downloads");
        Self::start(name, data_dir, &["up", "--bind", "127.0.0.1:0", "--downloads", downloads.to_str().unwrap()])
    }

    /// `peernet index`.
    pub fn index(data_dir: &Path) -> Daemon {
        Self::start("index", data_dir, &["index", "--bind", "127.0.0.1:0", "--heartbeat", HEARTBEAT, "--lease-ttl", LEASE_TTL])
    }

    fn wait_for_control(&self) {
        wait_until(PATIENCE, &format!("{} control API", self.name), || self.cli(&["status"]).status.success());
    }

    /// The daemon's control.json: where its control API and metrics
    /// listen, and the CLI's token.
    pub fn control_json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.data_dir.join("control.json")).unwrap()).unwrap()
    }

    pub fn downloads(&self) -> PathBuf {
        self.data_dir.join("downloads")
    }

    /// Runs a CLI command against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli_in(self.ns.as_deref(), &self.data_dir, args)
    }

    /// Runs a CLI command and returns stdout, failing the test on error.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{}: `peernet {}` failed: {}\n--- log ---\n{}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a CLI command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "`peernet {}` should have failed but printed {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("valid JSON")
    }

    pub fn id(&self) -> String {
        self.json(&["status"])["id"].as_str().unwrap().to_string()
    }

    /// Where this daemon listens, from its own status.
    pub fn addr(&self) -> peernet_proto::index::PeerAddr {
        let s = self.json(&["status"]);
        let id = s["id"].as_str().unwrap().parse().unwrap();
        let ip = s["addrs"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().parse().unwrap()).collect();
        peernet_proto::index::PeerAddr { id, ip, relay: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no goodbye, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// Waits for the process to exit by itself and returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {within:?}", self.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.pid();
        Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        self.wait_exit(PATIENCE)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `peernet ARGS` with a data directory, bounded in time.
pub fn cli(data_dir: &Path, args: &[&str]) -> Output {
    cli_in(None, data_dir, args)
}

/// Runs `peernet ARGS` inside network namespace `ns`, if given.
pub fn cli_in(ns: Option<&str>, data_dir: &Path, args: &[&str]) -> Output {
    let mut cmd = command(ns);
    if ns.is_none() {
        // An `up` run this way keeps mDNS off the host's network too.
        cmd.env("PEERNET_NO_MDNS", "1");
    }
    let mut child = cmd
        .args(args)
        .env("PEERNET_DATA_DIR", data_dir)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peernet");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("`peernet {}` did not finish in time", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` until it holds, failing the test after `within`.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `len` pseudo-random bytes (incompressible, deterministic per seed).
pub fn random_file(path: &Path, len: usize, seed: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
}

pub fn same_bytes(a: &Path, b: &Path) -> bool {
    // Compare hashes, not whole buffers, to keep memory flat for big files.
    let h = |p: &Path| {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(p).unwrap()).unwrap();
        hasher.finalize()
    };
    std::fs::metadata(a).unwrap().len() == std::fs::metadata(b).unwrap().len() && h(a) == h(b)
}

/// Search hits at the index, as JSON. (Flood search has its own tests;
/// asking the overlay too would add its answer window to every poll.)
pub fn search(d: &Daemon, q: &str) -> Vec<serde_json::Value> {
    d.json(&["search", "--index-only", q]).as_array().unwrap().clone()
}

/// Nicknames of the providers of the hit named `name`.
pub fn providers_of(hits: &[serde_json::Value], name: &str) -> Vec<String> {
    hits.iter()
        .filter(|h| h["name"] == name)
        .flat_map(|h| h["providers"].as_array().unwrap().iter().map(|p| p["peer"]["nickname"].as_str().unwrap().to_string()))
        .collect()
}

/// Nicknames of online peers.
pub fn online_nicks(d: &Daemon) -> Vec<String> {
    d.json(&["online"]).as_array().unwrap().iter().map(|p| p["peer"]["nickname"].as_str().unwrap().to_string()).collect()
}

/// A hosted network of `n` peers: `n0` hosts the index, `n1..` join it.
pub fn network(root: &Path, n: usize) -> Vec<Daemon> {
    let mut peers = vec![Daemon::host("n0", &root.join("n0"), &[])];
    let ticket = peers[0].ticket.clone();
    for i in 1..n {
        peers.push(Daemon::peer(&format!("n{i}"), &root.join(format!("n{i}")), &ticket, &[]));
    }
    peers
}

/// Nicknames of the members `d` sees online in the room.
pub fn online_members(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = d
        .json(&["who"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["online"] == true)
        .map(|m| m["nickname"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Waits until every daemon sees exactly `expected` online in the room.
pub fn wait_for_room(peers: &[&Daemon], expected: &[String]) {
    let mut expected = expected.to_vec();
    expected.sort();
    wait_until(PATIENCE, "everyone to see the same room", || peers.iter().all(|p| online_members(p) == expected));
}

/// Chat texts `d` received from the author with nickname `from`, in order.
pub fn texts_from(d: &Daemon, from_id: &str) -> Vec<String> {
    d.json(&["messages"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["author"] == from_id)
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

/// Nicknames on the map.
pub fn topo_nicks(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> =
        d.json(&["topo"])["nodes"].as_array().unwrap().iter().map(|n| n["nickname"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

/// Runs `peernet shell` with `input` on standard input; returns stdout.
pub fn shell(data_dir: &Path, input: &str) -> String {
    let mut child = Command::new(BIN)
        .args(["shell"])
        .env("PEERNET_DATA_DIR", data_dir)
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("shell did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "shell failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// An iroh endpoint for a test that plays a peer itself, on loopback.
pub async fn test_endpoint(alpns: Vec<Vec<u8>>) -> (iroh::Endpoint, iroh::address_lookup::memory::MemoryLookup) {
    peernet_node::endpoint::bind(peernet_node::endpoint::EndpointConfig {
        secret_key: iroh::SecretKey::generate(),
        bind: "127.0.0.1:0".parse().unwrap(),
        relay: None,
        alpns,
        congestion: Default::default(),
    })
    .await
    .unwrap()
}

/// An endpoint for a test that plays a member of the network of `key`: it
/// proves membership before each connect and admits only members. The test's
/// router must serve `admission.protocol()` on the admission ALPN (so that
/// peers can prove themselves to it before they connect).
pub async fn member_endpoint(
    alpns: Vec<Vec<u8>>,
    key: peernet_proto::key::NetworkKey,
) -> (iroh::Endpoint, iroh::address_lookup::memory::MemoryLookup, peernet_node::admission::Admission) {
    member_endpoint_on(alpns, key, "127.0.0.1:0".parse().unwrap()).await
}

/// [`member_endpoint`], bound to `bind` (`0.0.0.0:0` on a test host, to
/// be reached on every address the host has).
pub async fn member_endpoint_on(
    alpns: Vec<Vec<u8>>,
    key: peernet_proto::key::NetworkKey,
    bind: std::net::SocketAddr,
) -> (iroh::Endpoint, iroh::address_lookup::memory::MemoryLookup, peernet_node::admission::Admission) {
    let secret_key = iroh::SecretKey::generate();
    let admission = peernet_node::admission::Admission::new(key, secret_key.public());
    let config = peernet_node::endpoint::EndpointConfig { secret_key, bind, relay: None, alpns, congestion: Default::default() };
    let (ep, lookup) = peernet_node::endpoint::bind_member(config, &admission, &peernet_node::paths::Paths::new()).await.unwrap();
    (ep, lookup, admission)
}

/// Joins the network as `nickname` from the test's own endpoint and
/// publishes `entry` there: a provider the test controls.
pub async fn publish_as(
    ep: &iroh::Endpoint,
    lookup: &iroh::address_lookup::memory::MemoryLookup,
    ticket: &peernet_proto::ticket::Ticket,
    nickname: &str,
    entry: peernet_proto::index::FileEntry,
) {
    use peernet_proto::index::{PeerAddr, Request, Response};
    peernet_node::endpoint::remember(lookup, &ticket.index);
    let client = peernet_node::index_client::IndexClient::remote(
        ep.clone(),
        PeerAddr { id: ep.id(), ip: ep.bound_sockets(), relay: None },
        ticket.index.clone(),
        ticket.network_key,
    );
    client.join(nickname).await.unwrap();
    let published = client.request(Request::Publish { files: vec![entry] }).await.unwrap();
    assert!(matches!(published, Response::Published { .. }), "{published:?}");
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Resident memory of a process, in KiB, from /proc/PID/status.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
