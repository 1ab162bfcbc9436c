//! `--metrics`: a real index and peers serve OpenMetrics text that a
//! Prometheus parser reads, and their counters move after a get, a search
//! and a chat message; the index exposes its request histogram.

mod common;

use common::{browser::Http, *};
use prometheus_parse::{Sample, Scrape, Value as Metric};

/// Scrapes the daemon's `/metrics` (its address is in control.json).
fn scrape(d: &Daemon) -> Vec<Sample> {
    let info = d.control_json();
    let addr = info["metrics"].as_str().expect("--metrics names an address");
    let (status, headers, body) = Http::default().send("GET", &format!("http://{addr}/metrics"), &[], None);
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    check_openmetrics(&body);
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("the metrics parse").samples
}

/// What the parser forgives and OpenMetrics does not: the text ends with
/// `# EOF`, and every sample belongs to a family declared with its TYPE.
fn check_openmetrics(body: &str) {
    assert_eq!(body.lines().last(), Some("# EOF"), "OpenMetrics ends with # EOF");
    let families: Vec<(&str, &str)> =
        body.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split_once(' ').expect("# TYPE name type")).collect();
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap();
        let declared = families.iter().any(|(family, kind)| match *kind {
            "counter" => name == format!("{family}_total"),
            "histogram" => [format!("{family}_bucket"), format!("{family}_sum"), format!("{family}_count")].contains(&name.to_string()),
            _ => name == *family,
        });
        assert!(declared, "sample {line} has no TYPE line of its family");
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "sample {line} has a number");
    }
}

/// The value of sample `name` whose labels include `labels`; 0 if absent.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum()
}

/// The number of observations of histogram `name` with `labels`.
fn observations(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, &format!("{name}_count"), labels)
}

#[test]
fn metrics_parse_and_move_with_gets_searches_and_chat() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = ["--metrics", "127.0.0.1:0"];
    let mut index_args = vec!["index", "--bind", "127.0.0.1:0", "--heartbeat", HEARTBEAT, "--lease-ttl", LEASE_TTL];
    index_args.extend(metrics);
    let index = Daemon::start_with_env("index", &dir.path().join("index"), &index_args, &[]);
    let file = dir.path().join("report.pdf");
    random_file(&file, 3 * 1024 * 1024, 5);
    let alice =
        Daemon::peer("alice", &dir.path().join("a"), &index.ticket, &["--share", file.to_str().unwrap(), "--metrics", "127.0.0.1:0"]);
    let bob = Daemon::peer("bob", &dir.path().join("b"), &index.ticket, &metrics);
    wait_for_room(&[&alice, &bob], &["alice".into(), "bob".into()]);

    let (i0, a0, b0) = (scrape(&index), scrape(&alice), scrape(&bob));
    assert!(i0.iter().any(|s| s.metric.starts_with("iroh_")), "iroh's own metrics are in the registry");
    assert_eq!(value(&i0, "peernet_index_peers_online", &[]), 2.0, "alice and bob (the index alone is no peer)");

    // A search: the index counts it and times it; alice handles bob's flood.
    assert!(!bob.json(&["search", "report"]).as_array().unwrap().is_empty());
    // A get: bob fetches, alice serves.
    bob.ok(&["get", "report.pdf"]);
    assert!(same_bytes(&file, &bob.downloads().join("report.pdf")));
    // A chat message: gossip carries it from bob to alice.
    bob.ok(&["say", "hello metrics"]);
    wait_until(PATIENCE, "alice to hear bob", || texts_from(&alice, &bob.id()).contains(&"hello metrics".to_string()));

    let search = [("kind", "search")];
    wait_until(PATIENCE, "the counters to move", || {
        let (i1, a1, b1) = (scrape(&index), scrape(&alice), scrape(&bob));
        value(&i1, "peernet_index_requests_total", &search) > value(&i0, "peernet_index_requests_total", &search)
            && observations(&i1, "peernet_index_request_seconds", &search) > observations(&i0, "peernet_index_request_seconds", &search)
            && value(&a1, "peernet_flood_handled_total", &[]) > value(&a0, "peernet_flood_handled_total", &[])
            && value(&b1, "peernet_bytes_fetched_total", &[]) == (3 * 1024 * 1024) as f64
            && value(&b1, "peernet_downloads_total", &[("outcome", "saved")]) == 1.0
            && value(&a1, "peernet_bytes_served_total", &[]) >= (3 * 1024 * 1024) as f64
            && value(&b1, "iroh_gossip_msgs_data_sent_total", &[]) > value(&b0, "iroh_gossip_msgs_data_sent_total", &[])
            && value(&a1, "iroh_gossip_msgs_data_recv_total", &[]) > value(&a0, "iroh_gossip_msgs_data_recv_total", &[])
    });
    let i1 = scrape(&index);
    let buckets = i1.iter().find(|s| s.metric == "peernet_index_request_seconds" && s.labels.get("kind") == Some("search"));
    assert!(matches!(buckets.map(|s| &s.value), Some(Metric::Histogram(b)) if !b.is_empty()), "the index's latency histogram has buckets");
    assert!(observations(&i1, "peernet_index_batch_size", &[]) > 0.0, "group-commit batch sizes");
    println!(
        "index: {} searches, {} batches; alice served {} bytes; bob fetched {} bytes",
        value(&i1, "peernet_index_requests_total", &search),
        observations(&i1, "peernet_index_batch_size", &[]),
        value(&scrape(&alice), "peernet_bytes_served_total", &[]),
        value(&scrape(&bob), "peernet_bytes_fetched_total", &[])
    );
}
