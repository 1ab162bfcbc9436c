//! Read-only connections for the requests that change nothing (search,
//! online, referral, the maps), each on its own thread beside the one
//! writer, so that a search never waits behind a batch of publishes and
//! its disk sync.
//!
//! Why this is safe: the database is in WAL mode, where readers never
//! block the writer nor it them, and each reader sees the last commit
//! made before its read transaction began. The writer applies the staged
//! full-text changes before each commit ([`Store::commit_batch`]), so a
//! committed change is searchable from here at once, and a change is
//! acknowledged only after its commit, so a client that searches after
//! its publish was answered finds what it published. Nothing is written
//! here: durability is the writer's alone, exactly as before.
//!
//! An in-memory store (tests) has no file for a second connection to
//! open; there the pool is not started and the writer answers the reads
//! itself, as it did before (a shared-cache in-memory database would
//! share one page cache under table locks, not WAL snapshots, so readers
//! would wait for the writer after all).

use std::{
    path::Path,
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
};

use rusqlite::{Connection, OpenFlags};

use crate::store::{Reads, StoreError};

/// Read-only connections, each with its own thread. Two: on the small
/// machines the index runs on (two cores), a third reader only competes
/// with the writer and the QUIC tasks for the same cores; two let one
/// search run while another waits for the disk.
pub const READERS: usize = 2;

/// Jobs one reader answers from one read transaction at most (see [`run`]):
/// few, since each waits for those before it.
const READ_BATCH: usize = 4;

/// Page cache of each reader connection, in KiB (as the writer's). It
/// helps within one read transaction only: a reader's cache is emptied
/// whenever it finds the writer committed since its last read, which under
/// load is every time. (Mapping the file instead, mmap_size 1 GiB, was no
/// faster at a million files, 1,893 against 1,999 requests/s, and more
/// than doubled the RSS: SQLite unmaps the whole file at the same moments,
/// and the page faults and unmapping took a fifth of the index's time.)
const READER_CACHE_KIB: i64 = 32 * 1024;

/// Threads answering reads from their own read-only connections; the jobs
/// of type `J` come through one queue, so a slow read holds up only its
/// own thread. Dropping the pool ends and joins the threads.
pub struct Readers<J> {
    /// Taken on drop: closing the queue is what ends the threads.
    jobs: Option<mpsc::Sender<J>>,
    threads: Vec<JoinHandle<()>>,
}

impl<J> std::fmt::Debug for Readers<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers").field("threads", &self.threads.len()).finish_non_exhaustive()
    }
}

impl<J: Send + 'static> Readers<J> {
    /// Opens `count` read-only connections to the database at `path` (which
    /// the writer has already opened and set up) and starts a thread for
    /// each, answering every job with `serve`. Fails, starting nothing, if
    /// a connection cannot be opened.
    pub fn start(path: &Path, count: usize, serve: impl Fn(Reads<'_>, J) + Send + Sync + 'static) -> Result<Self, StoreError> {
        let connections = (0..count).map(|_| open(path)).collect::<Result<Vec<_>, _>>()?;
        let (jobs, queue) = mpsc::channel::<J>();
        let queue = Arc::new(Mutex::new(queue));
        let serve = Arc::new(serve);
        let threads = connections
            .into_iter()
            .enumerate()
            .map(|(i, conn)| {
                let (queue, serve) = (queue.clone(), serve.clone());
                std::thread::Builder::new()
                    .name("index-reader".into())
                    .spawn(move || run(conn, &queue, &*serve))
                    .unwrap_or_else(|e| panic!("index reader thread {i} could not start: {e}"))
            })
            .collect();
        Ok(Self { jobs: Some(jobs), threads })
    }

    /// Queues `job` for the next free reader; gives it back if the readers
    /// are gone.
    pub fn send(&self, job: J) -> Result<(), J> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }
}

impl<J> Drop for Readers<J> {
    fn drop(&mut self) {
        self.jobs.take();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("an index reader thread panicked");
            }
        }
    }
}

