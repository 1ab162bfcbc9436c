//! A peernet peer: client and server at once.
//!
//! [`Node`] is the handle; each job has its own module, reached through a
//! sub-API of the node:
//!
//! - [`startup`]: binding, the store, the router, the hosted index, which
//!   network this data directory belongs to; a failed start stops what it
//!   started.
//! - [`files`]: share, unshare, ls ([`shares`] keeps the list on disk).
//! - [`search`]: the index, the overlay, or both, with one policy.
//! - [`transfers`]: get, resume, swarm downloads, saving ([`save`]) and
//!   becoming a source.
//! - [`chat`]: say, rename, who, messages, over the [`overlay`];
//!   [`gossip`]: how the overlay's gossip is configured, and why.
//! - [`network`]: status, online peers, the map, closing the network.
//! - [`flood`]: the flood-search protocol and its runtime, over reused
//!   [`links`].
//! - [`index_client`]: the session with the index (join, heartbeat,
//!   back-off) and its requests.
//! - [`lan`]: finding peers on the LAN with mDNS; [`dht`]: the mainline
//!   DHT as a layer for finding members and providers (`--dht`).
//! - [`relay`]: the root's own relay server, and how members reach and
//!   trust a relay; [`paths`]: whether each link is direct or relayed.
//! - [`board`]: every get's progress, for the web page; [`metrics`]: the
//!   Prometheus registry (iroh's metrics, the index's and the peer's).
//! - [`tasks`]: every task the node runs, tracked and cancelled as one.
//! - [`control`]: the local HTTP API the CLI talks to, the web interface
//!   on the same server, and the metrics endpoint; it depends on the node,
//!   never the reverse.

pub mod admission;
pub mod board;
pub mod chat;
pub mod control;
pub mod data_dir;
pub mod dht;
pub mod endpoint;
pub mod files;
pub mod flood;
pub mod gossip;
pub mod index_client;
pub mod lan;
pub mod links;
pub mod metrics;
pub mod network;
pub mod node;
pub mod overlay;
pub mod paths;
pub mod relay;
pub mod relink;
pub mod reputation;
pub mod resolve;
pub mod save;
pub mod search;
pub mod serving;
pub mod shares;
pub mod startup;
pub mod tasks;
pub mod throttle;
pub mod transfers;

pub use node::Node;
pub use startup::{Config, StartError};
