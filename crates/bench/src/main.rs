//! `peernet-bench`: peernet measured beside what its users would use
//! instead, in the same run on the same machine. See docs/benchmarks.md,
//! "Benchmarks" section.
//!
//! `peernet-bench peernet ARGS...` runs the peernet command line itself; the
//! bench starts its peers that way, so it always measures its own build.

mod chat;
mod corpus;
mod dht;
mod echo;
mod index;
mod netns;
mod peers;
mod procs;
mod reach;
mod refs;
mod report;
mod swarm;
mod torrent;
mod transfer;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use rand::{RngCore, SeedableRng};

#[derive(Parser)]
#[command(name = "peernet-bench", about = "Measure peernet beside TCP, HTTP, BitTorrent, iroh-blobs and a tracker, in one run")]
struct Cli {
    /// Where the JSON results go (one file per bench).
    #[arg(long, global = true, default_value = "target/bench-results")]
    out: PathBuf,
    /// Scratch folder for files and peers (default: a new temporary folder,
    /// removed at the end). Needs room for a few copies of the file size.
    #[arg(long, global = true)]
    work: Option<PathBuf>,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Every bench with its default settings.
    All,
    /// One file moved by TCP, HTTP, BitTorrent, iroh-blobs and peernet.
    Transfer {
        /// File size, such as 1GiB or 64MiB.
        #[arg(long, default_value = "1GiB", value_parser = parse_size)]
        size: u64,
        /// Runs of each method; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// File sizes whose peak memory is compared, smallest first ("" skips).
        #[arg(long, default_value = "256MiB,4GiB", value_parser = parse_sizes)]
        memory_sizes: Sizes,
    },
    /// One rate-limited provider against several (needs root).
    Swarm {
        #[arg(long, default_value = "256MiB", value_parser = parse_size)]
        size: u64,
        #[arg(long, default_value_t = 3)]
        providers: usize,
        /// Upload limit of each provider (tc syntax).
        #[arg(long, default_value = "200mbit")]
        rate: String,
    },
    /// Concurrent Publish + Search against an index holding many files,
    /// beside a bare QUIC echo and opentracker; then a restart.
    Index {
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Files in the index before the load starts, seeded straight into
        /// its database (owned by up to 2,000 peers).
        #[arg(long, default_value_t = 1_000_000)]
        files: usize,
    },
    /// A local DHT of mainline nodes: how fast a provider is found, beside
    /// an index lookup.
    Dht {
        #[arg(long, default_value_t = 50)]
        nodes: usize,
        #[arg(long, default_value_t = 50)]
        lookups: usize,
    },
    /// Messages among many peers: delivery, latency, memory.
    Chat {
        #[arg(long, default_value_t = 50)]
        peers: usize,
        #[arg(long, default_value_t = 100)]
        messages: usize,
        /// Messages per second across the room, sent from peers in turn.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Also measure the idle room at this size first, to compare each
        /// peer's idle cost (skipped unless smaller than --peers).
        #[arg(long, default_value_t = 50)]
        compare_at: usize,
    },
    /// Transfers between peers behind NAT (hole-punched, then relayed) and
    /// over slow, lossy links, each beside TCP over the same links (needs root).
    Reach {
        /// File size across the NATs.
        #[arg(long, default_value = "20MiB", value_parser = parse_size)]
        size: u64,
        /// File size over each bad link.
        #[arg(long, default_value = "10MiB", value_parser = parse_size)]
        bad_link_size: u64,
        /// Bad links to measure, as RTT/LOSS ("" skips them).
        #[arg(long, default_value = reach::DEFAULT_LINKS, value_parser = reach::parse_links)]
        links: reach::Links,
        /// QUIC congestion controllers to measure over each bad link.
        #[arg(long, default_value = "cubic,bbr", value_delimiter = ',')]
        congestion: Vec<String>,
    },
    /// Serves one file once over TCP (the reach bench runs it in a namespace).
    #[command(hide = true)]
    TcpServe { file: PathBuf, port: u16 },
    /// Fetches from `tcp-serve` and prints "BYTES SECONDS".
    #[command(hide = true)]
    TcpFetch { addr: std::net::SocketAddr, dest: PathBuf },
    /// Echoes request frames over iroh QUIC (the index bench's ceiling).
    #[command(hide = true)]
    EchoServe {
        /// KIND:BYTES,...: answer these kinds of request with that many
        /// bytes instead of the request.
        #[arg(long, default_value = "")]
        replies: String,
    },
}

