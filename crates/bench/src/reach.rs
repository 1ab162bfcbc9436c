//! `reach`: how fast peernet moves a file when the peers are hard to reach.
//! Two homes behind NAT routers fetch from each other over a hole punched
//! through both NATs, then through the root's relay once the routers drop
//! UDP between the homes; and two hosts fetch across slow, lossy links.
//! Each figure stands beside a plain TCP copy over the same links, in the
//! same run. The test hosts are `peernet-testnet`'s namespaces (root only).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    panic::{catch_unwind, AssertUnwindSafe},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use peernet_testnet::{slow_link, Hosts, NatWorld, SlowLink};

use crate::{
    peers::{exe, peernet, Peer},
    procs::{Proc, Usage},
    report::{Report, Row},
};

pub struct Options {
    /// File size for the NAT transfers.
    pub size: u64,
    /// File size for each bad link (they are slow: keep it small).
    pub bad_link_size: u64,
    pub links: Vec<BadLink>,
    /// QUIC congestion controllers to measure over each bad link
    /// (`--congestion` of `peernet up`): loss-based Cubic suffers on lossy
    /// links where model-based BBR keeps going.
    pub congestion: Vec<String>,
}

/// One slow, lossy link: its round-trip time and the share of packets
/// dropped in each direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BadLink {
    pub rtt: Duration,
    pub loss_percent: f64,
}

/// The `--links` list, for clap.
#[derive(Clone, Debug)]
pub struct Links(pub Vec<BadLink>);

pub const DEFAULT_LINKS: &str = "100ms/1%,300ms/2%,300ms/8%";

/// Longest any one transfer (peernet or TCP) may take before it is
/// reported as timed out: a bad link must not hang the whole bench.
const LIMIT: Duration = Duration::from_secs(900);
/// How long peers may take to find each other, punch holes or notice that
/// the direct path is gone.
const PATIENCE: Duration = Duration::from_secs(120);
/// Where the TCP reference listens inside its namespace.
const TCP_PORT: u16 = 5001;

impl BadLink {
    fn label(&self) -> String {
        format!("{} ms RTT, {}% loss", self.rtt.as_millis(), self.loss_percent)
    }
}

/// `100ms/1%,300ms/2%`: RTT in ms (or s), then the loss in percent.
pub fn parse_links(s: &str) -> Result<Links, String> {
    let one = |part: &str| -> Result<BadLink, String> {
        let bad = || format!("`{part}` is not a link; write RTT/LOSS such as 300ms/2%");
        let (rtt, loss) = part.trim().split_once('/').ok_or_else(bad)?;
        let rtt = match rtt.strip_suffix("ms") {
            Some(ms) => Duration::from_millis(ms.parse().map_err(|_| bad())?),
            None => Duration::from_secs_f64(rtt.strip_suffix('s').unwrap_or(rtt).parse().map_err(|_| bad())?),
        };
        let loss_percent: f64 = loss.strip_suffix('%').unwrap_or(loss).parse().map_err(|_| bad())?;
        if !(0.0..100.0).contains(&loss_percent) {
            return Err(format!("loss in `{part}` must be from 0% to below 100%"));
        }
        Ok(BadLink { rtt, loss_percent })
    };
    Ok(Links(s.split(',').filter(|p| !p.trim().is_empty()).map(one).collect::<Result<_, _>>()?))
}

/// Row names, shared by the measured and the skipped report so the JSON
/// has the same rows either way.
const NAT_TCP: &str = "TCP copy home -> public root, same links (reference)";
const NAT_DIRECT: &str = "peernet get home -> home, direct (hole-punched)";
const NAT_RELAYED: &str = "peernet get home -> home, relayed (UDP between homes blocked)";

/// The TCP reference row, then one peernet row per congestion controller.
fn link_rows(link: &BadLink, congestion: &[String]) -> Vec<String> {
    let mut rows = vec![format!("TCP copy, {} (reference; kernel's TCP: {})", link.label(), kernel_congestion())];
    rows.extend(congestion.iter().map(|c| format!("peernet get, {}, --congestion {c}", link.label())));
    rows
}

