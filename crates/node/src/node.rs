//! The peer handle. [`Node`] is cheap to clone; each job lives in its own
//! module and is reached through a sub-API: [`Node::files`],
//! [`Node::search`], [`Node::transfers`], [`Node::chat`],
//! [`Node::network`]. [`crate::startup`] builds it; [`Node::shutdown`]
//! leaves the network gracefully and stops every task.

use std::{sync::Arc, time::Duration};

use iroh::{protocol::Router, Endpoint};
use iroh_blobs::store::fs::FsStore;
use peernet_index::IndexProtocol;
use peernet_proto::ticket::Ticket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    chat::Chat,
    data_dir::DataDir,
    files::Files,
    gossip,
    index_client::IndexClient,
    network::Network,
    overlay::Overlay,
    search::Search,
    startup::{self, Config, StartError},
    tasks::Tasks,
    transfers::Transfers,
};

/// How long a graceful leave may take before shutdown goes on without it.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for a leave event to spread before the endpoint closes: longer
/// than gossip gathers its announcements to the neighbours that do not get
/// the event in full ([`gossip::LAZY_PUSH_EVERY`]), plus time for them to
/// ask us for it, or those not on the event's first path would hear of
/// our leave late or never.
const LEAVE_GRACE: Duration = gossip::LAZY_PUSH_EVERY.saturating_add(Duration::from_millis(500));
/// How long shutdown waits for the node's tasks to end.
const TASKS_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) data_dir: DataDir,
    pub(crate) endpoint: Endpoint,
    pub(crate) router: Router,
    pub(crate) store: FsStore,
    pub(crate) index: IndexClient,
    pub(crate) hosted: Option<IndexProtocol>,
    /// `None` on a LAN network, which has no ticket.
    pub(crate) ticket: Option<Ticket>,
    /// The LAN network's name, on a LAN network.
    pub(crate) lan: Option<String>,
    pub(crate) index_only: bool,
    pub(crate) overlay: Overlay,
    pub(crate) nickname: watch::Sender<String>,
    pub(crate) files: Files,
    pub(crate) search: Search,
    pub(crate) transfers: Transfers,
    pub(crate) chat: Chat,
    pub(crate) network: Network,
    pub(crate) tasks: Tasks,
    /// Stops the index session alone, before the leave is sent.
    pub(crate) session: CancellationToken,
    pub(crate) shutdown_requested: CancellationToken,
    /// The network's relay, when this root runs it.
    pub(crate) relay: Option<Arc<crate::relay::RootRelay>>,
    pub(crate) metrics: crate::metrics::Metrics,
}

#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl Node {
    /// Starts a peer: hosts a new network, rejoins the one this data
    /// directory belongs to, or joins `config.join`.
    pub async fn spawn(config: Config) -> Result<Self, StartError> {
        startup::spawn(config).await
    }

    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self { inner: Arc::new(inner) }
    }

    /// Share, unshare, list.
    pub fn files(&self) -> &Files {
        &self.inner.files
    }

    /// The index, the overlay, or both.
    pub fn search(&self) -> &Search {
        &self.inner.search
    }

    /// Downloads.
    pub fn transfers(&self) -> &Transfers {
        &self.inner.transfers
    }

    /// Say, rename, who, messages.
    pub fn chat(&self) -> &Chat {
        &self.inner.chat
    }

    /// Status, online peers, the map, closing the network.
    pub fn network(&self) -> &Network {
        &self.inner.network
    }

    /// The ticket others join with; a LAN network has none.
    pub fn ticket(&self) -> Option<&Ticket> {
        self.inner.ticket.as_ref()
    }

    /// The LAN network's name, when this peer is on one.
    pub fn lan(&self) -> Option<&str> {
        self.inner.lan.as_deref()
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    pub fn hosts_index(&self) -> bool {
        self.inner.hosted.is_some()
    }

    /// A standalone root (`peernet index`), not a sharing peer.
    pub fn is_index_only(&self) -> bool {
        self.inner.index_only
    }

    pub fn nickname(&self) -> String {
        self.inner.nickname.borrow().clone()
    }

    pub(crate) fn tasks(&self) -> &Tasks {
        &self.inner.tasks
    }

    pub(crate) fn data_dir(&self) -> &DataDir {
        &self.inner.data_dir
    }

    /// Where this daemon's control API (and web interface) and metrics
    /// listen, as written to `control.json`.
    pub fn control(&self) -> Option<crate::data_dir::ControlInfo> {
        self.inner.data_dir.read_control().ok().flatten()
    }

    /// Every metric of this daemon, as OpenMetrics text.
    pub fn metrics_text(&self) -> String {
        self.inner.metrics.encode(&self.network().status())
    }

    /// Asks whoever waits on [`Node::shutdown_requested`] to shut down
    /// (`peernet down`).
    pub fn request_shutdown(&self) {
        self.inner.shutdown_requested.cancel();
    }

    pub async fn shutdown_requested(&self) {
        self.inner.shutdown_requested.cancelled().await
    }

    /// Resolves when the root has closed the network.
    pub async fn network_closed(&self) {
        self.inner.network.closed().await
    }

    /// Leaves the index (de-registering everything) and the room, then
    /// stops all tasks, the router and the store.
    pub async fn shutdown(&self) {
        self.inner.overlay.announce_leave().await;
        // Let the leave reach the neighbours before the endpoint closes.
        tokio::time::sleep(LEAVE_GRACE).await;
        if !self.inner.index_only && self.inner.index.exists() {
            // No heartbeat or re-join may follow the leave and bring us back.
            self.inner.session.cancel();
            match tokio::time::timeout(LEAVE_TIMEOUT, self.inner.index.leave()).await {
                Ok(Ok(())) => info!("left the network"),
                Ok(Err(e)) => warn!("could not leave the index cleanly: {e}"),
                Err(_) => warn!("the index did not answer the leave in time"),
            }
        }
        let inner = &self.inner;
        if !inner.tasks.stop(TASKS_WAIT).await {
            warn!("{} tasks did not stop in time", inner.tasks.len());
        }
        if let Err(e) = inner.router.shutdown().await {
            warn!("router shutdown: {e}");
        }
        inner.network.admission().detach();
        if let Some(relay) = &inner.relay {
            relay.shutdown().await;
        }
        if let Err(e) = inner.store.shutdown().await {
            debug!("store shutdown: {e}");
        }
        inner.data_dir.remove_control(std::process::id());
    }
}
