//! The files this peer shares: imported into the blob store, protected by a
//! tag, and listed in `shares.json` so they are published again after a
//! restart without the user running `share` again.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use iroh_blobs::{
    api::blobs::{AddPathOptions, ImportMode},
    format::collection::Collection,
    BlobFormat, Hash, HashAndFormat,
};

/// Most files in one shared folder (the index's per-peer limit bounds it too).
pub const MAX_FILES_PER_FOLDER: usize = peernet_proto::limits::MAX_FILES_PER_PEER - 1;
use peernet_proto::{
    index::{FileEntry, Kind},
    names::validate_file_name,
};
use serde::{Deserialize, Serialize};

use crate::data_dir::{read_json, write_json, DataDirError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub name: String,
    pub hash: Hash,
    pub size: u64,
    #[serde(default)]
    pub kind: Kind,
    /// Where the data lives on disk (the original file, or the download).
    pub path: PathBuf,
}

impl Share {
    pub fn entry(&self) -> FileEntry {
        FileEntry { name: self.name.clone(), size: self.size, hash: self.hash, kind: self.kind }
    }

    pub fn hash_and_format(&self) -> HashAndFormat {
        match self.kind {
            Kind::File => HashAndFormat::raw(self.hash),
            Kind::Folder => HashAndFormat::hash_seq(self.hash),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("cannot share {path}: {why}")]
    Unreadable { path: PathBuf, why: String },
    #[error("cannot share {path}: it is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("cannot share {path}: {why}")]
    BadName { path: PathBuf, why: String },
    #[error("cannot import {path} into the store: {why}")]
    Import { path: PathBuf, why: String },
    #[error("cannot share {path}: a shared folder holds at most {MAX_FILES_PER_FOLDER} files; share smaller folders")]
    TooManyFiles { path: PathBuf },
    #[error("you do not share a file named or hashed '{0}'; `peernet ls` lists what you share")]
    Unknown(String),
    #[error("'{target}' names {count} shared files; use the hash instead ({hashes})")]
    Ambiguous { target: String, count: usize, hashes: String },
    #[error(transparent)]
    Persist(#[from] DataDirError),
}

/// Tag that keeps a shared blob from being garbage collected.
fn tag_name(hash: &Hash) -> String {
    format!("peernet/share/{hash}")
}

#[derive(Debug)]
pub struct Shares {
    file: PathBuf,
    list: Mutex<Vec<Share>>,
}

impl Shares {
    pub fn load(file: PathBuf) -> Result<Self, ShareError> {
        let list = read_json(&file)?.unwrap_or_default();
        Ok(Self { file, list: Mutex::new(list) })
    }

    pub fn list(&self) -> Vec<Share> {
        self.list.lock().expect("shares lock").clone()
    }

    pub fn entries(&self) -> Vec<FileEntry> {
        self.list().iter().map(Share::entry).collect()
    }

    pub fn get(&self, hash: &Hash) -> Option<Share> {
        self.list().into_iter().find(|s| s.hash == *hash)
    }

    /// Adds or replaces the share of `share.hash`, then persists the list.
    pub fn insert(&self, share: Share) -> Result<(), ShareError> {
        let mut list = self.list.lock().expect("shares lock");
        list.retain(|s| s.hash != share.hash);
        list.push(share);
        write_json(&self.file, &*list, false)?;
        Ok(())
    }

    /// Finds exactly one share by name or by hash (or a hash prefix).
    pub fn find(&self, target: &str) -> Result<Share, ShareError> {
        let list = self.list();
        // The name the network knows, or the local file's name when the
        // two differ (a download saved as "name (1).ext").
        let local_name = |s: &Share| s.path.file_name().is_some_and(|n| n == target);
        let mut matches: Vec<&Share> = list.iter().filter(|s| s.name == target).collect();
        if matches.is_empty() {
            matches = list.iter().filter(|s| local_name(s)).collect();
        }
        if let Some(prefix) = peernet_proto::search::hash_prefix(target).filter(|_| matches.is_empty()) {
            matches = list.iter().filter(|s| s.hash.to_hex().starts_with(&prefix)).collect();
        }
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(ShareError::Unknown(target.to_string())),
            many => Err(ShareError::Ambiguous {
                target: target.to_string(),
                count: many.len(),
                hashes: many.iter().map(|s| s.hash.fmt_short().to_string()).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    pub fn remove(&self, hash: &Hash) -> Result<Option<Share>, ShareError> {
        let mut list = self.list.lock().expect("shares lock");
        let Some(pos) = list.iter().position(|s| s.hash == *hash) else { return Ok(None) };
        let removed = list.remove(pos);
        write_json(&self.file, &*list, false)?;
        Ok(Some(removed))
    }
}

/// Imports `path` into the store without copying where the store allows,
/// and tags it so it stays while shared.
pub async fn import(store: &iroh_blobs::api::Store, path: &Path) -> Result<Share, ShareError> {
    let path = std::path::absolute(path).map_err(|e| ShareError::Unreadable { path: path.to_owned(), why: e.to_string() })?;
    let meta = tokio::fs::metadata(&path).await.map_err(|e| ShareError::Unreadable { path: path.clone(), why: e.to_string() })?;
    if !meta.is_file() {
        return Err(ShareError::NotAFile { path });
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| ShareError::BadName { path: path.clone(), why: "it has no file name".into() })?;
    validate_file_name(&name).map_err(|e| ShareError::BadName { path: path.clone(), why: e.to_string() })?;
    let import_err = |e: &dyn std::fmt::Display| ShareError::Import { path: path.clone(), why: e.to_string() };
    let temp = store
        .blobs()
        .add_path_with_opts(AddPathOptions { path: path.clone(), format: BlobFormat::Raw, mode: ImportMode::TryReference })
        .temp_tag()
        .await
        .map_err(|e| import_err(&e))?;
    let hash = temp.hash();
    protect(store, HashAndFormat::raw(hash)).await.map_err(|e| import_err(&e))?;
    drop(temp);
    Ok(Share { name, hash, size: meta.len(), path, kind: Kind::File })
}

/// Imports every regular file under `dir` (symlinks are not followed, so a
/// link cannot pull in files from outside the folder) and a collection that
/// names them by relative path. Returns the files, then the folder.
pub async fn import_dir(store: &iroh_blobs::api::Store, dir: &Path) -> Result<(Vec<Share>, Share), ShareError> {
    let dir = std::path::absolute(dir).map_err(|e| ShareError::Unreadable { path: dir.to_owned(), why: e.to_string() })?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| ShareError::BadName { path: dir.clone(), why: "it has no name".into() })?;
    validate_file_name(&name).map_err(|e| ShareError::BadName { path: dir.clone(), why: e.to_string() })?;
    let mut files = Vec::new();
    let mut pending = vec![dir.clone()];
    while let Some(d) = pending.pop() {
        let mut entries = tokio::fs::read_dir(&d).await.map_err(|e| ShareError::Unreadable { path: d.clone(), why: e.to_string() })?;
        while let Some(entry) = entries.next_entry().await.map_err(|e| ShareError::Unreadable { path: d.clone(), why: e.to_string() })? {
            let kind = entry.file_type().await.map_err(|e| ShareError::Unreadable { path: entry.path(), why: e.to_string() })?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            } else {
                tracing::warn!("not sharing {}: only regular files and directories are shared", entry.path().display());
            }
        }
    }
    if files.len() > MAX_FILES_PER_FOLDER {
        return Err(ShareError::TooManyFiles { path: dir });
    }
    files.sort();
    let mut shares = Vec::with_capacity(files.len());
    let mut collection = Vec::with_capacity(files.len());
    for path in files {
        let share = import(store, &path).await?;
        let relative = path
            .strip_prefix(&dir)
            .expect("walked from dir")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect::<Vec<_>>()
            .join("/");
        collection.push((relative, share.hash));
        shares.push(share);
    }
    let size = shares.iter().map(|s| s.size).sum();
    let import_err = |e: &dyn std::fmt::Display| ShareError::Import { path: dir.clone(), why: e.to_string() };
    let temp = Collection::from_iter(collection).store(store).await.map_err(|e| import_err(&e))?;
    let folder = Share { name, hash: temp.hash(), size, path: dir.clone(), kind: Kind::Folder };
    protect(store, folder.hash_and_format()).await.map_err(|e| import_err(&e))?;
    drop(temp);
    Ok((shares, folder))
}

/// The blobs a folder is made of: its metadata blob (the entries' names)
/// and its entries; `None` when the folder's hash sequence is not in the
/// store.
pub async fn folder_parts(store: &iroh_blobs::api::Store, folder: Hash) -> Option<Vec<Hash>> {
    let bytes = store.get_bytes(folder).await.ok()?;
    let seq = iroh_blobs::hashseq::HashSeq::try_from(bytes).ok()?;
    Some(seq.iter().collect())
}

/// Tags `content` as shared.
pub async fn protect(store: &iroh_blobs::api::Store, content: HashAndFormat) -> Result<(), iroh_blobs::api::RequestError> {
    store.tags().set(tag_name(&content.hash), content).await
}

/// Removes the share tag; the store may then reclaim the data.
pub async fn unprotect(store: &iroh_blobs::api::Store, hash: &Hash) {
    if let Err(e) = store.tags().delete(tag_name(hash)).await {
        tracing::warn!("could not untag {hash}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(name: &str) -> Share {
        Share { name: name.into(), hash: Hash::new(name), size: 1, path: PathBuf::from("/x"), kind: Kind::File }
    }

    #[test]
    fn find_by_name_hash_or_prefix_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shares.json");
        let shares = Shares::load(file.clone()).unwrap();
        shares.insert(share("a.txt")).unwrap();
        shares.insert(share("b.txt")).unwrap();
        assert_eq!(shares.find("a.txt").unwrap().name, "a.txt");
        let hex = Hash::new("b.txt").to_hex();
        assert_eq!(shares.find(&hex).unwrap().name, "b.txt");
        assert_eq!(shares.find(&hex[..8]).unwrap().name, "b.txt");
        assert!(matches!(shares.find("c.txt"), Err(ShareError::Unknown(_))));
        let again = Shares::load(file).unwrap();
        assert_eq!(again.list().len(), 2);
        again.remove(&Hash::new("a.txt")).unwrap();
        assert_eq!(again.list().len(), 1);
    }

    #[test]
    fn same_name_different_content_is_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        let shares = Shares::load(dir.path().join("s.json")).unwrap();
        shares.insert(share("x")).unwrap();
        shares.insert(Share { hash: Hash::new("other"), ..share("x") }).unwrap();
        assert!(matches!(shares.find("x"), Err(ShareError::Ambiguous { count: 2, .. })));
    }
}
