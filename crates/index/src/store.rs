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
//! Searching follows [`peernet_proto::search`], the rules flood search uses
//! too. The full-text table `files_terms` holds each file's folded words
//! ([`search::terms`], computed in Rust, tokenized by SQLite's `ascii`
//! tokenizer, which splits them at the spaces between them and nowhere else),
//! so SQLite never folds text by rules of its own. It narrows the candidates;
//! [`search::words_match`] decides.
//!
//! Queries that change nothing live on [`Reads`], a view of any connection:
//! the writer's own (through [`Store::reads`]) or one of the read-only
//! connections of [`crate::readers`]. The staged full-text changes are
//! applied before every batch commits, so a read-only connection sees
//! every committed change, and only those.

use std::path::{Path, PathBuf};

use iroh::EndpointId;
use peernet_proto::Hash;
use peernet_proto::{
    index::{FileEntry, Hit, Kind, OnlinePeer, PeerAddr, PeerInfo, Provider},
    limits::{MAX_FILES_PER_PEER, MAX_FILES_PER_PUBLISH, ONLINE_PAGE_PEERS},
    search,
};
use rusqlite::{functions::FunctionFlags, params, Connection, OptionalExtension, TransactionBehavior};

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

/// The full-text table's prefix indexes: a query word of two or three
/// characters that starts more than [`MAX_WORDS_PER_PREFIX`] words (a user
/// still typing) is then one lookup, walked lazily like a word, instead of a
/// merge of every file of every word it starts (see
/// `Reads::words_starting`). Longer words start few words; one-character
/// queries still merge.
macro_rules! terms_prefixes {
    () => {
        "prefix='2 3'"
    };
}

const SCHEMA: &str = concat!(
    r#"
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
-- Each file's folded words (`search::terms(name)`, rowid = files.id),
-- written only by `Store::apply_staged_search_terms` and
-- `rebuild_search_terms`. Contentless: the words are not stored twice,
-- and removing a row needs its words again, recomputed from the old name
-- that `fts_staged` keeps.
CREATE VIRTUAL TABLE IF NOT EXISTS files_terms USING fts5(terms, content='', tokenize='ascii', "#,
    terms_prefixes!(),
    r#");
-- Every word that `files_terms` has held (`search::words` of a name),
-- so that a query word can be looked up as the exact words it starts
-- (see `Reads::words_starting`). Written with `files_terms`; never pruned
-- (a word no file has any more costs a search only an empty list).
CREATE TABLE IF NOT EXISTS search_words(word TEXT PRIMARY KEY) WITHOUT ROWID;
-- Which rules (`search::rules_version()`) computed files_terms; other
-- rules rebuild it on open.
CREATE TABLE IF NOT EXISTS search_rules(
    id INTEGER PRIMARY KEY CHECK (id = 0),
    version TEXT NOT NULL
);
-- Before, SQLite folded names itself in files_fts, by rules of its own.
DROP TABLE IF EXISTS files_fts;
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
-- name's terms, 0 removes them; `seq` keeps the order. The triggers call
-- no function of ours, so any SQLite tool can still change `files`.
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
"#
);

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

/// A peer row as the graph and status views need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    pub info: PeerInfo,
    pub lease_until: u64,
    pub neighbors: Vec<EndpointId>,
}

