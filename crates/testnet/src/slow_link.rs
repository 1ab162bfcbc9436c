//! A slow, lossy link between two namespaces, without `netem` (this kernel
//! has none): each end gets a TUN device, and a delay line in this process
//! carries every packet from one to the other after a fixed one-way delay.
//! Loss comes from iptables' `statistic` match on both ends, and a rate
//! limit, where wanted, from `tc tbf`. The link goes away with the value.

use std::{
    collections::VecDeque,
    fs::File,
    io::{Read, Write},
    os::fd::{AsRawFd, FromRawFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{run, Hosts};

/// How long a blocked read waits before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Packets in flight per direction before new ones are dropped (a queue
/// that long is seconds of traffic at these rates).
const MAX_IN_FLIGHT: usize = 20_000;

/// A point-to-point link `tun0` between namespaces `a` (10.77.0.1) and `b`
/// (10.77.0.2) with `rtt` round-trip time and `loss` (0 to 1) of the
/// packets dropped in each direction.
pub struct SlowLink {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

pub const A_IP: &str = "10.77.0.1";
pub const B_IP: &str = "10.77.0.2";

impl SlowLink {
    pub fn new(hosts: &Hosts, a: &str, b: &str, rtt: Duration, loss: f64) -> SlowLink {
        let ta = tun_in(a);
        let tb = tun_in(b);
        for (ns, ip) in [(a, A_IP), (b, B_IP)] {
            run("ip", &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "tun0"]);
            run("ip", &["-n", ns, "link", "set", "tun0", "up"]);
            if loss > 0.0 {
                let p = format!("{loss}");
                hosts.exec(
                    ns,
                    &["iptables", "-A", "INPUT", "-i", "tun0", "-m", "statistic", "--mode", "random", "--probability", &p, "-j", "DROP"],
                );
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let one_way = rtt / 2;
        let mut threads = Vec::new();
        let (ta2, tb2) = (ta.try_clone().expect("dup tun"), tb.try_clone().expect("dup tun"));
        threads.extend(delay_line(ta, tb2, one_way, stop.clone()));
        threads.extend(delay_line(tb, ta2, one_way, stop.clone()));
        SlowLink { stop, threads }
    }

    /// Limits what `ns` sends over the link to `rate` (tc syntax, `20mbit`).
    pub fn limit_rate(ns: &str, rate: &str) {
        run("tc", &["-n", ns, "qdisc", "add", "dev", "tun0", "root", "tbf", "rate", rate, "burst", "64kb", "latency", "400ms"]);
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().ok();
        }
    }
}

/// Carries packets read from `from` to `to`, each `delay` after it was read.
fn delay_line(mut from: File, mut to: File, delay: Duration, stop: Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(MAX_IN_FLIGHT);
    let reader_stop = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !reader_stop.load(Ordering::SeqCst) {
            if !readable(&from, POLL) {
                continue;
            }
            match from.read(&mut buf) {
                Ok(n) if n > 0 => {
                    // A full queue drops, as a router's would.
                    let _ = tx.try_send((Instant::now() + delay, buf[..n].to_vec()));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let writer = std::thread::spawn(move || {
        let mut due: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
        while !stop.load(Ordering::SeqCst) {
            if due.is_empty() {
                match rx.recv_timeout(POLL) {
                    Ok(p) => due.push_back(p),
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            while let Ok(p) = rx.try_recv() {
                due.push_back(p);
            }
            let Some((at, _)) = due.front() else { continue };
            let wait = at.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait.min(POLL));
                continue;
            }
            let (_, packet) = due.pop_front().expect("front exists");
            if to.write(&packet).is_err() && stop.load(Ordering::SeqCst) {
                break;
            }
        }
    });
    vec![reader, writer]
}

fn readable(f: &File, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

/// Opens a TUN device `tun0` inside namespace `ns` (from a thread that
/// enters it, since entering a namespace is per thread).
fn tun_in(ns: &str) -> File {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let netns = File::open(format!("/var/run/netns/{ns}")).unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
        assert_eq!(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "cannot enter namespace {ns}");
        let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(fd >= 0, "cannot open /dev/net/tun: {}", std::io::Error::last_os_error());
        // struct ifreq: 16 bytes of name, then the flags (a short).
        let mut ifreq = [0u8; 40];
        ifreq[..4].copy_from_slice(b"tun0");
        let flags: libc::c_short = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
        let rc = unsafe { libc::ioctl(fd, libc::TUNSETIFF as _, ifreq.as_mut_ptr()) };
        assert!(rc >= 0, "cannot create tun0 in {ns}: {}", std::io::Error::last_os_error());
        unsafe { File::from_raw_fd(fd) }
    })
    .join()
    .expect("tun thread")
}
