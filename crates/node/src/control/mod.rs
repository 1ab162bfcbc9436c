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

use crate::{index_client::IndexStatus, shares::Share};

/// Header carrying the bearer token.
pub const AUTH_HEADER: &str = "authorization";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub id: String,
    pub nickname: String,
    pub ticket: String,
    pub hosts_index: bool,
    pub index: IndexStatus,
    pub addrs: Vec<String>,
    pub shares: usize,
    /// Current overlay neighbours (short ids).
    pub neighbors: Vec<String>,
    /// Flood queries handled here, and duplicate copies dropped.
    pub flood_handled: u64,
    pub flood_duplicates: u64,
    /// Overlay events dropped, by reason (forged, replayed, ...).
    pub dropped_events: std::collections::BTreeMap<String, u64>,
    pub data_dir: PathBuf,
    pub downloads: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareRequest {
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareReply {
    pub share: Share,
    /// Set when the file is shared locally but the index could not be told yet.
    pub warning: Option<String>,
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
    pub mode: Option<crate::node::SearchMode>,
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

/// One line of the newline-delimited JSON stream `POST /v1/get` answers with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GetEvent {
    Resolved {
        name: String,
        hash: String,
        size: u64,
        providers: Vec<String>,
    },
    Progress {
        done: u64,
        total: u64,
    },
    ProviderFailed {
        provider: String,
    },
    Saved {
        path: PathBuf,
        hash: String,
        size: u64,
        note: Option<String>,
        failed_providers: Vec<String>,
        /// Verified bytes that were already here when this get started (resume).
        resumed_from: u64,
        /// Providers that delivered parts of this download (short ids).
        sources: Vec<String>,
    },
    Failed {
        error: String,
    },
}
