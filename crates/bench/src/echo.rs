//! The transport's ceiling for the index bench: a bare request/response
//! echo over iroh QUIC, one bidirectional stream per request exactly as
//! the index client uses them, served by a separate process (`peernet-bench
//! echo-serve`) as the index is. What the index does beyond this is its
//! own cost.

use std::{
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
    limits::MAX_REQUEST_FRAME,
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

/// `peernet-bench echo-serve`: prints `echo: ID ADDR` and answers every
/// stream with the frame it read, until killed.
pub fn serve() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (ep, _) = endpoint(vec![ALPN.to_vec()]).await?;
        let addr = ep.bound_sockets().into_iter().next().context("the echo endpoint has no address")?;
        println!("echo: {} {addr}", ep.id());
        while let Some(incoming) = ep.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let Ok(bytes) = read_frame_bytes(&mut recv).await else { return };
                        send.write_all(&bytes).await.ok();
                        send.finish().ok();
                    });
                }
            });
        }
        anyhow::Ok(())
    })
}

/// One frame, prefix included, as bytes.
async fn read_frame_bytes(recv: &mut iroh::endpoint::RecvStream) -> anyhow::Result<Vec<u8>> {
    let mut prefix = [0u8; PREFIX_LEN];
    recv.read_exact(&mut prefix).await?;
    let len = frame::body_len(prefix, MAX_REQUEST_FRAME)?;
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
    pub fn start() -> anyhow::Result<Server> {
        let mut cmd = Command::new(crate::peers::exe());
        cmd.arg("echo-serve").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
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

/// Sends `request` as the index client would and reads the echo.
pub async fn exchange(conn: &Connection, request: &Request) -> anyhow::Result<()> {
    let bytes = frame::encode(request, MAX_REQUEST_FRAME)?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&bytes).await?;
    send.finish()?;
    let back = read_frame_bytes(&mut recv).await?;
    anyhow::ensure!(back == bytes, "the echo differs from the request");
    Ok(())
}
