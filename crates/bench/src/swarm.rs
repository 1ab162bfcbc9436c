//! `swarm`: the same file fetched from one rate-limited provider, then
//! from three, each on its own test host (network namespace) whose upload
//! is limited with tc. The figure is the speed-up from one to three.

use std::{path::Path, time::Instant};

use anyhow::bail;

use crate::{
    netns::{host_ip, Lan, HUB_IP},
    peers::Peer,
    report::{Report, Row},
};

pub struct Options {
    pub size: u64,
    pub providers: usize,
    /// Upload limit of each provider, in tc syntax.
    pub rate: String,
}

pub fn run(work: &Path, o: &Options) -> anyhow::Result<Report> {
    let setup = format!("{} MiB file, providers limited to {} each, network namespaces", o.size >> 20, o.rate);
    let what = format!("speed-up from 1 to {} providers", o.providers);
    if let Some(why) = crate::netns::unavailable() {
        eprintln!("swarm: skipped: {why}");
        return Ok(Report { bench: "swarm", setup, rows: vec![Row::skipped(what, "x", why)] });
    }
    let lan = match Lan::new(o.providers, &o.rate) {
        Ok(lan) => lan,
        Err(e) => {
            // Root, but no namespaces (a restricted container): skip visibly.
            let why = format!("cannot create test hosts here: {e:#}");
            eprintln!("swarm: skipped: {why}");
            return Ok(Report { bench: "swarm", setup, rows: vec![Row::skipped(what, "x", why)] });
        }
    };
    let file = work.join("swarm.bin");
    crate::random_file(&file, o.size, 7)?;
    let want = crate::hash_file(&file)?;
    let hub = Some(lan.hub.as_str());
    let index = Peer::start("index", &work.join("index"), hub, &["index", "--bind", &format!("{HUB_IP}:0")])?;
    let provider = |i: usize| {
        let name = format!("provider{i}");
        let bind = format!("{}:0", host_ip(i));
        Peer::start(
            &name,
            &work.join(&name),
            Some(&lan.hosts[i]),
            &["up", "--join", &index.ticket, "--bind", &bind, "--nick", &name, "--share", file.to_str().unwrap()],
        )
    };
    let fetch = |run: &str, providers: usize| -> anyhow::Result<f64> {
        let dir = work.join(run);
        let downloads = dir.join("downloads");
        let peer = Peer::start(
            run,
            &dir,
            hub,
            &["up", "--join", &index.ticket, "--bind", &format!("{HUB_IP}:0"), "--downloads", downloads.to_str().unwrap()],
        )?;
        crate::wait_for(std::time::Duration::from_secs(60), &format!("{providers} providers to be listed"), || {
            let hits = peer.json(&["search", "--index-only", "swarm.bin"])?;
            Ok(hits[0]["providers"].as_array().is_some_and(|p| p.len() == providers))
        })?;
        let start = Instant::now();
        peer.ok(&["get", "swarm.bin"])?;
        let seconds = start.elapsed().as_secs_f64();
        if crate::hash_file(&downloads.join("swarm.bin"))? != want {
            bail!("the swarm download differs from the original");
        }
        // Stopped before the next run, so it is not a provider there.
        peer.stop();
        std::fs::remove_dir_all(&dir).ok();
        Ok(seconds)
    };

    eprintln!("swarm: one provider");
    let mut providers = vec![provider(0)?];
    let one = fetch("one", 1)?;
    eprintln!("swarm: {} providers", o.providers);
    for i in 1..o.providers {
        providers.push(provider(i)?);
    }
    let many = fetch("many", o.providers)?;
    for p in providers {
        p.stop();
    }
    index.stop();
    drop(lan);
    let mb = o.size as f64 / 1e6;
    let single = Row::new("get from 1 provider (reference)", mb / one, "MB/s");
    let swarm = Row::new(format!("get from {} providers", o.providers), mb / many, "MB/s").against(&single);
    let goal = 0.9 * o.providers as f64;
    let speedup = Row::new(what, one / many, "x").target(format!(">= {goal:.1}x"), |r| r.value.map(|v| v >= goal));
    Ok(Report { bench: "swarm", setup, rows: vec![single, swarm, speedup] })
}
