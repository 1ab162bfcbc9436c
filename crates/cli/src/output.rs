//! How results look: readable tables on a terminal, JSON with --json.

use std::{io::IsTerminal, path::Path, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};
use peernet_node::{
    control::{ui::LoginLink, GetEvent, ShareReply, Status},
    index_client::IndexStatus,
    shares::Share,
    Node,
};
use peernet_proto::{
    chat::{ChatMessage, Member},
    index::{Hit, Kind, OnlinePeer},
    names::visible,
};
use serde::Serialize;

pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).expect("plain data always serializes"));
}

/// Human-readable size: 1.5 MiB.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Folders end in `/`, as in `ls -F`. Names came from other peers, so
/// they are shown through [`visible`].
fn display_name(name: &str, kind: Kind) -> String {
    match kind {
        Kind::File => visible(name).into_owned(),
        Kind::Folder => format!("{}/", visible(name)),
    }
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(10)]
}

pub fn up_banner(node: &Node) {
    if let Some(control) = node.control() {
        if !control.addr.ip().is_loopback() {
            println!(
                "WARNING: the web interface listens beyond this machine ({}); the login link is its only protection, \
                 so share it with no one and prefer a loopback address or an SSH tunnel",
                control.addr
            );
        }
        println!("Web interface: run `peernet ui` for a login link.");
        if let Some(at) = control.metrics {
            println!("metrics: http://{at}/metrics");
        }
    }
    let id = node.endpoint().id().fmt_short();
    if let (Some(name), None) = (node.lan(), node.ticket()) {
        println!("peernet is up as {} ({id}) on the LAN network '{name}'. Others on this LAN join with:", node.nickname());
        println!("  peernet up --lan --network {name}");
        // A short name is a warning, on stderr with the other warnings.
        let warning = peernet_node::network::lan_warning(name);
        if peernet_node::network::lan_name_is_short(name) {
            eprintln!("warning: {warning}");
        } else {
            println!("note: {warning}");
        }
        println!("lan: {name}");
        println!("Stop with Ctrl-C or `peernet down`.");
        return;
    }
    let ticket = node.ticket().map(|t| t.to_string()).unwrap_or_default();
    let headline = if node.is_index_only() {
        format!("peernet index is running ({id}). Peers join with:")
    } else if node.hosts_index() {
        format!("peernet is up as {} ({id}) and hosts the network's index. Others join with:", node.nickname())
    } else if matches!(node.network().index_status(), peernet_node::index_client::IndexStatus::Joined { .. }) {
        format!("peernet is up as {} ({id}) and joined the network. Others can join with the same ticket:", node.nickname())
    } else {
        format!(
            "peernet is up as {} ({id}), but the index has not answered yet; it keeps trying in the background, and \
             `peernet status` says when it joins. Others can join with the same ticket:",
            node.nickname()
        )
    };
    println!("{headline}");
    println!("  peernet up --join {ticket}");
    println!("ticket: {ticket}");
    println!("Stop with Ctrl-C or `peernet down`.");
}

pub fn ui_link(link: &LoginLink, opened: bool, json: bool) {
    if json {
        return print_json(link);
    }
    if opened {
        println!(
            "opened the web interface in your browser; if it did not appear, open this link (it works once, for {} s):",
            link.expires_in_secs
        );
    } else {
        println!("open this link in a browser on this machine (it works once, for {} s):", link.expires_in_secs);
    }
    println!("{}", link.url);
}

pub fn share(reply: &ShareReply, json: bool) {
    if json {
        return print_json(reply);
    }
    let s = &reply.share;
    println!("sharing {} ({}, {})", s.name, size(s.size), short(&s.hash.to_hex()));
    if let Some(w) = &reply.warning {
        println!("note: {w}");
    }
}

pub fn unshared(share: &Share, json: bool) {
    if json {
        return print_json(share);
    }
    println!("stopped sharing {} ({})", share.name, short(&share.hash.to_hex()));
}

pub fn shares(shares: &[Share], json: bool) {
    if json {
        return print_json(shares);
    }
    if shares.is_empty() {
        println!("you share no files; add one with `peernet share PATH`");
        return;
    }
    println!("{:<40} {:>10}  {:<10}  PATH", "NAME", "SIZE", "HASH");
    for s in shares {
        println!("{:<40} {:>10}  {:<10}  {}", display_name(&s.name, s.kind), size(s.size), short(&s.hash.to_hex()), s.path.display());
    }
}

pub fn online(peers: &[OnlinePeer], json: bool) {
    if json {
        return print_json(peers);
    }
    if peers.is_empty() {
        println!("nobody is online");
        return;
    }
    for p in peers {
        println!("{} ({}) - {} file(s)", visible(&p.peer.nickname), p.peer.addr.id.fmt_short(), p.files.len());
        for f in &p.files {
            println!("    {:<40} {:>10}  {}", display_name(&f.name, f.kind), size(f.size), short(&f.hash.to_hex()));
        }
    }
}

