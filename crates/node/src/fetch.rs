//! `get`: find a file's providers at the index, download it from them with
//! BLAKE3 verification, save it under a safe name, and publish it so this
//! peer becomes a source too.
//!
//! iroh-blobs' downloader tries the providers in order and, when one fails
//! mid-way, asks the next one only for what is still missing; everything it
//! writes to the store is verified against the hash first, so a corrupt byte
//! never reaches the output file.

use std::{
    collections::HashMap,
    ops::Deref,
    path::{Path, PathBuf},
};

use bao_tree::ChunkNum;
use iroh::EndpointId;
use iroh_blobs::{
    api::{
        blobs::{ExportMode, ExportOptions},
        downloader::DownloadProgressItem,
    },
    format::collection::Collection,
    protocol::{ChunkRanges, GetRequest},
    BlobFormat, Hash, HashAndFormat,
};
use n0_future::StreamExt;
use peernet_proto::index::Kind;
use tokio::sync::mpsc;

use crate::{
    control::GetEvent,
    node::{Node, NodeError},
    resolve, save,
    shares::{self, Share},
};

/// Progress events are sent at most this often (bytes), so a fast download
/// does not flood the control connection.
const PROGRESS_STEP: u64 = 1024 * 1024;

pub(crate) async fn get(node: &Node, target: &str, out: Option<PathBuf>, events: &mpsc::Sender<GetEvent>) -> Result<(), NodeError> {
    let inner = &node.inner;
    let me = inner.endpoint.id();
    // The index first; the overlay when the index is down or knows nothing.
    let hits = match node.search(target, peernet_proto::limits::MAX_SEARCH_LIMIT).await {
        Ok(hits) if !hits.is_empty() => hits,
        other => {
            let flooded = node.flood_search(target, peernet_proto::flood::DEFAULT_TTL, crate::node::FLOOD_WINDOW).await.unwrap_or_default();
            if flooded.is_empty() {
                other?
            } else {
                flooded
            }
        }
    };
    let hit = resolve::choose(target, hits)?;
    let providers: Vec<EndpointId> = hit.providers.iter().map(|p| p.peer.addr.id).filter(|id| *id != me).collect();
    for p in &hit.providers {
        node.remember(&p.peer.addr);
    }
    let send = |e: GetEvent| async move {
        // The client may have gone away; the download carries on regardless.
        events.send(e).await.ok();
    };
    send(GetEvent::Resolved {
        name: hit.name.clone(),
        hash: hit.hash.to_string(),
        size: hit.size,
        providers: hit.providers.iter().map(|p| format!("{} ({})", p.peer.nickname, p.peer.addr.id.fmt_short())).collect(),
    })
    .await;

    let content = match hit.kind {
        Kind::File => HashAndFormat::raw(hit.hash),
        Kind::Folder => HashAndFormat::hash_seq(hit.hash),
    };
    // What an earlier, interrupted get already verified; only the rest is fetched.
    let local = inner.store.remote().local(content).await.map_err(|e| NodeError::Download(e.to_string()))?;
    let resumed_from = local.local_bytes();
    let mut failed_providers = Vec::new();
    let mut sources = Vec::new();
    if !local.is_complete() {
        if providers.is_empty() {
            return Err(NodeError::NoProvider(hit.name));
        }
        let report = download(node, content, hit.size, providers, events).await;
        failed_providers = report.failed;
        sources = report.sources;
        report.result?;
    }
    let complete = inner.store.remote().local(content).await.map(|l| l.is_complete()).unwrap_or(false);
    if !complete {
        return Err(NodeError::Download(format!("the download of '{}' did not complete; run the same get again to resume", hit.name)));
    }

    let dir = out.unwrap_or_else(|| inner.downloads.clone());
    let fallback = format!("download-{}", hit.hash.fmt_short());
    let (path, size, mut note) = match hit.kind {
        Kind::File => save_file(node, &hit.name, hit.hash, &dir, &fallback).await?,
        Kind::Folder => save_folder(node, &hit.name, hit.hash, &dir, &fallback).await?,
    };
    let saved_name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if saved_name != hit.name && note.is_none() {
        note = Some(format!("saved as '{saved_name}' because '{}' is not a safe or free name here", hit.name));
    }

    // Become a source: keep the content and tell the index.
    shares::protect(&inner.store, content).await.map_err(|e| NodeError::Save(e.to_string()))?;
    let share = Share { name: saved_name, hash: hit.hash, size, path: path.clone(), kind: hit.kind };
    inner.shares.insert(share.clone())?;
    if let Err(e) = inner.index.publish(&[share.entry()]).await {
        tracing::warn!("downloaded, but could not publish yet: {e}");
    }
    send(GetEvent::Saved { path, hash: hit.hash.to_string(), size, note, failed_providers, resumed_from, sources }).await;
    Ok(())
}

