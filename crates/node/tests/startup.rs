//! A start that fails stops everything it started: the port is free again,
//! no task is left running, and the same data directory starts at once.

use std::{net::SocketAddr, path::Path, time::Duration};

use peernet_node::{tasks::runtime_alive_tasks, Config, Node, StartError};

fn config(data_dir: &Path, bind: SocketAddr) -> Config {
    Config {
        data_dir: data_dir.to_owned(),
        join: None,
        nickname: Some("solo".into()),
        share: Vec::new(),
        downloads: Some(data_dir.join("downloads")),
        bind,
        relay: None,
        relay_server: None,
        lan: None,
        mdns: false,
        congestion: Default::default(),
        index: Default::default(),
        upload_limit: Some(1024 * 1024),
        index_only: false,
        budgets: Default::default(),
        ui: None,
        dht: None,
        metrics: None,
    }
}

fn free_udp_port() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Waits (bounded) until the runtime is back to `level` live tasks.
async fn tasks_back_to(level: usize) -> usize {
    for _ in 0..200 {
        let now = runtime_alive_tasks();
        if now <= level {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runtime_alive_tasks()
}

/// Waits (bounded) until `addr` can be bound again: the endpoint's socket
/// closes in the background once the endpoint is closed.
async fn port_free(addr: SocketAddr) -> bool {
    for _ in 0..200 {
        if std::net::UdpSocket::bind(addr).is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_stops_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("peer");
    let idle = runtime_alive_tasks();

    // A bind error: the port is taken.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = Node::spawn(config(&data_dir, taken.local_addr().unwrap())).await.unwrap_err();
    assert!(matches!(err, StartError::Endpoint(_)), "{err}");
    assert!(err.to_string().contains("--bind"), "the error says what to do: {err}");
    drop(taken);

    // An error late in the start, once the endpoint, the store, gossip, the
    // router and the hosted index are up: a path to share that is not there.
    let addr = free_udp_port();
    let mut bad = config(&data_dir, addr);
    bad.share = vec![dir.path().join("no-such-file")];
    let err = Node::spawn(bad).await.unwrap_err();
    assert!(matches!(err, StartError::Share(_)), "{err}");
    let left = tasks_back_to(idle).await;
    assert!(left <= idle, "a failed start left {left} tasks running (idle {idle})");
    assert!(port_free(addr).await, "the failed start released its port");

    // The same data directory, the same port: starts, serves, stops.
    let node = Node::spawn(config(&data_dir, addr)).await.expect("starts after the failures");
    assert!(node.hosts_index());
    assert_eq!(node.network().status().nickname, "solo");
    node.shutdown().await;
    // Handles to the stopped node's parts (the downloader's actor lives as
    // long as one) go with the node.
    drop(node);
    let left = tasks_back_to(idle).await;
    assert!(left <= idle, "shutdown left {left} tasks running (idle {idle})");
}
