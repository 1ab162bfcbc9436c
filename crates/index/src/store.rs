//! The index's durable state in SQLite.
//!
//! WAL mode with `synchronous=FULL`: every mutating call commits (and
//! fsyncs) before it returns, and the caller acknowledges only after that, so
//! a `kill -9` never loses an acknowledged registration.
//!
//! Time is an argument (`now`, Unix milliseconds) so leases can be tested
//! without sleeping. A peer is online while `lease_until > now`; an expired
//! peer keeps its rows but vanishes from every query until it heartbeats.
//!
//! Nothing is read back from here to answer a query: the store keeps a
//! [`Catalog`] in memory, filled from the database on open and told every
//! change once it is committed ([`Store::commit_batch`], or at once outside
//! a batch). The database is the index process's own while it runs: a
//! change made by another program shows at the next start.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock, RwLockReadGuard},
};

use iroh::EndpointId;
use peernet_proto::Hash;
use peernet_proto::{
    index::{FileEntry, Hit, Kind, PeerAddr, PeerInfo},
    limits::{MAX_FILES_PER_PEER, MAX_FILES_PER_PUBLISH},
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

pub use crate::catalog::PeerRecord;
use crate::catalog::{Catalog, Change};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("this key has not joined the network")]
    NotJoined,
    #[error("the nickname '{0}' is used by another online peer")]
    NicknameTaken(String),
    #[error("a peer may register at most {MAX_FILES_PER_PEER} files")]
    TooManyFiles,
    #[error("that file is registered by another peer; only the peer that shared it can unshare it")]
    NotOwner,
    #[error("no such file is registered")]
    NotFound,
}

pub type Result<T> = std::result::Result<T, StoreError>;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS peers(
    id BLOB PRIMARY KEY,
    nickname TEXT NOT NULL,
    addr BLOB NOT NULL,
    joined_at INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    neighbors BLOB NOT NULL DEFAULT x'',
    file_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS peers_nickname ON peers(nickname COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS peers_lease ON peers(lease_until);
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY,
    peer BLOB NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    hash TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    kind INTEGER NOT NULL DEFAULT 0,
    registered_at INTEGER NOT NULL,
    UNIQUE(peer, hash)
);
-- Who provides a hash is answered from memory (crate::catalog): an index
-- on it would only cost every write a random insert into a million keys.
DROP INDEX IF EXISTS files_hash;
-- Kept by triggers so the per-peer limit costs one row read, not a count
-- over all of the peer's files, on every publish.
CREATE TRIGGER IF NOT EXISTS files_count_ai AFTER INSERT ON files BEGIN
    UPDATE peers SET file_count = file_count + 1 WHERE id = new.peer;
END;
CREATE TRIGGER IF NOT EXISTS files_count_ad AFTER DELETE ON files BEGIN
    UPDATE peers SET file_count = file_count - 1 WHERE id = old.peer;
END;
-- Searches are answered from memory now (crate::catalog); the full-text
-- tables of earlier versions, and the triggers that fed them, go.
DROP TRIGGER IF EXISTS files_ai;
DROP TRIGGER IF EXISTS files_ad;
DROP TRIGGER IF EXISTS files_au;
DROP TRIGGER IF EXISTS files_stage_ai;
DROP TRIGGER IF EXISTS files_stage_ad;
DROP TRIGGER IF EXISTS files_stage_au;
DROP TABLE IF EXISTS files_fts;
DROP TABLE IF EXISTS files_terms;
DROP TABLE IF EXISTS search_words;
DROP TABLE IF EXISTS search_rules;
DROP TABLE IF EXISTS fts_staged;
"#;

/// One peer for [`Store::seed`].
#[derive(Debug, Clone)]
pub struct SeedPeer {
    pub addr: PeerAddr,
    pub nickname: String,
    pub files: Vec<FileEntry>,
}

/// What [`Store::seed`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedCount {
    pub peers: u64,
    pub files: u64,
}

pub struct Store {
    conn: Connection,
    /// The database file; `None` in memory.
    path: Option<PathBuf>,
    catalog: Arc<RwLock<Catalog>>,
    /// Changes of the batch in progress, for the catalog once it commits.
    pending: Vec<Change>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("in-memory types always encode")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> rusqlite::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e)))
}

fn parse_hash(hex: String) -> rusqlite::Result<Hash> {
    hex.parse().map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn parse_id(bytes: Vec<u8>) -> rusqlite::Result<EndpointId> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, "a key is 32 bytes".into()))?;
    EndpointId::from_bytes(&bytes).map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e)))
}

