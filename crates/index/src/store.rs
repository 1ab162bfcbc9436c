//! The index's durable state in SQLite.
//!
//! WAL mode with `synchronous=FULL`: every mutating call commits (and
//! fsyncs) before it returns, and the caller acknowledges only after that, so
//! a `kill -9` never loses an acknowledged registration.
//!
//! Time is an argument (`now`, Unix milliseconds) so leases can be tested
//! without sleeping. A peer is online while `lease_until > now`; an expired
//! peer keeps its rows but vanishes from every query until it heartbeats.

use std::path::Path;

use iroh::EndpointId;
use peernet_proto::Hash;
use peernet_proto::{
    index::{FileEntry, Hit, Kind, OnlinePeer, PeerAddr, PeerInfo, Provider},
    limits::{MAX_FILES_PER_PEER, MIN_HASH_PREFIX, ONLINE_PAGE_PEERS},
};
use rusqlite::{params, Connection, OptionalExtension};

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

/// A peer row as the graph and status views need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    pub info: PeerInfo,
    pub lease_until: u64,
    pub neighbors: Vec<EndpointId>,
}

pub struct Store {
    conn: Connection,
    /// Whether `fts_staged` may hold changes not yet in the full-text
    /// index. True after opening, in case a crash left some behind.
    staged: bool,
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

/// Splits a query into the words FTS5's unicode61 tokenizer would produce,
/// so "holiday-photos" searches for both words.
fn query_words(query: &str) -> Vec<String> {
    query.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| w.to_lowercase()).collect()
}