/// Reserves a safe name in `dir` and moves the verified blob there.
async fn save_file(node: &Node, name: &str, hash: Hash, dir: &Path, fallback: &str) -> Result<(PathBuf, u64, Option<String>), NodeError> {
    let (d, n, f) = (dir.to_owned(), name.to_owned(), fallback.to_owned());
    let path = tokio::task::spawn_blocking(move || save::reserve(&d, &n, &f))
        .await
        .map_err(|e| NodeError::Save(e.to_string()))?
        .map_err(|e| NodeError::Save(format!("{} in {}", e, dir.display())))?;
    // The store moves its own copy to the target and serves it from there,
    // so a download is written once, not twice.
    let size = node
        .inner
        .store
        .blobs()
        .export_with_opts(ExportOptions { hash, mode: ExportMode::TryReference, target: path.clone() })
        .finish()
        .await;
    match size {
        Ok(size) => Ok((path, size, None)),
        Err(e) => {
            std::fs::remove_file(&path).ok();
            Err(NodeError::Save(e.to_string()))
        }
    }
}

/// Recreates a collection as a new directory in `dir`. Entries whose paths
/// are unsafe (`..`, absolute, control characters) are skipped and reported.
async fn save_folder(node: &Node, name: &str, hash: Hash, dir: &Path, fallback: &str) -> Result<(PathBuf, u64, Option<String>), NodeError> {
    let store = &node.inner.store;
    let collection =
        Collection::load(hash, store.deref()).await.map_err(|e| NodeError::Save(format!("the folder's listing is unreadable: {e}")))?;
    let (d, n, f) = (dir.to_owned(), name.to_owned(), fallback.to_owned());
    let root = tokio::task::spawn_blocking(move || save::reserve_dir(&d, &n, &f))
        .await
        .map_err(|e| NodeError::Save(e.to_string()))?
        .map_err(|e| NodeError::Save(format!("{} in {}", e, dir.display())))?;
    let mut skipped = Vec::new();
    let mut total = 0;
    for (entry, child) in collection.iter() {
        let Some(relative) = save::safe_relative(entry) else {
            skipped.push(entry.escape_debug().to_string());
            continue;
        };
        let r = root.clone();
        let target = match tokio::task::spawn_blocking(move || save::create_inside(&r, &relative)).await {
            Ok(Ok(t)) => t,
            _ => {
                skipped.push(entry.escape_debug().to_string());
                continue;
            }
        };
        // Copy, not move: the same content may appear twice in one folder.
        let written = store
            .blobs()
            .export_with_opts(ExportOptions { hash: *child, mode: ExportMode::Copy, target: target.clone() })
            .finish()
            .await
            .map_err(|e| NodeError::Save(format!("cannot write {}: {e}", target.display())))?;
        total += written;
    }
    let note = (!skipped.is_empty()).then(|| format!("skipped {} entries with unsafe paths: {}", skipped.len(), skipped.join(", ")));
    Ok((root, total, note))
}

/// Below this size, one provider at a time is fast enough.
const SWARM_MIN_SIZE: u64 = 4 * 1024 * 1024;
/// Most parts one file is split into.
const MAX_PARTS: usize = 4;

/// Splits a blob of `size` bytes into `parts` contiguous chunk ranges (1 KiB
/// BLAKE3 chunks); the last range is open so the tail is always covered.
pub fn plan_parts(size: u64, parts: usize) -> Vec<ChunkRanges> {
    let chunks = size.div_ceil(1024).max(1);
    let parts = (parts.max(1) as u64).min(chunks);
    let step = chunks.div_ceil(parts);
    (0..parts)
        .map(|i| {
            let start = ChunkNum(i * step);
            if i + 1 == parts {
                ChunkRanges::from(start..)
            } else {
                ChunkRanges::from(start..ChunkNum((i + 1) * step))
            }
        })
        .collect()
}

