//! One function per subcommand. Daemon commands start a node and wait for a
//! signal; the others are thin clients of the control API.

use std::{path::Path, time::Instant};

use anyhow::{Context, Result};
use peernet_node::{
    control::{client::ControlClient, GetEvent, GetRequest, OnlineReply, SearchReply, ShareReply, ShareRequest, Status, UnshareRequest},
    host::{HostConfig, IndexHost},
    shares::Share,
    Config, Node,
};
use peernet_proto::ticket::Ticket;

use crate::{
    args::{Cli, Command},
    output,
};

pub async fn run(cli: Cli) -> Result<()> {
    let data_dir = cli.data_dir();
    let json = cli.json;
    match cli.command {
        Command::Up { join, nick, share, downloads, upload_limit, net, lease } => {
            let join = join.map(|t| t.parse::<Ticket>()).transpose()?;
            let config = Config {
                data_dir,
                join,
                nickname: nick,
                share,
                downloads,
                bind: net.bind,
                relay: net.relay,
                index: peernet_index::Config { heartbeat: lease.heartbeat, lease_ttl: lease.lease_ttl },
                upload_limit,
            };
            up(config).await
        }
        Command::Index { net, lease } => {
            let config = HostConfig {
                data_dir,
                bind: net.bind,
                relay: net.relay,
                index: peernet_index::Config { heartbeat: lease.heartbeat, lease_ttl: lease.lease_ttl },
            };
            index(config).await
        }
        Command::Share { path } => {
            let path = std::path::absolute(&path).with_context(|| format!("cannot resolve {}", path.display()))?;
            let reply: ShareReply = client(&data_dir)?.post("/v1/share", &ShareRequest { path }).await?;
            output::share(&reply, json);
            Ok(())
        }
        Command::Unshare { target } => {
            let share: Share = client(&data_dir)?.post("/v1/unshare", &UnshareRequest { target }).await?;
            output::unshared(&share, json);
            Ok(())
        }
        Command::Ls => {
            let shares: Vec<Share> = client(&data_dir)?.get("/v1/ls", &[]).await?;
            output::shares(&shares, json);
            Ok(())
        }
        Command::Online => {
            let reply: OnlineReply = client(&data_dir)?.get("/v1/online", &[]).await?;
            output::online(&reply.peers, json);
            Ok(())
        }
        Command::Search { query, limit } => {
            let reply: SearchReply =
                client(&data_dir)?.get("/v1/search", &[("q", query), ("limit", limit.to_string())]).await?;
            output::hits(&reply.hits, json);
            Ok(())
        }
        Command::Get { target, out } => {
            let out = out
                .map(|o| std::path::absolute(&o).with_context(|| format!("cannot resolve {}", o.display())))
                .transpose()?;
            get(&data_dir, GetRequest { target, out }, json).await
        }
        Command::Status => {
            let status: Status = client(&data_dir)?.get("/v1/status", &[]).await?;
            output::status(&status, json);
            Ok(())
        }
        Command::Down => {
            let _: serde_json::Value = client(&data_dir)?.post("/v1/down", &serde_json::json!({})).await?;
            if !json {
                println!("peernet is leaving the network and shutting down");
            }
            Ok(())
        }
    }
}

fn client(data_dir: &Path) -> Result<ControlClient> {
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
        _ = signal() => {}
        _ = node.shutdown_requested() => {}
    }
    eprintln!("leaving the network...");
    node.shutdown().await;
    eprintln!("peernet stopped");
    Ok(())
}

async fn index(config: HostConfig) -> Result<()> {
    let host = IndexHost::spawn(config).await?;
    println!("peernet index is running. Peers join with:");
    println!("  peernet up --join {}", host.ticket());
    println!("ticket: {}", host.ticket());
    signal().await;
    host.shutdown().await;
    eprintln!("peernet index stopped");
    Ok(())
}

async fn get(data_dir: &Path, req: GetRequest, json: bool) -> Result<()> {
    let client = client(data_dir)?;
    let started = Instant::now();
    let mut progress = output::Progress::new(json);
    let last = client.get_file(&req, |event| progress.on_event(event)).await?;
    progress.finish();
    match last {
        GetEvent::Saved { path, hash, size, note, failed_providers } => {
            output::saved(&path, &hash, size, note.as_deref(), &failed_providers, started.elapsed(), json);
            Ok(())
        }
        GetEvent::Failed { error } => Err(anyhow::anyhow!(error)),
        _ => Err(anyhow::anyhow!("the daemon ended the download without a result; check `peernet status`")),
    }
}
