//! peernet daemons started by the bench. They run from the bench's own
//! executable (`peernet-bench peernet ...` is the peernet command line), so
//! what is measured is exactly the code the bench was built with.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context};

use crate::procs::Proc;

/// How long a daemon may take to print its ticket.
const START_LIMIT: Duration = Duration::from_secs(120);

/// The bench's own executable, which runs peernet when its first argument
/// is `peernet`.
pub fn exe() -> PathBuf {
    std::env::current_exe().expect("the bench knows its own path")
}

/// A command running peernet, optionally inside a network namespace.
pub fn peernet(netns: Option<&str>) -> Command {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(exe());
            c
        }
        None => {
            let mut c = Command::new(exe());
            // Benchmarks on loopback keep mDNS off the host's network.
            c.env("PEERNET_NO_MDNS", "1");
            c
        }
    };
    cmd.arg("peernet").env("RUST_LOG", "warn").stdin(Stdio::null());
    cmd
}

/// A running `peernet up` (or `peernet index`).
pub struct Peer {
    pub name: String,
    pub data_dir: PathBuf,
    pub ticket: String,
    pub netns: Option<String>,
    pub proc: Proc,
}

impl Peer {
    /// Starts `peernet <args>` with its own data directory and waits for
    /// its ticket (and, for `up`, its control API).
    pub fn start(name: &str, data_dir: &Path, netns: Option<&str>, args: &[&str]) -> anyhow::Result<Peer> {
        std::fs::create_dir_all(data_dir)?;
        let log = std::fs::File::create(data_dir.with_extension("log"))?;
        let mut cmd = peernet(netns);
        cmd.args(args).env("PEERNET_DATA_DIR", data_dir).stdout(Stdio::piped()).stderr(log);
        let mut proc = Proc::spawn(name, &mut cmd)?;
        let stdout = proc.take_stdout().context("daemon stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(t) = line.strip_prefix("ticket: ") {
                    tx.send(t.to_string()).ok();
                }
            }
        });
        let Ok(ticket) = rx.recv_timeout(START_LIMIT) else {
            let log = std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default();
            bail!("{name} printed no ticket within {START_LIMIT:?}; its log:\n{log}");
        };
        let peer = Peer { name: name.into(), data_dir: data_dir.into(), ticket, netns: netns.map(String::from), proc };
        if args.first() == Some(&"up") {
            crate::wait_for(START_LIMIT, &format!("{name}'s control API"), || Ok(peer.cli(&["status"])?.status.success()))?;
        }
        Ok(peer)
    }

    /// Runs `peernet <args>` against this daemon.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(peernet(self.netns.as_deref()).args(args).env("PEERNET_DATA_DIR", &self.data_dir).output()?)
    }

    /// Runs a command that must succeed and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!("{}: `peernet {}` failed: {}", self.name, args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        Ok(serde_json::from_str(&self.ok(&with_json)?)?)
    }

    /// Stops the daemon gracefully (it leaves the network).
    pub fn stop(self) {
        self.proc.stop(STOP_GRACE);
    }

    /// Starts `count` peers joining with `ticket`, named `{prefix}{i}` for
    /// `i` from `first`, a few at a time: one by one, fifty daemons take
    /// minutes to start on a small machine.
    pub fn join_many(work: &Path, prefix: &str, first: usize, count: usize, ticket: &str) -> anyhow::Result<Vec<Peer>> {
        let names: Vec<String> = (first..first + count).map(|i| format!("{prefix}{i}")).collect();
        let mut peers = Vec::new();
        for group in names.chunks(START_AT_ONCE) {
            let started: Vec<anyhow::Result<Peer>> = std::thread::scope(|scope| {
                let handles: Vec<_> = group
                    .iter()
                    .map(|name| {
                        scope.spawn(move || {
                            let args = ["up", "--bind", "127.0.0.1:0", "--nick", name.as_str(), "--join", ticket];
                            Peer::start(name, &work.join(name), None, &args)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a start thread panicked")))).collect()
            });
            for p in started {
                peers.push(p?);
            }
        }
        Ok(peers)
    }

    /// Stops many daemons at once: all are told first, then each is waited for.
    pub fn stop_all(peers: Vec<Peer>) {
        Proc::stop_all(peers.into_iter().map(|p| p.proc).collect(), STOP_GRACE);
    }
}

/// How long a stopping daemon may take to leave before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Daemons started together by [`Peer::join_many`].
const START_AT_ONCE: usize = 8;
