//! A provider that lies: its bytes fail verification, the download finishes
//! from honest providers, and the liar is reported.

mod common;

use std::{path::PathBuf, time::Duration};

use common::*;
use iroh::{
    endpoint::Connection,
    protocol::{AcceptError, ProtocolHandler, Router},
    Endpoint, EndpointAddr,
};
use iroh_blobs::{store::mem::MemStore, BlobsProtocol};
use peernet_proto::{admission::ALPN as ADMIT_ALPN, index::FileEntry, ticket::Ticket};

/// Serves the blobs protocol by relaying to an honest provider, flipping one
/// byte of every response after its first 64 KiB.
#[derive(Debug, Clone)]
struct Corrupting {
    endpoint: Endpoint,
    honest: EndpointAddr,
    /// Set once a corrupted byte went out, so the test knows the lie was told.
    lied: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ProtocolHandler for Corrupting {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let upstream = self.endpoint.connect(self.honest.clone(), iroh_blobs::ALPN).await.map_err(AcceptError::from_err)?;
        while let Ok((mut to_client, mut from_client)) = conn.accept_bi().await {
            let (mut to_honest, mut from_honest) = upstream.open_bi().await.map_err(AcceptError::from_err)?;
            let lied = self.lied.clone();
            tokio::spawn(async move {
                let request = from_client.read_to_end(64 * 1024).await.unwrap_or_default();
                to_honest.write_all(&request).await.ok();
                to_honest.finish().ok();
                let mut sent = 0usize;
                let mut flipped = false;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match from_honest.read(&mut buf).await {
                        Ok(Some(n)) if n > 0 => n,
                        _ => break,
                    };
                    if !flipped && sent + n > 64 * 1024 {
                        buf[n / 2] ^= 0x5a;
                        flipped = true;
                    }
                    if to_client.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    if flipped {
                        lied.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    sent += n;
                }
                to_client.finish().ok();
            });
        }
        Ok(())
    }
}

/// Acceptance: a provider that corrupts the data it serves: the downloaded
/// file is still correct (fetched from honest providers), and the corrupt
/// provider is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_provider_is_caught_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root: PathBuf = tmp.path().to_owned();
    let file = root.join("dataset.tar");
    random_file(&file, 8 * 1024 * 1024, 31);
    let (index, honest_peers) = {
        let (root, file) = (root.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            let index = Daemon::index(&root.join("index"));
            let share = ["--share", file.to_str().unwrap()];
            let peers: Vec<Daemon> = ["p0", "p1"].iter().map(|n| Daemon::peer(n, &root.join(n), &index.ticket, &share)).collect();
            (index, peers)
        })
        .await
        .unwrap()
    };
    let ticket: Ticket = index.ticket.parse().unwrap();

    // An honest in-process store, and a liar in front of it.
    let store = MemStore::new();
    let tag = store.blobs().add_slice(std::fs::read(&file).unwrap()).temp_tag().await.unwrap();
    let hash = tag.hash();
    // Both are members: the downloader proves itself to the liar before it
    // connects, and the liar to the honest store.
    let (honest_ep, _, honest_admission) = member_endpoint(vec![iroh_blobs::ALPN.to_vec()], ticket.network_key).await;
    let honest = Router::builder(honest_ep.clone())
        .accept(ADMIT_ALPN, honest_admission.protocol())
        .accept(iroh_blobs::ALPN, BlobsProtocol::new(&store, None))
        .spawn();
    let (liar_ep, liar_lookup, liar_admission) = member_endpoint(vec![iroh_blobs::ALPN.to_vec()], ticket.network_key).await;
    let lied = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let liar = Router::builder(liar_ep.clone())
        .accept(ADMIT_ALPN, liar_admission.protocol())
        .accept(iroh_blobs::ALPN, Corrupting { endpoint: liar_ep.clone(), honest: honest_ep.addr(), lied: lied.clone() })
        .spawn();
    let entry = FileEntry { name: "dataset.tar".into(), size: 8 * 1024 * 1024, hash, kind: Default::default() };
    publish_as(&liar_ep, &liar_lookup, &ticket, "mallory", entry).await;

    let ticket_text = index.ticket.clone();
    let d_dir = root.join("d");
    let (out, d) = tokio::task::spawn_blocking(move || {
        let d = Daemon::peer("d", &d_dir, &ticket_text, &[]);
        // Mallory registered last, so a part is asked of her first.
        assert_eq!(providers_of(&search(&d, "dataset"), "dataset.tar")[0], "mallory");
        (d.json(&["get", "dataset.tar"]), d)
    })
    .await
    .unwrap();
    assert!(lied.load(std::sync::atomic::Ordering::SeqCst), "the liar did send corrupted bytes");
    let liar_short = liar_ep.id().fmt_short().to_string();
    assert!(out["failed_providers"].as_array().unwrap().iter().any(|p| p == liar_short.as_str()), "the liar is reported: {out}");
    assert!(!out["sources"].as_array().unwrap().iter().any(|p| p == liar_short.as_str()), "nothing counted from the liar");
    assert!(same_bytes(&file, &d.downloads().join("dataset.tar")), "not one corrupt byte reached the file");
    tokio::time::timeout(Duration::from_secs(10), liar.shutdown()).await.ok();
    tokio::time::timeout(Duration::from_secs(10), honest.shutdown()).await.ok();
    liar_admission.detach();
    honest_admission.detach();
    drop((d, honest_peers, index));
}
