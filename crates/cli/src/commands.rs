//! One function per subcommand. Daemon commands start a node and wait for a
//! signal; the others are thin clients of the control API.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result};
use peernet_node::{
    control::{
        client::ControlClient, ui::LoginLink, GetEvent, GetRequest, NickRequest, OnlineReply, SayRequest, SearchReply, ShareReply,
        ShareRequest, Status, UnshareRequest,
    },
    shares::Share,
    Config, Node,
};
use peernet_proto::{
    chat::{ChatMessage, Member},
    ticket::Ticket,
    topo::Graph,
};

use crate::{
    args::{Cli, Command, LeaseArgs, NetArgs, TopoFormat},
    output, shell,
};

pub async fn run(cli: Cli) -> Result<()> {
    let data_dir = cli.data_dir();
    let json = cli.json;
    match cli.command {
        Command::Up { join, join_file, ticket_in_argv, lan, network, nick, share, downloads, upload_limit, net, lease } => {
            if ticket_in_argv {
                eprintln!(
                    "warning: other users of this machine can read the ticket in the process list while peernet runs; \
                     give it with --join-file PATH, --join - (standard input) or PEERNET_JOIN instead"
                );
            }
            let join = ticket(join, join_file, ticket_in_argv)?;
            up(Config {
                join,
                lan: lan.then_some(network),
                nickname: nick,
                share,
                downloads,
                upload_limit,
                ..daemon(data_dir, &net, &lease)
            })
            .await
        }
        Command::Index { net, lease } => up(Config { index_only: true, ..daemon(data_dir, &net, &lease) }).await,
        Command::Chat => shell::chat(&client(&data_dir)?).await,
        Command::Shell => shell::shell(&data_dir).await,
        other => run_client(&client(&data_dir)?, other, json).await,
    }
}

/// The ticket `up` joins with: written out on the command line or in
/// PEERNET_JOIN, read from standard input (`-`), or from a file. Only the
/// first shows in the process list.
fn ticket(join: Option<String>, join_file: Option<PathBuf>, in_argv: bool) -> Result<Option<Ticket>> {
    let (text, from) = match (join.as_deref(), join_file) {
        (Some("-"), _) => (ticket_from_stdin()?, "standard input".to_string()),
        (Some(text), _) => (text.to_string(), if in_argv { "--join" } else { "PEERNET_JOIN" }.to_string()),
        (None, Some(path)) => (ticket_from_file(&path)?, path.display().to_string()),
        (None, None) => return Ok(None),
    };
    let ticket = text.trim();
    anyhow::ensure!(!ticket.is_empty(), "{from} holds no ticket; give the ticket that `peernet up` printed on the network's root");
    Ok(Some(ticket.parse::<Ticket>().with_context(|| format!("the ticket from {from} is not usable"))?))
}

/// The first line of standard input: a terminal ends it with Enter, a pipe
/// or a file may hold nothing else.
fn ticket_from_stdin() -> Result<String> {
    let stdin = std::io::stdin();
    if std::io::IsTerminal::is_terminal(&stdin) {
        eprint!("ticket: ");
    }
    let mut line = String::new();
    stdin.read_line(&mut line).context("cannot read the ticket from standard input")?;
    Ok(line)
}

fn ticket_from_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the ticket from {}; check the path given to --join-file", path.display()))?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!("warning: other users of this machine may read the ticket in {}; run `chmod 600 {}`", path.display(), path.display());
        }
    }
    Ok(text)
}

/// What `up` and `index` share: where, how to reach and be reached, budgets.
fn daemon(data_dir: std::path::PathBuf, net: &NetArgs, lease: &LeaseArgs) -> Config {
    Config {
        data_dir,
        join: None,
        lan: None,
        nickname: None,
        share: Vec::new(),
        downloads: None,
        bind: net.bind,
        relay: net.named_relay(),
        relay_server: net.relay_server(),
        mdns: !net.no_mdns,
        congestion: net.congestion,
        index: lease.index_config(),
        upload_limit: None,
        index_only: false,
        budgets: lease.budgets(),
        ui: net.ui,
        metrics: net.metrics,
        dht: net.dht.then(|| peernet_node::dht::DhtConfig { bootstrap: net.dht_bootstrap.clone(), port: net.dht_port.unwrap_or(0) }),
    }
}

