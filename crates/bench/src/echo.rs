//! The transport's ceiling for the index bench: a bare request/response
//! echo over iroh QUIC, one bidirectional stream per request exactly as
//! the index client uses them, served by a separate process (`peernet-bench
//! echo-serve`) as the index is. What the index does beyond this is its
//! own cost.
//!
//! Echoing the request measures the transport for requests of about 60
//! bytes and answers of the same size, where a search answer is some KB.
//! So the echo can also answer each kind of request (the first byte of
//! its body, postcard's variant tag) with as many bytes as the index
//! answered that kind on average ([`ReplySizes`], measured by the bench
//! before): the ceiling for the same bytes.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::Context;
use iroh::{address_lookup::memory::MemoryLookup, endpoint::Connection, Endpoint, EndpointId};
use peernet_proto::{
    frame::{self, PREFIX_LEN},
    index::{PeerAddr, Request},
    limits::{MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME},
};

use crate::procs::Proc;

pub const ALPN: &[u8] = b"peernet-bench/echo/1";

/// Binds a plain endpoint on loopback with peernet's transport settings,
/// as every client of the index bench and the echo server use; the lookup
/// is where the addresses of peers to dial go.
pub async fn endpoint(alpns: Vec<Vec<u8>>) -> anyhow::Result<(Endpoint, MemoryLookup)> {
    Ok(peernet_node::endpoint::bind(peernet_node::endpoint::EndpointConfig {
        secret_key: iroh::SecretKey::generate(),
        bind: "127.0.0.1:0".parse()?,
        relay: None,
        alpns,
        congestion: Default::default(),
    })
    .await?)
}

/// Bytes of the answer frame (prefix included) by kind of request.
pub type ReplySizes = BTreeMap<u8, usize>;

/// A request frame's kind: the first byte of its body.
pub fn kind(frame: &[u8]) -> u8 {
    frame.get(PREFIX_LEN).copied().unwrap_or(0)
}

/// `KIND:BYTES,...`, as `echo-serve --replies` takes them.
pub fn sizes_arg(sizes: &ReplySizes) -> String {
    sizes.iter().map(|(k, n)| format!("{k}:{n}")).collect::<Vec<_>>().join(",")
}

fn parse_sizes(arg: &str) -> anyhow::Result<ReplySizes> {
    arg.split(',')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, n) = pair.split_once(':').with_context(|| format!("'{pair}' is not KIND:BYTES"))?;
            let n: usize = n.parse()?;
            anyhow::ensure!((PREFIX_LEN..=MAX_RESPONSE_FRAME).contains(&n), "a reply of {n} bytes is no frame");
            Ok((k.parse()?, n))
        })
        .collect()
}

/// A frame of `len` bytes, prefix included, with a body of zeros.
fn frame_of(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    bytes[..PREFIX_LEN].copy_from_slice(&((len - PREFIX_LEN) as u32).to_be_bytes());
    bytes
}

/// `peernet-bench echo-serve [--replies KIND:BYTES,...]`: prints `echo: ID
/// ADDR` and answers every stream with the frame it read, or, for a kind
/// of request named in `replies`, with a frame of that many bytes; until
/// killed.
pub fn serve(replies: &str) -> anyhow::Result<()> {
    let replies: std::sync::Arc<BTreeMap<u8, Vec<u8>>> =
        std::sync::Arc::new(parse_sizes(replies)?.into_iter().map(|(k, n)| (k, frame_of(n))).collect());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (ep, _) = endpoint(vec![ALPN.to_vec()]).await?;
        let addr = ep.bound_sockets().into_iter().next().context("the echo endpoint has no address")?;
        println!("echo: {} {addr}", ep.id());
        while let Some(incoming) = ep.accept().await {
            let replies = replies.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let replies = replies.clone();
                    tokio::spawn(async move {
                        let Ok(bytes) = read_frame_bytes(&mut recv, MAX_REQUEST_FRAME).await else { return };
                        send.write_all(replies.get(&kind(&bytes)).unwrap_or(&bytes)).await.ok();
                        send.finish().ok();
                    });
                }
            });
        }
        anyhow::Ok(())
    })
}

/// One frame, prefix included, as bytes.
async fn read_frame_bytes(recv: &mut iroh::endpoint::RecvStream, max: usize) -> anyhow::Result<Vec<u8>> {
    let mut prefix = [0u8; PREFIX_LEN];
    recv.read_exact(&mut prefix).await?;
    let len = frame::body_len(prefix, max)?;
    let mut bytes = vec![0u8; PREFIX_LEN + len];
    bytes[..PREFIX_LEN].copy_from_slice(&prefix);
    recv.read_exact(&mut bytes[PREFIX_LEN..]).await?;
    Ok(bytes)
}

/// The echo server process.
pub struct Server {
    proc: Proc,
    pub addr: PeerAddr,
}

impl Server {
    /// An echo server answering the kinds in `replies` with that many
    /// bytes, and everything else with the request.
    pub fn start(replies: &ReplySizes) -> anyhow::Result<Server> {
        let mut cmd = Command::new(crate::peers::exe());
        cmd.args(["echo-serve", "--replies", &sizes_arg(replies)]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut proc = Proc::spawn("echo server", &mut cmd)?;
        let stdout = proc.take_stdout().context("echo server stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("echo: ") {
                    tx.send(rest.to_string()).ok();
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).context("the echo server printed no address")?;
        let (id, addr) = line.split_once(' ').context("echo server address")?;
        let id: EndpointId = id.parse()?;
        let addr: SocketAddr = addr.parse()?;
        Ok(Server { proc, addr: PeerAddr { id, ip: vec![addr], relay: None } })
    }

    pub fn stop(self) {
        self.proc.stop(Duration::from_secs(3));
    }
}

/// Sends `request` as the index client would and reads the answer: the
/// request itself, or as many bytes as `replies` names for its kind.
pub async fn exchange(conn: &Connection, request: &Request, replies: &ReplySizes) -> anyhow::Result<()> {
    let bytes = frame::encode(request, MAX_REQUEST_FRAME)?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&bytes).await?;
    send.finish()?;
    let back = read_frame_bytes(&mut recv, MAX_RESPONSE_FRAME).await?;
    match replies.get(&kind(&bytes)) {
        Some(&len) => anyhow::ensure!(back.len() == len, "the echo sent {} bytes, not {len}", back.len()),
        None => anyhow::ensure!(back == bytes, "the echo differs from the request"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_sizes_go_through_the_command_line_and_make_frames_of_that_size() {
        let sizes: ReplySizes = [(3, 3600), (1, 12)].into();
        assert_eq!(parse_sizes(&sizes_arg(&sizes)).unwrap(), sizes);
        assert!(parse_sizes("").unwrap().is_empty());
        assert!(parse_sizes("3:2").is_err(), "shorter than a prefix");
        assert!(parse_sizes("3").is_err());
        let frame = frame_of(3600);
        assert_eq!(frame.len(), 3600);
        assert_eq!(frame::body_len(frame[..PREFIX_LEN].try_into().unwrap(), MAX_RESPONSE_FRAME).unwrap(), 3600 - PREFIX_LEN);
    }
}
