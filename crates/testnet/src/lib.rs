//! Test hosts in network namespaces for peernet's tests and benches:
//! segments on bridges, home routers with real NAT (iptables masquerade),
//! and links made slow and lossy ([`SlowLink`]). Needs root and `ip` and
//! `iptables`; [`unavailable`] says why not, and the tests then print that
//! they skipped. Every namespace is deleted on drop (after the daemons
//! inside it, which are declared later and so dropped first).

pub mod slow_link;

use std::process::Command;

pub use slow_link::SlowLink;

/// Why namespace tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to create network namespaces".into());
    }
    for tool in ["ip", "iptables"] {
        let found = Command::new(tool).arg("-V").output().map(|o| o.status.success()).unwrap_or(false);
        if !found {
            return Some(format!("`{tool}` is not installed (apt-get install iproute2 iptables)"));
        }
    }
    None
}

/// Whether `test` must skip, saying so visibly: `if skip("x") { return; }`.
pub fn skip(test: &str) -> bool {
    match unavailable() {
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            println!("SKIPPED {test}: {why}");
            true
        }
        None => false,
    }
}

/// A set of namespaces made by one test.
pub struct Hosts {
    prefix: String,
    made: Vec<String>,
}

impl Hosts {
    /// `tag` keeps concurrent tests apart; the process id keeps runs apart.
    pub fn new(tag: &str) -> Hosts {
        Hosts { prefix: format!("pn{}{tag}", std::process::id()), made: Vec::new() }
    }