pub struct Store {
    conn: Connection,
    /// The database file; `None` in memory, where no other connection can
    /// share the data (see [`crate::readers`]).
    path: Option<PathBuf>,
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

/// A query word that starts more stored words than this is searched as a
/// prefix (see `Reads::words_starting`): an OR of that many words costs
/// more than the merge it avoids. Short prefixes, typically.
const MAX_WORDS_PER_PREFIX: usize = 64;

/// A word as a full-text string (in double quotes, so never an operator).
fn quoted(word: &str) -> String {
    format!("\"{}\"", word.replace('"', "\"\""))
}

/// Peer addresses kept decoded by each thread, at most this many.
const DECODED_ADDRS: usize = 4096;

thread_local! {
    static ADDRS: std::cell::RefCell<std::collections::HashMap<Vec<u8>, PeerAddr>> = Default::default();
}

/// A stored peer address, decoded once per thread: decoding checks that
/// its key is a point on the curve, which took a tenth of a search's time
/// (a search answers many providers, the same peers again and again). The
/// stored bytes are the key, so a changed address is decoded anew.
fn decode_addr(bytes: &[u8]) -> rusqlite::Result<PeerAddr> {
    ADDRS.with(|cache| {
        if let Some(addr) = cache.borrow().get(bytes) {
            return Ok(addr.clone());
        }
        let addr: PeerAddr = decode(bytes)?;
        let mut cache = cache.borrow_mut();
        if cache.len() >= DECODED_ADDRS {
            cache.clear();
        }
        cache.insert(bytes.to_vec(), addr.clone());
        Ok(addr)
    })
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

/// `peernet_terms(name)`: [`search::terms`] inside SQL, so the staged
/// full-text changes apply in one statement. Registered on our own
/// connection only, and so used by no trigger or view.
fn register_terms_function(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function("peernet_terms", 1, FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC, |ctx| {
        Ok(search::terms(&ctx.get::<String>(0)?))
    })
}

/// The words of a name as rows of `json_each`, from its terms (word
/// characters one space apart, so nothing in them needs escaping in JSON).
macro_rules! words_of_name {
    () => {
        r#"json_each('["' || replace(peernet_terms(name), ' ', '","') || '"]')"#
    };
}

/// Refills `files_terms` and `search_words` from `files` when they were
/// computed by other rules than this build's, or not at all (a new
/// database, or one from before either table, or before the prefix
/// indexes: `missing`). Staged changes are covered by the refill and
/// dropped.
fn rebuild_search_terms(conn: &Connection, missing: bool) -> Result<()> {
    let version = search::rules_version();
    let stored: Option<String> = conn.query_row("SELECT version FROM search_rules WHERE id = 0", [], |r| r.get(0)).optional()?;
    if stored.as_deref() == Some(version.as_str()) && !missing {
        return Ok(());
    }
    tracing::info!(from = ?stored, to = %version, "rebuilding the index's search terms");
    conn.execute_batch(concat!(
        "INSERT INTO files_terms(files_terms) VALUES ('delete-all');
         INSERT INTO files_terms(rowid, terms) SELECT id, peernet_terms(name) FROM files;
         DELETE FROM search_words;
         INSERT OR IGNORE INTO search_words(word) SELECT w.value FROM files, ",
        words_of_name!(),
        " w WHERE w.value != '';
         DELETE FROM fts_staged;"
    ))?;
    conn.execute("INSERT OR REPLACE INTO search_rules(id, version) VALUES (0, ?1)", [version])?;
    Ok(())
}

/// Drops `files_terms` if it was made without this build's prefix indexes
/// (it is refilled from `files` then); tells whether it did.
fn drop_outdated_terms_table(conn: &Connection) -> Result<bool> {
    let sql: Option<String> = conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'files_terms'", [], |r| r.get(0)).optional()?;
    match sql {
        Some(sql) if !sql.contains(terms_prefixes!()) => {
            tracing::info!("adding prefix indexes to the index's search terms");
            conn.execute_batch("DROP TABLE files_terms")?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Moves the staged full-text changes into `files_terms`, in order.
fn apply_staged(conn: &Connection) -> Result<()> {
    // A non-NULL first column makes the row a command ('delete', which a
    // contentless table needs the removed words for); NULL makes it a
    // plain insert of the name's words.
    conn.prepare_cached(
        "INSERT INTO files_terms(files_terms, rowid, terms)
         SELECT CASE op WHEN 0 THEN 'delete' END, file, peernet_terms(name) FROM fts_staged ORDER BY seq",
    )?
    .execute([])?;
    conn.prepare_cached(concat!(
        "INSERT OR IGNORE INTO search_words(word) SELECT w.value FROM fts_staged, ",
        words_of_name!(),
        " w WHERE op = 1 AND w.value != ''"
    ))?
    .execute([])?;
    conn.prepare_cached("DELETE FROM fts_staged")?.execute([])?;
    Ok(())
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

    /// The queries that change nothing, on the writer's connection. They
    /// see full-text changes only once applied (by a search through
    /// [`Store::search`], or at the next [`Store::commit_batch`]).
    pub fn reads(&self) -> Reads<'_> {
        Reads { conn: &self.conn }
    }

    fn setup(conn: Connection, path: Option<PathBuf>) -> Result<Self> {
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
        register_terms_function(&conn)?;
        add_file_count(&conn)?;
        let mut conn = conn;
        // One transaction: an older database is upgraded (its own full-text
        // table dropped, ours filled) entirely or not at all.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let words_missing = tx.query_row("SELECT 1 FROM sqlite_master WHERE name = 'search_words'", [], |_| Ok(())).optional()?.is_none();
        let terms_outdated = drop_outdated_terms_table(&tx)?;
        tx.execute_batch(SCHEMA)?;
        rebuild_search_terms(&tx, words_missing || terms_outdated)?;
        // Changes staged but not applied when the last process stopped
        // (or made by another SQLite program): applied now, so that the
        // read-only connections, which cannot apply them, see them too.
        apply_staged(&tx)?;
        tx.commit()?;
        Ok(Self { conn, path, staged: false })
    }

    /// Applies the staged full-text changes, in order, in one statement.
    /// Searches call it first, so they always see every committed change;
    /// a batch calls it before its commit.
    pub(crate) fn apply_staged_search_terms(&mut self) -> Result<()> {
        if !self.staged {
            return Ok(());
        }
        apply_staged(&self.conn)?;
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
        if !self.reads().is_member(id)? {
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

    /// Writes many peers with their files in one transaction, through
    /// [`Store::join`] and [`Store::publish`] (so with their checks, and
    /// the search terms a publish gets), with one disk sync at the end:
    /// for building a large index quickly (the bench's million files).
    /// Each peer's lease runs `ttl_ms` from `now`. All or nothing.
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
                // Whatever was staged before the seed is staged again.
                self.staged = true;
                Err(e)
            }
        }
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

    /// [`Reads::search`] on the writer's connection, after applying the
    /// staged full-text changes so that it sees its own writes.
    pub fn search(&mut self, query: &str, limit: u32, now: u64) -> Result<Vec<Hit>> {
        self.apply_staged_search_terms()?;
        self.reads().search(query, limit, now)
    }
}

/// The index's queries that change nothing, on one connection (see the
/// module doc). Each runs in whatever transaction the connection is in;
/// the reader pool opens one per request, so all of a request's queries
/// see the same snapshot.
#[derive(Clone, Copy)]
pub struct Reads<'c> {
    conn: &'c Connection,
}

impl<'c> Reads<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Self { conn }
    }

    pub fn is_member(&self, id: &EndpointId) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM peers WHERE id = ?1")?
            .query_row([id.as_bytes().as_slice()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Files of online peers that match `query` by [`search::matches`]: by
    /// the start of their hash, or by every word of the query starting a
    /// word of the name one of their providers gave them. Most recently
    /// registered first.
    pub fn search(&self, query: &str, limit: u32, now: u64) -> Result<Vec<Hit>> {
        let mut hashes: Vec<String> = Vec::new();
        if let Some(prefix) = search::hash_prefix(query) {
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
        let words = search::words(query);
        if !words.is_empty() && hashes.len() < limit as usize {
            // Each word as a prefix of a stored word: the same words, so
            // the candidates are exactly the matches while `files_terms` is
            // current; the check below keeps it so if it ever is not.
            let mut each = Vec::with_capacity(words.len());
            for word in &words {
                match self.words_starting(word)? {
                    // No stored word starts with it: nothing matches.
                    Some(exact) if exact.is_empty() => return self.hits(hashes, now),
                    Some(exact) => each.push(format!("({})", exact.iter().map(|w| quoted(w)).collect::<Vec<_>>().join(" OR "))),
                    None => each.push(format!("{}*", quoted(word))),
                }
            }
            let expr = each.join(" AND ");
            // Every matching provider row, newest first: a hash's first
            // row is its most recent registration, which orders the hits.
            // Newest is the highest row id: a registration gets a row id
            // above every row's at the time (a repeat keeps its row and
            // its time), so row ids run in registration order. The
            // full-text index walks its matches in row id order by itself,
            // so the rows stream out and the walk stops at `limit` hashes;
            // ordering by `registered_at` sorted every match first, a cost
            // that grew with the matches, not with the limit.
            let mut stmt = self.conn.prepare_cached(
                "SELECT f.hash, f.name FROM files_terms JOIN files f ON f.id = files_terms.rowid
                 JOIN peers p ON p.id = f.peer
                 WHERE files_terms MATCH ?1 AND p.lease_until > ?2
                 ORDER BY files_terms.rowid DESC",
            )?;
            let mut rows = stmt.query(params![expr, now as i64])?;
            while hashes.len() < limit as usize {
                let Some(row) = rows.next()? else { break };
                let (hash, name): (String, String) = (row.get(0)?, row.get(1)?);
                if search::words_match(&words, &search::words(&name)) && !hashes.contains(&hash) {
                    hashes.push(hash);
                }
            }
        }
        hashes.truncate(limit as usize);
        self.hits(hashes, now)
    }

    fn hits(&self, hashes: Vec<String>, now: u64) -> Result<Vec<Hit>> {
        hashes.into_iter().filter_map(|h| self.hit(&h, now).transpose()).collect()
    }

    /// The stored words that start with `prefix`, if there are at most
    /// [`MAX_WORDS_PER_PREFIX`]; `None` if there are more.
    ///
    /// Why: the full-text index answers a prefix query (`"word"*`) by first
    /// merging the lists of files of every word with that prefix into one,
    /// however few results are wanted; for a common word at a million files
    /// that is a good part of the index. The same words as an OR of exact
    /// words are walked lazily, newest first, and the walk stops at the
    /// limit.
    fn words_starting(&self, prefix: &str) -> Result<Option<Vec<String>>> {
        // Every word with the prefix sorts below the prefix followed by the
        // highest character.
        let end = format!("{prefix}{}", char::MAX);
        let mut stmt = self.conn.prepare_cached("SELECT word FROM search_words WHERE word >= ?1 AND word < ?2 LIMIT ?3")?;
        let words = stmt
            .query_map(params![prefix, end, MAX_WORDS_PER_PREFIX as i64 + 1], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok((words.len() <= MAX_WORDS_PER_PREFIX).then_some(words))
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
                    peer: PeerInfo { nickname: r.get(4)?, addr: decode_addr(r.get_ref(5)?.as_blob()?)? },
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
                PeerInfo { nickname: r.get(1)?, addr: decode_addr(r.get_ref(2)?.as_blob()?)? },
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
            Ok(PeerInfo { nickname: r.get(0)?, addr: decode_addr(r.get_ref(1)?.as_blob()?)? })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// How many peers' leases run at `now`.
    pub fn online_count(&self, now: u64) -> Result<u64> {
        let n: i64 =
            self.conn.prepare_cached("SELECT COUNT(*) FROM peers WHERE lease_until > ?1")?.query_row([now as i64], |r| r.get(0))?;
        Ok(n as u64)
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
                info: PeerInfo { nickname: r.get(0)?, addr: decode_addr(r.get_ref(1)?.as_blob()?)? },
                lease_until: r.get::<_, i64>(2)? as u64,
                neighbors: if neighbors.is_empty() { Vec::new() } else { decode(&neighbors)? },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
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

    /// A query word is looked up as the stored words it starts, or as a
    /// prefix when it starts too many; both find the same files, the
    /// newest first, and a word that starts nothing finds nothing.
    #[test]
    fn a_query_word_finds_every_word_it_starts() {
        let mut s = Store::open_in_memory().unwrap();
        let a = peer(1);
        joined(&mut s, a, "a");
        let many = MAX_WORDS_PER_PREFIX + 6;
        for k in 0..many {
            s.publish(&a, &[file(&format!("w{k}x song.mp3"))], k as u64).unwrap();
        }
        assert_eq!(names(&mut s, "w").len(), many);
        assert!(s.reads().words_starting("w").unwrap().is_none(), "too many words: a prefix query");
        assert_eq!(s.reads().words_starting("w1").unwrap().map(|w| w.len()), Some(11), "w1x and w10x to w19x");
        assert_eq!(names(&mut s, "w1 song").len(), 11);
        assert_eq!(names(&mut s, "W12X"), ["w12x song.mp3"]);
        assert!(names(&mut s, "w1 nothing").is_empty());
        let newest: Vec<String> = s.search("w1", 3, 100).unwrap().into_iter().map(|h| h.name).collect();
        assert_eq!(newest, ["w19x song.mp3", "w18x song.mp3", "w17x song.mp3"]);
        // Removed files' words stay listed, and find nothing.
        s.unpublish(&a, &file("w12x song.mp3").hash).unwrap();
        assert!(names(&mut s, "w12x").is_empty());
    }

    /// A full-text table made before the prefix indexes is made again, and
    /// refilled, on open; two- and three-letter queries then use them.
    #[test]
    fn a_terms_table_without_prefix_indexes_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let a = peer(1);
        {
            let mut s = Store::open(&db).unwrap();
            joined(&mut s, a, "a");
            let files: Vec<FileEntry> = (0..MAX_WORDS_PER_PREFIX + 1).map(|k| file(&format!("ab{k}x.txt"))).collect();
            s.publish(&a, &files, 1).unwrap();
            s.search("x", 1, 1).unwrap();
            s.conn
                .execute_batch(
                    "DROP TABLE files_terms;
                     CREATE VIRTUAL TABLE files_terms USING fts5(terms, content='', tokenize='ascii');",
                )
                .unwrap();
            assert!(names(&mut s, "ab").is_empty(), "the old table is empty here");
        }
        let mut s = Store::open(&db).unwrap();
        let sql: String = s.conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'files_terms'", [], |r| r.get(0)).unwrap();
        assert!(sql.contains(terms_prefixes!()), "{sql}");
        assert!(s.reads().words_starting("ab").unwrap().is_none(), "too many words: the prefix index answers");
        assert_eq!(names(&mut s, "ab").len(), MAX_WORDS_PER_PREFIX + 1);
        assert_eq!(names(&mut s, "ab7x"), ["ab7x.txt"]);
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
        assert_eq!(s.reads().online_count(500).unwrap(), 3);
        assert!(s.search("song", 10, 1_010).unwrap().is_empty(), "the seeded leases ran out");
        // A peer over the per-peer limit fails the whole seed.
        let over = MAX_FILES_PER_PEER + 1;
        assert!(matches!(s.seed([seed_peer(8, 1), seed_peer(9, over)], 20, 1_000), Err(StoreError::TooManyFiles)));
        assert!(!s.reads().is_member(&peer(8)).unwrap(), "nothing of a failed seed is kept");
        assert!(names(&mut s, "song 8 take 0").is_empty());
        assert_eq!(names(&mut s, "song 1 take 299"), ["Song 1 take 299.mp3"], "nor is anything lost");
    }

    /// A database from before `files_terms` (SQLite folded names itself in
    /// `files_fts`) is upgraded on open: the old table goes, the new one is
    /// filled from `files`, and nothing else changes.
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
        assert_eq!(tables("files_fts"), 0);
        assert_eq!(tables("files_terms"), 1);
        assert_eq!(count(conn, "SELECT COUNT(*) FROM fts_staged"), 0);
        assert_eq!(count(conn, "SELECT COUNT(*) FROM files"), 5);
        assert_eq!(count(conn, "SELECT COUNT(*) FROM peers"), 2);
        assert_eq!(count(conn, "SELECT SUM(file_count) FROM peers"), 5, "per-peer counts kept");
        let (online, _) = s.reads().online(0, 1).unwrap();
        let nicks: Vec<&str> = online.iter().map(|p| p.peer.nickname.as_str()).collect();
        assert_eq!(nicks, ["alice", "bob"]);
        assert_eq!(online[0].files.len(), 3);
        assert_eq!(online[1].files.len(), 2);
        assert_eq!(online[1].peer.addr.ip, ["127.0.0.1:1".parse().unwrap()]);
        drop(s);

        // Opening again finds the terms current and keeps working.
        let mut s = Store::open(&db).unwrap();
        assert_eq!(s.search("cafe", 10, 1).unwrap().len(), 1);
        s.unpublish(&a, &Hash::new("holiday.jpg")).unwrap();
        assert!(names(&mut s, "holiday").is_empty());
    }

    /// Terms computed by other rules (another build's folding) are rebuilt
    /// on open instead of hiding files.
    #[test]
    fn terms_from_other_rules_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let a = peer(1);
        {
            let mut s = Store::open(&db).unwrap();
            joined(&mut s, a, "a");
            s.publish(&a, &[file("Café.txt")], 1).unwrap();
            s.search("x", 1, 1).unwrap();
            // Stand-in for terms folded differently: none at all.
            s.conn
                .execute_batch(
                    "INSERT INTO files_terms(files_terms) VALUES ('delete-all');
                     UPDATE search_rules SET version = 'an older build';",
                )
                .unwrap();
            assert!(names(&mut s, "cafe").is_empty());
        }
        let mut s = Store::open(&db).unwrap();
        assert_eq!(names(&mut s, "cafe"), ["Café.txt"]);
        let version: String = s.conn.query_row("SELECT version FROM search_rules", [], |r| r.get(0)).unwrap();
        assert_eq!(version, search::rules_version());
    }

    /// Another program (the sqlite3 tool) changing `files` without our
    /// function: the triggers stage the change, the next open applies it.
    #[test]
    fn changes_made_by_another_sqlite_program_are_searchable() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let a = peer(1);
        {
            let mut s = Store::open(&db).unwrap();
            joined(&mut s, a, "a");
            s.publish(&a, &[file("Café.txt"), file("old name.txt"), file("gone.txt")], 1).unwrap();
            s.search("x", 1, 1).unwrap();
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