/// Runs a command that talks to a running daemon (also used by the shell).
pub async fn run_client(client: &ControlClient, command: Command, json: bool) -> Result<()> {
    match command {
        Command::Share { path } => {
            let path = std::path::absolute(&path).with_context(|| format!("cannot resolve {}", path.display()))?;
            let reply: ShareReply = client.post("/v1/share", &ShareRequest { path }).await?;
            output::share(&reply, json);
        }
        Command::Unshare { target } => {
            let share: Share = client.post("/v1/unshare", &UnshareRequest { target }).await?;
            output::unshared(&share, json);
        }
        Command::Ls => {
            let shares: Vec<Share> = client.get("/v1/ls", &[]).await?;
            output::shares(&shares, json);
        }
        Command::Online => {
            let reply: OnlineReply = client.get("/v1/online", &[]).await?;
            output::online(&reply.peers, json);
        }
        Command::Search { query, limit, index_only, flood_only, dht_only, ttl, wait } => {
            let mode = if index_only {
                "index"
            } else if flood_only {
                "flood"
            } else if dht_only {
                "dht"
            } else {
                "both"
            };
            let params = [
                ("q", query),
                ("limit", limit.to_string()),
                ("mode", mode.to_string()),
                ("ttl", ttl.to_string()),
                ("wait_ms", wait.as_millis().to_string()),
            ];
            let reply: SearchReply = client.get("/v1/search", &params).await?;
            output::hits(&reply.hits, json);
        }
        Command::Get { target, out } => {
            let out = out.map(|o| std::path::absolute(&o).with_context(|| format!("cannot resolve {}", o.display()))).transpose()?;
            get(client, GetRequest { target, out }, json).await?;
        }
        Command::Status => {
            let status: Status = client.get("/v1/status", &[]).await?;
            output::status(&status, json);
        }
        Command::Down => {
            let _: serde_json::Value = client.post("/v1/down", &serde_json::json!({})).await?;
            if !json {
                println!("peernet is leaving the network and shutting down");
            }
        }
        Command::Say { text } => {
            let msg: ChatMessage = client.post("/v1/say", &SayRequest { text: text.join(" ") }).await?;
            if json {
                output::print_json(&msg);
            }
        }
        Command::Nick { name } => {
            let _: serde_json::Value = client.post("/v1/nick", &NickRequest { nickname: name.clone() }).await?;
            if !json {
                println!("you are now {name}");
            }
        }
        Command::Who => {
            let members: Vec<Member> = client.get("/v1/who", &[]).await?;
            output::members(&members, json);
        }
        Command::Messages { after } => {
            let messages: Vec<ChatMessage> = client.get("/v1/messages", &[("after", after.to_string())]).await?;
            if json {
                output::print_json(&messages);
            } else {
                messages.iter().for_each(output::message);
            }
        }
        Command::Topo { format } => {
            let graph: Graph = client.get("/v1/topo", &[]).await?;
            match (format, json) {
                (TopoFormat::Json, _) | (_, true) => output::print_json(&graph),
                (TopoFormat::Dot, _) => print!("{}", graph.to_dot()),
                (TopoFormat::Text, _) => print!("{}", graph.to_text()),
            }
        }
        Command::Ui { no_open } => {
            let link: LoginLink = client.post("/v1/ui/link", &serde_json::json!({})).await?;
            let opened = !no_open && open_browser(&link.url, client.data_dir());
            output::ui_link(&link, opened, json);
        }
        Command::StopNetwork => {
            let _: serde_json::Value = client.post("/v1/stop-network", &serde_json::json!({})).await?;
            if !json {
                println!("closing the network: every peer is told to leave");
            }
        }
        Command::Up { .. } | Command::Index { .. } | Command::Chat | Command::Shell => {
            anyhow::bail!("that command starts its own session; run it outside the shell")
        }
    }
    Ok(())
}

pub fn client(data_dir: &Path) -> Result<ControlClient> {
    Ok(ControlClient::connect(data_dir)?)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                tokio::signal::ctrl_c().await.ok();
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.ok();
}

async fn up(config: Config) -> Result<()> {
    let node = Node::spawn(config).await?;
    output::up_banner(&node);
    tokio::select! {
        _ = signal() => eprintln!("leaving the network..."),
        _ = node.shutdown_requested() => eprintln!("leaving the network..."),
        _ = node.network_closed() => eprintln!("the network was closed by its root; leaving"),
    }
    node.shutdown().await;
    eprintln!("peernet stopped");
    Ok(())
}

/// Opens `url` in the user's browser when there is a desktop to open it
/// on ($BROWSER, or the desktop's opener); false when there is none.
///
/// The browser is given a file that redirects to `url`, never `url`
/// itself: a program's arguments are visible to every user of the
/// machine, and the login token must not be. The file is in the data
/// directory, readable by its owner only.
fn open_browser(url: &str, data_dir: &Path) -> bool {
    let desktop = cfg!(target_os = "macos") || std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let opener = std::env::var("BROWSER").ok().filter(|b| !b.is_empty());
    let program = match (opener, desktop) {
        (Some(browser), _) => browser,
        (None, true) if cfg!(target_os = "macos") => "open".to_string(),
        (None, true) => "xdg-open".to_string(),
        (None, false) => return false,
    };
    let redirect = data_dir.join("ui-login.html");
    let page = format!("<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url={url}\"><title>peernet</title>");
    if write_private(&redirect, page.as_bytes()).is_err() {
        return false;
    }
    std::process::Command::new(program)
        .arg(&redirect)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// Writes a file only its owner may read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

async fn get(client: &ControlClient, req: GetRequest, json: bool) -> Result<()> {
    let started = Instant::now();
    let mut progress = output::Progress::new(json);
    let last = client.get_file(&req, |event| progress.on_event(event)).await?;
    progress.finish();
    match last {
        GetEvent::Saved { path, hash, size, note, failed_providers, failures, resumed_from, sources, reached } => {
            let report = output::SavedReport {
                path: &path,
                hash: &hash,
                size,
                note: note.as_deref(),
                failed: &failed_providers,
                failures: &failures,
                resumed_from,
                sources: &sources,
                reached: &reached,
            };
            output::saved(&report, started.elapsed(), json);
            Ok(())
        }
        GetEvent::Failed { error } => Err(anyhow::anyhow!(error)),
        _ => Err(anyhow::anyhow!("the daemon ended the download without a result; check `peernet status`")),
    }
}
