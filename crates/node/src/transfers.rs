//! Transfers: `get` finds a file's providers, downloads it from them with
//! BLAKE3 verification (several at once for a large file), saves it under a
//! safe name, and publishes it so this peer becomes a source too. An
//! interrupted get resumes: what the store already verified is not fetched
//! again.
//!
//! iroh-blobs' downloader tries the providers in order and, when one fails
//! mid-way, asks the next one only for what is still missing; everything it
//! writes to the store is verified against the hash first, so a corrupt byte
//! never reaches the output file.
//!
//! The module gets what it needs passed in ([`Transfers::new`]): a store, a
//! downloader, a [`Finder`] that answers "who has this?", a [`Publisher`]
//! that tells the network we have it, and the shares list. It never reaches
//! back into the node, so a test can drive it with real stores and an
//! answer of its own.

use std::{
    collections::HashMap,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
};

use bao_tree::ChunkNum;
use iroh::{address_lookup::memory::MemoryLookup, EndpointId};
use iroh_blobs::{
    api::{
        blobs::{BlobStatus, ExportMode, ExportOptions},
        downloader::{DownloadProgressItem, Downloader},
        Store,
    },
    format::collection::Collection,
    protocol::{ChunkRanges, ChunkRangesSeq, GetRequest},
    BlobFormat, Hash, HashAndFormat,
};
use n0_future::StreamExt;
use peernet_proto::{
    index::{FileEntry, Hit, Kind},
    names::validate_file_name,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{
    board::{Board, DownloadRow},
    endpoint,
    metrics::PeerMetrics,
    paths::{PathInfo, Paths},
    reputation::{Fault, Reputation, STALL_TIMEOUT},
    resolve,
    resolve::ResolveError,
    save,
    shares::{self, Share, ShareError, Shares},
    tasks::Tasks,
};

/// Most entries a downloaded folder may list: what a peernet folder holds.
pub const MAX_FOLDER_ENTRIES: usize = shares::MAX_FILES_PER_FOLDER;
/// Largest blob of entry names a downloaded folder may have: 999 paths of
/// a thousand bytes each fit.
pub const MAX_LISTING_META_BYTES: u64 = 1024 * 1024;
/// Free space a folder get leaves on the disk it writes to, beyond what
/// the folder needs.
pub const FREE_SPACE_MARGIN: u64 = 64 * 1024 * 1024;

/// Bytes free to this user on the file system holding `dir` (or the
/// nearest existing parent); `None` where that cannot be read.
fn free_space(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Progress events are sent at most this often (bytes), so a fast download
/// does not flood the control connection.
const PROGRESS_STEP: u64 = 1024 * 1024;
/// Pauses before a get's further rounds with every provider, when a
/// round failed.
const RETRY_PAUSES: [std::time::Duration; 2] = [std::time::Duration::from_secs(1), std::time::Duration::from_secs(2)];
/// Events of one get buffered between the download and its watcher.
const GET_EVENTS: usize = 64;

/// A boxed future, for the handles passed into [`Transfers`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who has a file: the search the node uses for `get`.
pub trait Finder: Send + Sync + 'static {
    /// Hits for a name or hash (prefix); an error is one sentence.
    fn find<'a>(&'a self, target: &'a str) -> BoxFuture<'a, Result<Vec<Hit>, String>>;
}

/// Tells the network that this peer now provides these files.
pub trait Publisher: Send + Sync + 'static {
    fn publish<'a>(&'a self, files: Vec<FileEntry>) -> BoxFuture<'a, Result<(), String>>;
}