#[derive(Clone, Debug)]
struct Sizes(Vec<u64>);

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "peernet") {
        return peernet::main_from(&args[1..]);
    }
    let cli = Cli::parse();
    // The TCP helpers are one step of the reach bench, not benches: no
    // scratch folder, no table.
    let result = match &cli.bench {
        Bench::TcpServe { file, port } => reach::tcp_serve(file, *port),
        Bench::TcpFetch { addr, dest } => reach::tcp_fetch(*addr, dest),
        Bench::EchoServe { replies } => echo::serve(replies),
        _ => run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let temp;
    let work = match &cli.work {
        Some(w) => {
            std::fs::create_dir_all(w)?;
            tempfile::tempdir_in(w)?
        }
        None => {
            temp = tempfile::tempdir()?;
            temp
        }
    };
    let rt = tokio::runtime::Runtime::new()?;
    let benches = match cli.bench {
        Bench::All => vec![
            Bench::Transfer { size: 1 << 30, runs: 3, memory_sizes: Sizes(vec![256 << 20, 4 << 30]) },
            Bench::Swarm { size: 256 << 20, providers: 3, rate: "200mbit".into() },
            Bench::Index { clients: 50, seconds: 10.0, files: 1_000_000 },
            Bench::Chat { peers: 50, messages: 100, rate: 10.0, compare_at: 50 },
            Bench::Dht { nodes: 50, lookups: 50 },
            Bench::Reach {
                size: 20 << 20,
                bad_link_size: 10 << 20,
                links: reach::parse_links(reach::DEFAULT_LINKS).expect("the default links parse"),
                congestion: vec!["cubic".into(), "bbr".into()],
            },
        ],
        one => vec![one],
    };
    for bench in benches {
        let dir = work.path().join(name(&bench));
        std::fs::create_dir_all(&dir)?;
        let report = match bench {
            Bench::Transfer { size, runs, memory_sizes } => {
                transfer::run(&dir, &transfer::Options { size, runs, memory_sizes: memory_sizes.0 }, &rt)?
            }
            Bench::Swarm { size, providers, rate } => swarm::run(&dir, &swarm::Options { size, providers, rate })?,
            Bench::Index { clients, seconds, files } => {
                index::run(&dir, &index::Options { clients, duration: Duration::from_secs_f64(seconds), files }, &rt)?
            }
            Bench::Chat { peers, messages, rate, compare_at } => {
                chat::run(&dir, &chat::Options { peers, messages, rate, compare_at }, &rt)?
            }
            Bench::Dht { nodes, lookups } => dht::run(&dir, &dht::Options { nodes, lookups }, &rt)?,
            Bench::Reach { size, bad_link_size, links, congestion } => {
                reach::run(&dir, &reach::Options { size, bad_link_size, links: links.0, congestion })?
            }
            Bench::All => unreachable!("`all` expands to the others"),
            Bench::TcpServe { .. } | Bench::TcpFetch { .. } | Bench::EchoServe { .. } => unreachable!("the helpers run from main"),
        };
        std::fs::remove_dir_all(&dir).ok();
        report.print();
        let json = report.write_json(&cli.out)?;
        println!("(written to {})", json.display());
        std::io::stdout().flush().ok();
    }
    println!("\nmachine: {}", machine());
    Ok(())
}

fn name(bench: &Bench) -> &'static str {
    match bench {
        Bench::All => "all",
        Bench::Transfer { .. } => "transfer",
        Bench::Swarm { .. } => "swarm",
        Bench::Index { .. } => "index",
        Bench::Chat { .. } => "chat",
        Bench::Dht { .. } => "dht",
        Bench::Reach { .. } => "reach",
        Bench::TcpServe { .. } => "tcp-serve",
        Bench::TcpFetch { .. } => "tcp-fetch",
        Bench::EchoServe { .. } => "echo-serve",
    }
}

/// CPU model, cores and memory, for the record.
/// CPU cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()));
    let cores = cores();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{}, {cores} cores, {mem_gib:.0} GiB", model.unwrap_or_else(|| "unknown CPU".into()))
}

/// Polls `ready` every 200 ms until it says yes, or fails after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut ready: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        // Errors while waiting (a daemon not answering yet) count as "not yet".
        if ready().unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("gave up after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes `size` pseudo-random bytes (seeded, so runs are alike).
pub fn random_file(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

pub fn hash_file(path: &Path) -> anyhow::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    std::io::copy(&mut std::io::BufReader::with_capacity(1 << 20, file), &mut hasher)?;
    Ok(hasher.finalize())
}

/// `4GiB`, `256MiB`, `64KiB`, `1000`.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| format!("`{s}` is not a size; write for example 256MiB or 1GiB"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kib" | "k" => 10,
        "mib" | "m" => 20,
        "gib" | "g" => 30,
        _ => return Err(format!("unknown unit in `{s}`; use KiB, MiB or GiB")),
    };
    Ok(n << shift)
}

fn parse_sizes(s: &str) -> Result<Sizes, String> {
    Ok(Sizes(s.split(',').filter(|p| !p.trim().is_empty()).map(parse_size).collect::<Result<_, _>>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1 parsec").is_err());
        assert_eq!(parse_sizes("").unwrap().0, Vec::<u64>::new());
        assert_eq!(parse_sizes("1MiB,2MiB").unwrap().0, vec![1 << 20, 2 << 20]);
    }
}
