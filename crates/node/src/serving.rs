//! Which blobs this peer serves: only what it shares now. A blob stays in
//! the store after `unshare` until the store reclaims it, and a peer
//! downloading a file holds its verified parts; neither is served. A
//! request for anything else is refused (iroh-blobs' permission refusal)
//! and counted, so `unshare` means no longer served, whoever asks by hash.
//!
//! A shared folder is served as its collection: the hash sequence, the
//! metadata blob that names its entries, and each entry (each entry is
//! also a share of its own). The parts of a folder are read from the store
//! once and remembered while the folder is shared.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use iroh_blobs::{api::Store, Hash};
use peernet_proto::index::Kind;

use crate::shares::{self, Shares};

/// The gate every blob request passes; cheap to clone.
#[derive(Debug, Clone)]
pub struct Serving {
    shares: Arc<Shares>,
    store: Store,
    /// The blobs each shared folder is made of, by folder hash.
    parts: Arc<Mutex<HashMap<Hash, Arc<HashSet<Hash>>>>>,
    refused: Arc<AtomicU64>,
}

impl Serving {
    pub fn new(shares: Arc<Shares>, store: Store) -> Self {
        Self { shares, store, parts: Default::default(), refused: Default::default() }
    }

    /// Whether a request for `hash` is served; counts a refusal.
    pub async fn allows(&self, hash: &Hash) -> bool {
        let allowed = self.shared(hash).await;
        if !allowed {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// Requests refused because they asked for a blob this peer does not share.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    async fn shared(&self, hash: &Hash) -> bool {
        let list = self.shares.list();
        if list.iter().any(|s| s.hash == *hash) {
            return true;
        }
        let folders: Vec<Hash> = list.iter().filter(|s| s.kind == Kind::Folder).map(|s| s.hash).collect();
        // Forget the parts of folders no longer shared.
        self.lock().retain(|folder, _| folders.contains(folder));
        for folder in folders {
            if self.parts_of(folder).await.contains(hash) {
                return true;
            }
        }
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Hash, Arc<HashSet<Hash>>>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn parts_of(&self, folder: Hash) -> Arc<HashSet<Hash>> {
        if let Some(parts) = self.lock().get(&folder) {
            return parts.clone();
        }
        match shares::folder_parts(&self.store, folder).await {
            Some(parts) => {
                let parts = Arc::new(parts.into_iter().collect::<HashSet<Hash>>());
                self.lock().insert(folder, parts.clone());
                parts
            }
            // Not in the store (yet): nothing of it is served, and it is
            // read again next time.
            None => Arc::new(HashSet::new()),
        }
    }
}
