//! The index's store thread ends with the service: dropping the service
//! joins it. (Its own test binary: no other test's
//! threads are counted.)

use std::time::{Duration, Instant};

use peernet_index::{store::Store, Config, Service};
use peernet_proto::{index::Request, key::NetworkKey};

/// Threads of this process named `name`.
fn threads(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok()).filter(|n| n.trim() == name).count())
        .unwrap_or(0)
}

/// Waits until `name` has `count` threads (a thread names itself once it
/// runs), failing after 10 s.
fn wait_for_threads(name: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads(name) != count {
        assert!(Instant::now() < deadline, "{name}: {} threads, expected {count}", threads(name));
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn dropping_the_service_joins_its_store_thread() {
    if !std::path::Path::new("/proc/self/task").exists() {
        println!("skipped: this system has no /proc to count threads in");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let me = iroh::SecretKey::generate().public();
    let service = Service::new(Store::open(&dir.path().join("index.db")).unwrap(), NetworkKey::generate(), me, Config::default());
    service.handle(me, Request::Leave, 0);
    wait_for_threads("index-store", 1);
    drop(service);
    assert_eq!(threads("index-store"), 0, "dropping the service ended and joined its store thread");
}