/// One read-only connection, tuned for reading.
fn open(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    // The writer may hold the WAL index lock for a moment at a checkpoint.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Keep each statement's plan (see `Store::open`).
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// A reader thread: takes the jobs waiting in the shared queue (up to
/// [`READ_BATCH`]) and answers them inside one read transaction, so that
/// every query of one request sees the same commit.
///
/// One transaction for several jobs, because beginning one after the
/// writer committed (under load: every time) starts from a cold cache:
/// SQLite empties the connection's page cache. The transaction's snapshot
/// is taken after the jobs were queued, so each still sees every change
/// acknowledged before it was sent.
fn run<J, F: Fn(Reads<'_>, J)>(conn: Connection, queue: &Mutex<mpsc::Receiver<J>>, serve: &F) {
    loop {
        // The lock is held only while taking jobs, never while answering.
        let jobs: Vec<J> = {
            let queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            let Ok(first) = queue.recv() else { return };
            std::iter::once(first).chain(queue.try_iter().take(READ_BATCH - 1)).collect()
        };
        match conn.unchecked_transaction() {
            // Dropping the transaction ends it; a read has nothing to commit.
            Ok(snapshot) => jobs.into_iter().for_each(|job| serve(Reads::new(&snapshot), job)),
            // Without a transaction each query sees the newest commit; the
            // answers are still made of committed data only.
            Err(e) => {
                tracing::warn!("an index reader could not begin a read transaction: {e}");
                jobs.into_iter().for_each(|job| serve(Reads::new(&conn), job))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use iroh::SecretKey;
    use peernet_proto::{
        index::{FileEntry, Kind, PeerAddr},
        Hash,
    };

    use super::*;
    use crate::store::Store;

    fn file(name: &str) -> FileEntry {
        FileEntry { name: name.into(), size: 1, hash: Hash::new(name.as_bytes()), kind: Kind::File }
    }

    /// Names found for `query` by one reader of a pool on `db`.
    fn search_from_a_reader(db: &Path, query: &str) -> Vec<String> {
        let (tx, rx) = mpsc::channel();
        let readers = Readers::start(db, 1, move |reads: Reads<'_>, query: String| {
            let names = reads.search(&query, 10, 1).unwrap().into_iter().map(|h| h.name).collect::<Vec<_>>();
            tx.send(names).unwrap();
        })
        .unwrap();
        readers.send(query.to_string()).unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    /// A reader sees what a committed batch wrote, search terms included,
    /// and nothing of a batch not yet committed.
    #[test]
    fn a_reader_sees_committed_batches_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let mut store = Store::open(&db).unwrap();
        let a = SecretKey::from_bytes(&[1; 32]).public();
        store.begin_batch().unwrap();
        store.join(&PeerAddr { id: a, ip: vec![], relay: None }, "a", 0, 1_000).unwrap();
        store.publish(&a, &[file("holiday-beach.jpg")], 0).unwrap();
        store.commit_batch().unwrap();
        assert_eq!(search_from_a_reader(&db, "beach"), ["holiday-beach.jpg"]);

        store.begin_batch().unwrap();
        store.publish(&a, &[file("holiday-mountain.jpg")], 0).unwrap();
        store.unpublish(&a, &file("holiday-beach.jpg").hash).unwrap();
        // The writer sees its own batch (its search applies the staged terms)...
        assert_eq!(store.search("holiday", 10, 1).unwrap().len(), 1);
        assert_eq!(store.search("mountain", 10, 1).unwrap().len(), 1);
        // ...a reader sees the last commit.
        assert!(search_from_a_reader(&db, "mountain").is_empty(), "uncommitted work is not visible");
        assert_eq!(search_from_a_reader(&db, "beach"), ["holiday-beach.jpg"], "nor is an uncommitted removal");
        store.commit_batch().unwrap();
        assert_eq!(search_from_a_reader(&db, "holiday"), ["holiday-mountain.jpg"]);
    }

    /// Readers cannot write: a read-only connection refuses.
    #[test]
    fn readers_connections_are_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let _store = Store::open(&db).unwrap();
        let conn = open(&db).unwrap();
        assert!(conn.execute("DELETE FROM peers", []).is_err());
    }

    #[test]
    fn dropping_the_pool_joins_its_threads() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let _store = Store::open(&db).unwrap();
        let (tx, rx) = mpsc::channel();
        let readers = Readers::start(&db, 3, move |_: Reads<'_>, n: u32| tx.send(n).unwrap()).unwrap();
        for n in 0..10 {
            readers.send(n).unwrap();
        }
        let mut got: Vec<u32> = (0..10).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>(), "every job answered once");
        drop(readers);
        assert!(rx.recv().is_err(), "the threads (and their senders) are gone");
    }
}