/// The kernel's TCP congestion control (the namespaces inherit it), so the
/// reference says what it is.
fn kernel_congestion() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "kernel default".into())
}

pub fn run(work: &Path, o: &Options) -> anyhow::Result<Report> {
    let links: Vec<String> = o.links.iter().map(BadLink::label).collect();
    let setup = format!(
        "{} across two NATs; {} over {}; network namespaces",
        mib(o.size),
        mib(o.bad_link_size),
        if links.is_empty() { "no bad links".into() } else { links.join(" | ") }
    );
    let all_skipped = |why: &str| {
        let mut rows: Vec<Row> = [NAT_TCP, NAT_DIRECT, NAT_RELAYED].iter().map(|w| Row::skipped(*w, "MB/s", why)).collect();
        for link in &o.links {
            rows.extend(link_rows(link, &o.congestion).into_iter().map(|w| Row::skipped(w, "MB/s", why)));
        }
        rows
    };
    if let Some(why) = peernet_testnet::unavailable() {
        eprintln!("reach: skipped: {why}");
        return Ok(Report { bench: "reach", setup, rows: all_skipped(&why) });
    }

    eprintln!("reach: two homes behind NAT");
    let mut rows = match nat(&work.join("nat"), o.size) {
        Ok(rows) => rows,
        Err(e) => {
            // One part failing should not cost the other's figures.
            eprintln!("reach: NAT part failed: {e:#}");
            [NAT_TCP, NAT_DIRECT, NAT_RELAYED].iter().map(|w| failed(w, &e)).collect()
        }
    };
    for (i, link) in o.links.iter().enumerate() {
        eprintln!("reach: bad link {}", link.label());
        match bad_link(&work.join(format!("link{i}")), i, link, o.bad_link_size, &o.congestion) {
            Ok(measured) => rows.extend(measured),
            Err(e) => {
                eprintln!("reach: bad link {} failed: {e:#}", link.label());
                rows.extend(link_rows(link, &o.congestion).iter().map(|w| failed(w, &e)));
            }
        }
    }
    Ok(Report { bench: "reach", setup, rows })
}

/// A size as people write it; the miniature run uses sizes below a MiB.
fn mib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// A row with no figure because its part of the bench failed.
fn failed(what: &str, e: &anyhow::Error) -> Row {
    Row { value: None, ..Row::new(what, 0.0, "MB/s") }.note(format!("failed: {e:#}"))
}

/// A row for one transfer: its speed, or "timed out".
fn speed(what: &str, size: u64, seconds: Option<f64>) -> Row {
    match seconds {
        Some(s) => Row::new(what, size as f64 / 1e6 / s, "MB/s"),
        None => Row { value: None, ..Row::new(what, 0.0, "MB/s") }.note(format!("timed out after {} s", LIMIT.as_secs())),
    }
}

/// `testnet` builds its hosts with asserts; here a failure to build them
/// (root in a container without namespaces or TUN) becomes an error.
fn build<T>(what: &str, make: impl FnOnce() -> T) -> anyhow::Result<T> {
    catch_unwind(AssertUnwindSafe(make)).map_err(|panic| {
        let why = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
        anyhow::anyhow!("cannot create {what} here: {}", why.unwrap_or_default())
    })
}

