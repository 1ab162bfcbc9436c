//! Files: what this peer shares (`share`, `unshare`, `ls`). The list lives
//! in [`Shares`] (`shares.json`); the index learns every change, or learns
//! it after the next join when it is unreachable.

use std::{path::Path, sync::Arc};

use iroh_blobs::api::Store;
use peernet_proto::index::{ErrorCode, Kind};
use serde::{Deserialize, Serialize};

use crate::{
    index_client::{IndexClient, IndexError},
    resolve::{self, ResolveError},
    search::{Search, SearchError},
    shares::{self, Share, ShareError, Shares},
};

/// The answer to `share`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareReply {
    pub share: Share,
    /// Set when the file is shared locally but the index could not be told yet.
    pub warning: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0}")]
    Share(#[from] ShareError),
    #[error("{0}")]
    Index(#[from] IndexError),
    #[error("{0}")]
    Search(#[from] SearchError),
    #[error("{0}")]
    Resolve(#[from] ResolveError),
}

/// The files handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Files {
    store: Store,
    shares: Arc<Shares>,
    index: IndexClient,
    search: Search,
}

impl Files {
    pub fn new(store: Store, shares: Arc<Shares>, index: IndexClient, search: Search) -> Self {
        Self { store, shares, index, search }
    }

    /// The files this peer shares.
    pub fn list(&self) -> Vec<Share> {
        self.shares.list()
    }

    /// Imports a file, or a folder and every file in it, into the store and
    /// the shares list, without telling the index.
    pub async fn add(store: &Store, shares: &Shares, path: &Path) -> Result<(Vec<Share>, Share), ShareError> {
        let is_dir = tokio::fs::metadata(path).await.map(|m| m.is_dir()).unwrap_or(false);
        let (files, share) = if is_dir { shares::import_dir(store, path).await? } else { (Vec::new(), shares::import(store, path).await?) };
        for f in &files {
            shares.insert(f.clone())?;
        }
        shares.insert(share.clone())?;
        Ok((files, share))
    }

    /// Imports and publishes a file or folder. When the index is unreachable
    /// the file is still shared and is published after the next join.
    pub async fn share(&self, path: &Path) -> Result<ShareReply, FilesError> {
        let (files, share) = Self::add(&self.store, &self.shares, path).await?;
        let mut entries: Vec<_> = files.iter().map(Share::entry).collect();
        entries.push(share.entry());
        let warning = match self.index.publish(&entries).await {
            // Without an index, sharing means answering flood searches.
            Ok(()) | Err(IndexError::NoIndex) => None,
            Err(IndexError::Unreachable(e)) => {
                Some(format!("shared, but the index is unreachable ({e}); it will be published when the index is back"))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(ShareReply { share, warning })
    }

    /// Stops sharing a file of ours; a folder goes with every file that was
    /// shared as part of it (files under its path). Everything unshared is
    /// no longer listed, searchable, announced or served. For a file we do
    /// not share, the index is asked anyway, so its ownership rule gives
    /// the answer.
    pub async fn unshare(&self, target: &str) -> Result<Share, FilesError> {
        match self.shares.find(target) {
            Ok(share) => {
                let mut gone = vec![share.clone()];
                if share.kind == Kind::Folder {
                    let parts = shares::folder_parts(&self.store, share.hash).await.unwrap_or_default();
                    gone.extend(
                        self.shares
                            .list()
                            .into_iter()
                            .filter(|s| s.kind == Kind::File && s.path.starts_with(&share.path) && parts.contains(&s.hash)),
                    );
                }
                for s in &gone {
                    self.shares.remove(&s.hash)?;
                    shares::unprotect(&self.store, &s.hash).await;
                }
                for s in &gone {
                    match self.index.unpublish(s.hash).await {
                        Ok(()) | Err(IndexError::Unreachable(_)) | Err(IndexError::NoIndex) => {}
                        Err(IndexError::Refused { code: ErrorCode::NotFound, .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(share)
            }
            Err(ShareError::Unknown(_)) => {
                let hits = self.search.index(target, peernet_proto::limits::MAX_SEARCH_LIMIT).await?;
                let hit = resolve::choose(target, hits).map_err(|_| ShareError::Unknown(target.to_string()))?;
                self.index.unpublish(hit.hash).await?;
                // The index accepted: it was ours after all (shared before shares.json existed).
                Ok(Share { name: hit.name, hash: hit.hash, size: hit.size, path: Default::default(), kind: hit.kind })
            }
            Err(e) => Err(e.into()),
        }
    }
}