pub fn hits(hits: &[Hit], json: bool) {
    if json {
        return print_json(hits);
    }
    if hits.is_empty() {
        println!("no file matches");
        return;
    }
    println!("{:<40} {:>10}  {:<10}  PROVIDERS", "NAME", "SIZE", "HASH");
    for h in hits {
        let providers: Vec<String> =
            h.providers.iter().map(|p| format!("{} ({})", visible(&p.peer.nickname), p.peer.addr.id.fmt_short())).collect();
        println!("{:<40} {:>10}  {:<10}  {}", display_name(&h.name, h.kind), size(h.size), short(&h.hash.to_hex()), providers.join(", "));
    }
}

pub fn status(s: &Status, json: bool) {
    if json {
        return print_json(s);
    }
    println!("nickname:  {}", s.nickname);
    println!("id:        {}", s.id);
    println!("role:      {}", if s.hosts_index { "hosts the index (root)" } else { "peer" });
    let index = match &s.index {
        IndexStatus::Connecting => "connecting".to_string(),
        IndexStatus::Joined { heartbeat_ms, lease_ttl_ms, .. } => {
            format!("joined (heartbeat every {:.1}s, lease {:.1}s)", *heartbeat_ms as f64 / 1e3, *lease_ttl_ms as f64 / 1e3)
        }
        IndexStatus::Unreachable { error } => format!("unreachable, retrying: {error}"),
        IndexStatus::Refused { error } => format!("refused: {error}"),
        IndexStatus::None => "none: a LAN network has no index; peers find each other on the LAN".to_string(),
    };
    let index_path = s.index_path.map(|p| format!(" [{p}]")).unwrap_or_default();
    println!("index:     {index}{index_path}");
    println!("addresses: {}", s.addrs.join(", "));
    for relay in &s.relays {
        let state = match (&relay.error, relay.connected) {
            (_, true) => "connected".to_string(),
            (Some(e), false) => format!("not connected: {e}"),
            (None, false) => "connecting".to_string(),
        };
        println!("relay:     {} ({state})", relay.url);
    }
    if let Some(server) = &s.relay_server {
        println!(
            "runs relay: {} (QAD on udp {}); {} members admitted, {} refused",
            server.url,
            server.quic_port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            server.admitted,
            server.refused
        );
    }
    println!("shares:    {}", s.shares);
    let links: Vec<String> = s
        .links
        .iter()
        .map(|l| match &l.path {
            Some(path) => format!("{} ({path})", l.id),
            None => l.id.clone(),
        })
        .collect();
    println!("neighbours: {}", if links.is_empty() { "(none yet)".to_string() } else { links.join(", ") });
    let dht = match &s.dht {
        None => "off (`up --dht` finds members and files when the index is gone)".to_string(),
        Some(d) => {
            let at = d.addr.clone().unwrap_or_else(|| "-".into());
            let error = d.error.as_ref().map(|e| format!("; {e}")).unwrap_or_default();
            if d.nodes == 0 {
                format!("alone on udp {at} so far: waiting to meet another member's DHT node{error}")
            } else {
                format!(
                    "up on udp {at}: {} nodes known, {} keys announced, {} peers found through it{error}",
                    d.nodes, d.announced, d.found
                )
            }
        }
    };
    println!("dht:       {dht}");
    println!("layers:    {}", layers(s));
    if !s.dropped_events.is_empty() {
        let dropped: Vec<String> = s.dropped_events.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("dropped events: {}", dropped.join(", "));
    }
    // Each bound that bit since the daemon started (see the Limits table).
    let mut bounds: Vec<String> = [
        ("flood queries over budget", s.flood_over_budget),
        ("flood queries too long", s.flood_oversized),
        ("flood frames not sent (too many waiting)", s.flood_sends_dropped),
        ("flood frames not read (queue full)", s.flood_queue_full),
        ("blob requests for files not shared", s.blobs_refused),
        ("connections over their address's budget", s.connections_refused),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(what, n)| format!("{what}: {n}"))
    .collect();
    bounds.extend(s.provider_faults.iter().map(|(fault, n)| format!("providers that {fault} in a get: {n}")));
    bounds.extend(s.index_bounds.iter().map(|(what, n)| format!("index {}: {n}", what.replace('_', " "))));
    if !bounds.is_empty() {
        println!("bounds hit: {}", bounds.join(", "));
    }
    println!(
        "admission: {} keys admitted, {} outsider connections refused, {} proofs refused",
        s.admitted_keys, s.refused_outsiders, s.refused_proofs
    );
    println!("data dir:  {}", s.data_dir.display());
    println!("downloads: {}", s.downloads.display());
    match &s.lan {
        Some(name) => println!("network:   LAN '{name}' (no ticket, no index)"),
        None => println!("ticket:    {}", s.ticket),
    }
    if let Some(warning) = &s.warning {
        println!("note:      {warning}");
    }
}

