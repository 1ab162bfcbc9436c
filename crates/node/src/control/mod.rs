//! The local control API: how `peernet share`, `search`, `get` and the other
//! subcommands talk to the running daemon.
//!
//! HTTP/JSON on 127.0.0.1 with a random port and a random bearer token, both
//! written to `control.json` in the data directory (mode 0600), so only the
//! user who owns the data directory can drive the daemon. Every error is a
//! JSON body `{"error": "one sentence"}` with a 4xx or 5xx status.

pub mod client;
pub mod server;

use std::path::PathBuf;

use peernet_proto::index::{Hit, OnlinePeer};
use serde::{Deserialize, Serialize};

// The node's own types, re-exported for the API's clients: the wire is
// their JSON form. `POST /v1/get` answers with one `GetEvent` per line.
pub use crate::{files::ShareReply, network::Status, transfers::GetEvent};

/// Header carrying the bearer token.
pub const AUTH_HEADER: &str = "authorization";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareRequest {
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnshareRequest {
    pub target: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchQuery {
    pub q: String,
    pub limit: Option<u32>,
    /// Index, overlay (flood) or both; both when unset.
    pub mode: Option<crate::search::SearchMode>,
    /// Flood TTL; clamped to 1..=7, default 4.
    pub ttl: Option<u8>,
    /// How long to collect flood answers, in milliseconds (at most 30 s).
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchReply {
    pub hits: Vec<Hit>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OnlineReply {
    pub peers: Vec<OnlinePeer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRequest {
    /// A file name or a hash (prefix).
    pub target: String,
    /// Absolute directory to save into; the daemon's downloads dir if unset.
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SayRequest {
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NickRequest {
    pub nickname: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagesQuery {
    /// Only messages after this history index.
    pub after: Option<u64>,
}
