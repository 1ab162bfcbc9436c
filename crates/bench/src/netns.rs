//! Test hosts for the swarm bench: network namespaces joined by a bridge,
//! each provider's upload limited with `tc`. Everything is removed on drop.

use std::process::Command;

use anyhow::bail;

/// A hub namespace holding a bridge, and one namespace per host on it.
pub struct Lan {
    pub hub: String,
    pub hosts: Vec<String>,
}

/// The hub's address; host `i` (from 0) is 10.99.0.(10 + i).
pub const HUB_IP: &str = "10.99.0.1";

pub fn host_ip(i: usize) -> String {
    format!("10.99.0.{}", 10 + i)
}

/// Why the swarm bench cannot build its hosts here, if it cannot.
pub fn unavailable() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to create network namespaces (run the bench as root)".into());
    }
    for tool in ["ip", "tc"] {
        if !crate::procs::installed(tool) {
            return Some(format!("`{tool}` (iproute2) is not installed"));
        }
    }
    None
}

impl Lan {
    /// `hosts` namespaces, each with a link to the hub whose upload is
    /// limited to `rate` (tc syntax, such as `200mbit`).
    pub fn new(hosts: usize, rate: &str) -> anyhow::Result<Lan> {
        let tag = std::process::id();
        let lan = Lan { hub: format!("pnb{tag}hub"), hosts: (0..hosts).map(|i| format!("pnb{tag}h{i}")).collect() };
        ip(&["netns", "add", &lan.hub])?;
        ip(&["-n", &lan.hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &lan.hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lan.hub, "addr", "add", &format!("{HUB_IP}/24"), "dev", "br0"])?;
        ip(&["-n", &lan.hub, "link", "set", "br0", "up"])?;
        for (i, ns) in lan.hosts.iter().enumerate() {
            let port = format!("v{i}");
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &lan.hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
            ip(&["-n", &lan.hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &lan.hub, "link", "set", &port, "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{}/24", host_ip(i)), "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            run("tc", &["-n", ns, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "256kb", "latency", "100ms"])?;
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.hub)) {
            ip(&["netns", "del", ns]).ok();
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

fn run(tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(tool).args(args).output()?;
    if !out.status.success() {
        bail!("`{tool} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
