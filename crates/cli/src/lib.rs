//! `peernet`: parse arguments, set up logging, run one command.
//!
//! A library as well as a binary so that the benchmark tool can start
//! peernet peers from its own executable: the code it measures is then
//! always the code it was built with.

mod args;
mod commands;
mod output;
mod shell;

use std::{ffi::OsString, process::ExitCode};

/// A command's output may go to a pipe its reader closes early
/// (`peernet status | head -1`); such a command ends quietly there, as
/// other Unix tools do, instead of panicking on the write that failed.
/// Rust ignores SIGPIPE by default; a daemon keeps it ignored, so a closed
/// terminal never kills a running peer.
fn die_quietly_on_a_closed_pipe() {
    // SAFETY: sets the process-wide disposition of one signal back to its
    // default; no handler is installed, and nothing in a command that is
    // not a daemon relies on SIGPIPE being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs the `peernet` command line with these arguments (the first is the
/// program name), as `main` does.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = args::Cli::parse_args(args);
    if !cli.runs_a_daemon() {
        die_quietly_on_a_closed_pipe();
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_filter())),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An error may quote what another peer said (a refusal, a name).
            eprintln!("error: {}", peernet_proto::names::visible(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
