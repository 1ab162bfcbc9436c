//! The references peernet is compared with: a plain TCP copy, iroh-blobs'
//! own fetch between two file stores, an HTTP download (nginx to curl) and
//! BitTorrent (aria2c to aria2c through opentracker). Each returns the
//! seconds the transfer took and, where separate processes do the work,
//! their usage.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::procs::{free_port, installed, run_measured, wait_for_port, Proc, Usage};

/// One transfer: seconds, and the serving and receiving sides' usage.
pub struct Moved {
    pub seconds: f64,
    pub server: Option<Usage>,
    pub client: Option<Usage>,
}

/// Longest any one reference transfer may take.
const LIMIT: Duration = Duration::from_secs(600);

/// TCP over loopback: the sender hands the file to the kernel (sendfile),
/// the receiver writes it to disk in 256 KiB reads. The floor for moving
/// bytes between two processes' files on this machine.
pub fn tcp_copy(src: &Path, dst: &Path) -> anyhow::Result<Moved> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let src = src.to_owned();
    let start = Instant::now();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        // std's copy from a file to a socket uses sendfile on Linux.
        std::io::copy(&mut std::fs::File::open(&src)?, &mut conn)?;
        Ok(())
    });
    let mut conn = TcpStream::connect(addr)?;
    let mut out = std::fs::File::create(dst)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    out.flush()?;
    let seconds = start.elapsed().as_secs_f64();
    sender.join().map_err(|_| anyhow::anyhow!("the TCP sender panicked"))??;
    Ok(Moved { seconds, server: None, client: None })
}

/// iroh-blobs alone: two file stores on two endpoints configured as
/// peernet's are, the file imported into the first (not timed), then
/// fetched by the second and exported to a file (timed), as `get` does.
pub async fn blobs_fetch(src: &Path, dst: &Path, work: &Path) -> anyhow::Result<Moved> {
    use iroh_blobs::{api::blobs::ExportMode, store::fs::FsStore, BlobsProtocol};
    use peernet_node::endpoint::{bind, EndpointConfig};
    let endpoint = |alpns: Vec<Vec<u8>>| {
        bind(EndpointConfig {
            secret_key: iroh::SecretKey::generate(),
            bind: "127.0.0.1:0".parse().unwrap(),
            relay: None,
            alpns,
            congestion: Default::default(),
        })
    };
    let store_a = FsStore::load(work.join("blobs-a")).await?;
    let store_b = FsStore::load(work.join("blobs-b")).await?;
    let (ep_a, _) = endpoint(vec![iroh_blobs::ALPN.to_vec()]).await?;
    let (ep_b, lookup_b) = endpoint(vec![]).await?;
    let router = iroh::protocol::Router::builder(ep_a.clone()).accept(iroh_blobs::ALPN, BlobsProtocol::new(&store_a, None)).spawn();
    let tag = store_a.add_path(src).await?;
    let mut addr = iroh::EndpointAddr::new(ep_a.id());
    for a in ep_a.bound_sockets() {
        addr = addr.with_ip_addr(a);
    }
    lookup_b.add_endpoint_info(addr);

    let (start, cpu0) = (Instant::now(), crate::procs::cpu_seconds(std::process::id()).unwrap_or(0.0));
    let conn = ep_b.connect(ep_a.id(), iroh_blobs::ALPN).await?;
    store_b.remote().fetch(conn.clone(), tag.hash).await?;
    store_b
        .blobs()
        .export_with_opts(iroh_blobs::api::blobs::ExportOptions {
            hash: tag.hash,
            mode: ExportMode::TryReference,
            target: std::path::absolute(dst)?,
        })
        .await?;
    let seconds = start.elapsed().as_secs_f64();
    // Both sides run in this process, so this is their CPU together.
    let both = Usage { peak_rss_mib: 0.0, cpu_seconds: crate::procs::cpu_seconds(std::process::id()).unwrap_or(0.0) - cpu0 };
    conn.close(0u32.into(), b"done");
    router.shutdown().await.ok();
    ep_b.close().await;
    store_a.shutdown().await.ok();
    store_b.shutdown().await.ok();
    Ok(Moved { seconds, server: None, client: Some(both) })
}

