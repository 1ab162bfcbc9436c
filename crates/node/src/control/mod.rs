//! The local control API: how `peernet share`, `search`, `get` and the other
//! subcommands talk to the running daemon.
//!
//! HTTP/JSON on 127.0.0.1 with a random port and a random bearer token, both
//! written to `control.json` in the data directory (mode 0600), so only the
//! user who owns the data directory can drive the daemon. The same server
//! serves the web interface ([`ui`]) to a browser logged in with a one-time
//! link; [`guard`] decides who gets in. Every error is a JSON body
//! `{"error": "one sentence"}` with a 4xx or 5xx status. [`metrics`] serves
//! Prometheus on an address of its own.

pub mod client;
pub mod guard;
pub mod metrics;
pub mod server;
pub mod ui;

use peernet_proto::index::{Hit, OnlinePeer};
use serde::{Deserialize, Serialize};

// The node's own types, re-exported for the API's clients: the wire is
// their JSON form. `POST /v1/get` answers with one `GetEvent` per line.
pub use crate::{files::ShareReply, network::Status, transfers::GetEvent};
// The request bodies live in proto, so their decoders can be fuzzed alone.
pub use peernet_proto::control::{GetRequest, MessagesQuery, NickRequest, SayRequest, SearchQuery, ShareRequest, UnshareRequest};

/// Serves `app` on `listener` until `cancel` (then waits for open
/// requests, which is why live feeds end on `cancel` too).
pub(crate) async fn serve_until(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cancel: tokio_util::sync::CancellationToken,
    what: &'static str,
) {
    let shutdown = async move { cancel.cancelled().await };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!("{what} stopped: {e}");
    }
}

/// Header carrying the bearer token.
pub const AUTH_HEADER: &str = "authorization";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchReply {
    pub hits: Vec<Hit>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OnlineReply {
    pub peers: Vec<OnlinePeer>,
}