fn nat(work: &Path, size: u64) -> anyhow::Result<Vec<Row>> {
    std::fs::create_dir_all(work)?;
    let world = build("the NAT test hosts", || NatWorld::new("reach"))?;
    let direct_file = work.join("reach-direct.bin");
    let relayed_file = work.join("reach-relayed.bin");
    crate::random_file(&direct_file, size, 31)?;
    crate::random_file(&relayed_file, size, 32)?;

    // The reference first: TCP cannot cross both NATs (nothing forwards a
    // port to a home), so it runs from home 1 to the public root's
    // address, over home 1's router and the same public segment.
    let tcp_seconds =
        tcp_copy(&direct_file, &work.join("tcp-copy.bin"), &world.public, &world.homes[1], &format!("{}:{TCP_PORT}", NatWorld::PUBLIC_IP))?;
    let tcp = speed(NAT_TCP, size, tcp_seconds);

    let bind = format!("{}:4100", NatWorld::PUBLIC_IP);
    let root = Peer::start("root", &work.join("root"), Some(&world.public), &["index", "--bind", &bind, "--relay", "3340"])?;
    let home = |i: usize| {
        let name = format!("home{i}");
        let data = work.join(&name);
        let downloads = data.join("downloads");
        let args = ["up", "--join", &root.ticket, "--nick", &name, "--bind", "0.0.0.0:0", "--downloads", downloads.to_str().unwrap()];
        Peer::start(&name, &data, Some(&world.homes[i]), &args)
    };
    let homes = [home(0)?, home(1)?];
    let ids = [id_of(&homes[0])?, id_of(&homes[1])?];

    crate::wait_for(PATIENCE, "home 0's link to home 1 to be hole-punched (direct)", || {
        Ok(path_to(&homes[0], &ids[1])?.as_deref() == Some("direct"))
    })?;
    let direct = peernet_get(&homes[0], &homes[1], &direct_file, NAT_DIRECT, size, "direct")?.against(&tcp);

    // A firewall between the homes: only the relay is left.
    world.block_udp_between_homes();
    crate::wait_for(PATIENCE, "home 1's link to home 0 to be relayed", || Ok(path_to(&homes[1], &ids[0])?.as_deref() == Some("relayed")))?;
    let relayed = peernet_get(&homes[0], &homes[1], &relayed_file, NAT_RELAYED, size, "relayed")?.against(&tcp);

    let [h0, h1] = homes;
    Peer::stop_all(vec![h0, h1, root]);
    drop(world);
    Ok(vec![tcp, direct, relayed])
}

fn bad_link(work: &Path, i: usize, link: &BadLink, size: u64, congestion: &[String]) -> anyhow::Result<Vec<Row>> {
    std::fs::create_dir_all(work)?;
    let names = link_rows(link, congestion);
    // Declared before the peers, so the link and namespaces outlive them.
    let (hosts, a, b) = build("the bad-link test hosts", || {
        let mut hosts = Hosts::new(&format!("rl{i}"));
        let a = hosts.add("a");
        let b = hosts.add("b");
        (hosts, a, b)
    })?;
    let _link = build("the slow link", || SlowLink::new(&hosts, &a, &b, link.rtt, link.loss_percent / 100.0))?;
    let file = work.join("reach-far.bin");
    crate::random_file(&file, size, 40 + i as u64)?;

    let tcp_seconds = tcp_copy(&file, &work.join("tcp-copy.bin"), &a, &b, &format!("{}:{TCP_PORT}", slow_link::A_IP))?;
    let tcp = speed(&names[0], size, tcp_seconds);
    let mut rows = vec![tcp.clone()];
    // Fresh peers for each controller, so nothing is fetched already.
    for (controller, what) in congestion.iter().zip(&names[1..]) {
        let bind = format!("{}:4300", slow_link::A_IP);
        let far_args = ["up", "--nick", "far", "--bind", &bind, "--congestion", controller];
        let far = Peer::start("far", &work.join(format!("far-{controller}")), Some(&a), &far_args)?;
        let data = work.join(format!("near-{controller}"));
        let downloads = data.join("downloads");
        let near_args = [
            "up",
            "--join",
            &far.ticket,
            "--nick",
            "near",
            "--bind",
            "0.0.0.0:0",
            "--downloads",
            downloads.to_str().unwrap(),
            "--congestion",
            controller,
        ];
        let near = Peer::start("near", &data, Some(&b), &near_args)?;
        rows.push(peernet_get(&far, &near, &file, what, size, "")?.against(&tcp));
        Peer::stop_all(vec![near, far]);
    }
    Ok(rows)
}

