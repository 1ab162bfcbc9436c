//! `dht`: a local DHT of N mainline nodes on loopback (n0-mainline in
//! server mode, as `peernet up --dht` runs it): how long a signed announce
//! takes, and how long another node takes to find the provider under
//! peernet's derived key, beside the same question asked of a `peernet
//! index` process over QUIC.

use std::{
    net::SocketAddrV4,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use n0_future::StreamExt;
use n0_mainline::{Dht, Id};
use peernet_node::index_client::IndexClient;
use peernet_proto::{
    index::{FileEntry, Kind, Request, Response},
    key::NetworkKey,
    ticket::Ticket,
};

use crate::{
    index::percentile,
    peers::Peer,
    report::{Report, Row},
};

/// Longest one lookup may take before it counts as not found.
const LOOKUP_LIMIT: Duration = Duration::from_secs(10);

pub struct Options {
    pub nodes: usize,
    pub lookups: usize,
}

pub fn run(work: &Path, o: &Options, rt: &tokio::runtime::Runtime) -> anyhow::Result<Report> {
    if o.nodes < 2 {
        bail!("a DHT bench needs at least 2 nodes");
    }
    eprintln!("dht: {} nodes, {} lookups", o.nodes, o.lookups);
    let (announce, found, missed, start) = rt.block_on(dht(o))?;
    let index = index_lookups(work, o, rt)?;
    let index_row = Row::new("index lookup by hash over QUIC (reference)", percentile(&index, 0.5), "ms").note(format!(
        "p50; p99 {:.2} ms; one peernet index process, {} lookups",
        percentile(&index, 0.99),
        index.len()
    ));
    let found_row = Row::new(format!("DHT: provider found by another node, {} nodes", o.nodes), percentile(&found, 0.5), "ms")
        .against(&index_row)
        .note(format!(
            "p50; p99 {:.2} ms; {} of {} found within {:?}; peernet's derived keys, signed announces",
            percentile(&found, 0.99),
            found.len(),
            o.lookups,
            LOOKUP_LIMIT
        ))
        .target("every provider found", |_| Some(missed == 0));
    let announce_row = Row::new("DHT: signed announce stored", percentile(&announce, 0.5), "ms")
        .note(format!("p50; p99 {:.2} ms", percentile(&announce, 0.99)));
    let start_row = Row::new(format!("DHT: {} nodes started and bootstrapped", o.nodes), start.as_secs_f64() * 1000.0, "ms");
    Ok(Report {
        bench: "dht",
        setup: format!("{} DHT nodes on loopback in one process, {} lookups", o.nodes, o.lookups),
        rows: vec![index_row, found_row, announce_row, start_row],
    })
}

/// Microsecond latencies of announces and of successful lookups, the
/// lookups that found nothing, and the start-up time.
async fn dht(o: &Options) -> anyhow::Result<(Vec<u64>, Vec<u64>, usize, Duration)> {
    let started = Instant::now();
    let mut nodes: Vec<Dht> = Vec::new();
    let mut seed: Option<SocketAddrV4> = None;
    for _ in 0..o.nodes {
        let mut builder = Dht::builder();
        builder.server_mode().port(0);
        match seed {
            // The first node knows nobody and learns whoever contacts it.
            None => builder.no_bootstrap(),
            Some(addr) => builder.bootstrap(&[addr]),
        };
        let node = builder.build().context("binding a DHT node")?;
        if seed.is_none() {
            seed = Some(SocketAddrV4::new([127, 0, 0, 1].into(), node.info().await?.local_addr().port()));
        }
        nodes.push(node);
    }
    for node in &nodes {
        node.bootstrapped().await?;
    }
    let start = started.elapsed();
    let key = NetworkKey::generate();
    let (mut announce, mut found, mut missed) = (Vec::new(), Vec::new(), 0);
    for i in 0..o.lookups {
        // Any other node than the provider, spread over the DHT.
        let n = nodes.len();
        let provider = &nodes[i % n];
        let searcher = &nodes[(i + 1 + (i * 7) % (n - 1)) % n];
        let signer = iroh::SecretKey::generate();
        let target = Id::from(peernet_proto::dht::file_key(&key, &iroh_blobs::Hash::new(format!("file {i}"))));
        let t = Instant::now();
        provider.announce_signed_peer(target, signer.as_signing_key()).await?;
        announce.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        let want = *signer.public().as_bytes();
        let mut stream = searcher.get_signed_peers(target).await?;
        let deadline = tokio::time::Instant::now() + LOOKUP_LIMIT;
        let mut hit = false;
        while let Ok(Some(batch)) = tokio::time::timeout_at(deadline, stream.next()).await {
            if batch.iter().any(|a| *a.key() == want) {
                hit = true;
                break;
            }
        }
        if hit {
            found.push(t.elapsed().as_micros() as u64);
        } else {
            missed += 1;
        }
    }
    found.sort();
    announce.sort();
    Ok((announce, found, missed, start))
}

/// The reference: a client asks a `peernet index` process for files by
/// their whole hash, which another client published.
fn index_lookups(work: &Path, o: &Options, rt: &tokio::runtime::Runtime) -> anyhow::Result<Vec<u64>> {
    let index = Peer::start("index", &work.join("index"), None, &["index", "--bind", "127.0.0.1:0"])?;
    let ticket: Ticket = index.ticket.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let result = rt.block_on(async {
        let publisher = client(&ticket, "publisher").await?;
        let searcher = client(&ticket, "searcher").await?;
        let files: Vec<FileEntry> = (0..o.lookups)
            .map(|i| FileEntry {
                name: format!("file-{i}.bin"),
                size: 1,
                hash: iroh_blobs::Hash::new(format!("file {i}")),
                kind: Kind::File,
            })
            .collect();
        for chunk in files.chunks(peernet_proto::limits::MAX_FILES_PER_PUBLISH) {
            publisher.1.publish(chunk).await?;
        }
        let mut latencies = Vec::new();
        for f in &files {
            let t = Instant::now();
            match searcher.1.request(Request::Search { query: f.hash.to_hex().to_string(), limit: 10 }).await? {
                Response::Hits(hits) if hits.len() == 1 => latencies.push(t.elapsed().as_micros() as u64),
                other => bail!("the index answered a lookup by hash with {other:?}"),
            }
        }
        publisher.0.close().await;
        searcher.0.close().await;
        latencies.sort();
        anyhow::Ok(latencies)
    });
    index.stop();
    result
}

async fn client(ticket: &Ticket, name: &str) -> anyhow::Result<(iroh::Endpoint, IndexClient)> {
    let (ep, client) = crate::index::client(ticket).await?;
    client.join(name).await.with_context(|| format!("{name} could not join the index"))?;
    Ok((ep, client))
}
