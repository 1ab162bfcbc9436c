//! A connection flood: 2,000 connection attempts in about 10 s from
//! outsiders at a member and at a standalone index. Both keep serving,
//! members' requests made meanwhile succeed, and memory stays put.

mod common;

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use common::*;

const ATTEMPTS: usize = 2_000;
/// Outsider endpoints the attempts come from (all on loopback).
const OUTSIDERS: usize = 20;
/// How long one attempt may wait: an ignored attempt never hears back.
const ATTEMPT_WAIT: Duration = Duration::from_millis(500);
/// Memory growth allowed during the flood.
const MEMORY_SLACK_KB: u64 = 50 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_leaves_members_served() {
    if !std::path::Path::new("/proc/self/status").exists() {
        println!("skipped: this system has no /proc to read memory from");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let index = Daemon::index(&dir.path().join("index"));
    let member = Daemon::peer("member", &dir.path().join("member"), &index.ticket, &[]);
    let honest = Daemon::peer("honest", &dir.path().join("honest"), &index.ticket, &[]);
    let file = dir.path().join("steady.txt");
    std::fs::write(&file, b"still here").unwrap();
    member.ok(&["share", file.to_str().unwrap()]);
    wait_until(PATIENCE, "the shared file to be found", || search(&honest, "steady").len() == 1);
    let targets = [member.addr(), index.addr()];
    let idle = [rss_kb(member.pid()), rss_kb(index.pid())];

    // Members keep asking while the flood runs.
    let flooding = AtomicBool::new(true);
    let (asked, answered) = (AtomicU64::new(0), AtomicU64::new(0));
    let peak = [AtomicU64::new(0), AtomicU64::new(0)];
    let started = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while flooding.load(Ordering::Relaxed) {
                asked.fetch_add(1, Ordering::Relaxed);
                if honest.cli(&["search", "--index-only", "steady"]).status.success() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                peak[0].fetch_max(rss_kb(member.pid()), Ordering::Relaxed);
                peak[1].fetch_max(rss_kb(index.pid()), Ordering::Relaxed);
            }
        });
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let mut outsiders = Vec::new();
                for _ in 0..OUTSIDERS {
                    let (ep, lookup) = test_endpoint(vec![]).await;
                    for t in &targets {
                        peernet_node::endpoint::remember(&lookup, t);
                    }
                    outsiders.push(ep);
                }
                // 2,000 attempts spread over about 10 s, alternating targets.
                let mut attempts = tokio::task::JoinSet::new();
                for i in 0..ATTEMPTS {
                    let ep = outsiders[i % OUTSIDERS].clone();
                    let to = targets[i % 2].to_endpoint_addr();
                    let alpn = if i % 2 == 0 { iroh_blobs::ALPN } else { peernet_proto::index::ALPN };
                    attempts.spawn(async move { tokio::time::timeout(ATTEMPT_WAIT, ep.connect(to, alpn)).await.is_ok_and(|c| c.is_ok()) });
                    if i % 20 == 19 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                let mut connected = 0;
                while let Some(done) = attempts.join_next().await {
                    connected += usize::from(done.unwrap());
                }
                println!("{ATTEMPTS} attempts in {:?}; {connected} handshakes completed", started.elapsed());
                for ep in outsiders {
                    ep.close().await;
                }
            })
        });
        flooding.store(false, Ordering::Relaxed);
    });

    let (asked, answered) = (asked.into_inner(), answered.into_inner());
    let ignored = [&member, &index].map(|d| d.json(&["status"])["connections_refused"].as_u64().unwrap());
    let grown = [0, 1].map(|i| peak[i].load(Ordering::Relaxed).saturating_sub(idle[i]));
    println!(
        "honest searches: {answered} of {asked} answered; attempts ignored before the handshake: member {}, index {}; \
         memory growth: member {} KiB, index {} KiB",
        ignored[0], ignored[1], grown[0], grown[1]
    );
    assert!(asked > 0 && answered * 100 >= asked * 99, "members' requests succeed: {answered} of {asked}");
    assert!(ignored.iter().all(|n| *n > 0), "the flood hit the connection budget at both");
    assert!(grown.iter().all(|g| *g <= MEMORY_SLACK_KB), "memory within 50 MB of idle: {grown:?} KiB");
    // Both still serve.
    assert_eq!(search(&honest, "steady").len(), 1);
    assert!(member.cli(&["status"]).status.success() && index.cli(&["status"]).status.success());
}