/// `from` shares `file`, `to` gets it (timed, verified). `via`, when not
/// empty, is the path `get` must say it used; a different one is noted.
fn peernet_get(from: &Peer, to: &Peer, file: &Path, what: &str, size: u64, via: &str) -> anyhow::Result<Row> {
    let name = file.file_name().and_then(|n| n.to_str()).context("file has a name")?;
    from.ok(&["share", file.to_str().context("path is UTF-8")?])?;
    // Finding the file is not part of the transfer; it is waited for first.
    crate::wait_for(PATIENCE, &format!("{name} to be listed at the index"), || {
        Ok(to.json(&["search", "--index-only", name])?.as_array().is_some_and(|hits| !hits.is_empty()))
    })?;
    let (cpu_from, cpu_to) = (from.proc.cpu_seconds(), to.proc.cpu_seconds());
    let mut get = peernet(to.netns.as_deref());
    get.args(["get", name, "--json"]).env("PEERNET_DATA_DIR", &to.data_dir);
    let Some((seconds, stdout)) = output_within(&mut get, LIMIT)? else {
        eprintln!("reach: {what}: timed out");
        return Ok(speed(what, size, None));
    };
    let usage = |p: &Peer, before: f64| -> Usage { p.proc.usage_since(before) };
    let (server, client) = (usage(from, cpu_from), usage(to, cpu_to));
    let got: serde_json::Value = serde_json::from_str(&stdout).with_context(|| format!("`get --json` printed {stdout}"))?;
    let path = got["path"].as_str().with_context(|| format!("`get` saved nothing: {got}"))?;
    if crate::hash_file(Path::new(path))? != crate::hash_file(file)? {
        bail!("{what}: the download differs from the original");
    }
    let reached: Vec<&str> =
        got["reached"].as_array().map(|r| r.iter().map(|s| s["path"]["via"].as_str().unwrap_or("unknown")).collect()).unwrap_or_default();
    let rtt = got["reached"][0]["path"]["rtt_ms"].as_u64();
    let mut note = format!("path: {}", reached.join(", "));
    if let Some(rtt) = rtt {
        note += &format!(", {rtt} ms");
    }
    if !via.is_empty() && reached != [via] {
        note += &format!(" (expected {via})");
        eprintln!("reach: {what}: get reached its source {reached:?}, expected {via}");
    }
    Ok(speed(what, size, Some(seconds)).usage(Some(server), Some(client)).note(note))
}

/// The short id in `links[].id` is a prefix of the full `id` in status.
fn id_of(peer: &Peer) -> anyhow::Result<String> {
    peer.json(&["status"])?["id"].as_str().map(str::to_string).context("status has no id")
}

/// The path ("direct" or "relayed") `from` reports for its link to `to_id`.
fn path_to(from: &Peer, to_id: &str) -> anyhow::Result<Option<String>> {
    let status = from.json(&["status"])?;
    let link = status["links"].as_array().and_then(|links| links.iter().find(|l| l["id"].as_str().is_some_and(|id| to_id.starts_with(id))));
    Ok(link.and_then(|l| l["path"]["via"].as_str()).map(str::to_string))
}

