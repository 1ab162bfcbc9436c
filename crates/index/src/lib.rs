//! The peernet index: the root of a network.
//!
//! Peers register themselves and their files here, keep a lease alive with
//! heartbeats, search by name or hash, list who is online and ask for
//! referrals to other peers. The protocol is documented in
//! [`peernet_proto::index`]; state lives in SQLite ([`store`]); request
//! semantics are in [`service`], free of sockets; [`protocol`] serves it over
//! QUIC.

pub mod frame_io;
pub mod protocol;
pub mod service;
pub mod store;

use std::{path::Path, sync::Arc, time::Duration};

use iroh::EndpointId;
use peernet_proto::key::NetworkKey;

pub use protocol::IndexProtocol;
pub use service::Service;

/// Lease timing. Clients learn both values when they join.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often peers should heartbeat.
    pub heartbeat: Duration,
    /// How long a lease lasts without a heartbeat.
    pub lease_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self { heartbeat: Duration::from_secs(10), lease_ttl: Duration::from_secs(30) }
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