/// What happens during a get, in order; the last event is `Saved` or `Failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GetEvent {
    Resolved {
        name: String,
        hash: String,
        size: u64,
        providers: Vec<String>,
    },
    Progress {
        done: u64,
        total: u64,
    },
    ProviderFailed {
        provider: String,
        /// Why it lost its turn.
        #[serde(default)]
        why: String,
    },
    Saved {
        path: PathBuf,
        hash: String,
        size: u64,
        note: Option<String>,
        failed_providers: Vec<String>,
        /// Each provider that failed, with why.
        #[serde(default)]
        failures: Vec<Failure>,
        /// Verified bytes that were already here when this get started (resume).
        resumed_from: u64,
        /// Providers that delivered parts of this download (short ids).
        sources: Vec<String>,
        /// How each source was reached (direct or relayed, and the
        /// round-trip time), in the order of `sources`.
        #[serde(default)]
        reached: Vec<Reached>,
    },
    Failed {
        error: String,
    },
}

/// A provider that lost its turn in a get, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The provider's short id.
    pub provider: String,
    pub why: String,
}

/// How a source of a download was reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reached {
    /// The source's short id.
    pub source: String,
    /// `None` when its connection had closed before it could be read.
    pub path: Option<PathInfo>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{0}")]
    Resolve(#[from] ResolveError),
    #[error("{0}")]
    Search(String),
    #[error("no online provider has '{0}' right now; try again when one of them is back")]
    NoProvider(String),
    #[error("{0}")]
    Download(String),
    #[error("cannot save the download: {0}")]
    Save(String),
    #[error("{0}")]
    Share(#[from] ShareError),
}

/// The transfer service; cheap to clone.
#[derive(Clone)]
pub struct Transfers {
    inner: Arc<Inner>,
}

struct Inner {
    me: EndpointId,
    store: Store,
    downloader: Downloader,
    lookup: MemoryLookup,
    shares: Arc<Shares>,
    finder: Arc<dyn Finder>,
    publisher: Arc<dyn Publisher>,
    downloads: PathBuf,
    tasks: Tasks,
    paths: Paths,
    board: Board,
    metrics: Arc<PeerMetrics>,
    /// How providers behaved, for the order of later tries.
    reputation: std::sync::Mutex<Reputation>,
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfers").field("downloads", &self.inner.downloads).finish_non_exhaustive()
    }
}

/// What [`Transfers`] is built from.
pub struct Parts {
    /// This peer, never asked for its own files.
    pub me: EndpointId,
    pub store: Store,
    pub downloader: Downloader,
    /// Where provider addresses from hits are remembered for dialing.
    pub lookup: MemoryLookup,
    pub shares: Arc<Shares>,
    pub finder: Arc<dyn Finder>,
    pub publisher: Arc<dyn Publisher>,
    /// Where downloads are saved unless a get names another directory.
    pub downloads: PathBuf,
    pub tasks: Tasks,
    /// Which way each connection goes, to say how sources were reached.
    pub paths: Paths,
    /// Where each get's progress is kept for the web page.
    pub board: Board,
    /// Bytes fetched and downloads by outcome are counted here.
    pub metrics: Arc<PeerMetrics>,
}

impl Transfers {
    pub fn new(parts: Parts) -> Self {
        let Parts { me, store, downloader, lookup, shares, finder, publisher, downloads, tasks, paths, board, metrics } = parts;
        Self {
            inner: Arc::new(Inner {
                me,
                store,
                downloader,
                lookup,
                shares,
                finder,
                publisher,
                downloads,
                tasks,
                paths,
                board,
                metrics,
                reputation: Default::default(),
            }),
        }
    }

    pub fn downloads(&self) -> &Path {
        &self.inner.downloads
    }

    /// Providers in the order to try them ([`Reputation::order`]).
    fn order(&self, providers: &[EndpointId]) -> Vec<EndpointId> {
        let paths = &self.inner.paths;
        let path = |p: &EndpointId| paths.of(p, crate::paths::BLOBS).or_else(|| paths.of(p, crate::paths::OVERLAY));
        self.reputation().order(providers, peernet_index::now_ms(), path)
    }

    fn fault(&self, provider: EndpointId, fault: Fault) {
        self.reputation().fault(provider, fault, peernet_index::now_ms());
        self.inner.metrics.provider_fault(fault);
    }

