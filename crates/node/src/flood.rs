//! Flood search on this peer: answering queries that reach us through the
//! overlay, receiving answers to our own queries over direct connections,
//! and merging them into search hits. The bookkeeping is
//! [`peernet_proto::flood`]; this module moves bytes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use iroh::EndpointId;
use iroh::{
    endpoint::Connection,
    protocol::{AcceptError, ProtocolHandler},
};
use peernet_index::frame_io::{read_frame, write_frame};
use peernet_proto::{
    flood::{Answer, FloodFrame, Query, MAX_ANSWER_FILES, MAX_FLOOD_FRAME},
    index::{Hit, PeerInfo, Provider},
};
use tokio::sync::mpsc;
use tracing::debug;

/// How long an answer may take to arrive once its stream is open.
const ANSWER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers buffered per pending query.
const ANSWER_BUFFER: usize = 256;

/// Our queries still collecting answers, by id.
#[derive(Debug, Clone, Default)]
pub struct Pending(Arc<Mutex<HashMap<[u8; 16], mpsc::Sender<Answer>>>>);

impl Pending {
    pub fn open(&self, id: [u8; 16]) -> mpsc::Receiver<Answer> {
        let (tx, rx) = mpsc::channel(ANSWER_BUFFER);
        self.0.lock().expect("pending lock").insert(id, tx);
        rx
    }

    pub fn close(&self, id: &[u8; 16]) {
        self.0.lock().expect("pending lock").remove(id);
    }

    fn sender(&self, id: &[u8; 16]) -> Option<mpsc::Sender<Answer>> {
        self.0.lock().expect("pending lock").get(id).cloned()
    }
}

/// Serves `peernet/flood/1`: queries from neighbours (passed on to the
/// node through `queries`) and answers to our own queries.
#[derive(Debug, Clone)]
pub struct FloodProtocol {
    pub pending: Pending,
    pub queries: mpsc::Sender<(Query, EndpointId)>,
}

impl ProtocolHandler for FloodProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let from = conn.remote_id();
        while let Ok(mut recv) = conn.accept_uni().await {
            let read = tokio::time::timeout(ANSWER_READ_TIMEOUT, read_frame::<FloodFrame>(&mut recv, MAX_FLOOD_FRAME)).await;
            let answer = match read {
                Ok(Ok(FloodFrame::Answer(answer))) => answer,
                Ok(Ok(FloodFrame::Query(query))) => {
                    // A full queue means we are flooded: dropping is the right answer.
                    self.queries.try_send((query, from)).ok();
                    continue;
                }
                _ => {
                    debug!("unreadable flood frame from {}", from.fmt_short());
                    break;
                }
            };
            // A peer answers for itself only: its key is its identity.
            if answer.provider.id != from || answer.files.len() > MAX_ANSWER_FILES {
                debug!("dropped a flood answer from {} claiming another provider", from.fmt_short());
                continue;
            }
            if let Some(tx) = self.pending.sender(&answer.query) {
                tx.try_send(answer).ok();
            }
        }
        conn.close(0u32.into(), b"done");
        Ok(())
    }
}

/// Sends one frame (a query to a neighbour, an answer to an origin).
pub async fn send_frame(endpoint: &iroh::Endpoint, frame: FloodFrame, to: impl Into<iroh::EndpointAddr>) -> Result<(), String> {
    let conn = endpoint.connect(to, peernet_proto::flood::ALPN).await.map_err(|e| e.to_string())?;
    let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
    write_frame(&mut send, &frame, MAX_FLOOD_FRAME).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    // Wait until the receiver has read it (it closes the connection), so
    // the frame is not lost when we drop the connection.
    tokio::time::timeout(ANSWER_READ_TIMEOUT, conn.closed()).await.ok();
    Ok(())
}

/// Merges answers into hits, one per hash, providers in arrival order.
pub fn hits_from_answers(answers: Vec<Answer>) -> Vec<Hit> {
    let mut hits: Vec<Hit> = Vec::new();
    for a in answers {
        for f in a.files {
            let provider = Provider {
                peer: PeerInfo { addr: a.provider.clone(), nickname: a.nickname.clone() },
                name: f.name.clone(),
                registered_at: 0,
            };
            match hits.iter_mut().find(|h| h.hash == f.hash) {
                Some(h) if !h.providers.iter().any(|p| p.peer.addr.id == a.provider.id) => h.providers.push(provider),
                Some(_) => {}
                None => hits.push(Hit { hash: f.hash, size: f.size, kind: f.kind, name: f.name, providers: vec![provider] }),
            }
        }
    }
    hits
}

/// Adds `extra` hits into `hits`: same hash, union of providers.
pub fn merge_hits(hits: &mut Vec<Hit>, extra: Vec<Hit>) {
    for e in extra {
        match hits.iter_mut().find(|h| h.hash == e.hash) {
            Some(h) => {
                for p in e.providers {
                    if !h.providers.iter().any(|q| q.peer.addr.id == p.peer.addr.id) {
                        h.providers.push(p);
                    }
                }
            }
            None => hits.push(e),
        }
    }
}
