//! `transfer`: one file moved on loopback by a plain TCP copy (the
//! reference), HTTP, BitTorrent, iroh-blobs' own fetch, and peernet `get`,
//! warm (already hashed) and cold (share, hash, then get); then peernet's
//! peak memory for a small and a large file.

use std::{path::Path, time::Instant};

use anyhow::{bail, Context};

use crate::{
    peers::Peer,
    refs::{self, Moved},
    report::{Report, Row},
};

pub struct Options {
    pub size: u64,
    pub runs: usize,
    /// File sizes whose peak RSS is compared (smallest first); empty skips.
    pub memory_sizes: Vec<u64>,
}

pub fn run(work: &Path, o: &Options, rt: &tokio::runtime::Runtime) -> anyhow::Result<Report> {
    let src_dir = work.join("src");
    std::fs::create_dir_all(&src_dir)?;
    let src = src_dir.join("file.bin");
    crate::random_file(&src, o.size, 1)?;
    let want = crate::hash_file(&src)?;
    let mb = o.size as f64 / 1e6;
    let speed = |what: &str, m: &Moved| Row::new(what, mb / m.seconds, "MB/s").usage(m.server, m.client);
    let out = |name: &str| work.join(name);

    eprintln!("transfer: TCP copy");
    let tcp = median(o.runs, |_| {
        let m = refs::tcp_copy(&src, &out("tcp.bin"))?;
        verify(&out("tcp.bin"), &want)?;
        Ok(m)
    })?;
    let tcp = speed("TCP copy (reference)", &tcp).note("sendfile to 256 KiB reads written to disk, in-process");
    let mut rows = vec![tcp.clone()];

    eprintln!("transfer: HTTP");
    rows.push(
        match optional(o.runs, |_| {
            let m = refs::http(&src, &out("http.bin"), work)?;
            if m.is_some() {
                verify(&out("http.bin"), &want)?;
            }
            Ok(m)
        })? {
            Some(m) => speed("HTTP: nginx (sendfile) to curl", &m).against(&tcp),
            None => Row::skipped("HTTP: nginx (sendfile) to curl", "MB/s", "nginx or curl is not installed"),
        },
    );

    eprintln!("transfer: BitTorrent");
    let bt = match optional(o.runs, |i| {
        let dir = out(&format!("bt-{i}"));
        let m = refs::bittorrent(&src, &dir, work)?;
        if m.is_some() {
            verify(&dir.join("file.bin"), &want)?;
        }
        std::fs::remove_dir_all(&dir).ok();
        Ok(m)
    })? {
        Some(m) => speed("BitTorrent: aria2c to aria2c, opentracker", &m).against(&tcp),
        None => Row::skipped("BitTorrent: aria2c to aria2c, opentracker", "MB/s", "aria2c or opentracker is not installed"),
    };
    rows.push(bt.clone());

    eprintln!("transfer: iroh-blobs fetch");
    let blobs = median(o.runs, |i| {
        let dir = out(&format!("blobs-{i}"));
        std::fs::create_dir_all(&dir)?;
        let m = rt.block_on(refs::blobs_fetch(&src, &dir.join("file.bin"), &dir))?;
        verify(&dir.join("file.bin"), &want)?;
        std::fs::remove_dir_all(&dir).ok();
        Ok(m)
    })?;
    let both_cpu = blobs.client.as_ref().map(|u| u.cpu_seconds).unwrap_or(0.0);
    let blobs = speed("iroh-blobs fetch between two file stores", &blobs)
        .usage(None, None)
        .against(&tcp)
        .note(format!("in-process, import not timed; {both_cpu:.1} CPU s for both sides together"));
    rows.push(blobs.clone());

    eprintln!("transfer: peernet get, warm and cold");
    let provider = Peer::start(
        "provider",
        &work.join("provider"),
        None,
        &["up", "--bind", "127.0.0.1:0", "--nick", "provider", "--share", src.to_str().unwrap()],
    )?;
    let warm = median(o.runs, |i| {
        let downloader = downloader(work, &provider, &format!("warm-{i}"))?;
        wait_listed(&downloader, "file.bin")?;
        let m = timed_get(&provider, &downloader, "file.bin", &[])?;
        verify(&downloader.data_dir.join("downloads/file.bin"), &want)?;
        remove(downloader);
        Ok(m)
    })?;
    let warm = speed("peernet get, warm (file already hashed)", &warm).against(&tcp);
    let cold = median(o.runs, |i| {
        let name = format!("cold-{i}.bin");
        let file = src_dir.join(&name);
        crate::random_file(&file, o.size, 100 + i as u64)?;
        // On disk before the clock starts: otherwise the kernel writes the
        // new file back during the timed share and get, which measures the
        // bench's own file, not peernet.
        std::fs::File::open(&file)?.sync_all()?;
        let cold_want = crate::hash_file(&file)?;
        let downloader = downloader(work, &provider, &format!("cold-{i}"))?;
        // Joined and settled, as the warm downloader is.
        wait_listed(&downloader, "file.bin")?;
        let m = timed_get(&provider, &downloader, &name, &[file.to_str().unwrap()])?;
        verify(&downloader.data_dir.join("downloads").join(&name), &cold_want)?;
        remove(downloader);
        provider.ok(&["unshare", &name])?;
        std::fs::remove_file(&file).ok();
        Ok(m)
    })?;
    let cold = speed("peernet share then get, cold (hashing included)", &cold).against(&tcp);
    provider.stop();
    rows.push(warm.clone());
    rows.push(cold.clone());
    rows.push(versus("warm get vs BitTorrent", &warm, &bt, 1.3));
    rows.push(versus("warm get vs iroh-blobs fetch", &warm, &blobs, 1.3));
    if let (Some(w), Some(c)) = (warm.value, cold.value) {
        rows.push(Row::new("cold time / warm time", w / c, "x").target("<= 1.3x", |r| r.value.map(|v| v <= 1.3)));
    }

    rows.extend(memory(work, &o.memory_sizes)?);
    Ok(Report { bench: "transfer", setup: format!("{} MiB file, loopback, median of {}", o.size >> 20, o.runs), rows })
}

