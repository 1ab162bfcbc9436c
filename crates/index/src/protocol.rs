//! The QUIC side of the index: accept connections on `peernet/index/1`,
//! read one request frame per stream, answer it through [`Service`].
//!
//! A connection that sends a bad frame is closed with a close code and a
//! reason; nothing else is affected. Connections beyond
//! [`MAX_INDEX_CONNECTIONS`] are closed at once with
//! [`close_code::BUSY`], and each connection has at most
//! [`MAX_STREAMS_PER_CONNECTION`] requests in flight.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use iroh::{
    endpoint::{Connection, VarInt},
    protocol::{AcceptError, ProtocolHandler},
    EndpointId, TransportAddr,
};
use peernet_proto::{
    frame::FrameError,
    index::{close_code, ErrorCode, Request, Response},
    limits::{MAX_INDEX_CONNECTIONS, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, MAX_STREAMS_PER_CONNECTION},
};
use tokio::{sync::Semaphore, task::JoinSet};
use tracing::debug;

use crate::{
    budget::Budget,
    frame_io::{read_frame, write_frame, FrameIoError},
    now_ms,
    service::Service,
};

/// How long the index waits for a whole request frame once a stream is open.
pub const REQUEST_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct IndexProtocol {
    service: Arc<Service>,
    connections: Arc<Semaphore>,
    budgets: Arc<Budgets>,
}

/// What one remote key, or one address, may ask of the index.
#[derive(Debug)]
struct Budgets {
    requests: Budget<EndpointId>,
    addresses: Addresses,
}

impl IndexProtocol {
    pub fn new(service: Arc<Service>) -> Self {
        let config = service.config();
        let budgets =
            Budgets { requests: Budget::new(config.request_rate), addresses: Addresses::new(config.keys_per_address, config.lease_ttl) };
        Self { service, connections: Arc::new(Semaphore::new(MAX_INDEX_CONNECTIONS)), budgets: Arc::new(budgets) }
    }

    /// Requests refused for coming too fast, and Joins refused because their
    /// address already holds as many keys as allowed.
    pub fn refusals(&self) -> (u64, u64) {
        (self.budgets.requests.refused(), self.budgets.addresses.refused())
    }