/// Which ways of finding members and files work now: the index, the
/// overlay, the DHT.
fn layers(s: &Status) -> String {
    let index = match &s.index {
        IndexStatus::Joined { .. } => "index up",
        IndexStatus::None => "no index",
        _ if s.hosts_index => "index up (here)",
        _ => "index down",
    };
    let overlay = match s.neighbors.len() {
        0 => "overlay down (no neighbours)".to_string(),
        n => format!("overlay up ({n} neighbours)"),
    };
    let dht = match &s.dht {
        None => "dht off",
        Some(d) if d.nodes == 0 => "dht alone",
        Some(_) => "dht up",
    };
    format!("{index}, {overlay}, {dht}")
}

/// What `get` reports when a file is saved.
pub struct SavedReport<'a> {
    pub path: &'a Path,
    pub hash: &'a str,
    pub size: u64,
    pub note: Option<&'a str>,
    pub failed: &'a [String],
    pub failures: &'a [peernet_node::transfers::Failure],
    pub resumed_from: u64,
    pub sources: &'a [String],
    pub reached: &'a [peernet_node::transfers::Reached],
}

pub fn saved(r: &SavedReport<'_>, elapsed: Duration, json: bool) {
    if json {
        return print_json(&serde_json::json!({
            "path": r.path, "hash": r.hash, "size": r.size, "note": r.note,
            "failed_providers": r.failed, "failures": r.failures, "resumed_from": r.resumed_from, "sources": r.sources, "reached": r.reached,
            "fetched_bytes": r.size - r.resumed_from.min(r.size), "seconds": elapsed.as_secs_f64(),
        }));
    }
    if r.sources.len() > 1 {
        println!("fetched in parts from {} providers: {}", r.sources.len(), visible(&r.sources.join(", ")));
    }
    for reached in r.reached {
        match &reached.path {
            Some(path) => println!("from {}: {path}", visible(&reached.source)),
            None => println!("from {}: path unknown (its connection had closed)", visible(&reached.source)),
        }
    }
    if r.resumed_from > 0 {
        println!("resumed: {} were already here and verified", size(r.resumed_from));
    }
    if !r.failures.is_empty() {
        let each: Vec<String> = r.failures.iter().map(|f| format!("{} {}", f.provider, f.why)).collect();
        println!("provider(s) lost their turn: {}; the rest came from others", visible(&each.join("; ")));
    }
    let fetched = r.size - r.resumed_from.min(r.size);
    let rate = fetched as f64 / elapsed.as_secs_f64().max(1e-3);
    println!("saved {} ({}, {}) in {:.1}s, {}/s", r.path.display(), size(r.size), short(r.hash), elapsed.as_secs_f64(), size(rate as u64));
    if let Some(note) = r.note {
        println!("note: {}", visible(note));
    }
    println!("you now share it too");
}

/// A progress bar on a terminal; silence otherwise (scripts read the result).
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                    .expect("template is valid")
                    .progress_chars("=> "),
            );
            bar
        });
        Self { bar }
    }

    pub fn on_event(&mut self, event: &GetEvent) {
        let Some(bar) = &self.bar else { return };
        match event {
            GetEvent::Resolved { name, size, providers, .. } => {
                bar.set_length(*size);
                let name = visible(name).into_owned();
                bar.println(format!("fetching {name} from {}", visible(&providers.join(", "))));
                bar.set_message(name);
            }
            GetEvent::Progress { done, .. } => bar.set_position(*done),
            GetEvent::ProviderFailed { provider, why } => {
                bar.println(format!("provider {} {}; trying another", visible(provider), visible(why)))
            }
            _ => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// `HH:MM:SS` (UTC) of a Unix time in milliseconds.
pub fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!("{:02}:{:02}:{:02}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

/// A chat line: time, name with short id (so a copied name cannot pass for
/// someone else), text.
pub fn message(m: &ChatMessage) {
    println!("[{}] {} ({}): {}", clock(m.sent_at_ms), visible(&m.nickname), m.author.fmt_short(), visible(&m.text));
}

pub fn members(members: &[Member], json: bool) {
    if json {
        return print_json(members);
    }
    if members.is_empty() {
        println!("nobody in the room yet");
        return;
    }
    for m in members {
        let state = if m.online {
            "online"
        } else if m.left {
            "offline (left)"
        } else {
            "offline"
        };
        println!("{:<32} {}  {}", visible(&m.nickname), m.id.fmt_short(), state);
    }
}
