//! Child processes the bench starts: killed by PID when dropped, and
//! measured (peak RSS, CPU seconds) from /proc or from wait4's rusage.

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde::Serialize;

/// Resources one process used.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
}

/// A long-running process (a server or a daemon), killed on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Proc> {
        let child = cmd.spawn().with_context(|| format!("cannot start {name}"))?;
        Ok(Proc { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds used so far (user + system).
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid()).unwrap_or(0.0)
    }

    /// Peak RSS so far, and CPU seconds since `cpu_before`.
    pub fn usage_since(&self, cpu_before: f64) -> Usage {
        Usage { peak_rss_mib: peak_rss_mib(self.pid()).unwrap_or(0.0), cpu_seconds: self.cpu_seconds() - cpu_before }
    }

    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Stops it with SIGTERM, waiting up to `grace` before SIGKILL.
    pub fn stop(mut self, grace: Duration) {
        terminate(&mut self.child, grace);
    }

    /// Sends SIGTERM to all, then waits for each (up to `grace` in all
    /// before the rest are killed).
    pub fn stop_all(mut procs: Vec<Proc>, grace: Duration) {
        for p in &mut procs {
            if p.child.try_wait().ok().flatten().is_none() {
                unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + grace;
        for mut p in procs {
            terminate(&mut p.child, deadline.saturating_duration_since(Instant::now()));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(3));
    }
}

fn terminate(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().ok();
    child.wait().ok();
}

/// Runs a command to completion and returns its wall time and usage,
/// from the kernel's own accounting (wait4), so short runs count fully.
pub fn run_measured(name: &str, cmd: &mut Command, limit: Duration) -> anyhow::Result<(Duration, Usage)> {
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("cannot start {name}"))?;
    let pid = child.id() as i32;
    // Reap with wait4 ourselves; `child` must not wait too.
    std::mem::forget(child);
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if r < 0 {
            bail!("{name}: wait failed: {}", std::io::Error::last_os_error());
        }
        if start.elapsed() > limit {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            bail!("{name} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{name} failed (wait status {status})");
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((elapsed, Usage { peak_rss_mib: usage.ru_maxrss as f64 / 1024.0, cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime) }))
}

/// VmHWM (the peak resident set) of a live process, in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// utime + stime of a live process, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields start after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

/// Whether `tool` is on the PATH.
pub fn installed(tool: &str) -> bool {
    std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file())).unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (the listener is dropped; the window for a
/// clash is small and the bench only uses loopback).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listened on 127.0.0.1:{port} within {limit:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_command_is_measured() {
        let (t, u) = run_measured("true", &mut Command::new("true"), Duration::from_secs(10)).unwrap();
        assert!(t < Duration::from_secs(10));
        assert!(u.peak_rss_mib > 0.0);
        assert!(run_measured("false", &mut Command::new("false"), Duration::from_secs(10)).is_err());
    }

    #[test]
    fn our_own_process_has_figures() {
        let me = std::process::id();
        assert!(peak_rss_mib(me).unwrap() > 0.0);
        assert!(cpu_seconds(me).is_some());
    }
}