fn kind_to_sql(kind: Kind) -> i64 {
    match kind {
        Kind::File => 0,
        Kind::Folder => 1,
    }
}

fn kind_from_sql(v: i64) -> Kind {
    if v == 1 {
        Kind::Folder
    } else {
        Kind::File
    }
}

/// Refuses a nickname held by another online key (case-insensitively, so
/// "Alice" and "alice" cannot both be online).
fn check_nickname_free(conn: &Connection, me: &EndpointId, nickname: &str, now: u64) -> Result<()> {
    let holder: Option<Vec<u8>> = conn
        .prepare_cached("SELECT id FROM peers WHERE nickname = ?1 COLLATE NOCASE AND lease_until > ?2 AND id != ?3 LIMIT 1")?
        .query_row(params![nickname, now as i64, me.as_bytes().as_slice()], |r| r.get(0))
        .optional()?;
    match holder {
        Some(_) => Err(StoreError::NicknameTaken(nickname.to_string())),
        None => Ok(()),
    }
}

/// Databases written before `peers.file_count` existed get the column,
/// filled from the files they hold, before the schema's triggers use it.
fn add_file_count(conn: &Connection) -> Result<()> {
    let columns: Vec<String> =
        conn.prepare("SELECT name FROM pragma_table_info('peers')")?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    if columns.is_empty() || columns.iter().any(|c| c == "file_count") {
        return Ok(());
    }
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         ALTER TABLE peers ADD COLUMN file_count INTEGER NOT NULL DEFAULT 0;
         UPDATE peers SET file_count = (SELECT COUNT(*) FROM files WHERE files.peer = peers.id);
         COMMIT;",
    )?;
    Ok(())
}