    /// Whether `from` (at `ip`) may have `request` handled now; the refusal
    /// otherwise.
    fn admit(&self, from: EndpointId, ip: Option<IpAddr>, request: &Request) -> Result<(), Response> {
        if let Err(wait) = self.budgets.requests.allow(&from) {
            self.service.metrics().refused_rate.inc();
            return Err(Response::error(
                ErrorCode::SlowDown,
                format!(
                    "this peer sends the index more than {} requests; slow down and retry in {} ms",
                    self.budgets.requests.rate(),
                    wait.as_millis().max(1)
                ),
            ));
        }
        if let Some(ip) = ip {
            let joining = matches!(request, Request::Join(_));
            if !self.budgets.addresses.seen(ip, from, now_ms(), joining) {
                self.service.metrics().refused_address.inc();
                return Err(Response::error(
                    ErrorCode::LimitExceeded,
                    format!(
                        "the address {ip} already has {} peers registered, the most one address may hold; \
                         join from another address, or ask the index's operator to raise --keys-per-address",
                        self.budgets.addresses.cap
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The request handler, for callers in the same process (a peer that
    /// hosts the index cannot dial its own endpoint).
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }
}

impl ProtocolHandler for IndexProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let Ok(_permit) = self.connections.clone().try_acquire_owned() else {
            conn.close(VarInt::from_u32(close_code::BUSY), b"the index is at its connection limit; try again later");
            return Ok(());
        };
        let from = conn.remote_id();
        // The address the connection comes from (not one the peer claims).
        let ip = conn.paths().iter().find_map(|p| match p.remote_addr() {
            TransportAddr::Ip(addr) => Some(addr.ip()),
            _ => None,
        });
        let mut streams = JoinSet::new();
        loop {
            tokio::select! {
                // Bound requests in flight: stop accepting while the set is full.
                stream = conn.accept_bi(), if streams.len() < MAX_STREAMS_PER_CONNECTION as usize => {
                    let Ok((mut send, mut recv)) = stream else { break };
                    let this = self.clone();
                    streams.spawn(async move {
                        // A client that opens a stream and never finishes its frame
                        // must not hold one of the connection's slots forever.
                        let read = tokio::time::timeout(REQUEST_READ_TIMEOUT, read_frame::<Request>(&mut recv, MAX_REQUEST_FRAME));
                        let request = match read.await {
                            Ok(Ok(r)) => r,
                            Ok(Err(e)) => return close_for(e),
                            Err(_) => {
                                return Some((
                                    close_code::MALFORMED,
                                    format!("request frame not received within {REQUEST_READ_TIMEOUT:?}"),
                                ))
                            }
                        };
                        let response = match this.admit(from, ip, &request) {
                            Ok(()) => this.service.call(from, request, now_ms()).await,
                            Err(refusal) => refusal,
                        };
                        if let Err(e) = write_frame(&mut send, &response, MAX_RESPONSE_FRAME).await {
                            debug!("could not answer {}: {e}", from.fmt_short());
                        }
                        send.finish().ok();
                        None
                    });
                }
                Some(done) = streams.join_next(), if !streams.is_empty() => {
                    if let Ok(Some((code, reason))) = done {
                        debug!("closing index connection of {}: {reason}", from.fmt_short());
                        conn.close(VarInt::from_u32(code), reason.as_bytes());
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Maps a failed read to the close code and reason for the whole connection,
/// or `None` when the stream merely ended (the client went away).
fn close_for(e: FrameIoError) -> Option<(u32, String)> {
    match e {
        FrameIoError::Frame(FrameError::TooLarge { len, max }) => {
            Some((close_code::TOO_LARGE, format!("request frame of {len} bytes exceeds the limit of {max} bytes")))
        }
        FrameIoError::Frame(FrameError::Malformed(why)) => Some((close_code::MALFORMED, format!("malformed request frame: {why}"))),
        FrameIoError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Some((close_code::MALFORMED, "request frame ended early".to_string()))
        }
        FrameIoError::Io(_) => None,
    }
}

/// Which keys each IP address has used lately, to cap how many one address
/// may hold (the sybil cap). A key counts while it has sent a request within
/// the lease TTL; so does its place under the cap.
#[derive(Debug)]
struct Addresses {
    cap: usize,
    window_ms: u64,
    keys: Mutex<HashMap<IpAddr, HashMap<EndpointId, u64>>>,
    refused: AtomicU64,
}

impl Addresses {
    fn new(cap: usize, lease_ttl: Duration) -> Self {
        Self { cap, window_ms: lease_ttl.as_millis() as u64, keys: Default::default(), refused: AtomicU64::new(0) }
    }

    /// Records a request from `key` at `ip`. A Join of a key the address
    /// does not hold yet is refused (false) when the address is full.
    fn seen(&self, ip: IpAddr, key: EndpointId, now: u64, joining: bool) -> bool {
        let mut all = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window_ms;
        let keys = all.entry(ip).or_default();
        keys.retain(|_, at| at.saturating_add(window) > now);
        if !keys.contains_key(&key) && joining && keys.len() >= self.cap {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        keys.insert(key, now);
        // Addresses whose keys all went quiet are forgotten.
        if all.len() > 1024 {
            all.retain(|_, keys| keys.values().any(|at| at.saturating_add(window) > now));
        }
        true
    }

    fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> EndpointId {
        iroh::SecretKey::from_bytes(&[seed; 32]).public()
    }

    #[test]
    fn an_address_holds_at_most_its_cap_of_keys_at_once() {
        let book = Addresses::new(2, Duration::from_secs(30));
        let (ip, other) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(book.seen(ip, key(1), 0, true));
        assert!(book.seen(ip, key(2), 0, true));
        assert!(!book.seen(ip, key(3), 1, true), "a third key from the same address");
        assert!(book.seen(ip, key(1), 2, true), "a key it holds may join again");
        assert!(book.seen(other, key(3), 2, true), "another address has its own cap");
        assert_eq!(book.refused(), 1);
        // Once key 2 has been quiet for the lease, its place is free.
        assert!(book.seen(ip, key(3), 31_000, true));
    }
}