/// Peak RSS of both peers for each file size; the largest against the smallest.
fn memory(work: &Path, sizes: &[u64]) -> anyhow::Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        eprintln!("transfer: memory with a {} MiB file", size >> 20);
        let dir = work.join(format!("mem-{i}"));
        let file = dir.join(format!("mem-{i}.bin"));
        std::fs::create_dir_all(&dir)?;
        crate::random_file(&file, size, 200 + i as u64)?;
        let name = format!("mem-{i}.bin");
        let provider =
            Peer::start("provider", &dir.join("provider"), None, &["up", "--bind", "127.0.0.1:0", "--share", file.to_str().unwrap()])?;
        let downloader = downloader(&dir, &provider, "downloader")?;
        wait_listed(&downloader, &name)?;
        let m = timed_get(&provider, &downloader, &name, &[])?;
        remove(downloader);
        provider.stop();
        std::fs::remove_dir_all(&dir).ok();
        let client = m.client.context("downloader usage")?;
        let mut row =
            Row::new(format!("peernet get peak RSS, {} MiB file", size >> 20), client.peak_rss_mib, "MiB").usage(m.server, m.client);
        if let Some(first) = rows.first() {
            row = row.against(first).target("<= 1.10x the smallest", |r| r.ratio.map(|x| x <= 1.10));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// A fresh peer that joins `provider`'s network, for one download.
fn downloader(work: &Path, provider: &Peer, name: &str) -> anyhow::Result<Peer> {
    let dir = work.join(name);
    let downloads = dir.join("downloads");
    Peer::start(name, &dir, None, &["up", "--bind", "127.0.0.1:0", "--join", &provider.ticket, "--downloads", downloads.to_str().unwrap()])
}

fn remove(peer: Peer) {
    let dir = peer.data_dir.clone();
    peer.stop();
    std::fs::remove_dir_all(&dir).ok();
}

/// Waits until the index lists `name`.
fn wait_listed(peer: &Peer, name: &str) -> anyhow::Result<()> {
    crate::wait_for(std::time::Duration::from_secs(60), &format!("{name} to be listed"), || {
        Ok(peer.json(&["search", "--index-only", name])?.as_array().is_some_and(|a| !a.is_empty()))
    })
}

/// Times `share` of `share` (if any) on the provider and `get name` on the
/// downloader; usage is the two daemons' over that time.
fn timed_get(provider: &Peer, downloader: &Peer, name: &str, share: &[&str]) -> anyhow::Result<Moved> {
    let (p0, d0) = (provider.proc.cpu_seconds(), downloader.proc.cpu_seconds());
    let start = Instant::now();
    if let Some(path) = share.first() {
        provider.ok(&["share", path])?;
    }
    downloader.ok(&["get", name])?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(Moved { seconds, server: Some(provider.proc.usage_since(p0)), client: Some(downloader.proc.usage_since(d0)) })
}

/// How many times faster `ours` is than `theirs`, with a goal.
fn versus(what: &str, ours: &Row, theirs: &Row, goal: f64) -> Row {
    match (ours.value, theirs.value) {
        (Some(a), Some(b)) => Row::new(what, a / b, "x").target(format!(">= {goal}x"), |r| r.value.map(|v| v >= goal)),
        _ => Row::skipped(what, "x", format!("no {} figure", theirs.what)),
    }
}

/// Runs `f` `runs` times and keeps the median by time.
fn median(runs: usize, mut f: impl FnMut(usize) -> anyhow::Result<Moved>) -> anyhow::Result<Moved> {
    optional(runs, |i| f(i).map(Some))?.context("a run gave no result")
}

/// As `median`, for a reference that may be missing (None on the first run).
fn optional(runs: usize, mut f: impl FnMut(usize) -> anyhow::Result<Option<Moved>>) -> anyhow::Result<Option<Moved>> {
    let Some(first) = f(0)? else { return Ok(None) };
    let mut all = vec![first];
    for i in 1..runs.max(1) {
        all.push(f(i)?.context("a reference tool disappeared during the run")?);
    }
    all.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let mid = all.len() / 2;
    Ok(Some(all.swap_remove(mid)))
}

/// The copy must be the file, byte for byte; it is removed afterwards.
fn verify(copy: &Path, want: &blake3::Hash) -> anyhow::Result<()> {
    let got = crate::hash_file(copy).with_context(|| format!("reading {}", copy.display()))?;
    std::fs::remove_file(copy).ok();
    if &got != want {
        bail!("{} differs from the original", copy.display());
    }
    Ok(())
}
