//! Helpers shared by the fuzz targets: reading a frame the way the index,
//! the flood protocol and admission read one off a stream, a round-trip
//! check, a store for collections, and times near a fixed clock.

use std::{
    collections::HashMap,
    future::Future,
    path::{Component, Path},
    pin::pin,
    task::{Context, Poll, Waker},
};

use arbitrary::Arbitrary;
use bytes::Bytes;
use iroh_blobs::{format::collection::SimpleStore, Hash};
use peernet_proto::frame::{self, FrameError, PREFIX_LEN};
use serde::{de::DeserializeOwned, Serialize};

/// A fixed "now" for targets that need a clock: events are judged against it.
pub const NOW_MS: u64 = 1_700_000_000_000;

/// Reads one frame from the start of `data` as `read_frame` in
/// `crates/index/src/frame_io.rs` does from a stream: the prefix is checked
/// against `max` before the body is looked at; a stream that ends early is
/// `None`.
pub fn read_frame<T: DeserializeOwned>(data: &[u8], max: usize) -> Option<Result<T, FrameError>> {
    let prefix: [u8; PREFIX_LEN] = data.get(..PREFIX_LEN)?.try_into().ok()?;
    let len = match frame::body_len(prefix, max) {
        Ok(len) => len,
        Err(e) => return Some(Err(e)),
    };
    let body = data.get(PREFIX_LEN..PREFIX_LEN.checked_add(len)?)?;
    Some(frame::decode(body))
}

/// Decodes `data` both as a whole body and as a length-prefixed frame; every
/// message that decodes must encode again and decode to itself.
pub fn decode_both<T>(data: &[u8], max: usize) -> Vec<T>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let mut decoded = Vec::new();
    if let Ok(msg) = frame::decode::<T>(data) {
        decoded.push(msg);
    }
    if let Some(Ok(msg)) = read_frame::<T>(data, max) {
        decoded.push(msg);
    }
    for msg in &decoded {
        round_trips(msg);
    }
    decoded
}

/// Panics unless `msg` encodes (without a size limit) and decodes to itself.
pub fn round_trips<T>(msg: &T)
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let bytes = frame::encode(msg, usize::MAX).expect("a decoded message encodes again");
    let back: T = frame::decode(&bytes[PREFIX_LEN..]).expect("an encoded message decodes");
    assert_eq!(&back, msg, "a message changed on its way through the wire format");
}

/// A time near [`NOW_MS`], or anywhere in the range.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Clock {
    Now,
    /// Milliseconds from [`NOW_MS`], either way (about ±35 minutes).
    Near(i32),
    At(u64),
}

impl Clock {
    pub fn ms(self) -> u64 {
        match self {
            Clock::Now => NOW_MS,
            Clock::Near(d) => NOW_MS.saturating_add_signed(i64::from(d)),
            Clock::At(t) => t,
        }
    }
}

/// Blobs by hash, as a store holds them for `Collection::load`.
#[derive(Debug, Default)]
pub struct MemStore(pub HashMap<Hash, Bytes>);

impl MemStore {
    pub fn add(&mut self, data: Vec<u8>) -> Hash {
        let hash = Hash::new(&data);
        self.0.insert(hash, data.into());
        hash
    }
}

impl SimpleStore for MemStore {
    fn load(&self, hash: Hash) -> impl Future<Output = n0_error::Result<Bytes>> + Send + '_ {
        let found = self.0.get(&hash).cloned().ok_or_else(|| n0_error::anyerr!("blob {hash} is not in the store"));
        std::future::ready(found)
    }
}

/// Runs a future whose every await is already ready (the memory store's).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("a future over the memory store never finished");
}

/// The checks `crates/node/src/save.rs` makes on a path from a collection,
/// compiled from that very file so the fuzz build does not pull in the node
/// crate (it uses only `std` and `peernet_proto`). It belongs in
/// `peernet_proto::names`; until it moves, keep save.rs free of node imports
/// or this include breaks.
#[allow(dead_code)]
#[path = "../../crates/node/src/save.rs"]
pub mod save;

/// Panics unless `relative` (from `safe_relative`) can only name a place
/// inside the directory it is joined to.
pub fn assert_stays_inside(name: &str, relative: &Path) {
    assert!(relative.is_relative(), "{name:?} became the absolute path {relative:?}");
    let mut parts = 0;
    for component in relative.components() {
        match component {
            Component::Normal(part) => {
                let part = part.to_str().expect("made from a str");
                assert!(peernet_proto::names::validate_file_name(part).is_ok(), "{name:?} kept the component {part:?}");
                parts += 1;
            }
            other => panic!("{name:?} became {relative:?}, with the component {other:?}"),
        }
    }
    assert!(parts > 0, "{name:?} became an empty path");
    let root = Path::new("/downloads/folder");
    assert!(root.join(relative).starts_with(root));
}