/// Reads the whole database into a catalog: every peer, then every file.
fn load(conn: &Connection) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    // Each file names its peer by the stored key. Parsing a key checks that
    // it is a point on the curve, which for a million files was most of the
    // start: each peer's key is parsed once, here.
    let mut ids: HashMap<Vec<u8>, EndpointId> = HashMap::new();
    let mut peers = conn.prepare("SELECT id, nickname, addr, joined_at, lease_until, neighbors FROM peers")?;
    let mut rows = peers.query([])?;
    while let Some(r) = rows.next()? {
        let key: Vec<u8> = r.get(0)?;
        let id = parse_id(key.clone())?;
        ids.insert(key, id);
        let addr: Vec<u8> = r.get(2)?;
        let info = PeerInfo { nickname: r.get(1)?, addr: decode(&addr)? };
        let lease_until = r.get::<_, i64>(4)? as u64;
        let neighbors: Vec<u8> = r.get(5)?;
        let neighbors = if neighbors.is_empty() { Vec::new() } else { decode(&neighbors)? };
        catalog.apply(Change::Peer { info, joined_at: r.get::<_, i64>(3)? as u64, lease_until });
        catalog.apply(Change::Lease { id, lease_until, neighbors });
    }
    let mut files = conn.prepare("SELECT id, peer, hash, name, size, kind, registered_at FROM files")?;
    let mut rows = files.query([])?;
    while let Some(r) = rows.next()? {
        // `files.peer` references `peers.id` (a foreign key), so it is known.
        let Some(&peer) = ids.get(r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?) else {
            continue;
        };
        let entry =
            FileEntry { hash: parse_hash(r.get(2)?)?, name: r.get(3)?, size: r.get::<_, i64>(4)? as u64, kind: kind_from_sql(r.get(5)?) };
        let registered_at = r.get::<_, i64>(6)? as u64;
        catalog.apply(Change::File { id: r.get::<_, i64>(0)? as u64, peer, entry, registered_at });
    }
    Ok(catalog)
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        Self::setup(Connection::open(path)?, Some(path.to_path_buf()))
    }

    /// An in-memory store, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?, None)
    }

    /// The database file, if the store has one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What is committed, for reading: every query is answered here.
    pub fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        read(&self.catalog)
    }

    /// The catalog, to read from other threads while the store writes.
    pub fn shared_catalog(&self) -> Arc<RwLock<Catalog>> {
        self.catalog.clone()
    }

    fn setup(conn: Connection, path: Option<PathBuf>) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: the commit is on disk before we acknowledge it.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Keep each statement's plan: with STAT4 compiled in, SQLite would
        // otherwise re-plan every statement with a range on a bound value
        // (`lease_until > ?`) each time the value changes.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        // An 8 MiB page cache (the default is 2 MiB): the upper levels of
        // the tables a publish walks stay in memory, leaves come from the
        // operating system's cache. Not more: SQLite scans its whole page
        // table at the end of a transaction when it trims pages past the
        // end of the file, and at 64 MiB that scan was a third of the
        // writer's time at a million files.
        conn.pragma_update(None, "cache_size", -8 * 1024)?;
        conn.set_prepared_statement_cache_capacity(64);
        add_file_count(&conn)?;
        let mut conn = conn;
        // One transaction: an older database is upgraded (its full-text
        // tables dropped) entirely or not at all.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        tx.commit()?;
        let started = std::time::Instant::now();
        let catalog = load(&conn)?;
        tracing::info!(files = catalog.file_count(), took = ?started.elapsed(), "the index's catalog is loaded");
        let catalog = Arc::new(RwLock::new(catalog));
        Ok(Self { conn, path, catalog, pending: Vec::new() })
    }

    /// Starts a batch: the requests that follow share one transaction (each
    /// in its own savepoint, so one failing rolls back only itself) and one
    /// commit, which is where the disk sync happens.
    pub fn begin_batch(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    /// Commits the batch; nothing in it may be acknowledged before this.
    /// Its changes reach the catalog after the commit, in one go.
    pub fn commit_batch(&mut self) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        let pending = std::mem::take(&mut self.pending);
        let mut catalog = self.catalog.write().unwrap_or_else(|e| e.into_inner());
        pending.into_iter().for_each(|change| catalog.apply(change));
        Ok(())
    }

    /// Undoes the batch after a failed commit; the catalog never saw it.
    pub fn rollback_batch(&mut self) {
        self.conn.execute_batch("ROLLBACK").ok();
        self.pending.clear();
    }

    /// Hands over the changes of one request that succeeded: kept for the
    /// batch's commit, or applied now if no batch is open (SQLite has
    /// committed them already).
    fn record(&mut self, changes: impl IntoIterator<Item = Change>) {
        self.pending.extend(changes);
        if self.conn.is_autocommit() {
            let pending = std::mem::take(&mut self.pending);
            let mut catalog = self.catalog.write().unwrap_or_else(|e| e.into_inner());
            pending.into_iter().for_each(|change| catalog.apply(change));
        }
    }

    /// Whether `id` has joined, as the batch in progress sees it.
    pub fn is_member(&self, id: &EndpointId) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM peers WHERE id = ?1")?
            .query_row([id.as_bytes().as_slice()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Admits `addr.id` (or refreshes it) and starts its lease.
    pub fn join(&mut self, addr: &PeerAddr, nickname: &str, now: u64, ttl_ms: u64) -> Result<()> {
        let tx = self.conn.savepoint()?;
        check_nickname_free(&tx, &addr.id, nickname, now)?;
        let (joined_at, lease_until): (i64, i64) = tx.query_row(
            "INSERT INTO peers(id, nickname, addr, joined_at, lease_until) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET nickname = excluded.nickname, addr = excluded.addr,
                 lease_until = excluded.lease_until,
                 joined_at = CASE WHEN peers.lease_until > ?4 THEN peers.joined_at ELSE excluded.joined_at END
             RETURNING joined_at, lease_until",
            params![addr.id.as_bytes().as_slice(), nickname, encode(addr), now as i64, (now + ttl_ms) as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.commit()?;
        let info = PeerInfo { addr: addr.clone(), nickname: nickname.to_string() };
        self.record([Change::Peer { info, joined_at: joined_at as u64, lease_until: lease_until as u64 }]);
        Ok(())
    }

    /// Renews the lease and records the peer's overlay neighbours. A peer
    /// that left must join again: a heartbeat still on its way when the
    /// leave was handled must not bring it back.
    pub fn heartbeat(&mut self, id: &EndpointId, neighbors: &[EndpointId], now: u64, ttl_ms: u64) -> Result<()> {
        let n = self
            .conn
            .prepare_cached("UPDATE peers SET lease_until = ?2, neighbors = ?3 WHERE id = ?1 AND lease_until > 0")?
            .execute(params![id.as_bytes().as_slice(), (now + ttl_ms) as i64, encode(&neighbors)])?;
        if n == 0 {
            return Err(StoreError::NotJoined);
        }
        self.record([Change::Lease { id: *id, lease_until: now + ttl_ms, neighbors: neighbors.to_vec() }]);
        Ok(())
    }

    pub fn rename(&mut self, id: &EndpointId, nickname: &str, now: u64) -> Result<()> {
        if !self.is_member(id)? {
            return Err(StoreError::NotJoined);
        }
        check_nickname_free(&self.conn, id, nickname, now)?;
        self.conn.execute("UPDATE peers SET nickname = ?2 WHERE id = ?1", params![id.as_bytes().as_slice(), nickname])?;
        self.record([Change::Nickname { id: *id, nickname: nickname.to_string() }]);
        Ok(())
    }

    /// Registers files under `id`. Re-publishing a registered hash keeps its
    /// original registration time, so repeats are idempotent.
    ///
    /// The per-peer limit is checked before anything is written, so a
    /// one-file publish (the common case under load) is a single statement,
    /// atomic by itself, with no savepoint.
    pub fn publish(&mut self, id: &EndpointId, files: &[FileEntry], now: u64) -> Result<u32> {
        let key = id.as_bytes().as_slice();
        let count: Option<i64> =
            self.conn.prepare_cached("SELECT file_count FROM peers WHERE id = ?1")?.query_row([key], |r| r.get(0)).optional()?;
        let Some(count) = count else {
            return Err(StoreError::NotJoined);
        };
        let mut new = std::collections::HashSet::new();
        {
            let mut known = self.conn.prepare_cached("SELECT 1 FROM files WHERE peer = ?1 AND hash = ?2")?;
            for f in files {
                if !new.contains(&f.hash) && !known.exists(params![key, f.hash.to_hex()])? {
                    new.insert(f.hash);
                }
            }
        }
        if count as usize + new.len() > MAX_FILES_PER_PEER {
            return Err(StoreError::TooManyFiles);
        }
        let insert = |conn: &Connection| -> Result<Vec<Change>> {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO files(peer, hash, name, size, kind, registered_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(peer, hash) DO UPDATE SET name = excluded.name, size = excluded.size, kind = excluded.kind
                 RETURNING id, registered_at",
            )?;
            let mut changes = Vec::with_capacity(files.len());
            for f in files {
                let (row, at): (i64, i64) = stmt
                    .query_row(params![key, f.hash.to_hex(), f.name, f.size as i64, kind_to_sql(f.kind), now as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?;
                changes.push(Change::File { id: row as u64, peer: *id, entry: f.clone(), registered_at: at as u64 });
            }
            Ok(changes)
        };
        let changes = if let [_] = files {
            insert(&self.conn)?
        } else {
            // Several rows: all or none.
            let tx = self.conn.savepoint()?;
            let changes = insert(&tx)?;
            tx.commit()?;
            changes
        };
        self.record(changes);
        Ok(files.len() as u32)
    }

    pub fn unpublish(&mut self, id: &EndpointId, hash: &Hash) -> Result<()> {
        let row: Option<i64> = self
            .conn
            .prepare_cached("DELETE FROM files WHERE peer = ?1 AND hash = ?2 RETURNING id")?
            .query_row(params![id.as_bytes().as_slice(), hash.to_hex()], |r| r.get(0))
            .optional()?;
        if let Some(row) = row {
            self.record([Change::Unfile { id: row as u64 }]);
            return Ok(());
        }
        // Only which error to give: the committed files are enough.
        let someone_else = self.catalog().provides(hash);
        Err(if someone_else { StoreError::NotOwner } else { StoreError::NotFound })
    }

    /// Writes many peers with their files in one transaction, through
    /// [`Store::join`] and [`Store::publish`] (so with their checks), with
    /// one disk sync at the end: for building a large index quickly (the
    /// bench's million files). Each peer's lease runs `ttl_ms` from `now`.
    /// All or nothing.
    pub fn seed(&mut self, peers: impl IntoIterator<Item = SeedPeer>, now: u64, ttl_ms: u64) -> Result<SeedCount> {
        self.begin_batch()?;
        let mut count = SeedCount::default();
        let seed = || -> Result<()> {
            for peer in peers {
                self.join(&peer.addr, &peer.nickname, now, ttl_ms)?;
                for chunk in peer.files.chunks(MAX_FILES_PER_PUBLISH) {
                    count.files += self.publish(&peer.addr.id, chunk, now)? as u64;
                }
                count.peers += 1;
            }
            Ok(())
        };
        match seed().and_then(|()| self.commit_batch()) {
            Ok(()) => Ok(count),
            Err(e) => {
                self.rollback_batch();
                Err(e)
            }
        }
    }

    /// Ends the lease now and drops every registration of `id`.
    pub fn leave(&mut self, id: &EndpointId) -> Result<()> {
        let tx = self.conn.savepoint()?;
        tx.execute("DELETE FROM files WHERE peer = ?1", [id.as_bytes().as_slice()])?;
        tx.execute("UPDATE peers SET lease_until = 0, neighbors = x'' WHERE id = ?1", [id.as_bytes().as_slice()])?;
        tx.commit()?;
        self.record([Change::Left { id: *id }]);
        Ok(())
    }

    /// Forgets peers whose lease ended before `before`, with their files,
    /// at most `max` peers in one call (so one call holds the writer
    /// briefly); returns how many. A forgotten peer that comes back joins
    /// and publishes again, as after any lapse of its lease.
    pub fn purge_expired(&mut self, before: u64, max: usize) -> Result<usize> {
        let tx = self.conn.savepoint()?;
        let ids: Vec<Vec<u8>> = tx
            .prepare_cached("SELECT id FROM peers WHERE lease_until < ?1 LIMIT ?2")?
            .query_map(params![before as i64, max as i64], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut changes = Vec::new();
        {
            let mut files = tx.prepare_cached("DELETE FROM files WHERE peer = ?1 RETURNING id")?;
            let mut peer = tx.prepare_cached("DELETE FROM peers WHERE id = ?1")?;
            for id in &ids {
                for row in files.query_map([id.as_slice()], |r| r.get::<_, i64>(0))? {
                    changes.push(Change::Unfile { id: row? as u64 });
                }
                peer.execute([id.as_slice()])?;
                changes.push(Change::Forget { id: parse_id(id.clone())? });
            }
        }
        tx.commit()?;
        self.record(changes);
        Ok(ids.len())
    }

    /// Peers and file rows in the database (for tests and status).
    pub fn row_counts(&self) -> Result<(u64, u64)> {
        let count = |sql: &str| -> Result<u64> { Ok(self.conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64) };
        Ok((count("SELECT count(*) FROM peers")?, count("SELECT count(*) FROM files")?))
    }

    /// [`Catalog::search`], for tests and tools.
    pub fn search(&self, query: &str, limit: u32, now: u64) -> Result<Vec<Hit>> {
        Ok(self.catalog().search(query, limit, now))
    }
}

/// A read lock on the catalog. A panic while it was written leaves at
/// worst one change half applied to a copy that the next start rebuilds
/// from the database, so a poisoned lock is still read.
pub fn read(catalog: &RwLock<Catalog>) -> RwLockReadGuard<'_, Catalog> {
    catalog.read().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use iroh::SecretKey;
    use peernet_proto::search;

    use super::*;

    /// The schema as it was when SQLite folded names itself (`files_fts`,
    /// unicode61 with remove_diacritics 2), copied from before the change.
    const OLD_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS peers(
    id BLOB PRIMARY KEY,
    nickname TEXT NOT NULL,
    addr BLOB NOT NULL,
    joined_at INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    neighbors BLOB NOT NULL DEFAULT x'',
    file_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS peers_nickname ON peers(nickname COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS peers_lease ON peers(lease_until);
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY,
    peer BLOB NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    hash TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    kind INTEGER NOT NULL DEFAULT 0,
    registered_at INTEGER NOT NULL,
    UNIQUE(peer, hash)
);
CREATE INDEX IF NOT EXISTS files_hash ON files(hash);
CREATE VIRTUAL TABLE IF NOT EXISTS files_fts USING fts5(
    name, content='files', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
-- Kept by triggers so the per-peer limit costs one row read, not a count
-- over all of the peer's files, on every publish.
CREATE TRIGGER IF NOT EXISTS files_count_ai AFTER INSERT ON files BEGIN
    UPDATE peers SET file_count = file_count + 1 WHERE id = new.peer;
END;
CREATE TRIGGER IF NOT EXISTS files_count_ad AFTER DELETE ON files BEGIN
    UPDATE peers SET file_count = file_count - 1 WHERE id = old.peer;
END;
-- Changes to the full-text index are staged here and applied in one
-- statement (see `Store::apply_staged_search_terms`): SQLite's full-text
-- index writes out its pending terms at every statement inside a
-- transaction, so writing it from each request's own statement made a
-- batch of requests write as many small index segments. `op` 1 adds the
-- name's terms, 0 removes them; `seq` keeps the order.
CREATE TABLE IF NOT EXISTS fts_staged(
    seq INTEGER PRIMARY KEY,
    op INTEGER NOT NULL,
    file INTEGER NOT NULL,
    name TEXT NOT NULL
);
DROP TRIGGER IF EXISTS files_ai;
DROP TRIGGER IF EXISTS files_ad;
DROP TRIGGER IF EXISTS files_au;
CREATE TRIGGER IF NOT EXISTS files_stage_ai AFTER INSERT ON files BEGIN
    INSERT INTO fts_staged(op, file, name) VALUES (1, new.id, new.name);
END;
CREATE TRIGGER IF NOT EXISTS files_stage_ad AFTER DELETE ON files BEGIN
    INSERT INTO fts_staged(op, file, name) VALUES (0, old.id, old.name);
END;
CREATE TRIGGER IF NOT EXISTS files_stage_au AFTER UPDATE OF name ON files BEGIN
    INSERT INTO fts_staged(op, file, name) VALUES (0, old.id, old.name);
    INSERT INTO fts_staged(op, file, name) VALUES (1, new.id, new.name);
END;
"#;

    fn peer(seed: u8) -> EndpointId {
        SecretKey::from_bytes(&[seed; 32]).public()
    }

    fn file(name: &str) -> FileEntry {
        FileEntry { name: name.into(), size: name.len() as u64, hash: Hash::new(name.as_bytes()), kind: Kind::File }
    }

    fn joined(store: &mut Store, id: EndpointId, nick: &str) {
        store.join(&PeerAddr { id, ip: vec![], relay: None }, nick, 0, 1_000).unwrap();
    }

    fn names(store: &mut Store, query: &str) -> Vec<String> {
        let mut v: Vec<String> = store.search(query, 100, 1).unwrap().into_iter().map(|h| h.name).collect();
        v.sort();
        v
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    const NAMES: &[&str] = &[
        "Café.txt",
        "Ångström units.pdf",
        "NAÏVE-art.png",
        "Straße.txt",
        "αθήνα.jpg",
        "Москва-2024.mp4",
        "東京タワー 夜景.jpg",
        "हिन्दी गाने.mp3",
        "Holiday-Photos_2024.tar.gz",
        "ｶﾞｲﾄﾞ.pdf",
    ];

    /// The index answers exactly what `search::matches` says, for every
    /// pair of these names and queries.
    #[test]
    fn the_index_follows_the_shared_rules() {
        let mut s = Store::open_in_memory().unwrap();
        let a = peer(1);
        joined(&mut s, a, "a");
        let files: Vec<FileEntry> = NAMES.iter().map(|n| file(n)).collect();
        s.publish(&a, &files, 1).unwrap();
        let queries = [
            "cafe",
            "CAFÉ",
            "angstrom",
            "naive",
            "strasse",
            "STRAS",
            "ΑΘΗΝΑ",
            "москва",
            "東京",
            "タワー",
            "हिन्दी",
            "दी",
            "ガイド",
            "photos 2024",
            "holiday-photos",
            "oliday",
            "tar.gz",
            "café notes",
            "",
            "--",
            "\"*)(",
            "NEAR",
            "x OR y",
        ];
        let mut queries: Vec<String> = queries.iter().map(|q| q.to_string()).collect();
        queries.push(files[3].hash.to_hex()[..8].to_uppercase());
        queries.push(files[3].hash.to_hex()[..5].to_string());
        for q in &queries {
            let want: Vec<String> = {
                let mut v: Vec<String> = files.iter().filter(|f| search::matches(q, f)).map(|f| f.name.clone()).collect();
                v.sort();
                v
            };
            assert_eq!(names(&mut s, q), want, "query {q:?}");
        }
        assert_eq!(names(&mut s, "cafe"), ["Café.txt"]);
        assert_eq!(names(&mut s, "strasse"), ["Straße.txt"]);
        assert_eq!(names(&mut s, "हिन्दी"), ["हिन्दी गाने.mp3"]);
        assert!(names(&mut s, "दी").is_empty(), "the end of a Devanagari word is not a word");
    }

    #[test]
    fn the_newest_matches_fill_the_limit() {
        let mut s = Store::open_in_memory().unwrap();
        let (a, b) = (peer(1), peer(2));
        joined(&mut s, a, "a");
        joined(&mut s, b, "b");
        for t in 0..5u64 {
            s.publish(&a, &[file(&format!("café {t}.txt"))], t).unwrap();
        }
        // b registers file 0 again, under another name, last of all.
        s.publish(&b, &[FileEntry { name: "Cafe zero.txt".into(), ..file("café 0.txt") }], 9).unwrap();
        let hits = s.search("CAFE", 3, 10).unwrap();
        let got: Vec<&str> = hits.iter().map(|h| h.providers[0].name.as_str()).collect();
        assert_eq!(got, ["Cafe zero.txt", "café 4.txt", "café 3.txt"], "newest registration first, each hash once");
        assert_eq!(s.search("zero", 10, 10).unwrap().len(), 1, "a hash is found by any provider's name");
    }

    /// A query word finds the files of every stored word it starts, the
    /// newest first, and a word that starts nothing finds nothing.
    #[test]
    fn a_query_word_finds_every_word_it_starts() {
        let mut s = Store::open_in_memory().unwrap();
        let a = peer(1);
        joined(&mut s, a, "a");
        let many = 70;
        for k in 0..many {
            s.publish(&a, &[file(&format!("w{k}x song.mp3"))], k as u64).unwrap();
        }
        assert_eq!(names(&mut s, "w").len(), many);
        assert_eq!(names(&mut s, "w1 song").len(), 11, "w1x and w10x to w19x");
        assert_eq!(names(&mut s, "W12X"), ["w12x song.mp3"]);
        assert!(names(&mut s, "w1 nothing").is_empty());
        let newest: Vec<String> = s.search("w1", 3, 100).unwrap().into_iter().map(|h| h.name).collect();
        assert_eq!(newest, ["w19x song.mp3", "w18x song.mp3", "w17x song.mp3"]);
        s.unpublish(&a, &file("w12x song.mp3").hash).unwrap();
        assert!(names(&mut s, "w12x").is_empty());
        assert_eq!(names(&mut s, "w1 song").len(), 10);
    }

    /// The catalog holds what is committed and nothing else: a batch's
    /// changes show only once it commits, and never if it rolls back.
    #[test]
    fn readers_see_committed_changes_only() {
        let mut s = Store::open_in_memory().unwrap();
        let a = peer(1);
        joined(&mut s, a, "a");
        s.begin_batch().unwrap();
        s.publish(&a, &[file("holiday-beach.jpg")], 0).unwrap();
        assert!(s.catalog().search("holiday", 10, 1).is_empty(), "not committed yet");
        s.commit_batch().unwrap();
        assert_eq!(s.catalog().search("holiday", 10, 1).len(), 1);
        s.begin_batch().unwrap();
        s.publish(&a, &[file("holiday-mountain.jpg")], 0).unwrap();
        s.unpublish(&a, &file("holiday-beach.jpg").hash).unwrap();
        s.rollback_batch();
        let names: Vec<String> = s.catalog().search("holiday", 10, 1).into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["holiday-beach.jpg"], "the rolled-back batch changed nothing");
        assert_eq!(s.catalog().file_count(), 1);
    }

    /// A bulk seed writes peers and files as join and publish would, in
    /// one transaction: searchable, online for the lease given, all or
    /// nothing.
    #[test]
    fn seeded_peers_and_files_are_searchable_while_their_lease_runs() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let seed_peer = |i: u8, files: usize| SeedPeer {
            addr: PeerAddr { id: peer(i), ip: vec![], relay: None },
            nickname: format!("p{i}"),
            files: (0..files).map(|k| file(&format!("Song {i} take {k}.mp3"))).collect(),
        };
        {
            let mut s = Store::open(&db).unwrap();
            // More files than one publish carries, so the seed splits them.
            let count = s.seed((1..=3).map(|i| seed_peer(i, 300)), 10, 1_000).unwrap();
            assert_eq!(count, SeedCount { peers: 3, files: 900 });
        }
        let mut s = Store::open(&db).unwrap();
        assert_eq!(s.search("song 2 take", 100, 500).unwrap().len(), 100);
        assert_eq!(names(&mut s, "song 3 take 299"), ["Song 3 take 299.mp3"]);
        assert_eq!(s.catalog().online_count(500), 3);
        assert!(s.search("song", 10, 1_010).unwrap().is_empty(), "the seeded leases ran out");
        // A peer over the per-peer limit fails the whole seed.
        let over = MAX_FILES_PER_PEER + 1;
        assert!(matches!(s.seed([seed_peer(8, 1), seed_peer(9, over)], 20, 1_000), Err(StoreError::TooManyFiles)));
        assert!(!s.is_member(&peer(8)).unwrap(), "nothing of a failed seed is kept");
        assert!(!s.catalog().is_member(&peer(8)));
        assert!(names(&mut s, "song 8 take 0").is_empty());
        assert_eq!(names(&mut s, "song 1 take 299"), ["Song 1 take 299.mp3"], "nor is anything lost");
    }

    /// A database from before searches were answered from memory (here
    /// with SQLite's own full-text table, `files_fts`, and a change left
    /// staged by a crash) is upgraded on open: the full-text tables go, and
    /// every file, even the one staged, is found.
    #[test]
    fn an_index_written_with_sqlites_own_folding_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let (a, b) = (peer(1), peer(2));
        {
            let conn = Connection::open(&db).unwrap();
            conn.execute_batch(OLD_SCHEMA).unwrap();
            for (joined_at, id, nick) in [(0, a, "alice"), (1, b, "bob")] {
                let addr = PeerAddr { id, ip: vec!["127.0.0.1:1".parse().unwrap()], relay: None };
                conn.execute(
                    "INSERT INTO peers(id, nickname, addr, joined_at, lease_until) VALUES (?1, ?2, ?3, ?4, 1000000)",
                    params![id.as_bytes().as_slice(), nick, encode(&addr), joined_at],
                )
                .unwrap();
            }
            let mut insert =
                conn.prepare("INSERT INTO files(peer, hash, name, size, kind, registered_at) VALUES (?1, ?2, ?3, ?4, 0, ?5)").unwrap();
            for (i, name) in ["Café.txt", "Ångström units.pdf", "holiday.jpg"].iter().enumerate() {
                insert.execute(params![a.as_bytes().as_slice(), Hash::new(name).to_hex(), name, 10, i as i64]).unwrap();
            }
            insert.execute(params![b.as_bytes().as_slice(), Hash::new("Café.txt").to_hex(), "cafe copy.txt", 10, 5]).unwrap();
            // The old store's apply step, then one change left staged, as a
            // crash between a publish and its apply would leave it.
            conn.execute_batch(
                "INSERT INTO files_fts(files_fts, rowid, name)
                     SELECT CASE op WHEN 0 THEN 'delete' END, file, name FROM fts_staged ORDER BY seq;
                 DELETE FROM fts_staged;",
            )
            .unwrap();
            insert.execute(params![b.as_bytes().as_slice(), Hash::new("naïve").to_hex(), "Naïve.png", 10, 6]).unwrap();
            assert_eq!(count(&conn, "SELECT COUNT(*) FROM files_fts WHERE files_fts MATCH 'cafe*'"), 2, "a real old index");
            assert_eq!(count(&conn, "SELECT COUNT(*) FROM fts_staged"), 1);
        }

        let mut s = Store::open(&db).unwrap();
        let hits = s.search("cafe", 10, 1).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].providers.len(), 2, "both providers of the hash");
        assert_eq!(names(&mut s, "angstrom"), ["Ångström units.pdf"]);
        assert_eq!(names(&mut s, "naive"), ["Naïve.png"], "the change that was staged at the crash");
        assert_eq!(names(&mut s, "holiday"), ["holiday.jpg"]);
        let conn = &s.conn;
        let tables = |name: &str| count(conn, &format!("SELECT COUNT(*) FROM sqlite_master WHERE name = '{name}'"));
        for table in ["files_fts", "files_terms", "fts_staged", "search_words", "files_stage_ai"] {
            assert_eq!(tables(table), 0, "{table}");
        }
        assert_eq!(count(conn, "SELECT COUNT(*) FROM files"), 5);
        assert_eq!(count(conn, "SELECT COUNT(*) FROM peers"), 2);
        assert_eq!(count(conn, "SELECT SUM(file_count) FROM peers"), 5, "per-peer counts kept");
        let (online, _) = s.catalog().online_page(0, 1);
        let nicks: Vec<&str> = online.iter().map(|p| p.peer.nickname.as_str()).collect();
        assert_eq!(nicks, ["alice", "bob"]);
        assert_eq!(online[0].files.len(), 3);
        assert_eq!(online[1].files.len(), 2);
        assert_eq!(online[1].peer.addr.ip, ["127.0.0.1:1".parse().unwrap()]);
        drop(s);

        // Opening again keeps working.
        let mut s = Store::open(&db).unwrap();
        assert_eq!(s.search("cafe", 10, 1).unwrap().len(), 1);
        s.unpublish(&a, &Hash::new("holiday.jpg")).unwrap();
        assert!(names(&mut s, "holiday").is_empty());
    }

    /// Another program (the sqlite3 tool) changing `files`: the next open
    /// reads the change.
    #[test]
    fn changes_made_by_another_sqlite_program_are_searchable() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let a = peer(1);
        {
            let mut s = Store::open(&db).unwrap();
            joined(&mut s, a, "a");
            s.publish(&a, &[file("Café.txt"), file("old name.txt"), file("gone.txt")], 1).unwrap();
        }
        Connection::open(&db)
            .unwrap()
            .execute_batch(
                "UPDATE files SET name = 'Résumé.pdf' WHERE name = 'old name.txt';
                 DELETE FROM files WHERE name = 'gone.txt';",
            )
            .unwrap();
        let mut s = Store::open(&db).unwrap();
        assert_eq!(names(&mut s, "resume"), ["Résumé.pdf"]);
        assert!(names(&mut s, "old").is_empty());
        assert!(names(&mut s, "gone").is_empty());
        assert_eq!(names(&mut s, "cafe"), ["Café.txt"]);
    }
}
