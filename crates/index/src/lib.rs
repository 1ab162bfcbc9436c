//! The peernet index: the root of a network.
//!
//! Peers register themselves and their files here, keep a lease alive with
//! heartbeats, search by name or hash, list who is online and ask for
//! referrals to other peers. The protocol is documented in
//! [`peernet_proto::index`]; state lives in SQLite ([`store`]) and is read
//! from a copy in memory ([`catalog`]); request
//! semantics are in [`service`], free of sockets; [`protocol`] serves it over
//! QUIC.

pub mod budget;
pub mod catalog;
pub mod frame_io;
pub mod metrics;
pub mod protocol;
pub mod service;
pub mod store;

use std::{path::Path, sync::Arc, time::Duration};

use iroh::EndpointId;
use peernet_proto::key::NetworkKey;

pub use protocol::IndexProtocol;
pub use service::Service;

/// Requests one key may send the index: enough for a peer sharing a large
/// folder or paging through a big `online` list, far below a flood.
pub const DEFAULT_REQUEST_RATE: budget::Rate = budget::Rate::new(50, 200);
/// Keys that may be registered from one IP address at once (the sybil cap).
pub const DEFAULT_KEYS_PER_ADDRESS: usize = 64;

/// Lease timing (clients learn both values when they join) and budgets.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often peers should heartbeat.
    pub heartbeat: Duration,
    /// How long a lease lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// Requests per key; beyond it the index answers "slow down".
    pub request_rate: budget::Rate,
    /// Keys registered from one IP address at once; a Join beyond it is refused.
    pub keys_per_address: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(30),
            request_rate: DEFAULT_REQUEST_RATE,
            keys_per_address: DEFAULT_KEYS_PER_ADDRESS,
        }
    }
}

/// Opens (or creates) the index database at `db` and returns the protocol
/// handler to mount on a router under [`peernet_proto::index::ALPN`].
pub fn open(db: &Path, key: NetworkKey, me: EndpointId, config: Config) -> Result<IndexProtocol, store::StoreError> {
    let store = store::Store::open(db)?;
    Ok(IndexProtocol::new(Arc::new(Service::new(store, key, me, config))))
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
