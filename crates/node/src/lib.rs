//! A peernet peer: client and server at once.
//!
//! [`Node`] owns an iroh endpoint that serves verified blobs (and the index,
//! when this peer started the network), keeps a session with the index
//! ([`index_client`]), shares files ([`shares`]), fetches them ([`fetch`])
//! and answers the local control API ([`control`]) the CLI talks to.

pub mod control;
pub mod data_dir;
pub mod endpoint;
mod fetch;
pub mod flood;
pub mod index_client;
mod jitter;
pub mod node;
pub mod overlay;
pub mod resolve;
pub mod save;
pub mod shares;
pub mod throttle;

pub use node::{Config, Node, NodeError};