    fn reputation(&self) -> std::sync::MutexGuard<'_, Reputation> {
        self.inner.reputation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a get as a node task, reporting to `events` and to the board
    /// (whose id for it is returned): it finishes (and the file is
    /// published) even if whoever asked goes away.
    pub fn spawn_get(&self, target: String, out: Option<PathBuf>, events: mpsc::Sender<GetEvent>) -> u64 {
        let this = self.clone();
        let id = self.inner.board.start(&target);
        let (tx, mut rx) = mpsc::channel::<GetEvent>(GET_EVENTS);
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
            let get = async move {
                if let Err(e) = this.get(&target, out, &tx).await {
                    tx.send(GetEvent::Failed { error: e.to_string() }).await.ok();
                }
            };
            let watch = async move {
                while let Some(event) = rx.recv().await {
                    inner.metrics.bytes_fetched.inc_by(inner.board.apply(id, &event, std::time::Instant::now()));
                    match &event {
                        GetEvent::Saved { .. } => inner.metrics.download_ended("saved"),
                        GetEvent::Failed { .. } => inner.metrics.download_ended("failed"),
                        _ => {}
                    }
                    // Whoever asked may have gone away; the download carries on.
                    events.send(event).await.ok();
                }
            };
            tokio::join!(get, watch);
        });
        id
    }

    /// Every get since the daemon started, with its progress as of `now`.
    pub fn board(&self, now: std::time::Instant) -> Vec<DownloadRow> {
        self.inner.board.rows(now)
    }

    /// Finds, downloads, saves and publishes `target` (a name or a hash).
    pub async fn get(&self, target: &str, out: Option<PathBuf>, events: &mpsc::Sender<GetEvent>) -> Result<(), TransferError> {
        let inner = &self.inner;
        let hits = inner.finder.find(target).await.map_err(TransferError::Search)?;
        let hit = resolve::choose(target, hits)?;
        let providers: Vec<EndpointId> = hit.providers.iter().map(|p| p.peer.addr.id).filter(|id| *id != inner.me).collect();
        let providers = self.order(&providers);
        for p in &hit.providers {
            endpoint::remember(&inner.lookup, &p.peer.addr);
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
        let local = inner.store.remote().local(content).await.map_err(|e| TransferError::Download(e.to_string()))?;
        let resumed_from = local.local_bytes();
        let mut failures = Vec::new();
        let mut sources = Vec::new();
        let mut reached = Vec::new();
        if !local.is_complete() {
            if providers.is_empty() {
                return Err(TransferError::NoProvider(hit.name));
            }
            if hit.kind == Kind::Folder {
                let dir = out.clone().unwrap_or_else(|| inner.downloads.clone());
                self.check_listing(&hit.name, hit.hash, hit.size, &dir, providers.clone()).await?;
            }
            let mut report = self.download_retrying(content, hit.size, &providers, events).await;
            std::mem::replace(&mut report.result, Ok(()))?;
            if hit.kind == Kind::File && !self.is_complete(content).await {
                // The download stopped at the advertised size and the
                // content goes on: someone lied about its size.
                let honest = self.expose_size_liars(&hit, &providers, &mut report, events).await?;
                report = report.then(self.download_retrying(content, honest.size, &honest.providers, events).await);
                report.result?;
            }
            failures = report.failed;
            sources = report.sources;
            reached = report.reached;
        }
        if !self.is_complete(content).await {
            return Err(TransferError::Download(format!(
                "the download of '{}' did not complete; run the same get again to resume",
                hit.name
            )));
        }

        let dir = out.unwrap_or_else(|| inner.downloads.clone());
        let fallback = format!("download-{}", hit.hash.fmt_short());
        let (path, size, mut note) = match hit.kind {
            Kind::File => self.save_file(&hit.name, hit.hash, &dir, &fallback).await?,
            Kind::Folder => self.save_folder(&hit.name, hit.hash, &dir, &fallback).await?,
        };
        let saved_name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if saved_name != hit.name && note.is_none() {
            note = Some(format!("saved as '{saved_name}' because '{}' is not a safe or free name here", hit.name));
        }

        // Become a source: keep the content and tell the network, under the
        // name the network knows it by, whatever the local file is called;
        // otherwise a "name (1).ext" picked here would spread as its name.
        shares::protect(&inner.store, content).await.map_err(|e| TransferError::Save(e.to_string()))?;
        let name = if validate_file_name(&hit.name).is_ok() { hit.name.clone() } else { saved_name };
        let share = Share { name, hash: hit.hash, size, path: path.clone(), kind: hit.kind };
        inner.shares.insert(share.clone())?;
        if let Err(e) = inner.publisher.publish(vec![share.entry()]).await {
            tracing::warn!("downloaded, but could not publish yet: {e}");
        }
        let failed_providers = failures.iter().map(|f: &Failure| f.provider.clone()).collect();
        send(GetEvent::Saved { path, hash: hit.hash.to_string(), size, note, failed_providers, failures, resumed_from, sources, reached })
            .await;
        Ok(())
    }

    /// [`Transfers::download`], with another chance after a pause when a
    /// connection failed to a transient loss (a lossy link, a provider
    /// restarting) before the user is told to run the get again; what
    /// arrived is kept and resumed.
    async fn download_retrying(
        &self,
        content: HashAndFormat,
        size: u64,
        providers: &[EndpointId],
        events: &mpsc::Sender<GetEvent>,
    ) -> DownloadReport {
        let mut report = self.download(content, size, providers.to_vec(), events).await;
        for pause in RETRY_PAUSES {
            if report.result.is_ok() {
                break;
            }
            tokio::time::sleep(pause).await;
            report = report.then(self.download(content, size, providers.to_vec(), events).await);
        }
        report
    }

    async fn is_complete(&self, content: HashAndFormat) -> bool {
        self.inner.store.remote().local(content).await.map(|l| l.is_complete()).unwrap_or(false)
    }

    /// A file's download is cut at the size its hit advertised, so a
    /// provider cannot make a get fetch more than the user agreed to. When
    /// the content goes on past that, its true size is proven (its last
    /// chunk, fetched alone), every provider that advertised another size
    /// is counted as a liar and named, and the get may go on, up to the
    /// true size, with the providers that advertised it; if none did,
    /// nothing more is fetched.
    async fn expose_size_liars(
        &self,
        hit: &Hit,
        providers: &[EndpointId],
        report: &mut DownloadReport,
        events: &mpsc::Sender<GetEvent>,
    ) -> Result<Honest, TransferError> {
        let (quiet, _) = mpsc::channel(1);
        let size_only = GetRequest::new(hit.hash, ChunkRangesSeq::verified_size());
        self.fetch(vec![size_only], 0, providers.to_vec(), &quiet).await.result?;
        let truth = self.verified_size(hit.hash).await.ok_or_else(|| {
            TransferError::Download(format!("no provider proved the size of '{}'; run the same get again later to resume", hit.name))
        })?;
        let mut honest = Vec::new();
        for p in hit.providers.iter().filter(|p| p.peer.addr.id != self.inner.me) {
            let id = p.peer.addr.id;
            if p.size == truth {
                honest.push(id);
                continue;
            }
            self.fault(id, Fault::Lied);
            let failure =
                Failure { provider: id.fmt_short().to_string(), why: format!("advertised {} bytes; the content holds {truth}", p.size) };
            events.send(GetEvent::ProviderFailed { provider: failure.provider.clone(), why: failure.why.clone() }).await.ok();
            report.failed.retain(|f| f.provider != failure.provider);
            report.failed.push(failure);
        }
        if honest.is_empty() {
            return Err(TransferError::Download(format!(
                "'{}' was advertised as {} bytes but its content holds {truth}; the download was cut at the advertised size and not saved, \
                 and no provider advertised the true size",
                hit.name, hit.size
            )));
        }
        Ok(Honest { size: truth, providers: self.order(&honest) })
    }

    /// Checks a folder before any of its files is fetched; a listing is a
    /// list of hashes the provider chose, so nothing in it is taken at its
    /// word. First the listing's size alone (its last chunk proves it):
    /// more entries than a peernet folder holds is refused before the
    /// listing is fetched. Then the listing with each entry's size (each
    /// entry's last chunk proves it): the names' blob must be small, the
    /// entries must add up to the size the hit advertised, and their
    /// distinct contents must fit the free space where they go.
    async fn check_listing(
        &self,
        name: &str,
        hash: Hash,
        advertised: u64,
        dir: &Path,
        providers: Vec<EndpointId>,
    ) -> Result<(), TransferError> {
        // Progress of the listing is not the user's progress bar.
        let (quiet, _) = mpsc::channel(1);
        let refused = |why: String| TransferError::Download(format!("'{name}' {why}; it was not fetched"));
        let size_only = GetRequest::new(hash, ChunkRangesSeq::verified_size());
        self.fetch(vec![size_only], 0, providers.clone(), &quiet).await.result?;
        let listing = self.verified_size(hash).await.ok_or_else(|| refused("sent no proof of its listing's size".into()))?;
        // The first hash names the listing's metadata, every other one a file.
        let entries = (listing / 32).saturating_sub(1);
        if entries > MAX_FOLDER_ENTRIES as u64 {
            return Err(refused(format!("lists {entries} entries, more than the {MAX_FOLDER_ENTRIES} a peernet folder may hold")));
        }
        let with_sizes = GetRequest::new(hash, ChunkRangesSeq::verified_child_sizes());
        self.fetch(vec![with_sizes], 0, providers, &quiet).await.result?;
        let parts = shares::folder_parts(&self.inner.store, hash).await.ok_or_else(|| refused("sent no listing".into()))?;
        let mut sizes = Vec::with_capacity(parts.len());
        for part in &parts {
            sizes.push(self.verified_size(*part).await.ok_or_else(|| refused("sent no proof of an entry's size".into()))?);
        }
        let (meta, entries) = sizes.split_first().ok_or_else(|| refused("has an empty listing".into()))?;
        if *meta > MAX_LISTING_META_BYTES {
            return Err(refused(format!("names its entries in {meta} bytes, more than the {MAX_LISTING_META_BYTES} allowed")));
        }
        let total: u64 = entries.iter().fold(0u64, |sum, s| sum.saturating_add(*s));
        if total != advertised {
            return Err(refused(format!("was advertised as {advertised} bytes but its entries hold {total}")));
        }
        let distinct: HashMap<Hash, u64> = parts.iter().skip(1).copied().zip(entries.iter().copied()).collect();
        let distinct: u64 = distinct.values().fold(0u64, |sum, s| sum.saturating_add(*s));
        // The store's copy and the saved one, and a margin for everything else.
        let need = distinct.saturating_mul(2).saturating_add(FREE_SPACE_MARGIN);
        if let Some(free) = free_space(dir) {
            if free < need {
                return Err(refused(format!(
                    "needs {need} bytes of free space in {} (with a margin), which has {free}; free some space or get it with --out DIR elsewhere",
                    dir.display()
                )));
            }
        }
        Ok(())
    }

    /// A blob's size as verified (its last chunk is here), if it is.
    async fn verified_size(&self, hash: Hash) -> Option<u64> {
        match self.inner.store.blobs().status(hash).await {
            Ok(BlobStatus::Complete { size }) => Some(size),
            Ok(BlobStatus::Partial { size }) => size,
            _ => None,
        }
    }

    /// Reserves a safe name in `dir` and moves the verified blob there.
    async fn save_file(&self, name: &str, hash: Hash, dir: &Path, fallback: &str) -> Result<(PathBuf, u64, Option<String>), TransferError> {
        let (d, n, f) = (dir.to_owned(), name.to_owned(), fallback.to_owned());
        let path = tokio::task::spawn_blocking(move || save::reserve(&d, &n, &f))
            .await
            .map_err(|e| TransferError::Save(e.to_string()))?
            .map_err(|e| TransferError::Save(format!("{} in {}", e, dir.display())))?;
        // The store moves its own copy to the target and serves it from there,
        // so a download is written once, not twice.
        let size = self
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
                Err(TransferError::Save(e.to_string()))
            }
        }
    }

    /// Recreates a collection as a new directory in `dir`. Entries whose paths
    /// are unsafe (`..`, absolute, control characters) are skipped and reported.
    async fn save_folder(
        &self,
        name: &str,
        hash: Hash,
        dir: &Path,
        fallback: &str,
    ) -> Result<(PathBuf, u64, Option<String>), TransferError> {
        let collection = Collection::load(hash, &self.inner.store)
            .await
            .map_err(|e| TransferError::Save(format!("the folder's listing is unreadable: {e}")))?;
        let (d, n, f) = (dir.to_owned(), name.to_owned(), fallback.to_owned());
        let root = tokio::task::spawn_blocking(move || save::reserve_dir(&d, &n, &f))
            .await
            .map_err(|e| TransferError::Save(e.to_string()))?
            .map_err(|e| TransferError::Save(format!("{} in {}", e, dir.display())))?;
        match self.write_entries(&collection, &root).await {
            Ok((total, skipped)) => {
                let note =
                    (!skipped.is_empty()).then(|| format!("skipped {} entries with unsafe paths: {}", skipped.len(), skipped.join(", ")));
                Ok((root, total, note))
            }
            Err(e) => {
                // A folder get that fails leaves nothing behind.
                let r = root.clone();
                tokio::task::spawn_blocking(move || std::fs::remove_dir_all(r)).await.ok();
                Err(e)
            }
        }
    }

    /// Writes a collection's entries under `root`; identical entries are
    /// written once and linked (a listing that repeats one entry 999 times
    /// costs its size once). Returns the bytes the entries hold and the
    /// entries skipped for unsafe paths.
    async fn write_entries(&self, collection: &Collection, root: &Path) -> Result<(u64, Vec<String>), TransferError> {
        let store = &self.inner.store;
        let mut skipped = Vec::new();
        let mut total = 0;
        let mut written: HashMap<Hash, PathBuf> = HashMap::new();
        for (entry, child) in collection.iter() {
            let Some(relative) = save::safe_relative(entry) else {
                skipped.push(entry.escape_debug().to_string());
                continue;
            };
            let r = root.to_path_buf();
            let target = match tokio::task::spawn_blocking(move || save::create_inside(&r, &relative)).await {
                Ok(Ok(t)) => t,
                _ => {
                    skipped.push(entry.escape_debug().to_string());
                    continue;
                }
            };
            if let Some(first) = written.get(child) {
                let (from, to) = (first.clone(), target.clone());
                let linked = tokio::task::spawn_blocking(move || std::fs::remove_file(&to).and_then(|()| std::fs::hard_link(&from, &to)))
                    .await
                    .map_err(|e| TransferError::Save(e.to_string()))?;
                if linked.is_ok() {
                    total += std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
                    continue;
                }
            }
            // Copy, not move: the store keeps serving its own copy.
            let size = store
                .blobs()
                .export_with_opts(ExportOptions { hash: *child, mode: ExportMode::Copy, target: target.clone() })
                .finish()
                .await
                .map_err(|e| TransferError::Save(format!("cannot write {}: {e}", target.display())))?;
            total += size;
            written.insert(*child, target);
        }
        Ok((total, skipped))
    }

    /// Downloads `content`. A large file with several providers is split into
    /// parts fetched at once, each trying the providers in a different order,
    /// so the load spreads and a provider that fails mid-way is replaced by
    /// another for the parts it was serving. Every chunk is verified.
    async fn download(
        &self,
        content: HashAndFormat,
        size: u64,
        providers: Vec<EndpointId>,
        events: &mpsc::Sender<GetEvent>,
    ) -> DownloadReport {
        let requests: Vec<GetRequest> = if content.format == BlobFormat::Raw {
            let parts = if providers.len() >= 2 && size >= SWARM_MIN_SIZE { providers.len().min(MAX_PARTS) } else { 1 };
            plan_parts(size, parts).into_iter().map(|ranges| GetRequest::builder().root(ranges).build(content.hash)).collect()
        } else {
            vec![GetRequest::from(content)]
        };
        self.fetch(requests, size, providers, events).await
    }

    /// Runs `requests` at once, each through the providers in its own
    /// order, with the stall watchdog; `size` is for progress only.
    async fn fetch(
        &self,
        requests: Vec<GetRequest>,
        size: u64,
        providers: Vec<EndpointId>,
        events: &mpsc::Sender<GetEvent>,
    ) -> DownloadReport {
        let (tx, mut rx) = mpsc::channel::<(usize, PartEvent)>(64);
        let mut parts = tokio::task::JoinSet::new();
        for (i, request) in requests.into_iter().enumerate() {
            let mut order = providers.clone();
            order.rotate_left(i % providers.len().max(1));
            let downloader = self.inner.downloader.clone();
            let paths = self.inner.paths.clone();
            let tx = tx.clone();
            parts.spawn(async move {
                let mut stream = match downloader.download(request, order).stream().await {
                    Ok(stream) => stream,
                    Err(e) => {
                        tx.send((i, PartEvent::Item(DownloadProgressItem::Error(e.into())))).await.ok();
                        return;
                    }
                };
                // The watchdog: a provider that sends nothing verified for
                // STALL_TIMEOUT has its connections closed, so the
                // downloader fails it and moves this part to the next one.
                let mut current: Option<EndpointId> = None;
                let mut idle_rounds = 0;
                loop {
                    match tokio::time::timeout(STALL_TIMEOUT, stream.next()).await {
                        Ok(Some(item)) => {
                            idle_rounds = 0;
                            match &item {
                                DownloadProgressItem::TryProvider { id, .. } => current = Some(*id),
                                DownloadProgressItem::ProviderFailed { .. } => current = None,
                                _ => {}
                            }
                            if tx.send((i, PartEvent::Item(item))).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(_) => {
                            if let Some(id) = current.take() {
                                let open = paths.open_ids(&id, crate::paths::BLOBS);
                                paths.close(&id, &open, b"no verified bytes in time");
                                tx.send((i, PartEvent::Stalled(id))).await.ok();
                            } else {
                                // Nothing moves and no provider holds the part
                                // (a dial that hangs): give up after a while.
                                idle_rounds += 1;
                                if idle_rounds >= 3 {
                                    tx.send((i, PartEvent::Item(DownloadProgressItem::DownloadError))).await.ok();
                                    return;
                                }
                            }
                        }
                    }
                }
            });
        }
        drop(tx);
        let mut done_per_part: HashMap<usize, u64> = HashMap::new();
        let mut current: HashMap<usize, EndpointId> = HashMap::new();
        let mut report = DownloadReport { result: Ok(()), failed: Vec::new(), sources: Vec::new(), reached: Vec::new() };
        let mut reported = 0u64;
        while let Some((part, event)) = rx.recv().await {
            let item = match event {
                PartEvent::Item(item) => item,
                PartEvent::Stalled(id) => {
                    self.fault(id, Fault::Stalled);
                    let failure = Failure {
                        provider: id.fmt_short().to_string(),
                        why: format!("sent no verified bytes for {} s", STALL_TIMEOUT.as_secs()),
                    };
                    if !report.failed.iter().any(|f| f.provider == failure.provider) {
                        report.failed.push(failure.clone());
                    }
                    events.send(GetEvent::ProviderFailed { provider: failure.provider, why: failure.why }).await.ok();
                    continue;
                }
            };
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
                        let short = id.fmt_short().to_string();
                        if !report.sources.contains(&short) {
                            // Read now, while the connection that delivered is still open.
                            report.reached.push(Reached { source: short.clone(), path: self.inner.paths.of(id, crate::paths::BLOBS) });
                            report.sources.push(short);
                        }
                    }
                }
                DownloadProgressItem::ProviderFailed { id, .. } => {
                    let failure = Failure { provider: id.fmt_short().to_string(), why: Fault::Failed.describe().to_string() };
                    // A stalled provider's closed connection fails it too:
                    // that is the stall, already counted.
                    if report.failed.iter().any(|f| f.provider == failure.provider) {
                        continue;
                    }
                    self.fault(id, Fault::Failed);
                    report.failed.push(failure.clone());
                    events.send(GetEvent::ProviderFailed { provider: failure.provider, why: failure.why }).await.ok();
                }
                // Both mean the providers ran out before this part was complete.
                DownloadProgressItem::Error(e) => {
                    tracing::debug!("part {part} failed: {e}");
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
}

/// What one part's task reports: the downloader's progress, or a provider
/// its watchdog found stalled.
enum PartEvent {
    Item(DownloadProgressItem),
    Stalled(EndpointId),
}

/// Below this size, one provider at a time is fast enough.
const SWARM_MIN_SIZE: u64 = 4 * 1024 * 1024;
/// Most parts one file is split into.
const MAX_PARTS: usize = 4;

/// Splits a blob of `size` bytes into `parts` contiguous chunk ranges (1 KiB
/// BLAKE3 chunks) that end where `size` does: a blob that goes on past its
/// advertised size is fetched no further (its last chunk, which proves its
/// size, is then missing). A blob shorter than advertised is clamped by
/// its provider and completes.
pub fn plan_parts(size: u64, parts: usize) -> Vec<ChunkRanges> {
    let chunks = size.div_ceil(1024).max(1);
    let parts = (parts.max(1) as u64).min(chunks);
    let step = chunks.div_ceil(parts);
    (0..parts).map(|i| ChunkRanges::from(ChunkNum(i * step)..ChunkNum(((i + 1) * step).min(chunks)))).collect()
}

/// The true size of a file whose hit lied, and the providers that
/// advertised it, in the order to try them.
struct Honest {
    size: u64,
    providers: Vec<EndpointId>,
}

/// How a download went: who failed, who delivered.
struct DownloadReport {
    result: Result<(), TransferError>,
    failed: Vec<Failure>,
    sources: Vec<String>,
    reached: Vec<Reached>,
}

impl DownloadReport {
    /// This round's report followed by the next round's: the next one's
    /// outcome, every provider that failed (once), every source.
    fn then(mut self, next: DownloadReport) -> DownloadReport {
        for failure in next.failed {
            if !self.failed.iter().any(|f| f.provider == failure.provider) {
                self.failed.push(failure);
            }
        }
        for (source, reached) in next.sources.into_iter().zip(next.reached) {
            if !self.sources.contains(&source) {
                self.sources.push(source);
                self.reached.push(reached);
            }
        }
        self.result = next.result;
        self
    }
}

fn all_failed(count: usize) -> TransferError {
    TransferError::Download(format!(
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
        assert_eq!(all, ChunkRanges::from(..ChunkNum(10 * 1024)), "together they cover the advertised size, and no more");
        assert_eq!(plan_parts(1025, 1), vec![ChunkRanges::from(..ChunkNum(2))], "a partial last chunk is fetched");
        assert_eq!(plan_parts(100, 4).len(), 1, "a one-chunk blob is one part");
        assert_eq!(plan_parts(0, 4).len(), 1);
    }
}