/// A query that may be (a prefix of) a hash in hex.
fn hash_prefix(query: &str) -> Option<String> {
    let q = query.trim().to_ascii_lowercase();
    (q.len() >= MIN_HASH_PREFIX && q.len() <= 64 && q.bytes().all(|b| b.is_ascii_hexdigit())).then_some(q)
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

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        Self::setup(Connection::open(path)?)
    }

    /// An in-memory store, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: the commit is on disk before we acknowledge it.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Keep each statement's plan: with STAT4 compiled in, SQLite would
        // otherwise re-plan every statement with a range on a bound value
        // (`lease_until > ?`) each time the value changes, which was a
        // tenth of the index's time under load.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        // A 32 MiB page cache (the default is 2 MiB): the search and file
        // tables of a busy network stay in memory instead of being read
        // back from the file on every query.
        conn.pragma_update(None, "cache_size", -32 * 1024)?;
        conn.set_prepared_statement_cache_capacity(64);
        add_file_count(&conn)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn, staged: true })
    }

    /// Applies the staged full-text changes, in order, in one statement.
    /// Searches call it first, so they always see every committed change;
    /// a batch calls it before its commit.
    fn apply_staged_search_terms(&mut self) -> Result<()> {
        if !self.staged {
            return Ok(());
        }
        // A non-NULL first column makes the row a command ('delete');
        // NULL makes it a plain insert of the name's terms.
        self.conn
            .prepare_cached(
                "INSERT INTO files_fts(files_fts, rowid, name)
                 SELECT CASE op WHEN 0 THEN 'delete' END, file, name FROM fts_staged ORDER BY seq",
            )?
            .execute([])?;
        self.conn.prepare_cached("DELETE FROM fts_staged")?.execute([])?;
        self.staged = false;
        Ok(())
    }

    /// Starts a batch: the requests that follow share one transaction (each
    /// in its own savepoint, so one failing rolls back only itself) and one
    /// commit, which is where the disk sync happens.
    pub fn begin_batch(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    /// Commits the batch; nothing in it may be acknowledged before this.
    pub fn commit_batch(&mut self) -> Result<()> {
        self.apply_staged_search_terms()?;
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    /// Undoes the batch after a failed commit.
    pub fn rollback_batch(&mut self) {
        self.conn.execute_batch("ROLLBACK").ok();
    }

    /// Admits `addr.id` (or refreshes it) and starts its lease.
    pub fn join(&mut self, addr: &PeerAddr, nickname: &str, now: u64, ttl_ms: u64) -> Result<()> {
        let tx = self.conn.savepoint()?;
        check_nickname_free(&tx, &addr.id, nickname, now)?;
        tx.execute(
            "INSERT INTO peers(id, nickname, addr, joined_at, lease_until) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET nickname = excluded.nickname, addr = excluded.addr,
                 lease_until = excluded.lease_until,
                 joined_at = CASE WHEN peers.lease_until > ?4 THEN peers.joined_at ELSE excluded.joined_at END",
            params![addr.id.as_bytes().as_slice(), nickname, encode(addr), now as i64, (now + ttl_ms) as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn is_member(&self, id: &EndpointId) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM peers WHERE id = ?1")?
            .query_row([id.as_bytes().as_slice()], |_| Ok(()))
            .optional()?
            .is_some())
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
        Ok(())
    }

    pub fn rename(&mut self, id: &EndpointId, nickname: &str, now: u64) -> Result<()> {
        if !self.is_member(id)? {
            return Err(StoreError::NotJoined);
        }
        check_nickname_free(&self.conn, id, nickname, now)?;
        self.conn.execute("UPDATE peers SET nickname = ?2 WHERE id = ?1", params![id.as_bytes().as_slice(), nickname])?;
        Ok(())
    }

    /// Registers files under `id`. Re-publishing a registered hash keeps its
    /// original registration time, so repeats are idempotent.
    ///
    /// The per-peer limit is checked before anything is written, so a
    /// one-file publish (the common case under load) is a single statement,
    /// atomic by itself, with no savepoint: releasing a savepoint makes
    /// SQLite's full-text index write a segment of its own each time.
    pub fn publish(&mut self, id: &EndpointId, files: &[FileEntry], now: u64) -> Result<u32> {
        self.staged = true;
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
        let insert = |conn: &Connection| -> Result<()> {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO files(peer, hash, name, size, kind, registered_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(peer, hash) DO UPDATE SET name = excluded.name, size = excluded.size, kind = excluded.kind",
            )?;
            for f in files {
                stmt.execute(params![key, f.hash.to_hex(), f.name, f.size as i64, kind_to_sql(f.kind), now as i64])?;
            }
            Ok(())
        };
        if let [_] = files {
            insert(&self.conn)?;
        } else {
            // Several rows: all or none.
            let tx = self.conn.savepoint()?;
            insert(&tx)?;
            tx.commit()?;
        }
        Ok(files.len() as u32)
    }

    pub fn unpublish(&mut self, id: &EndpointId, hash: &Hash) -> Result<()> {
        self.staged = true;
        let n = self
            .conn
            .prepare_cached("DELETE FROM files WHERE peer = ?1 AND hash = ?2")?
            .execute(params![id.as_bytes().as_slice(), hash.to_hex()])?;
        if n > 0 {
            return Ok(());
        }
        let someone_else: bool =
            self.conn.query_row("SELECT 1 FROM files WHERE hash = ?1 LIMIT 1", [hash.to_hex()], |_| Ok(())).optional()?.is_some();
        Err(if someone_else { StoreError::NotOwner } else { StoreError::NotFound })
    }

    /// Ends the lease now and drops every registration of `id`.
    pub fn leave(&mut self, id: &EndpointId) -> Result<()> {
        self.staged = true;
        let tx = self.conn.savepoint()?;
        tx.execute("DELETE FROM files WHERE peer = ?1", [id.as_bytes().as_slice()])?;
        tx.execute("UPDATE peers SET lease_until = 0, neighbors = x'' WHERE id = ?1", [id.as_bytes().as_slice()])?;
        tx.commit()?;
        Ok(())
    }

    /// Files of online peers whose names contain every word of `query` (as a
    /// word or word prefix), or whose hash starts with `query`.
    pub fn search(&mut self, query: &str, limit: u32, now: u64) -> Result<Vec<Hit>> {
        self.apply_staged_search_terms()?;
        let mut hashes: Vec<String> = Vec::new();
        if let Some(prefix) = hash_prefix(query) {
            let mut stmt = self.conn.prepare_cached(
                "SELECT f.hash FROM files f JOIN peers p ON p.id = f.peer
                 WHERE f.hash >= ?1 AND f.hash < ?1 || 'g' AND p.lease_until > ?2
                 GROUP BY f.hash ORDER BY MAX(f.registered_at) DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![prefix, now as i64, limit], |r| r.get(0))?;
            for h in rows {
                hashes.push(h?);
            }
        }
        let words = query_words(query);
        if !words.is_empty() && hashes.len() < limit as usize {
            let expr = words.iter().map(|w| format!("\"{}\"*", w.replace('"', "\"\""))).collect::<Vec<_>>().join(" AND ");
            let mut stmt = self.conn.prepare_cached(
                "SELECT f.hash FROM files_fts JOIN files f ON f.id = files_fts.rowid
                 JOIN peers p ON p.id = f.peer
                 WHERE files_fts MATCH ?1 AND p.lease_until > ?2
                 GROUP BY f.hash ORDER BY MAX(f.registered_at) DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![expr, now as i64, limit], |r| r.get::<_, String>(0))?;
            for h in rows {
                let h = h?;
                if !hashes.contains(&h) {
                    hashes.push(h);
                }
            }
        }
        hashes.truncate(limit as usize);
        hashes.into_iter().filter_map(|h| self.hit(&h, now).transpose()).collect()
    }

    /// All online providers of one hash, most recent registration first.
    pub fn hit(&self, hash_hex: &str, now: u64) -> Result<Option<Hit>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT f.hash, f.size, f.name, f.registered_at, p.nickname, p.addr, f.kind
             FROM files f JOIN peers p ON p.id = f.peer
             WHERE f.hash = ?1 AND p.lease_until > ?2
             ORDER BY f.registered_at DESC, f.id DESC",
        )?;
        let rows = stmt.query_map(params![hash_hex, now as i64], |r| {
            Ok((
                parse_hash(r.get(0)?)?,
                r.get::<_, i64>(1)? as u64,
                kind_from_sql(r.get(6)?),
                Provider {
                    name: r.get(2)?,
                    registered_at: r.get::<_, i64>(3)? as u64,
                    peer: PeerInfo { nickname: r.get(4)?, addr: decode(&r.get::<_, Vec<u8>>(5)?)? },
                },
            ))
        })?;
        let mut hit: Option<Hit> = None;
        for row in rows {
            let (hash, size, kind, provider) = row?;
            let hit = hit.get_or_insert_with(|| Hit { hash, size, kind, name: provider.name.clone(), providers: Vec::new() });
            hit.providers.push(provider);
        }
        Ok(hit)
    }

    /// One page of online peers with their files, oldest member first.
    pub fn online(&self, page: u32, now: u64) -> Result<(Vec<OnlinePeer>, Option<u32>)> {
        let per_page = ONLINE_PAGE_PEERS as i64;
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, nickname, addr, lease_until FROM peers WHERE lease_until > ?1
             ORDER BY joined_at, id LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(params![now as i64, per_page + 1, page as i64 * per_page], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                PeerInfo { nickname: r.get(1)?, addr: decode(&r.get::<_, Vec<u8>>(2)?)? },
                r.get::<_, i64>(3)? as u64,
            ))
        })?;
        let mut peers = Vec::new();
        for row in rows {
            peers.push(row?);
        }
        let next_page = (peers.len() as i64 > per_page).then_some(page + 1);
        peers.truncate(per_page as usize);
        let mut files_stmt = self.conn.prepare_cached("SELECT name, size, hash, kind FROM files WHERE peer = ?1 ORDER BY name, hash")?;
        let mut out = Vec::with_capacity(peers.len());
        for (id, peer, lease_until) in peers {
            let files = files_stmt
                .query_map([id], |r| {
                    Ok(FileEntry {
                        name: r.get(0)?,
                        size: r.get::<_, i64>(1)? as u64,
                        hash: parse_hash(r.get(2)?)?,
                        kind: kind_from_sql(r.get(3)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.push(OnlinePeer { peer, files, lease_until });
        }
        Ok((out, next_page))
    }

    /// Up to `k` random online peers other than `me`.
    pub fn referral(&self, me: &EndpointId, k: u32, now: u64) -> Result<Vec<PeerInfo>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT nickname, addr FROM peers WHERE lease_until > ?1 AND id != ?2
             ORDER BY random() LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![now as i64, me.as_bytes().as_slice(), k], |r| {
            Ok(PeerInfo { nickname: r.get(0)?, addr: decode(&r.get::<_, Vec<u8>>(1)?)? })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Every online peer with its reported neighbours, for the map.
    pub fn online_peers(&self, now: u64) -> Result<Vec<PeerRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT nickname, addr, lease_until, neighbors FROM peers WHERE lease_until > ?1
             ORDER BY joined_at, id",
        )?;
        let rows = stmt.query_map([now as i64], |r| {
            let neighbors: Vec<u8> = r.get(3)?;
            Ok(PeerRecord {
                info: PeerInfo { nickname: r.get(0)?, addr: decode(&r.get::<_, Vec<u8>>(1)?)? },
                lease_until: r.get::<_, i64>(2)? as u64,
                neighbors: if neighbors.is_empty() { Vec::new() } else { decode(&neighbors)? },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
