//! The downloads board: every get this daemon ran since it started, with
//! its progress, rate, time left and sources, as the web page's Files panel
//! shows it. Built only from the get's own events, so the page and the CLI
//! see the same download.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Instant,
};

use serde::{Deserialize, Serialize};

use crate::transfers::GetEvent;

/// Finished downloads kept on the board; running ones are always kept.
pub const BOARD_FINISHED: usize = 50;

/// Where a download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadState {
    Resolving,
    Running,
    Saved,
    Failed,
}

/// One download, as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadRow {
    pub id: u64,
    /// What was asked for (a name or a hash).
    pub target: String,
    pub name: Option<String>,
    pub hash: Option<String>,
    pub size: u64,
    pub done: u64,
    /// Bytes per second since the first byte arrived.
    pub rate_bps: u64,
    /// Seconds left at that rate, while running.
    pub eta_secs: Option<u64>,
    /// The providers (while running) or the sources that delivered (when saved).
    pub sources: Vec<String>,
    pub state: DownloadState,
    pub path: Option<String>,
    pub error: Option<String>,
    /// Providers that lost their turn, with why.
    #[serde(default)]
    pub failures: Vec<crate::transfers::Failure>,
}

#[derive(Debug)]
struct Entry {
    row: DownloadRow,
    /// When the first progress came, and how much was done then.
    first: Option<(Instant, u64)>,
}

/// The board; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Board {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    entries: VecDeque<Entry>,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts a new download on the board and returns its id.
    pub fn start(&self, target: &str) -> u64 {
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        let row = DownloadRow {
            id,
            target: target.to_string(),
            name: None,
            hash: None,
            size: 0,
            done: 0,
            rate_bps: 0,
            eta_secs: None,
            sources: Vec::new(),
            state: DownloadState::Resolving,
            path: None,
            error: None,
            failures: Vec::new(),
        };
        inner.entries.push_back(Entry { row, first: None });
        // Forget the oldest finished ones beyond the cap.
        let finished = |e: &Entry| matches!(e.row.state, DownloadState::Saved | DownloadState::Failed);
        while inner.entries.iter().filter(|e| finished(e)).count() > BOARD_FINISHED {
            let oldest = inner.entries.iter().position(finished).expect("counted above");
            inner.entries.remove(oldest);
        }
        id
    }

    /// Applies one of the download's events; returns the bytes it fetched
    /// from other peers, once, when it ends (for the metrics; what a resumed
    /// get found already here is not counted).
    pub fn apply(&self, id: u64, event: &GetEvent, now: Instant) -> u64 {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.iter_mut().find(|e| e.row.id == id) else { return 0 };
        match event {
            GetEvent::Resolved { name, hash, size, providers } => {
                let row = &mut entry.row;
                row.name = Some(name.clone());
                row.hash = Some(hash.clone());
                row.size = *size;
                row.sources = providers.clone();
                row.state = DownloadState::Running;
                0
            }
            GetEvent::Progress { done, total } => {
                entry.row.done = *done;
                entry.row.size = *total;
                entry.first.get_or_insert((now, *done));
                entry.update_rate(now);
                0
            }
            GetEvent::ProviderFailed { provider, why } => {
                let failures = &mut entry.row.failures;
                // Bounded by the providers a hit names.
                if !failures.iter().any(|f| f.provider == *provider) {
                    failures.push(crate::transfers::Failure { provider: provider.clone(), why: why.clone() });
                }
                0
            }
            GetEvent::Saved { path, size, sources, resumed_from, .. } => {
                entry.update_rate(now);
                let row = &mut entry.row;
                row.state = DownloadState::Saved;
                row.done = *size;
                row.size = *size;
                row.eta_secs = None;
                row.path = Some(path.display().to_string());
                if !sources.is_empty() {
                    row.sources = sources.clone();
                }
                size.saturating_sub(*resumed_from)
            }
            GetEvent::Failed { error } => {
                let row = &mut entry.row;
                row.state = DownloadState::Failed;
                row.eta_secs = None;
                row.error = Some(error.clone());
                entry.first.map(|(_, d0)| row.done.saturating_sub(d0)).unwrap_or(0)
            }
        }
    }

    /// Every download on the board, oldest first; a running one's rate and
    /// time left as of `now` (a stalled download's rate falls).
    pub fn rows(&self, now: Instant) -> Vec<DownloadRow> {
        let mut inner = self.lock();
        inner
            .entries
            .iter_mut()
            .map(|e| {
                if e.row.state == DownloadState::Running {
                    e.update_rate(now);
                }
                e.row.clone()
            })
            .collect()
    }
}

impl Entry {
    /// The average rate since the first progress, and the time left at it.
    fn update_rate(&mut self, now: Instant) {
        let Some((t0, d0)) = self.first else { return };
        let secs = now.saturating_duration_since(t0).as_secs_f64();
        if secs > 0.0 {
            self.row.rate_bps = (self.row.done.saturating_sub(d0) as f64 / secs) as u64;
        }
        self.row.eta_secs = (self.row.rate_bps > 0).then(|| self.row.size.saturating_sub(self.row.done) / self.row.rate_bps);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_download_moves_from_resolving_to_saved_with_its_rate() {
        let board = Board::default();
        let id = board.start("movie.mkv");
        assert_eq!(board.rows(Instant::now())[0].state, DownloadState::Resolving);
        let t0 = Instant::now();
        board.apply(id, &GetEvent::Resolved { name: "movie.mkv".into(), hash: "ab".into(), size: 1000, providers: vec!["p".into()] }, t0);
        // 100 bytes were already here (a resumed get).
        assert_eq!(board.apply(id, &GetEvent::Progress { done: 100, total: 1000 }, t0), 0);
        assert_eq!(board.apply(id, &GetEvent::Progress { done: 300, total: 1000 }, t0 + Duration::from_secs(2)), 0);
        let row = &board.rows(t0 + Duration::from_secs(2))[0];
        assert_eq!((row.state, row.done, row.rate_bps, row.eta_secs), (DownloadState::Running, 300, 100, Some(7)));
        let stalled = &board.rows(t0 + Duration::from_secs(4))[0];
        assert_eq!((stalled.rate_bps, stalled.eta_secs), (50, Some(14)), "a stalled download's rate falls");
        let saved = GetEvent::Saved {
            path: "/tmp/movie.mkv".into(),
            hash: "ab".into(),
            size: 1000,
            note: None,
            failed_providers: vec![],
            failures: vec![],
            resumed_from: 100,
            sources: vec!["q".into()],
            reached: vec![],
        };
        assert_eq!(board.apply(id, &saved, t0 + Duration::from_secs(3)), 900, "what was fetched, without what was here");
        let row = &board.rows(t0)[0];
        assert_eq!((row.state, row.done, row.eta_secs, row.sources.clone()), (DownloadState::Saved, 1000, None, vec!["q".to_string()]));
    }

    #[test]
    fn finished_downloads_beyond_the_cap_are_forgotten_running_ones_kept() {
        let board = Board::default();
        let running = board.start("still going");
        for i in 0..BOARD_FINISHED + 10 {
            let id = board.start(&format!("f{i}"));
            board.apply(id, &GetEvent::Failed { error: "gone".into() }, Instant::now());
        }
        board.start("last");
        let rows = board.rows(Instant::now());
        assert!(rows.iter().any(|r| r.id == running));
        assert_eq!(rows.iter().filter(|r| r.state == DownloadState::Failed).count(), BOARD_FINISHED);
    }
}
