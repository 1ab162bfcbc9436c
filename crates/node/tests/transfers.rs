//! The transfer module alone: real endpoints on loopback, real stores, and
//! a search answer of the test's own making instead of an index.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use iroh::{protocol::Router, Endpoint};
use iroh_blobs::{store::fs::FsStore, store::mem::MemStore, BlobsProtocol, Hash};
use peernet_node::{
    endpoint::{self, EndpointConfig},
    shares::Shares,
    tasks::Tasks,
    transfers::{self, BoxFuture, Finder, GetEvent, Publisher, Transfers},
};
use peernet_proto::index::{FileEntry, Hit, Kind, PeerInfo, Provider};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Answers every search with the same hits.
struct FixedAnswer(Vec<Hit>);

impl Finder for FixedAnswer {
    fn find<'a>(&'a self, _target: &'a str) -> BoxFuture<'a, Result<Vec<Hit>, String>> {
        let hits = self.0.clone();
        Box::pin(async move { Ok(hits) })
    }
}

/// Remembers what was published.
#[derive(Default)]
struct Published(Mutex<Vec<FileEntry>>);

impl Publisher for Published {
    fn publish<'a>(&'a self, files: Vec<FileEntry>) -> BoxFuture<'a, Result<(), String>> {
        self.0.lock().unwrap().extend(files);
        Box::pin(async { Ok(()) })
    }
}

async fn bind() -> (Endpoint, iroh::address_lookup::memory::MemoryLookup) {
    endpoint::bind(EndpointConfig {
        secret_key: iroh::SecretKey::generate(),
        bind: "127.0.0.1:0".parse().unwrap(),
        relay: None,
        alpns: vec![iroh_blobs::ALPN.to_vec()],
        congestion: Default::default(),
    })
    .await
    .unwrap()
}

/// A provider serving `data` (or nothing, when `data` is empty) from a memory store.
async fn provider(data: &[u8]) -> (Router, MemStore, Provider) {
    let (ep, _) = bind().await;
    let store = MemStore::new();
    if !data.is_empty() {
        store.add_bytes(data.to_vec()).await.unwrap();
    }
    let router = Router::builder(ep.clone()).accept(iroh_blobs::ALPN, BlobsProtocol::new(&store, None)).spawn();
    let provider = Provider {
        peer: PeerInfo { addr: endpoint::own_addr(&ep), nickname: "p".into() },
        name: String::new(),
        registered_at: 0,
        size: data.len() as u64,
    };
    (router, store, provider)
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_an_injected_answer_survives_a_failing_provider_and_keeps_the_network_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(5 * 1024 * 1024 + 123, 7);
    let hash = Hash::new(&data);

    // One provider has nothing (every request to it fails), one has the file.
    let (empty_router, _empty_store, mut failing) = provider(&[]).await;
    let (good_router, _good_store, mut good) = provider(&data).await;
    failing.name = "big sample.bin".into();
    good.name = "big sample (1).bin".into();
    let hit = Hit { hash, size: data.len() as u64, kind: Kind::File, name: good.name.clone(), providers: vec![failing.clone(), good] };

    // The downloads folder already holds a different "big sample.bin".
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::write(downloads.join("big sample.bin"), b"something else").unwrap();

    let (ep, lookup) = bind().await;
    let store = FsStore::load(dir.path().join("blobs")).await.unwrap();
    let shares = Arc::new(Shares::load(dir.path().join("shares.json")).unwrap());
    let published = Arc::new(Published::default());
    let tasks = Tasks::new(CancellationToken::new());
    let transfers = Transfers::new(transfers::Parts {
        me: ep.id(),
        store: (*store).clone(),
        downloader: store.downloader(&ep),
        lookup,
        shares: shares.clone(),
        finder: Arc::new(FixedAnswer(vec![hit])),
        publisher: published.clone(),
        downloads: downloads.clone(),
        tasks: tasks.clone(),
        paths: Default::default(),
        board: Default::default(),
        metrics: Default::default(),
    });

    let (tx, mut rx) = mpsc::channel(1024);
    let outcome = tokio::time::timeout(Duration::from_secs(120), transfers.get("big sample.bin", None, &tx)).await;
    drop(tx);
    outcome.expect("the get ends").expect("the get succeeds");
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    let Some(GetEvent::Saved { path, failed_providers, sources, .. }) = events.last().cloned() else {
        panic!("the last event is Saved: {events:?}")
    };

    assert_eq!(path, downloads.join("big sample (1).bin"), "the taken name is not overwritten");
    assert_eq!(std::fs::read(&path).unwrap(), data, "byte for byte");
    assert_eq!(std::fs::read(downloads.join("big sample.bin")).unwrap(), b"something else");
    let failing_id = failing.peer.addr.id.fmt_short().to_string();
    assert!(failed_providers.contains(&failing_id), "the failing provider is reported: {failed_providers:?}");
    assert!(!sources.contains(&failing_id), "it delivered nothing: {sources:?}");
    assert!(events.iter().any(|e| matches!(e, GetEvent::ProviderFailed { .. })));

    // Published and listed under the name it was asked by, not the local one.
    let entries = published.0.lock().unwrap().clone();
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].name.as_str(), entries[0].hash), ("big sample.bin", hash));
    let listed = Shares::load(dir.path().join("shares.json")).unwrap().list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "big sample.bin");
    assert_eq!(listed[0].path, path);
    assert!(shares.find("big sample (1).bin").is_ok(), "the local name finds it too");

    assert!(tasks.stop(Duration::from_secs(5)).await);
    store.shutdown().await.ok();
    ep.close().await;
    empty_router.shutdown().await.ok();
    good_router.shutdown().await.ok();
}