    /// A new namespace with loopback up; returns its full name.
    pub fn add(&mut self, name: &str) -> String {
        let ns = format!("{}{name}", self.prefix);
        run("ip", &["netns", "add", &ns]);
        self.made.push(ns.clone());
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A veth pair from `a` (interface `a_if`, address `a_addr`) to `b`.
    pub fn link(&self, a: &str, a_if: &str, a_addr: Option<&str>, b: &str, b_if: &str, b_addr: Option<&str>) {
        run("ip", &["-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b]);
        for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
            if let Some(addr) = addr {
                run("ip", &["-n", ns, "addr", "add", addr, "dev", ifname]);
            }
            run("ip", &["-n", ns, "link", "set", ifname, "up"]);
        }
    }

    /// A bridge `br0` in `ns` with address `addr`.
    pub fn bridge(&self, ns: &str, addr: &str) {
        run("ip", &["-n", ns, "link", "add", "br0", "type", "bridge"]);
        run("ip", &["-n", ns, "addr", "add", addr, "dev", "br0"]);
        run("ip", &["-n", ns, "link", "set", "br0", "up"]);
    }

    /// Host `host` on the bridge of `hub`, at `addr` (CIDR), with its
    /// default route through `gateway`.
    pub fn on_bridge(&self, hub: &str, port: &str, host: &str, addr: &str, gateway: &str) {
        self.link(hub, port, None, host, "eth0", Some(addr));
        run("ip", &["-n", hub, "link", "set", port, "master", "br0"]);
        run("ip", &["-n", host, "route", "add", "default", "via", gateway]);
    }

    /// One LAN segment: a hub with a bridge at `subnet`.1 and `count` hosts
    /// on it, `h0`, `h1`, … at `subnet`.11, .12, …, each with its default
    /// route through the hub (so that mDNS can join its multicast group).
    /// `subnet` is the first three octets, `"10.10.0"`. Returns the hosts.
    pub fn segment(&mut self, subnet: &str, count: usize) -> Vec<String> {
        let hub = self.add("hub");
        self.bridge(&hub, &format!("{subnet}.1/24"));
        (0..count)
            .map(|i| {
                let host = self.add(&format!("h{i}"));
                self.on_bridge(&hub, &format!("v{i}"), &host, &format!("{subnet}.{}/24", 11 + i), &format!("{subnet}.1"));
                host
            })
            .collect()
    }

    /// A command inside `ns`; panics when it fails.
    pub fn exec(&self, ns: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", ns];
        all.extend_from_slice(args);
        run("ip", &all);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            Command::new("ip").args(["netns", "del", ns]).output().ok();
        }
    }
}

/// Moves the calling thread into namespace `ns`: the sockets it opens from
/// then on are that host's. For a test's own endpoint on a host that only
/// the test's daemons reach; run it on a thread of its own (with its own
/// runtime), since the rest of the process stays where it was.
pub fn enter(ns: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
    // SAFETY: setns on a file descriptor we own, for this thread only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A home router: namespace `router` forwards to its WAN side `wan_if`,
/// masquerading (the NAT of a home router: a LAN host keeps its port
/// towards every destination, and only answers to what it sent get in),
/// and its firewall drops whatever arrives unasked for the router itself.
/// Without that drop, a peer's early hole-punching probe would leave a
/// conntrack entry on the router that makes the NAT give the reply of the
/// host behind it another port, and the two holes would never meet.
pub fn nat_router(hosts: &Hosts, router: &str, wan_if: &str) {
    hosts.exec(router, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    hosts.exec(router, &["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", wan_if, "-j", "MASQUERADE"]);
    hosts.exec(router, &["iptables", "-A", "INPUT", "-i", wan_if, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]);
}

/// Two homes behind NAT routers, and a public segment holding the root:
///
/// ```text
///   public 198.18.0.1 ── br0 ──┬── 198.18.0.11 router 0 (NAT) 192.168.1.1 ── home 0 192.168.1.10
///                              └── 198.18.0.12 router 1 (NAT) 192.168.2.1 ── home 1 192.168.2.10
/// ```
pub struct NatWorld {
    pub hosts: Hosts,
    /// The namespace of the public segment (the root runs here, at [`NatWorld::PUBLIC_IP`]).
    pub public: String,
    pub routers: [String; 2],
    pub homes: [String; 2],
}

impl NatWorld {
    pub const PUBLIC_IP: &'static str = "198.18.0.1";
    /// Each router's public (WAN) address.
    pub const ROUTER_WAN: [&'static str; 2] = ["198.18.0.11", "198.18.0.12"];
    /// Each home host's address behind its router.
    pub const HOME_IP: [&'static str; 2] = ["192.168.1.10", "192.168.2.10"];

    /// Builds it; `tag` keeps concurrent users apart.
    pub fn new(tag: &str) -> NatWorld {
        let mut hosts = Hosts::new(tag);
        let public = hosts.add("pub");
        hosts.bridge(&public, &format!("{}/24", Self::PUBLIC_IP));
        let mut routers = Vec::new();
        let mut homes = Vec::new();
        for (i, wan) in Self::ROUTER_WAN.iter().enumerate() {
            let router = hosts.add(&format!("r{i}"));
            let home = hosts.add(&format!("h{i}"));
            let lan = format!("192.168.{}", i + 1);
            hosts.link(&public, &format!("wan{i}"), None, &router, "wan", Some(&format!("{wan}/24")));
            run("ip", &["-n", &public, "link", "set", &format!("wan{i}"), "master", "br0"]);
            hosts.link(&router, "lan", Some(&format!("{lan}.1/24")), &home, "eth0", Some(&format!("{}/24", Self::HOME_IP[i])));
            run("ip", &["-n", &home, "route", "add", "default", "via", &format!("{lan}.1")]);
            nat_router(&hosts, &router, "wan");
            routers.push(router);
            homes.push(home);
        }
        let pair = |v: Vec<String>| -> [String; 2] { [v[0].clone(), v[1].clone()] };
        NatWorld { hosts, public, routers: pair(routers), homes: pair(homes) }
    }

    /// The routers drop UDP between the two homes (a firewall that defeats
    /// hole punching): only the relay is left between them.
    pub fn block_udp_between_homes(&self) {
        for (i, router) in self.routers.iter().enumerate() {
            let other = Self::ROUTER_WAN[1 - i];
            for dir in ["-d", "-s"] {
                self.hosts.exec(router, &["iptables", "-I", "FORWARD", dir, other, "-p", "udp", "-j", "DROP"]);
            }
        }
    }
}

pub fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    assert!(out.status.success(), "`{tool} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}
