//! `chat`: N peers in one network, M messages sent from peers in turn;
//! how many arrived everywhere, how long they took, and memory per peer.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use peernet_node::control::{client::ControlClient, SayRequest};

use crate::{
    index::percentile,
    peers::Peer,
    report::{Report, Row},
};

pub struct Options {
    pub peers: usize,
    pub messages: usize,
    /// Messages per second across the room.
    pub rate: f64,
    /// A smaller room measured first, idle, to compare each peer's idle
    /// cost with the full room's (skipped when not smaller).
    pub compare_at: usize,
}

/// How long everyone may take to see everyone, and to receive the messages.
const SETTLE: Duration = Duration::from_secs(600);
const DELIVERY: Duration = Duration::from_secs(60);
/// How long a full room is left alone before anything is measured, per
/// peer (10 s for 50).
const WARM_UP_PER_PEER: Duration = Duration::from_millis(200);
/// How long the quiet room is watched, per peer and at least: a larger
/// room sends its presences further apart, so it is watched longer (40 s
/// for 200 peers, several presences from each). An idle room's CPU comes in
/// bursts (presences, keep-alives, shuffles): over 5 s, one room of 50 read
/// anywhere from 0.13 to 0.33 cores, so a short window says little.
const IDLE_SAMPLE_PER_PEER: Duration = Duration::from_millis(200);
const IDLE_SAMPLE_MIN: Duration = Duration::from_secs(20);

/// A quiet room's CPU (presence, heartbeats, QUIC keep-alives), with the
/// peer hosting the index apart: it also answers every heartbeat, so the
/// room's mean per peer hides what a member costs.
struct Idle {
    cores: f64,
    /// The index host's and a member's mean, in millicores.
    host: f64,
    member: f64,
}

fn idle(peers: &[Peer]) -> Idle {
    let cpu = || peers.iter().map(|p| p.proc.cpu_seconds()).collect::<Vec<f64>>();
    let (before, since) = (cpu(), Instant::now());
    std::thread::sleep((IDLE_SAMPLE_PER_PEER * peers.len() as u32).max(IDLE_SAMPLE_MIN));
    let secs = since.elapsed().as_secs_f64();
    let used: Vec<f64> = cpu().iter().zip(&before).map(|(after, before)| (after - before) / secs).collect();
    let members = &used[1..];
    Idle { cores: used.iter().sum(), host: used[0] * 1000.0, member: members.iter().sum::<f64>() / members.len().max(1) as f64 * 1000.0 }
}

/// The mean number of live QUIC connections per member, all and overlay
/// only (each is a keep-alive every 5 s both ways while idle).
fn connections(apis: &[ControlClient], rt: &tokio::runtime::Runtime) -> anyhow::Result<(f64, f64)> {
    let (mut all, mut overlay) = (0usize, 0usize);
    for api in &apis[1..] {
        let status: serde_json::Value = rt.block_on(api.get("/v1/status", &[]))?;
        for (alpn, count) in status["connections"].as_object().into_iter().flatten() {
            let count = count.as_u64().unwrap_or(0) as usize;
            all += count;
            if alpn.contains("gossip") {
                overlay += count;
            }
        }
    }
    let members = (apis.len() - 1).max(1) as f64;
    Ok((all as f64 / members, overlay as f64 / members))
}

