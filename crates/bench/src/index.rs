//! `index`: N concurrent clients, each publishing a new file and then
//! searching for it (and, once it holds [`HELD_FILES`], unsharing its
//! oldest), against a durable `peernet index` process for a fixed
//! time; beside opentracker's HTTP announce under wrk at the same
//! concurrency.

use std::{
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use peernet_node::index_client::IndexClient;
use peernet_proto::{
    index::{FileEntry, Kind, PeerAddr, Request, Response},
    ticket::Ticket,
};

use crate::{
    peers::Peer,
    procs::{free_port, installed},
    report::{Report, Row},
};

/// Files each client keeps registered; beyond this it unshares its oldest
/// after each publish (one more request, also counted).
const HELD_FILES: usize = 500;

pub struct Options {
    pub clients: usize,
    pub duration: Duration,
}

pub fn run(work: &Path, o: &Options, rt: &tokio::runtime::Runtime) -> anyhow::Result<Report> {
    eprintln!("index: {} clients for {:?}", o.clients, o.duration);
    let index = Peer::start(
        "index",
        &work.join("index"),
        None,
        &[
            "index",
            "--bind",
            "127.0.0.1:0",
            // The bench measures the index, not its budgets: all its clients
            // come from loopback and send as fast as they can.
            "--index-rate",
            "1000000/1000000",
            "--keys-per-address",
            "1000000",
        ],
    )?;
    let ticket: Ticket = index.ticket.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let cpu0 = index.proc.cpu_seconds();
    let (count, elapsed, mut latencies) = rt.block_on(load(&ticket, o))?;
    let usage = index.proc.usage_since(cpu0);
    index.stop();
    latencies.sort();
    let ours_rps = count as f64 / elapsed.as_secs_f64();
    let ours = Row::new("peernet index: Publish, Search, Unpublish", ours_rps, "req/s").usage(Some(usage), None).note(format!(
        "p50 {:.2} ms, p99 {:.2} ms; SQLite WAL, synchronous=FULL",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    ));
    let (count, elapsed, mut direct) = rt.block_on(load_in_process(&work.join("direct.db"), o))?;
    direct.sort();
    let direct = Row::new("peernet index handler in process (no QUIC)", count as f64 / elapsed.as_secs_f64(), "req/s").note(format!(
        "p50 {:.2} ms, p99 {:.2} ms; the same SQLite work, to split the time",
        percentile(&direct, 0.50),
        percentile(&direct, 0.99)
    ));
    let p99 = Row::new("peernet index p99 latency", percentile(&latencies, 0.99), "ms").target("< 5 ms", |r| r.value.map(|v| v < 5.0));
    let tracker = match opentracker(work, o)? {
        Some((rps, p50, p99)) => Row::new("opentracker announce under wrk (reference)", rps, "req/s")
            .note(format!("p50 {p50:.2} ms, p99 {p99:.2} ms; in memory")),
        None => Row::skipped("opentracker announce under wrk (reference)", "req/s", "opentracker or wrk is not installed"),
    };
    let ours = ours.against(&tracker).target(">= 1.0x opentracker", |r| r.ratio.map(|x| x >= 1.0));
    Ok(Report {
        bench: "index",
        setup: format!("{} concurrent clients, {:.0} s, loopback", o.clients, o.duration.as_secs_f64()),
        rows: vec![tracker, ours, p99, direct],
    })
}

/// Sends one request as one client, over whatever path is being measured.
type Sender = Arc<dyn Fn(usize, Request) -> Pending + Send + Sync>;
type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Response>> + Send>>;

/// Requests done, the time they took, and each latency in microseconds.
type Load = (usize, Duration, Vec<u64>);

/// Every client over QUIC, each with its own endpoint, as real peers do.
async fn load(ticket: &Ticket, o: &Options) -> anyhow::Result<Load> {
    let mut endpoints = Vec::new();
    let mut clients = Vec::new();
    for i in 0..o.clients {
        let (ep, lookup) = peernet_node::endpoint::bind(peernet_node::endpoint::EndpointConfig {
            secret_key: iroh::SecretKey::generate(),
            bind: "127.0.0.1:0".parse()?,
            relay: None,
            alpns: vec![],
            congestion: Default::default(),
        })
        .await?;
        peernet_node::endpoint::remember(&lookup, &ticket.index);
        let me = PeerAddr { id: ep.id(), ip: ep.bound_sockets(), relay: None };
        let client = IndexClient::remote(ep.clone(), me, ticket.index.clone(), ticket.network_key);
        client.join(&format!("bench{i}")).await.with_context(|| format!("client {i} could not join"))?;
        endpoints.push(ep);
        clients.push(client);
    }
    let clients = Arc::new(clients);
    let send: Sender = Arc::new(move |i, request| {
        let clients = clients.clone();
        Box::pin(async move { Ok(clients[i].request(request).await?) })
    });
    let result = drive(o, send).await;
    for ep in endpoints {
        ep.close().await;
    }
    result
}

/// The same clients calling the index's request handler in this process:
/// SQLite and the group commit without QUIC, to show where the time goes.
async fn load_in_process(db: &Path, o: &Options) -> anyhow::Result<Load> {
    let key = peernet_proto::key::NetworkKey::generate();
    let me = iroh::SecretKey::generate().public();
    let store = peernet_index::store::Store::open(db)?;
    let service = Arc::new(peernet_index::Service::new(store, key, me, Default::default()));
    let mut ids = Vec::new();
    for i in 0..o.clients {
        let id = iroh::SecretKey::generate().public();
        let join = peernet_proto::index::Join {
            nickname: format!("bench{i}"),
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
                other => Ok(other),
            }
        })
    });
    drive(o, send).await
}

/// The clients' loop, each client its own task: publish a new file, search
/// for it, and unshare the oldest beyond [`HELD_FILES`]; every request timed.
async fn drive(o: &Options, send: Sender) -> anyhow::Result<Load> {
    let start = Instant::now();
    let deadline = start + o.duration;
    let mut tasks = Vec::new();
    for i in 0..o.clients {
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut k = 0u64;
            let mut held = std::collections::VecDeque::new();
            let mut timed = async |request| {
                let t = Instant::now();
                let response = send(i, request).await;
                mine.push(t.elapsed().as_micros() as u64);
                response
            };
            while Instant::now() < deadline {
                k += 1;
                let word = format!("x{i}y{k}");
                let entry = FileEntry {
                    name: format!("bench-{word}.bin"),
                    size: k,
                    hash: (*blake3::hash(word.as_bytes()).as_bytes()).into(),
                    kind: Kind::File,
                };
                let published = timed(Request::Publish { files: vec![entry.clone()] }).await?;
                if !matches!(published, Response::Published { .. }) {
                    bail!("publish answered {published:?}");
                }
                let found = timed(Request::Search { query: word, limit: 10 }).await?;
                if !matches!(&found, Response::Hits(hits) if hits.len() == 1) {
                    bail!("search for a file just published answered {found:?}");
                }
                // Files come and go: keep each client well under the
                // per-peer limit however long the run is.
                held.push_back(entry.hash);
                if held.len() > HELD_FILES {
                    let hash = held.pop_front().expect("not empty");
                    timed(Request::Unpublish { hash }).await?;
                }
            }
            anyhow::Ok(mine)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok((latencies.len(), start.elapsed(), latencies))
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
