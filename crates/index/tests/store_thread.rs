//! The index's store thread ends with the service: dropping the service
//! joins it. (Its own test binary: no other test's threads are counted.)

use peernet_index::{store::Store, Config, Service};
use peernet_proto::{index::Request, key::NetworkKey};

/// Threads of this process named like the store thread.
fn store_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.trim() == "index-store")
                .count()
        })
        .unwrap_or(0)
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
    // An answer comes from the store thread, so by then it is running and named.
    service.handle(me, Request::Online { page: 0 }, 0);
    assert_eq!(store_threads(), 1, "the service runs one store thread");
    drop(service);
    assert_eq!(store_threads(), 0, "dropping the service ended and joined it");
}
