//! Every bench subcommand, run in a tiny configuration so the bench cannot
//! rot: it must start its processes, measure, print its table, write its
//! JSON and clean up. The figures themselves are not judged here (speed
//! goals belong to the bench, not to tests on a busy machine).

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_peernet-bench");

/// Runs one subcommand; returns its JSON report.
fn bench(args: &[&str]) -> serde_json::Value {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(BENCH).args(args).arg("--out").arg(out_dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "peernet-bench {} failed:\n{stdout}\n{stderr}", args.join(" "));
    assert!(stdout.contains(&format!("== {}", args[0])), "a table is printed: {stdout}");
    let json = std::fs::read(out_dir.path().join(format!("{}.json", args[0]))).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json).unwrap();
    eprintln!("{stdout}");
    report
}

/// The row named `what`, which must have a figure (or say why it is skipped).
fn row<'a>(report: &'a serde_json::Value, what: &str) -> &'a serde_json::Value {
    let row = report["rows"].as_array().unwrap().iter().find(|r| r["what"].as_str().unwrap().starts_with(what));
    let row = row.unwrap_or_else(|| panic!("no row `{what}` in {report}"));
    assert!(row["value"].is_number() || row["note"].as_str().unwrap().starts_with("skipped: "), "{row}");
    row
}

fn value(report: &serde_json::Value, what: &str) -> f64 {
    row(report, what)["value"].as_f64().unwrap_or_else(|| panic!("`{what}` was not measured: {report}"))
}

#[test]
fn transfer_in_miniature() {
    let r = bench(&["transfer", "--size", "4MiB", "--runs", "1", "--memory-sizes", "1MiB,2MiB"]);
    // The reference and peernet's own figures are always measured; the
    // optional tools are either measured or reported as skipped.
    assert!(value(&r, "TCP copy") > 0.0);
    assert!(value(&r, "iroh-blobs fetch") > 0.0);
    assert!(value(&r, "peernet get, warm") > 0.0);
    assert!(value(&r, "peernet share then get, cold") > 0.0);
    row(&r, "HTTP");
    row(&r, "BitTorrent");
    assert!(value(&r, "peernet get peak RSS, 2 MiB") > 0.0);
}

#[test]
fn index_in_miniature() {
    let r = bench(&["index", "--clients", "4", "--seconds", "1", "--files", "2000"]);
    assert!(value(&r, "peernet index: Publish, Search x2, Unpublish") > 0.0);
    assert!(value(&r, "bare echo over iroh QUIC") > 0.0);
    assert!(value(&r, "bare echo over iroh QUIC, answers as large") > 0.0);
    assert!(value(&r, "peernet index handler in process") > 0.0);
    assert!(value(&r, "peernet index search p99") > 0.0);
    assert!(value(&r, "peernet index: Search only") > 0.0);
    assert!(value(&r, "disk sync") > 0.0);
    assert!(value(&r, "restart on 2000 files") > 0.0);
    assert!(value(&r, "peernet index peak RSS") > 0.0);
    row(&r, "opentracker");
}

#[test]
fn dht_in_miniature() {
    let r = bench(&["dht", "--nodes", "8", "--lookups", "4"]);
    assert!(value(&r, "index lookup by hash") > 0.0);
    let found = row(&r, "DHT: provider found");
    assert_eq!(found["met"], true, "every provider is found: {found}");
    assert!(value(&r, "DHT: signed announce stored") > 0.0);
}

#[test]
fn chat_in_miniature() {
    let r = bench(&["chat", "--peers", "3", "--messages", "6", "--compare-at", "2"]);
    assert!(value(&r, "idle CPU per peer, 2 peers") >= 0.0);
    assert!(value(&r, "idle CPU per peer, 3 peers") >= 0.0);
    assert_eq!(value(&r, "messages delivered"), 100.0, "every message reaches every other peer");
    assert!(value(&r, "peak RSS per peer") > 0.0);
}

/// Needs root for its network namespaces; without root the bench must say
/// it skipped, which is what this test then checks.
#[test]
fn swarm_in_miniature() {
    let r = bench(&["swarm", "--size", "8MiB", "--rate", "400mbit"]);
    let speedup = row(&r, "speed-up");
    if speedup["value"].is_number() {
        assert!(value(&r, "get from 3 providers") > 0.0);
    } else {
        eprintln!("swarm bench skipped (not root): {}", speedup["note"]);
    }
}

/// Needs root too (NAT routers and a slow link in namespaces); without it
/// every row must say it skipped.
#[test]
fn reach_in_miniature() {
    let r = bench(&["reach", "--size", "256KiB", "--bad-link-size", "64KiB", "--links", "50ms/1%", "--congestion", "cubic,bbr"]);
    let direct = row(&r, "peernet get home -> home, direct");
    let over_the_link = [
        "TCP copy, 50 ms RTT, 1% loss",
        "peernet get, 50 ms RTT, 1% loss, --congestion cubic",
        "peernet get, 50 ms RTT, 1% loss, --congestion bbr",
    ];
    row(&r, "peernet get home -> home, relayed");
    for what in over_the_link {
        row(&r, what);
    }
    if direct["value"].is_number() {
        assert!(value(&r, "TCP copy home -> public root") > 0.0);
        assert!(value(&r, "peernet get home -> home, relayed") > 0.0);
        for what in over_the_link {
            assert!(value(&r, what) > 0.0, "{what}");
        }
    } else {
        eprintln!("reach bench skipped (not root): {}", direct["note"]);
    }
}