/// Waits until every peer sees `n` members online, asking each daemon's
/// control API (a process per question would load the machine), then lets
/// the room settle; returns how long everyone took to see everyone.
fn settle(apis: &[ControlClient], n: usize, rt: &tokio::runtime::Runtime) -> anyhow::Result<Duration> {
    eprintln!("chat: waiting until every peer sees all {n}");
    let started = Instant::now();
    crate::wait_for(SETTLE, &format!("every peer to see all {n} in the room"), || {
        for api in apis {
            let who: serde_json::Value = rt.block_on(api.get("/v1/who", &[]))?;
            let online = who.as_array().map(|a| a.iter().filter(|m| m["online"] == true).count()).unwrap_or(0);
            if online < n {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    let settled = started.elapsed();
    // A room that has just filled is still arranging its overlay (new
    // links, the broadcast tree forming); measure one that has been up a
    // little while, as a room people talk in has.
    std::thread::sleep(WARM_UP_PER_PEER * n as u32);
    Ok(settled)
}

pub fn run(work: &Path, o: &Options, rt: &tokio::runtime::Runtime) -> anyhow::Result<Report> {
    let n = o.peers.max(2);
    let first = if (2..n).contains(&o.compare_at) { o.compare_at } else { n };
    eprintln!("chat: starting {first} peers");
    let started = Instant::now();
    let host = Peer::start(
        "p0",
        &work.join("p0"),
        None,
        &[
            "up",
            "--bind",
            "127.0.0.1:0",
            "--nick",
            "p0",
            // Every peer of the room comes from loopback.
            "--keys-per-address",
            "100000",
        ],
    )?;
    let ticket = host.ticket.clone();
    let mut peers = vec![host];
    peers.extend(Peer::join_many(work, "p", 1, first - 1, &ticket)?);
    let mut apis: Vec<ControlClient> = peers.iter().map(|p| ControlClient::connect(&p.data_dir)).collect::<Result<_, _>>()?;
    let small = if first < n {
        settle(&apis, first, rt)?;
        let small = idle(&peers);
        let cores = small.cores;
        eprintln!("chat: {first} peers idle: {cores:.3} cores; a member {:.2} millicores, the index host {:.1}", small.member, small.host);
        eprintln!("chat: starting {} more peers", n - first);
        peers.extend(Peer::join_many(work, "p", first, n - first, &ticket)?);
        apis = peers.iter().map(|p| ControlClient::connect(&p.data_dir)).collect::<Result<_, _>>()?;
        Some(small)
    } else {
        None
    };
    let start_time = started.elapsed();
    let settled = settle(&apis, n, rt)?;
    let ids: Vec<String> = peers
        .iter()
        .map(|p| Ok(p.json(&["status"])?["id"].as_str().context("status has an id")?.to_string()))
        .collect::<anyhow::Result<_>>()?;
    let room = idle(&peers);
    let idle_cores = room.cores;
    let (conns, overlay_conns) = connections(&apis, rt)?;
    let per_peer = |cores: f64, count: usize| cores / count as f64 * 1000.0;
    let idle_per_peer = Row::new(format!("idle CPU per peer, {n} peers"), per_peer(idle_cores, n), "millicores")
        .note(format!("a member {:.2}, the index host {:.1}", room.member, room.host));
    let small_row = match &small {
        Some(s) => Row::new(format!("idle CPU per peer, {first} peers (reference)"), per_peer(s.cores, first), "millicores")
            .note(format!("the room of {first} while idle: {:.3} cores; a member {:.2}, the index host {:.1}", s.cores, s.member, s.host)),
        None => Row::skipped("idle CPU per peer, smaller room (reference)", "millicores", "--compare-at is not smaller than --peers"),
    };
    let idle_per_peer = idle_per_peer.against(&small_row).target("<= 1.3x the smaller room", |r| r.ratio.map(|x| x <= 1.3));
    let member_row = Row::new(format!("idle CPU per member, {n} peers"), room.member, "millicores")
        .note(format!("{conns:.1} connections per member, {overlay_conns:.1} of them overlay"))
        .target("< 2.5 millicores", |r| r.value.map(|v| v < 2.5));

    eprintln!("chat: sending {} messages", o.messages);
    // Through each daemon's control API, as the CLI does, but without
    // starting a process per message: many peers on 2 cores feel every
    // process start, and the latency would measure our bench instead.
    let texts: Vec<String> = (0..o.messages).map(|k| format!("bench message {k}")).collect();
    let room_cpu = || peers.iter().map(|p| p.proc.cpu_seconds()).sum::<f64>();
    // At a steady rate: all daemons share this machine's cores and each
    // message costs every one of them some CPU, so the rate decides how
    // much of the latency is queueing for a core.
    let (cpu_before, sending_started) = (room_cpu(), Instant::now());
    let gap = Duration::from_secs_f64(1.0 / o.rate.max(0.1));
    rt.block_on(async {
        let mut tick = tokio::time::interval(gap);
        for (k, text) in texts.iter().enumerate() {
            tick.tick().await;
            let _: serde_json::Value = apis[k % n].post("/v1/say", &SayRequest { text: text.clone() }).await?;
        }
        anyhow::Ok(())
    })?;
    // Until a second after the last message, before the bench starts
    // asking every daemon what arrived.
    std::thread::sleep(Duration::from_secs(1));
    let busy_seconds = sending_started.elapsed().as_secs_f64();
    let busy_cores = (room_cpu() - cpu_before) / busy_seconds;
    let cpu_per_message_ms = (busy_cores - idle_cores).max(0.0) * busy_seconds / o.messages.max(1) as f64 * 1000.0;

    // Delivered: each message at each peer other than its author; the
    // latency of each delivery, and the slowest delivery of each message.
    let expected = o.messages * (n - 1);
    let mut latencies = Vec::new();
    let mut slowest = vec![0u64; o.messages];
    let deadline = Instant::now() + DELIVERY;
    loop {
        latencies.clear();
        for (i, api) in apis.iter().enumerate() {
            let got: serde_json::Value = rt.block_on(api.get("/v1/messages", &[]))?;
            for m in got.as_array().into_iter().flatten() {
                let text = m["text"].as_str().unwrap_or_default();
                let Some(k) = texts.iter().position(|t| t == text) else { continue };
                if m["author"] != ids[i].as_str() {
                    let (sent, received) = (m["sent_at_ms"].as_u64().unwrap_or(0), m["received_at_ms"].as_u64().unwrap_or(0));
                    let us = received.saturating_sub(sent) * 1000;
                    latencies.push(us);
                    slowest[k] = slowest[k].max(us);
                }
            }
        }
        if latencies.len() >= expected || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut worst: Vec<(usize, u64)> = slowest.iter().copied().enumerate().collect();
    worst.sort_by_key(|(_, us)| std::cmp::Reverse(*us));
    let worst = worst.iter().take(3).map(|(k, us)| format!("#{k} {:.0} ms", *us as f64 / 1000.0)).collect::<Vec<_>>().join(", ");
    latencies.sort();
    let rss: Vec<f64> = peers.iter().filter_map(|p| crate::procs::peak_rss_mib(p.proc.pid())).collect();
    let mean_rss = rss.iter().sum::<f64>() / rss.len().max(1) as f64;
    let max_rss = rss.iter().cloned().fold(0.0, f64::max);
    Peer::stop_all(peers);
    let ratio = latencies.len() as f64 / expected as f64 * 100.0;
    Ok(Report {
        bench: "chat",
        setup: format!(
            "{n} peers, {} messages at {} msg/s, loopback; {n} daemons started in {:.0} s, then everyone saw everyone after {:.1} s",
            o.messages,
            o.rate,
            start_time.as_secs_f64(),
            settled.as_secs_f64()
        ),
        rows: vec![
            Row::new("messages delivered", ratio, "%")
                .note(format!("{} of {expected}", latencies.len()))
                .target("100%", |r| r.value.map(|v| v >= 100.0)),
            Row::new("delivery latency p50", percentile(&latencies, 0.5), "ms"),
            Row::new("delivery latency p99", percentile(&latencies, 0.99), "ms")
                .note(format!("slowest messages: {worst}"))
                .target("< 200 ms", |r| r.value.map(|v| v < 200.0)),
            Row::new("CPU per message, whole room", cpu_per_message_ms, "ms")
                .note(format!("beyond idle; all {n} daemons at {} msg/s", o.rate)),
            Row::new("room CPU while idle", idle_cores, "cores")
                .note(format!("{busy_cores:.2} cores while sending; the machine has {}", crate::cores()))
                .target("< 0.5 cores", |r| r.value.map(|v| v < 0.5)),
            small_row,
            idle_per_peer,
            member_row,
            Row::new("peak RSS per peer, mean", mean_rss, "MiB").note(format!("largest {max_rss:.0} MiB")),
        ],
    })
}
