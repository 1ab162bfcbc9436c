//! A bad link slows a download down but never breaks it: two hosts joined
//! by a link with 200 ms round-trip time and 5% loss each way (a TUN delay
//! line and iptables' statistic match, see `peernet-testnet`), and a 5 MB
//! download across it completes and is verified byte for byte. Needs root;
//! skips visibly without it.

mod common;

use std::time::{Duration, Instant};

use common::{
    netns::{Hosts, SlowLink},
    *,
};

#[test]
fn a_download_over_a_slow_lossy_link_completes_and_is_verified() {
    if common::netns::skip("bad_link") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut net = Hosts::new("bad");
    let a = net.add("a");
    let b = net.add("b");
    let _link = SlowLink::new(&net, &a, &b, Duration::from_millis(200), 0.05);

    let bind = format!("{}:4300", common::netns::slow_link::A_IP);
    let host_args = ["up", "--nick", "far", "--bind", &bind, "--heartbeat", HEARTBEAT, "--lease-ttl", "10s"];
    let far = Daemon::start_in(Some(&a), "far", &dir.path().join("far"), &host_args, &[]);
    let data = dir.path().join("near");
    let downloads = data.join("downloads");
    let near_args = ["up", "--join", &far.ticket, "--nick", "near", "--bind", "0.0.0.0:0", "--downloads", downloads.to_str().unwrap()];
    let near = Daemon::start_in(Some(&b), "near", &data, &near_args, &[]);

    let file = dir.path().join("over-the-hills.bin");
    random_file(&file, 5 << 20, 21);
    far.ok(&["share", file.to_str().unwrap()]);
    wait_until(PATIENCE, "the file to be found across the slow link", || !search(&near, "over-the-hills").is_empty());
    let started = Instant::now();
    let got = near.json(&["get", "over-the-hills.bin"]);
    let took = started.elapsed();
    assert!(same_bytes(&file, got["path"].as_str().unwrap().as_ref()), "{got}");
    let rtt = got["reached"][0]["path"]["rtt_ms"].as_u64().unwrap_or(0);
    println!(
        "5 MB over 200 ms RTT and 5% loss: {:.1} s, {:.0} KB/s (path RTT measured by QUIC: {rtt} ms)",
        took.as_secs_f64(),
        (5 << 20) as f64 / 1000.0 / took.as_secs_f64()
    );
    assert!(rtt >= 150, "the link really is slow: QUIC measured {rtt} ms");
}
