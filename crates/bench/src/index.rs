//! `index`: the index holding `--files` files of [`SEED_PEERS`] peers
//! (seeded straight into its database before it starts), while N
//! concurrent clients each publish a new file, search for it, search the
//! vocabulary as users do and, once they hold [`HELD_FILES`], unshare
//! their oldest, for a fixed time. The same load runs against:
//! the `peernet index` process over QUIC; its request handler in this
//! process (no QUIC); a bare echo over iroh QUIC (the transport's ceiling,
//! [`crate::echo`]). Beside them, opentracker's HTTP announce under wrk at
//! the same concurrency. Then the index is restarted on its full
//! database and timed until its first search answers.

use std::{
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use peernet_index::store::{SeedPeer, Store};
use peernet_node::index_client::IndexClient;
use peernet_proto::{
    frame,
    index::{FileEntry, Kind, PeerAddr, Request, Response},
    limits::{MAX_FILES_PER_PEER, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME},
    ticket::Ticket,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::{
    corpus::Corpus,
    echo,
    peers::Peer,
    procs::{free_port, installed},
    report::{Report, Row},
};

/// Files each client keeps registered; beyond this it unshares its oldest
/// after each publish (one more request, also counted).
const HELD_FILES: usize = 500;

/// The peers that own the seeded files (fewer if there are fewer files).
pub const SEED_PEERS: usize = 2000;

/// How long the seeded peers count as online: far beyond the run, since
/// they never heartbeat (search shows only peers whose lease runs).
const SEED_LEASE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Results asked of a vocabulary search (the CLI's default).
const SEARCH_LIMIT: u32 = 20;

pub struct Options {
    pub clients: usize,
    pub duration: Duration,
    pub files: usize,
}

/// The index's flags for the bench: it measures the index, not its
/// budgets, and all its clients come from loopback as fast as they can.
const INDEX_ARGS: &[&str] = &["index", "--index-rate", "1000000/1000000", "--keys-per-address", "1000000"];

pub fn run(work: &Path, o: &Options, rt: &tokio::runtime::Runtime) -> anyhow::Result<Report> {
    let corpus = Arc::new(Corpus::new());
    let data_dir = work.join("index");
    std::fs::create_dir_all(&data_dir)?;
    // The daemon keeps its database here (see peernet_node::data_dir).
    let db = data_dir.join("index.db");
    let seeded = seed(&db, o.files, &corpus)?;
    eprintln!(
        "index: seeded {} files of {} peers in {:.1} s, straight into {} before the index started (Store::seed: one transaction, \
         the store's own join and publish; leases run {} days)",
        seeded.files,
        seeded.peers,
        seeded.took.as_secs_f64(),
        db.display(),
        SEED_LEASE.as_secs() / 86400
    );
    let setup = format!(
        "{} files of {} peers seeded, {} concurrent clients, {:.0} s per load, loopback",
        seeded.files,
        seeded.peers,
        o.clients,
        o.duration.as_secs_f64()
    );

    // Over QUIC, against the `peernet index` process, at one address for
    // both of its runs.
    eprintln!("index: {} clients for {:?} over QUIC", o.clients, o.duration);
    let bind = format!("127.0.0.1:{}", free_port()?);
    let args = [INDEX_ARGS, &["--bind", &bind]].concat();
    let index = Peer::start("index", &data_dir, None, &args)?;
    eprintln!("index: process {} serving", index.proc.pid());
    let ticket: Ticket = index.ticket.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let cpu0 = index.proc.cpu_seconds();
    let quic = rt.block_on(load(&ticket, o, &corpus, Mix::Publishing))?;
    let usage = index.proc.usage_since(cpu0);
    // How large the index's answers are, by kind, for the echo of the
    // same bytes: one client, untimed, after the timed load.
    let (sizes, sizes_words) = rt.block_on(reply_sizes(&ticket, &corpus))?;
    eprintln!("index: {} clients for {:?} over QUIC, searching only", o.clients, o.duration);
    let reads = rt.block_on(load(&ticket, o, &corpus, Mix::Searching))?;
    // A member that searches first thing after the restart.
    let searcher = rt.block_on(Searcher::join(&ticket))?;
    index.stop();

    // Restart on the full database: until the first search answers.
    let started = Instant::now();
    let index = Peer::start("index", &data_dir, None, &args)?;
    let first_hits = rt.block_on(searcher.search(&corpus))?;
    let restart = started.elapsed();
    let restarted_rss = index.proc.usage_since(0.0).peak_rss_mib;
    index.stop();

    // The same load on the request handler in this process, same database.
    let direct = rt.block_on(load_in_process(&db, o, &corpus))?;
    let sync = disk_sync(work)?;
    // And on a bare echo over iroh QUIC: of the requests, and with
    // answers as large as the index's. The server stops before an error
    // is passed on.
    let echo_load = |replies: &echo::ReplySizes| {
        let server = echo::Server::start(replies)?;
        let load = rt.block_on(load_echo(&server.addr, o, &corpus, replies));
        server.stop();
        load
    };
    let echo = echo_load(&echo::ReplySizes::new())?;
    let sized_echo = echo_load(&sizes)?;
    let tracker = match opentracker(work, o)? {
        Some((rps, p50, p99)) => Row::new("opentracker announce under wrk (reference)", rps, "req/s")
            .note(format!("p50 {p50:.2} ms, p99 {p99:.2} ms; in memory")),
        None => Row::skipped("opentracker announce under wrk (reference)", "req/s", "opentracker or wrk is not installed"),
    };

    let mix = "Publish, Search x2, Unpublish";
    let echo_row = Row::new("bare echo over iroh QUIC (transport ceiling)", echo.rate(), "req/s")
        .note(format!("{}; the same frames echoed by a separate process", echo.latency()))
        .against(&tracker);
    let ours = Row::new(format!("peernet index: {mix}, over QUIC"), quic.rate(), "req/s")
        .usage(Some(usage), None)
        .note(format!("{}; SQLite WAL, synchronous=FULL", quic.latency()))
        .against(&echo_row)
        .target(">= 0.8x the echo", |r| r.ratio.map(|x| x >= 0.8));
    let sized_echo_row = Row::new("bare echo over iroh QUIC, answers as large as the index's", sized_echo.rate(), "req/s")
        .note(format!("{}; each answer as large as the index's for its kind on average: {sizes_words}", sized_echo.latency()));
    let ours_vs_sized = Row::new("peernet index over QUIC, vs the echo of the same bytes", quic.rate(), "req/s").against(&sized_echo_row);
    let ours_vs_tracker = Row::new("peernet index over QUIC, vs opentracker", quic.rate(), "req/s")
        .against(&tracker)
        .target(">= 1.0x opentracker where the echo allows it", |r| r.ratio.map(|x| x >= 1.0));
    let p99 = Row::new("peernet index p99 latency, all requests", percentile(&quic.all, 0.99), "ms")
        .note(format!(
            "writes p50 {:.2} ms, p99 {:.2} ms (each waits for its disk sync, below); searches p99 {:.2} ms",
            percentile(&quic.writes, 0.5),
            percentile(&quic.writes, 0.99),
            percentile(&quic.searches, 0.99)
        ))
        .target("< 5 ms", |r| r.value.map(|v| v < 5.0));
    let sync_row = Row::new("disk sync: 4 KiB written and fdatasync'd, p99 (reference)", sync.1, "ms").note(format!(
        "p50 {:.2} ms over {DISK_SYNCS} syncs in the work folder: the least an acknowledged write can wait on this disk",
        sync.0
    ));
    let reads_row = Row::new("peernet index: Search only, over QUIC", reads.rate(), "req/s")
        .note(format!("{}; vocabulary words, pairs and 3-letter prefixes, nothing written", reads.latency()))
        .against(&echo_row)
        .target(">= 0.8x the echo", |r| r.ratio.map(|x| x >= 0.8));
    let search_p99 = Row::new("peernet index search p99 while the clients publish", percentile(&quic.searches, 0.99), "ms")
        .note(format!(
            "p50 {:.2} ms over {} searches, half for a file just published, half vocabulary words, pairs and 3-letter prefixes",
            percentile(&quic.searches, 0.5),
            quic.searches.len()
        ))
        .target("< 10 ms", |r| r.value.map(|v| v < 10.0));
    let restart_row = Row::new(format!("restart on {} files until the first search answers", seeded.files), restart.as_secs_f64(), "s")
        .note(format!("from starting the process; the search found {first_hits} files; {restarted_rss:.0} MiB RSS after it"))
        .target("< 10 s", |r| r.value.map(|v| v < 10.0));
    let rss = Row::new(format!("peernet index peak RSS at {} files", seeded.files), usage.peak_rss_mib, "MiB")
        .note("the index process after the QUIC load: the catalog of every file in memory, and SQLite's page cache (8 MiB)");
    let direct_row = Row::new("peernet index handler in process (no QUIC)", direct.rate(), "req/s")
        .note(format!("{}; the same SQLite work, to split the time", direct.latency()));
    let seed_row = Row::new("seeding the database (not through the protocol)", seeded.files as f64 / seeded.took.as_secs_f64(), "files/s")
        .note(format!("{} files in {:.1} s, one transaction, before the index starts", seeded.files, seeded.took.as_secs_f64()));
    Ok(Report {
        bench: "index",
        setup,
        rows: vec![
            tracker,
            echo_row,
            sized_echo_row,
            ours,
            ours_vs_sized,
            ours_vs_tracker,
            p99,
            sync_row,
            search_p99,
            reads_row,
            direct_row,
            restart_row,
            rss,
            seed_row,
        ],
    })
}

struct Seeded {
    peers: u64,
    files: u64,
    took: Duration,
}

/// Writes `files` files of up to [`SEED_PEERS`] peers into a new database
/// at `db`, the files spread evenly over the peers.
fn seed(db: &Path, files: usize, corpus: &Corpus) -> anyhow::Result<Seeded> {
    let peers = SEED_PEERS.min(files.max(1));
    let per_peer = files.div_ceil(peers);
    if per_peer > MAX_FILES_PER_PEER {
        bail!("--files {files} is more than {peers} peers may hold ({MAX_FILES_PER_PEER} each)");
    }
    let started = Instant::now();
    let mut store = Store::open(db)?;
    let mut rng = StdRng::seed_from_u64(7);
    let mut left = files;
    let seeds = (0..peers).map(|p| {
        let n = per_peer.min(left);
        left -= n;
        let id = iroh::SecretKey::from_bytes(&blake3::hash(format!("seed peer {p}").as_bytes()).into()).public();
        let files = (0..n)
            .map(|k| FileEntry {
                name: corpus.name(&mut rng),
                size: rng.random_range(1_000..4_000_000_000),
                hash: (*blake3::hash(format!("seed file {p} {k}").as_bytes()).as_bytes()).into(),
                kind: Kind::File,
            })
            .collect();
        // A documentation address: nobody dials the seeded peers.
        let addr = PeerAddr { id, ip: vec![format!("192.0.2.{}:{}", p % 250 + 1, 1024 + p).parse().expect("an address")], relay: None };
        SeedPeer { addr, nickname: format!("seed{p}"), files }
    });
    let count = store.seed(seeds, peernet_index::now_ms(), SEED_LEASE.as_millis() as u64)?;
    Ok(Seeded { peers: count.peers, files: count.files, took: started.elapsed() })
}

/// A member whose first request after the index restarts is a search.
struct Searcher {
    client: IndexClient,
    endpoint: iroh::Endpoint,
}

impl Searcher {
    async fn join(ticket: &Ticket) -> anyhow::Result<Self> {
        let (endpoint, client) = client(ticket).await?;
        client.join("restart").await?;
        Ok(Self { client, endpoint })
    }

    /// Searches the restarted index (at the same address), retrying while
    /// it does not answer yet; returns the hits' count.
    async fn search(self, corpus: &Corpus) -> anyhow::Result<usize> {
        let query = corpus.word(&mut StdRng::seed_from_u64(1)).to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        let hits = loop {
            match self.client.request(Request::Search { query: query.clone(), limit: SEARCH_LIMIT }).await {
                Ok(Response::Hits(hits)) => break hits.len(),
                Ok(other) => bail!("the restarted index answered a search with {other:?}"),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("index: not answering yet after the restart: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => bail!("the restarted index never answered a search: {e}"),
            }
        };
        self.endpoint.close().await;
        Ok(hits)
    }
}

/// A client of the index at `ticket` on an endpoint of its own, as real
/// peers have.
pub async fn client(ticket: &Ticket) -> anyhow::Result<(iroh::Endpoint, IndexClient)> {
    let (ep, lookup) = echo::endpoint(vec![]).await?;
    peernet_node::endpoint::remember(&lookup, &ticket.index);
    let me = PeerAddr { id: ep.id(), ip: ep.bound_sockets(), relay: None };
    let client = IndexClient::remote(ep.clone(), me, ticket.index.clone(), ticket.network_key);
    Ok((ep, client))
}

/// Sends one request as one client, over whatever path is being measured;
/// `None` where there is no answer to check (the echo).
type Sender = Arc<dyn Fn(usize, Request) -> Pending + Send + Sync>;
type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Option<Response>>> + Send>>;

/// What one load did: each latency in microseconds, all, searches only
/// and writes (publish, unpublish) only.
#[derive(Default)]
struct Load {
    elapsed: Duration,
    all: Vec<u64>,
    searches: Vec<u64>,
    writes: Vec<u64>,
}

/// What the clients ask.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mix {
    /// Publish a new file, search for it, search the vocabulary, unshare
    /// the oldest beyond [`HELD_FILES`].
    Publishing,
    /// Search the vocabulary only.
    Searching,
}

impl Load {
    fn rate(&self) -> f64 {
        self.all.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn latency(&self) -> String {
        format!("p50 {:.2} ms, p99 {:.2} ms", percentile(&self.all, 0.50), percentile(&self.all, 0.99))
    }
}

/// Every client over QUIC, each with its own endpoint, as real peers do.
async fn load(ticket: &Ticket, o: &Options, corpus: &Arc<Corpus>, mix: Mix) -> anyhow::Result<Load> {
    let mut endpoints = Vec::new();
    let mut clients = Vec::new();
    let tag = if mix == Mix::Publishing { 'q' } else { 'r' };
    for i in 0..o.clients {
        let (ep, client) = client(ticket).await?;
        client.join(&format!("bench{tag}{i}")).await.with_context(|| format!("client {i} could not join"))?;
        endpoints.push(ep);
        clients.push(client);
    }
    let clients = Arc::new(clients);
    let send: Sender = Arc::new(move |i, request| {
        let clients = clients.clone();
        Box::pin(async move { Ok(Some(clients[i].request(request).await?)) })
    });
    let result = drive(tag, mix, o, corpus, send).await;
    for ep in endpoints {
        ep.close().await;
    }
    result
}

/// The same clients calling the index's request handler in this process:
/// SQLite and the group commit without QUIC, to show where the time goes.
async fn load_in_process(db: &Path, o: &Options, corpus: &Arc<Corpus>) -> anyhow::Result<Load> {
    let key = peernet_proto::key::NetworkKey::generate();
    let me = iroh::SecretKey::generate().public();
    let store = Store::open(db)?;
    let service = Arc::new(peernet_index::Service::new(store, key, me, Default::default()));
    let mut ids = Vec::new();
    for i in 0..o.clients {
        let id = iroh::SecretKey::generate().public();
        let join = peernet_proto::index::Join {
            // Not the QUIC clients' names: their leases may still run.
            nickname: format!("direct{i}"),
            proof: key.join_proof(&id, &me),
            addr: PeerAddr { id, ip: vec![], relay: None },
        };
        let joined = service.call(id, Request::Join(join), peernet_index::now_ms()).await;
        if !matches!(joined, Response::Joined { .. }) {
            bail!("client {i} could not join: {joined:?}");
        }
        ids.push(id);
    }
    let send: Sender = Arc::new(move |i, request| {
        let (service, id) = (service.clone(), ids[i]);
        Box::pin(async move {
            match service.call(id, request, peernet_index::now_ms()).await {
                Response::Error { message, .. } => bail!("{message}"),
                other => Ok(Some(other)),
            }
        })
    });
    drive('h', Mix::Publishing, o, corpus, send).await
}

/// How long [`reply_sizes`] asks.
const SIZING: Duration = Duration::from_secs(2);

/// The mean size of the index's answer frames, by kind of request, over
/// one client running the publishing mix for [`SIZING`]; and the same as
/// words for the report.
async fn reply_sizes(ticket: &Ticket, corpus: &Arc<Corpus>) -> anyhow::Result<(echo::ReplySizes, String)> {
    let (ep, client) = client(ticket).await?;
    client.join("sizing").await?;
    // kind -> (its name, bytes in all, answers)
    type Tally = std::collections::BTreeMap<u8, (&'static str, usize, usize)>;
    let seen = Arc::new(std::sync::Mutex::new(Tally::new()));
    let tally = seen.clone();
    let send: Sender = Arc::new(move |_, request| {
        let (client, tally) = (client.clone(), tally.clone());
        Box::pin(async move {
            let kind = echo::kind(&frame::encode(&request, MAX_REQUEST_FRAME)?);
            let name = match request {
                Request::Search { .. } => "search",
                Request::Publish { .. } => "publish",
                Request::Unpublish { .. } => "unpublish",
                _ => "other",
            };
            let response = client.request(request).await?;
            let len = frame::encode(&response, MAX_RESPONSE_FRAME)?.len();
            let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
            let (_, sum, count) = tally.entry(kind).or_insert((name, 0, 0));
            (*sum, *count) = (*sum + len, *count + 1);
            Ok(Some(response))
        })
    });
    let one = Options { clients: 1, duration: SIZING, files: 0 };
    drive('s', Mix::Publishing, &one, corpus, send).await?;
    ep.close().await;
    let tally = seen.lock().unwrap_or_else(|e| e.into_inner());
    let sizes = tally.iter().map(|(&kind, &(_, sum, count))| (kind, sum / count)).collect();
    let words = tally.values().map(|&(name, sum, count)| format!("{name} {} B", sum / count)).collect::<Vec<_>>().join(", ");
    Ok((sizes, words))
}

/// The same clients and frames against the echo server, whose answers to
/// the kinds in `replies` are that many bytes.
async fn load_echo(server: &PeerAddr, o: &Options, corpus: &Arc<Corpus>, replies: &echo::ReplySizes) -> anyhow::Result<Load> {
    let mut endpoints = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..o.clients {
        let (ep, _) = echo::endpoint(vec![]).await?;
        conns.push(ep.connect(server.to_endpoint_addr(), echo::ALPN).await.context("connecting to the echo server")?);
        endpoints.push(ep);
    }
    let (conns, replies) = (Arc::new(conns), Arc::new(replies.clone()));
    let send: Sender = Arc::new(move |i, request| {
        let (conns, replies) = (conns.clone(), replies.clone());
        Box::pin(async move {
            echo::exchange(&conns[i], &request, &replies).await?;
            Ok(None)
        })
    });
    let result = drive('e', Mix::Publishing, o, corpus, send).await;
    for ep in endpoints {
        ep.close().await;
    }
    result
}

/// The clients' loop, each client its own task, asking what `mix` says;
/// every request timed.
async fn drive(tag: char, mix: Mix, o: &Options, corpus: &Arc<Corpus>, send: Sender) -> anyhow::Result<Load> {
    let start = Instant::now();
    let deadline = start + o.duration;
    let mut tasks = Vec::new();
    for i in 0..o.clients {
        let (send, corpus) = (send.clone(), corpus.clone());
        tasks.push(tokio::spawn(async move {
            let mut load = Load::default();
            let mut rng = StdRng::seed_from_u64(1000 + i as u64);
            let mut k = 0u64;
            let mut held = std::collections::VecDeque::new();
            let mut timed = async |request: Request| {
                let search = matches!(request, Request::Search { .. });
                let t = Instant::now();
                let response = send(i, request).await;
                let took = t.elapsed().as_micros() as u64;
                load.all.push(took);
                if search { &mut load.searches } else { &mut load.writes }.push(took);
                response
            };
            while Instant::now() < deadline {
                if mix == Mix::Searching {
                    let found = timed(Request::Search { query: corpus.query(&mut rng), limit: SEARCH_LIMIT }).await?;
                    if found.as_ref().is_some_and(|r| !matches!(r, Response::Hits(_))) {
                        bail!("a search answered {found:?}");
                    }
                    continue;
                }
                k += 1;
                // A word no other file has, nor starts with (the run's tag
                // keeps the runs on one database apart), to find it by.
                let word = format!("{tag}{i}x{k}z");
                let entry = FileEntry {
                    name: format!("{} {word}.bin", corpus.name(&mut rng).rsplit_once('.').map_or("", |(stem, _)| stem)),
                    size: k,
                    hash: (*blake3::hash(word.as_bytes()).as_bytes()).into(),
                    kind: Kind::File,
                };
                let published = timed(Request::Publish { files: vec![entry.clone()] }).await?;
                if published.as_ref().is_some_and(|r| !matches!(r, Response::Published { .. })) {
                    bail!("publish answered {published:?}");
                }
                let found = timed(Request::Search { query: word, limit: 10 }).await?;
                if found.as_ref().is_some_and(|r| !matches!(r, Response::Hits(hits) if hits.len() == 1)) {
                    bail!("search for a file just published answered {found:?}");
                }
                let query = corpus.query(&mut rng);
                let found = timed(Request::Search { query, limit: SEARCH_LIMIT }).await?;
                if found.as_ref().is_some_and(|r| !matches!(r, Response::Hits(_))) {
                    bail!("a search answered {found:?}");
                }
                // Files come and go: keep each client well under the
                // per-peer limit however long the run is.
                held.push_back(entry.hash);
                if held.len() > HELD_FILES {
                    let hash = held.pop_front().expect("not empty");
                    timed(Request::Unpublish { hash }).await?;
                }
            }
            anyhow::Ok(load)
        }));
    }
    let mut load = Load::default();
    for t in tasks {
        let one = t.await??;
        load.all.extend(one.all);
        load.searches.extend(one.searches);
        load.writes.extend(one.writes);
    }
    load.elapsed = start.elapsed();
    for v in [&mut load.all, &mut load.searches, &mut load.writes] {
        v.sort_unstable();
    }
    Ok(load)
}

/// Disk syncs timed by [`disk_sync`].
const DISK_SYNCS: usize = 200;

/// This disk's sync latency where the bench's databases live: 4 KiB
/// appended and `fdatasync`ed, [`DISK_SYNCS`] times, as SQLite's WAL does
/// at each commit. Returns (p50, p99) in milliseconds.
fn disk_sync(work: &Path) -> anyhow::Result<(f64, f64)> {
    use std::io::Write;
    let path = work.join("disk-sync-probe");
    let mut file = std::fs::File::create(&path)?;
    let mut took = Vec::with_capacity(DISK_SYNCS);
    for _ in 0..DISK_SYNCS {
        file.write_all(&[7u8; 4096])?;
        let t = Instant::now();
        file.sync_data()?;
        took.push(t.elapsed().as_micros() as u64);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    took.sort_unstable();
    Ok((percentile(&took, 0.5), percentile(&took, 0.99)))
}

/// Milliseconds at quantile `q` of sorted microsecond latencies.
pub fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}
/// opentracker's announce (register + peer list) under wrk: requests/s,
/// p50 and p99 in ms.
fn opentracker(work: &Path, o: &Options) -> anyhow::Result<Option<(f64, f64, f64)>> {
    if !installed("opentracker") || !installed("wrk") {
        return Ok(None);
    }
    let dir = work.join("tracker");
    std::fs::create_dir_all(&dir)?;
    let info_hash = [0x5au8; 20];
    let port = free_port()?;
    let _tracker = crate::refs::opentracker(&dir, port, &info_hash)?;
    // Each request announces a new peer (random id and port) for the
    // whitelisted torrent and gets the peer list back.
    let escaped = crate::refs::url_escaped(&info_hash);
    let script = format!(
        "math.randomseed(os.time())\n\
         request = function()\n\
           local id = string.format('-PB0001-%012d', math.random(0, 999999999999))\n\
           local path = '/announce?info_hash={escaped}&peer_id=' .. id .. '&port=' .. math.random(1024, 65000) .. '&uploaded=0&downloaded=0&left=1000&compact=1&numwant=50'\n\
           return wrk.format('GET', path)\n\
         end\n"
    );
    std::fs::write(dir.join("announce.lua"), script)?;
    let out = Command::new("wrk")
        .args(["-t", "2", "-c", &o.clients.max(2).to_string(), "-d", &format!("{}s", o.duration.as_secs().max(1)), "--latency", "-s"])
        .arg(dir.join("announce.lua"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("could not read wrk's output:\n{text}")).map(Some)
}

/// Requests/s, p50 and p99 (ms) from `wrk --latency` output.
fn parse_wrk(text: &str) -> Option<(f64, f64, f64)> {
    let ms = |v: &str| -> Option<f64> {
        if let Some(x) = v.strip_suffix("us") {
            x.parse::<f64>().ok().map(|x| x / 1000.0)
        } else if let Some(x) = v.strip_suffix("ms") {
            x.parse().ok()
        } else {
            v.strip_suffix('s')?.parse::<f64>().ok().map(|x| x * 1000.0)
        }
    };
    let field = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_string()));
    let rps = field("Requests/sec:")?.parse().ok()?;
    let errors = text.lines().any(|l| l.contains("Non-2xx"));
    if errors {
        return None;
    }
    Some((rps, ms(&field("50%")?)?, ms(&field("99%")?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "  Latency Distribution\n     50%  812.00us\n     75%    1.20ms\n     90%    2.00ms\n     99%    4.40ms\n  237000 requests in 10.00s, 20MB read\nRequests/sec:  23700.12\nTransfer/sec:      2.00MB\n";
        assert_eq!(parse_wrk(text), Some((23700.12, 0.812, 4.4)));
        assert_eq!(parse_wrk(&format!("{text}  Non-2xx or 3xx responses: 5\n")), None);
    }

    #[test]
    fn percentiles_of_microseconds_are_milliseconds() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
    }
}