/// TCP from namespace `server_ns` (serving `src` on `addr`'s port) to
/// `client_ns` (connecting to `addr`), both run by this bench's own
/// binary (`tcp-serve`, `tcp-fetch`). Seconds, or None if it timed out.
fn tcp_copy(src: &Path, dst: &Path, server_ns: &str, client_ns: &str, addr: &str) -> anyhow::Result<Option<f64>> {
    let in_ns = |ns: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(exe());
        c
    };
    let port = addr.rsplit(':').next().context("address has a port")?;
    let mut serve = in_ns(server_ns);
    serve.arg("tcp-serve").arg(src).arg(port).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let server = Proc::spawn("tcp-serve", &mut serve)?;
    let mut fetch = in_ns(client_ns);
    fetch.arg("tcp-fetch").arg(addr).arg(dst);
    let fetched = output_within(&mut fetch, LIMIT);
    // Killed by its PID whatever happened (it exits by itself after one copy).
    server.stop(Duration::from_secs(3));
    let Some((_, stdout)) = fetched? else {
        eprintln!("reach: TCP copy to {addr}: timed out");
        return Ok(None);
    };
    let mut fields = stdout.split_whitespace();
    let bytes: u64 = fields.next().and_then(|b| b.parse().ok()).with_context(|| format!("tcp-fetch printed `{stdout}`"))?;
    let seconds: f64 = fields.next().and_then(|s| s.parse().ok()).with_context(|| format!("tcp-fetch printed `{stdout}`"))?;
    if bytes != std::fs::metadata(src)?.len() || crate::hash_file(dst)? != crate::hash_file(src)? {
        bail!("the TCP copy to {addr} differs from the original");
    }
    std::fs::remove_file(dst).ok();
    Ok(Some(seconds))
}

/// Runs `cmd` to its end and returns its wall time and stdout, or None if
/// it ran past `limit` (it is then killed by its PID). `ip netns exec`
/// execs the command in place, so that PID is the command itself.
fn output_within(cmd: &mut Command, limit: Duration) -> anyhow::Result<Option<(f64, String)>> {
    let start = Instant::now();
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("cannot start a command")?;
    // Read on threads so a chatty child cannot block on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).ok();
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().context("stdout")?));
    let err = drain(Box::new(child.stderr.take().context("stderr")?));
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = start.elapsed().as_secs_f64();
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if !status.success() {
        bail!("{:?} failed: {}", cmd.get_args().collect::<Vec<_>>(), err.trim());
    }
    Ok(Some((seconds, out)))
}

/// `peernet-bench tcp-serve FILE PORT`: serves FILE to the first client on
/// PORT, then exits.
pub fn tcp_serve(file: &Path, port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    let (mut conn, _) = listener.accept()?;
    // std's copy from a file to a socket uses sendfile on Linux.
    std::io::copy(&mut std::fs::File::open(file)?, &mut conn)?;
    conn.shutdown(std::net::Shutdown::Write)?;
    // Wait for the client to close (it sends nothing, so this reads the
    // end), so no byte is cut off by our exit.
    let _closed = conn.read(&mut [0u8; 1]);
    Ok(())
}

/// `peernet-bench tcp-fetch ADDR DEST`: downloads from `tcp-serve` and
/// prints "BYTES SECONDS". It retries while nothing listens yet (the
/// server is starting in its namespace); the clock starts at the attempt
/// that connects, so the handshake counts as it would for a user.
pub fn tcp_fetch(addr: SocketAddr, dest: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut conn, start) = loop {
        let attempt = Instant::now();
        match TcpStream::connect_timeout(&addr, Duration::from_secs(60)) {
            Ok(conn) => break (conn, attempt),
            Err(e) if Instant::now() > deadline => bail!("cannot connect to {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut out = std::fs::File::create(dest)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        bytes += n as u64;
    }
    out.flush()?;
    println!("{bytes} {}", start.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse() {
        let links = parse_links(DEFAULT_LINKS).unwrap().0;
        assert_eq!(links.len(), 3);
        assert_eq!(links[0], BadLink { rtt: Duration::from_millis(100), loss_percent: 1.0 });
        assert_eq!(links[2].label(), "300 ms RTT, 8% loss");
        assert_eq!(parse_links("1s/0").unwrap().0, vec![BadLink { rtt: Duration::from_secs(1), loss_percent: 0.0 }]);
        assert!(parse_links("").unwrap().0.is_empty());
        assert!(parse_links("100ms").is_err());
        assert!(parse_links("100ms/150%").is_err());
    }
}