/// nginx (sendfile on) serving the file to curl, when both are installed.
pub fn http(src: &Path, dst: &Path, work: &Path) -> anyhow::Result<Option<Moved>> {
    if !installed("nginx") || !installed("curl") {
        return Ok(None);
    }
    let port = free_port()?;
    let dir = work.join("nginx");
    std::fs::create_dir_all(&dir)?;
    let root = src.parent().context("file has a folder")?;
    let name = src.file_name().context("file has a name")?.to_string_lossy();
    // Temp paths inside our folder, so nginx writes nothing elsewhere.
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; sendfile on; tcp_nopush on;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
        d = dir.display(),
        root = root.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf)?;
    let server = Proc::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    wait_for_port(port, Duration::from_secs(10))?;
    let cpu0 = server.cpu_seconds();
    let (elapsed, client) = run_measured(
        "curl",
        Command::new("curl").args(["-sS", "--fail", "-o"]).arg(dst).arg(format!("http://127.0.0.1:{port}/{name}")),
        LIMIT,
    )?;
    let server_usage = server.usage_since(cpu0);
    server.stop(Duration::from_secs(3));
    Ok(Some(Moved { seconds: elapsed.as_secs_f64(), server: Some(server_usage), client: Some(client) }))
}

/// aria2c seeding to aria2c through a local opentracker, when installed.
pub fn bittorrent(src: &Path, dst_dir: &Path, work: &Path) -> anyhow::Result<Option<Moved>> {
    if !installed("aria2c") || !installed("opentracker") {
        return Ok(None);
    }
    let dir = work.join("bt");
    std::fs::create_dir_all(&dir)?;
    let tracker_port = free_port()?;
    let announce = format!("http://127.0.0.1:{tracker_port}/announce");
    let (torrent, info_hash) = crate::torrent::make(src, &announce)?;
    let torrent_path = dir.join("file.torrent");
    std::fs::write(&torrent_path, torrent)?;
    let _tracker = opentracker(&dir, tracker_port, &info_hash)?;
    // One aria2c with the settings both sides share: the tracker only (no
    // DHT, local discovery or peer exchange), no upload cap, quiet.
    let aria2c = |role: &[&str], dir: &Path| -> anyhow::Result<Command> {
        let mut c = Command::new("aria2c");
        c.args([
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--file-allocation=none",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--check-certificate=false",
            "--bt-tracker-connect-timeout=5",
            "--disable-ipv6=true",
            "--max-overall-upload-limit=0",
        ])
        .args(role)
        .arg("--listen-port")
        .arg(free_port()?.to_string())
        .arg("-d")
        .arg(dir)
        .arg(&torrent_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        Ok(c)
    };
    let seed_dir = src.parent().context("file has a folder")?;
    let mut seeder = aria2c(&["--seed-ratio=0.0", "--bt-seed-unverified=true", "--check-integrity=false"], seed_dir)?;
    let seeder = Proc::spawn("aria2c seeder", &mut seeder)?;
    // The leecher must find the seeder at its first announce.
    crate::wait_for(Duration::from_secs(30), "the aria2c seeder to announce itself", || seeders(tracker_port, &info_hash).map(|n| n > 0))?;
    let cpu0 = seeder.cpu_seconds();
    let mut leecher = aria2c(&["--seed-time=0", "--bt-stop-timeout=60"], dst_dir)?;
    let (elapsed, client) = run_measured("aria2c leecher", &mut leecher, LIMIT)?;
    let server = seeder.usage_since(cpu0);
    seeder.stop(Duration::from_secs(3));
    let got = dst_dir.join(src.file_name().context("file has a name")?);
    if !got.exists() {
        bail!("aria2c finished without writing {}", got.display());
    }
    Ok(Some(Moved { seconds: elapsed.as_secs_f64(), server: Some(server), client: Some(client) }))
}

/// opentracker on 127.0.0.1:`port`, serving only `info_hash` (Debian's
/// build serves whitelisted torrents only), ready to answer.
pub fn opentracker(dir: &Path, port: u16, info_hash: &[u8; 20]) -> anyhow::Result<Proc> {
    let whitelist = dir.join("whitelist");
    std::fs::write(&whitelist, format!("{}\n", hex(info_hash)))?;
    let tracker = Proc::spawn(
        "opentracker",
        Command::new("opentracker")
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-P", &port.to_string(), "-w"])
            .arg(whitelist)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    wait_for_port(port, Duration::from_secs(10))?;
    Ok(tracker)
}

/// How many seeders the tracker knows for `info_hash` (from its scrape).
fn seeders(port: u16, info_hash: &[u8; 20]) -> anyhow::Result<u32> {
    let escaped = url_escaped(info_hash);
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    write!(conn, "GET /scrape?info_hash={escaped} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    let count = text.split("8:completei").nth(1).and_then(|rest| rest.split('e').next()?.parse().ok());
    count.context("the tracker's scrape answer has no seeder count")
}

/// An info-hash as a tracker URL carries it.
pub fn url_escaped(info_hash: &[u8; 20]) -> String {
    info_hash.iter().map(|b| format!("%{b:02X}")).collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
