//! `peernet shell` (a prompt for every command) and `peernet chat` (a room
//! view). Both are clients of the running daemon.

use std::{io::IsTerminal, path::Path, time::Duration};

use anyhow::Result;
use clap::Parser;
use peernet_node::control::{client::ControlClient, NickRequest, SayRequest};
use peernet_proto::{
    chat::{ChatMessage, Member},
    names::visible,
};
use tokio::sync::mpsc;

use crate::{args::Cli, commands, output};

/// How often `chat` asks the daemon for new messages.
const CHAT_POLL: Duration = Duration::from_millis(300);

const SHELL_HELP: &str = "commands: online, ls, share PATH, unshare NAME|HASH, search QUERY, get NAME|HASH, \
say TEXT, nick NAME, who, messages, topo [--format dot|json], status, help, quit \
(add --json to any read command)";

/// Splits a line into words; double quotes group words, backslash escapes.
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    current.push(n);
                    in_word = true;
                }
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

/// Lines typed by the user: with line editing and history on a terminal,
/// plain lines otherwise (scripts, tests).
fn line_source(history: Option<std::path::PathBuf>, prompt: &'static str) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        if std::io::stdin().is_terminal() {
            let Ok(mut editor) = rustyline::DefaultEditor::new() else { return };
            if let Some(h) = &history {
                editor.load_history(h).ok();
            }
            while let Ok(line) = editor.readline(prompt) {
                editor.add_history_entry(line.as_str()).ok();
                if let Some(h) = &history {
                    editor.save_history(h).ok();
                }
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        } else {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if tx.blocking_send(line.trim_end_matches(['\n', '\r']).to_string()).is_err() {
                    break;
                }
                line.clear();
            }
        }
    });
    rx
}

pub async fn shell(data_dir: &Path) -> Result<()> {
    let client = commands::client(data_dir)?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        println!("peernet shell. {SHELL_HELP}");
    }
    let mut lines = line_source(Some(data_dir.join("shell_history")), "peernet> ");
    while let Some(line) = lines.recv().await {
        let words = split_words(&line);
        let Some(first) = words.first() else { continue };
        match first.as_str() {
            "quit" | "exit" => break,
            "help" | "?" => {
                println!("{SHELL_HELP}");
                continue;
            }
            _ => {}
        }
        let argv = std::iter::once("peernet".to_string()).chain(words);
        match Cli::try_parse_from(argv) {
            Ok(cli) => {
                if let Err(e) = commands::run_client(&client, cli.command, cli.json).await {
                    println!("error: {}", visible(&format!("{e:#}")));
                }
            }
            Err(e) => println!("{}", e.render().to_string().lines().next().unwrap_or("unknown command")),
        }
    }
    Ok(())
}

pub async fn chat(client: &ControlClient) -> Result<()> {
    let status: peernet_node::control::Status = client.get("/v1/status", &[]).await?;
    println!("chatting as {} ({}). Type to talk; /nick NAME, /who, /quit.", status.nickname, &status.id[..10]);
    let mut lines = line_source(None, "");
    let mut after = 0u64;
    // Show only what arrives from now on.
    let backlog: Vec<ChatMessage> = client.get("/v1/messages", &[]).await?;
    if let Some(last) = backlog.last() {
        after = last.index;
    }
    let mut poll = tokio::time::interval(CHAT_POLL);
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let result = if line == "/quit" {
                    break;
                } else if line == "/who" {
                    client.get::<Vec<Member>>("/v1/who", &[]).await.map(|m| output::members(&m, false))
                } else if let Some(name) = line.strip_prefix("/nick ") {
                    client
                        .post::<serde_json::Value, _>("/v1/nick", &NickRequest { nickname: name.trim().to_string() })
                        .await
                        .map(|_| println!("you are now {}", name.trim()))
                } else {
                    client.post::<ChatMessage, _>("/v1/say", &SayRequest { text: line.to_string() }).await.map(|_| ())
                };
                if let Err(e) = result {
                    println!("error: {}", visible(&e.to_string()));
                }
            }
            _ = poll.tick() => {
                let new: Vec<ChatMessage> = client.get("/v1/messages", &[("after", after.to_string())]).await?;
                for m in &new {
                    output::message(m);
                    after = m.index;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn words_and_quotes() {
        assert_eq!(split_words("say hello world"), ["say", "hello", "world"]);
        assert_eq!(split_words("share \"my file.txt\""), ["share", "my file.txt"]);
        assert_eq!(split_words("  a\\ b  "), ["a b"]);
        assert_eq!(split_words("x \"\""), ["x", ""]);
        assert!(split_words("   ").is_empty());
    }
}
