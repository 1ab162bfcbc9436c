//! Every task a node starts, accounted for.
//!
//! One [`TaskTracker`] holds every task the node spawns (flood forwards and
//! answers, downloads, the session, the overlay, the control server), and one
//! [`CancellationToken`] stops them: each task is wrapped so that cancelling
//! drops it at its next await point. A finished task leaves nothing behind
//! (unlike a `JoinSet`, which keeps each result until it is joined), so a
//! node that handled a million queries holds as many tasks as an idle one.

use std::{future::Future, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[derive(Debug, Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    pub fn new(cancel: CancellationToken) -> Self {
        Self { tracker: TaskTracker::new(), cancel }
    }

    /// Spawns `fut` as a tracked task that stops when the node stops.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(self.cancel.clone().run_until_cancelled_owned(fut));
    }

    /// The token every task of the node stops on; children of it stop a part.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Cancels every task and waits (at most `within`) for them to end.
    /// Returns false if some did not end in time.
    pub async fn stop(&self, within: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(within, self.tracker.wait()).await.is_ok()
    }

    /// Tasks still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

/// Live tasks in this process's runtime, detached ones included: the figure
/// that shows nothing was spawned and forgotten.
pub fn runtime_alive_tasks() -> usize {
    tokio::runtime::Handle::try_current().map(|h| h.metrics().num_alive_tasks()).unwrap_or(0)
}