/// How a download went: who failed, who delivered.
struct DownloadReport {
    result: Result<(), NodeError>,
    failed: Vec<String>,
    sources: Vec<String>,
}

/// Downloads `content`. A large file with several providers is split into
/// parts fetched at once, each trying the providers in a different order,
/// so the load spreads and a provider that fails mid-way is replaced by
/// another for the parts it was serving. Every chunk is verified.
async fn download(
    node: &Node,
    content: HashAndFormat,
    size: u64,
    providers: Vec<EndpointId>,
    events: &mpsc::Sender<GetEvent>,
) -> DownloadReport {
    let requests: Vec<GetRequest> = if content.format == BlobFormat::Raw && providers.len() >= 2 && size >= SWARM_MIN_SIZE {
        plan_parts(size, providers.len().min(MAX_PARTS))
            .into_iter()
            .map(|ranges| GetRequest::builder().root(ranges).build(content.hash))
            .collect()
    } else {
        vec![GetRequest::from(content)]
    };
    let (tx, mut rx) = mpsc::channel::<(usize, DownloadProgressItem)>(64);
    let mut parts = tokio::task::JoinSet::new();
    for (i, request) in requests.into_iter().enumerate() {
        let mut order = providers.clone();
        order.rotate_left(i % providers.len().max(1));
        let downloader = node.inner.downloader.clone();
        let tx = tx.clone();
        parts.spawn(async move {
            match downloader.download(request, order).stream().await {
                Ok(mut stream) => {
                    while let Some(item) = stream.next().await {
                        if tx.send((i, item)).await.is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    tx.send((i, DownloadProgressItem::Error(e.into()))).await.ok();
                }
            }
        });
    }
    drop(tx);
    let mut done_per_part: HashMap<usize, u64> = HashMap::new();
    let mut current: HashMap<usize, EndpointId> = HashMap::new();
    let mut report = DownloadReport { result: Ok(()), failed: Vec::new(), sources: Vec::new() };
    let mut reported = 0u64;
    while let Some((part, item)) = rx.recv().await {
        match item {
            DownloadProgressItem::Progress(done) => {
                done_per_part.insert(part, done);
                let total: u64 = done_per_part.values().sum();
                if total >= reported + PROGRESS_STEP || total >= size {
                    reported = total;
                    events.send(GetEvent::Progress { done: total.min(size), total: size }).await.ok();
                }
            }
            DownloadProgressItem::TryProvider { id, .. } => {
                current.insert(part, id);
            }
            DownloadProgressItem::PartComplete { .. } => {
                if let Some(id) = current.get(&part) {
                    let id = id.fmt_short().to_string();
                    if !report.sources.contains(&id) {
                        report.sources.push(id);
                    }
                }
            }
            DownloadProgressItem::ProviderFailed { id, .. } => {
                let provider = id.fmt_short().to_string();
                if !report.failed.contains(&provider) {
                    report.failed.push(provider.clone());
                }
                events.send(GetEvent::ProviderFailed { provider }).await.ok();
            }
            // Both mean the providers ran out before this part was complete.
            DownloadProgressItem::Error(e) => {
                tracing::debug!("part {part} of {} failed: {e}", content.hash);
                report.result = Err(all_failed(report.failed.len()));
            }
            DownloadProgressItem::DownloadError => report.result = Err(all_failed(report.failed.len())),
        }
    }
    while parts.join_next().await.is_some() {}
    if report.result.is_ok() {
        events.send(GetEvent::Progress { done: size, total: size }).await.ok();
    }
    report
}

fn all_failed(count: usize) -> NodeError {
    NodeError::Download(format!(
        "no provider could deliver the file ({count} failed); what arrived is verified and kept, run the same get again later to resume"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_blob_without_overlap() {
        let parts = plan_parts(10 * 1024 * 1024, 3);
        assert_eq!(parts.len(), 3);
        let mut all = ChunkRanges::empty();
        for p in &parts {
            assert!((all.clone() & p.clone()).is_empty(), "parts do not overlap");
            all |= p.clone();
        }
        assert_eq!(all, ChunkRanges::all(), "together they cover everything");
        assert_eq!(plan_parts(100, 4).len(), 1, "a one-chunk blob is one part");
        assert_eq!(plan_parts(0, 4).len(), 1);
    }
}
