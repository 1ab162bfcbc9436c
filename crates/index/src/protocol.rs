//! The QUIC side of the index: accept connections on `peernet/index/1`,
//! read one request frame per stream, answer it through [`Service`].
//!
//! A connection that sends a bad frame is closed with a close code and a
//! reason; nothing else is affected. Connections beyond
//! [`MAX_INDEX_CONNECTIONS`] are closed at once with
//! [`close_code::BUSY`], and each connection has at most
//! [`MAX_STREAMS_PER_CONNECTION`] requests in flight.

use std::sync::Arc;

use iroh::{
    endpoint::{Connection, VarInt},
    protocol::{AcceptError, ProtocolHandler},
};
use peernet_proto::{
    frame::FrameError,
    index::{close_code, Request},
    limits::{MAX_INDEX_CONNECTIONS, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, MAX_STREAMS_PER_CONNECTION},
};
use tokio::{sync::Semaphore, task::JoinSet};
use tracing::debug;

use crate::{
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
}

impl IndexProtocol {
    pub fn new(service: Arc<Service>) -> Self {
        Self { service, connections: Arc::new(Semaphore::new(MAX_INDEX_CONNECTIONS)) }
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
        let mut streams = JoinSet::new();
        loop {
            tokio::select! {
                // Bound requests in flight: stop accepting while the set is full.
                stream = conn.accept_bi(), if streams.len() < MAX_STREAMS_PER_CONNECTION as usize => {
                    let Ok((mut send, mut recv)) = stream else { break };
                    let service = self.service.clone();
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
                        let response = service.call(from, request, now_ms()).await;
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
