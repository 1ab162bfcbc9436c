//! peernet's shared vocabulary: wire types, the join ticket, named limits and
//! name rules.
//!
//! Nothing in this crate does IO. Everything here can be tested with plain
//! values, and every other crate agrees on the network through these types.

pub mod admission;
pub mod answers;
pub mod chat;
pub mod control;
pub mod dht;
pub mod flood;
pub mod frame;
pub mod index;
pub mod key;
pub mod known_keys;
pub mod limits;
pub mod names;
pub mod search;
pub mod session;
pub mod ticket;
pub mod timers;
pub mod topo;

pub use iroh::EndpointId;
pub use iroh_blobs::Hash;
