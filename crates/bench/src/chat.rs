//! `chat`: N peers in one network, M messages sent from peers in turn;
//! how many arrived everywhere, how long they took, and memory per peer.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::{
    index::percentile,
    peers::Peer,
    report::{Report, Row},
};

pub struct Options {
    pub peers: usize,
    pub messages: usize,
}

/// How long everyone may take to see everyone, and to receive the messages.
const SETTLE: Duration = Duration::from_secs(180);
const DELIVERY: Duration = Duration::from_secs(60);

pub fn run(work: &Path, o: &Options) -> anyhow::Result<Report> {
    let n = o.peers.max(2);
    eprintln!("chat: starting {n} peers");
    let host = Peer::start("p0", &work.join("p0"), None, &["up", "--bind", "127.0.0.1:0", "--nick", "p0"])?;
    let mut peers = vec![];
    for i in 1..n {
        let name = format!("p{i}");
        peers.push(Peer::start(&name, &work.join(&name), None, &["up", "--bind", "127.0.0.1:0", "--nick", &name, "--join", &host.ticket])?);
    }
    peers.insert(0, host);
    let ids: Vec<String> = peers.iter().map(|p| Ok(p.json(&["status"])?["id"].as_str().context("status has an id")?.to_string())).collect::<anyhow::Result<_>>()?;

    eprintln!("chat: waiting until every peer sees all {n}");
    let settle = Instant::now();
    crate::wait_for(SETTLE, "every peer to see every other in the room", || {
        for p in &peers {
            let who = p.json(&["who"])?;
            let online = who.as_array().map(|a| a.iter().filter(|m| m["online"] == true).count()).unwrap_or(0);
            if online < n {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    let settled = settle.elapsed();

    eprintln!("chat: sending {} messages", o.messages);
    let texts: Vec<String> = (0..o.messages).map(|k| format!("bench message {k}")).collect();
    for (k, text) in texts.iter().enumerate() {
        peers[k % n].ok(&["say", text])?;
    }
    // Delivered: each message at each peer other than its author.
    let expected = o.messages * (n - 1);
    let mut latencies = Vec::new();
    let deadline = Instant::now() + DELIVERY;
    loop {
        latencies.clear();
        for (i, p) in peers.iter().enumerate() {
            let got = p.json(&["messages"])?;
            for m in got.as_array().into_iter().flatten() {
                let text = m["text"].as_str().unwrap_or_default();
                if m["author"] != ids[i].as_str() && texts.iter().any(|t| t == text) {
                    let (sent, received) = (m["sent_at_ms"].as_u64().unwrap_or(0), m["received_at_ms"].as_u64().unwrap_or(0));
                    latencies.push(received.saturating_sub(sent) * 1000);
                }
            }
        }
        if latencies.len() >= expected || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    latencies.sort();
    let rss: Vec<f64> = peers.iter().filter_map(|p| crate::procs::peak_rss_mib(p.proc.pid())).collect();
    let mean_rss = rss.iter().sum::<f64>() / rss.len().max(1) as f64;
    let max_rss = rss.iter().cloned().fold(0.0, f64::max);
    for p in peers {
        p.stop();
    }
    let ratio = latencies.len() as f64 / expected as f64 * 100.0;
    Ok(Report {
        bench: "chat",
        setup: format!("{n} peers, {} messages, loopback; everyone saw everyone after {:.1} s", o.messages, settled.as_secs_f64()),
        rows: vec![
            Row::new("messages delivered", ratio, "%")
                .note(format!("{} of {expected}", latencies.len()))
                .target("100%", |r| r.value.map(|v| v >= 100.0)),
            Row::new("delivery latency p50", percentile(&latencies, 0.5), "ms"),
            Row::new("delivery latency p99", percentile(&latencies, 0.99), "ms").target("< 100 ms", |r| r.value.map(|v| v < 100.0)),
            Row::new("peak RSS per peer, mean", mean_rss, "MiB").note(format!("largest {max_rss:.0} MiB")),
        ],
    })
}
