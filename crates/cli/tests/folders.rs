//! Shared folders end to end.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use common::*;

/// Every regular file under `root`, by relative path, with its bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(root).unwrap().to_owned(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Acceptance: a folder with nested directories, an empty file and a
/// non-ASCII name round-trips byte for byte, and each file in it is
/// searchable on its own.
#[test]
fn a_folder_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("holiday");
    std::fs::create_dir_all(folder.join("day 1/morning")).unwrap();
    std::fs::create_dir_all(folder.join("été")).unwrap();
    random_file(&folder.join("day 1/morning/beach.jpg"), 300_000, 1);
    std::fs::write(folder.join("day 1/empty.txt"), b"").unwrap();
    std::fs::write(folder.join("été/naïve ☃.txt"), "crème brûlée".as_bytes()).unwrap();
    random_file(&folder.join("top.bin"), 70_000, 2);

    let host = Daemon::host("root", &tmp.path().join("root"), &[]);
    let out = host.ok(&["share", folder.to_str().unwrap()]);
    assert!(out.contains("holiday"), "{out}");
    let guest = Daemon::peer("guest", &tmp.path().join("guest"), &host.ticket, &[]);

    // Each file is searchable on its own, and the folder as a whole.
    assert_eq!(search(&guest, "naïve").len(), 1);
    assert_eq!(search(&guest, "beach")[0]["kind"], "file");
    let folder_hit = search(&guest, "holiday");
    assert_eq!(folder_hit.len(), 1);
    assert_eq!(folder_hit[0]["kind"], "folder");

    let saved = guest.json(&["get", "holiday"]);
    let path = PathBuf::from(saved["path"].as_str().unwrap());
    assert_eq!(path, std::fs::canonicalize(guest.downloads()).unwrap().join("holiday"));
    assert_eq!(tree(&path), tree(&folder), "the tree round-trips byte for byte");
    assert!(path.join("day 1/empty.txt").exists(), "the empty file is there");

    // Getting it again never overwrites: a second copy appears beside it.
    let again = guest.json(&["get", "holiday"]);
    assert!(again["path"].as_str().unwrap().ends_with("holiday (1)"));
    // And the guest is now a provider of the folder too.
    let hits = search(&host, "holiday");
    let folder = hits.iter().find(|h| h["kind"] == "folder").expect("the folder is found");
    let providers: Vec<&str> = folder["providers"].as_array().unwrap().iter().map(|p| p["peer"]["nickname"].as_str().unwrap()).collect();
    assert!(providers.contains(&"guest") && providers.contains(&"root"), "{providers:?}");
}

/// Acceptance: a crafted collection whose names contain `../` or absolute
/// paths writes nothing outside the target. The crafted folder is served by
/// a provider the test runs itself, registered at a real index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_folder_cannot_escape() {
    use iroh_blobs::{format::collection::Collection, store::mem::MemStore, BlobsProtocol};
    use peernet_proto::{
        index::{FileEntry, Kind},
        ticket::Ticket,
    };

    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().to_owned();
    let index_dir = tmp_path.join("index");
    let index = tokio::task::spawn_blocking(move || Daemon::index(&index_dir)).await.unwrap();
    let ticket: Ticket = index.ticket.parse().unwrap();

    // A provider with a hand-made collection.
    let store = MemStore::new();
    let mut names = Vec::new();
    for (name, body) in [
        ("../escaped.txt", "up one"),
        ("/tmp/peernet-absolute-escape.txt", "absolute"),
        ("ok/../../escaped2.txt", "sneaky"),
        ("fine/inner.txt", "fine"),
    ] {
        let tag = store.blobs().add_slice(body.as_bytes()).temp_tag().await.unwrap();
        names.push((name.to_string(), tag.hash()));
        std::mem::forget(tag);
    }
    let collection = Collection::from_iter(names).store(&store).await.unwrap();
    let (ep, lookup, admission) = member_endpoint(vec![iroh_blobs::ALPN.to_vec()], ticket.network_key).await;
    let router = iroh::protocol::Router::builder(ep.clone())
        .accept(peernet_proto::admission::ALPN, admission.protocol())
        .accept(iroh_blobs::ALPN, BlobsProtocol::new(&store, None))
        .spawn();
    // Advertised with its true size (what its entries hold): a folder that
    // lies about its size is refused before anything is fetched.
    let size = ["up one", "absolute", "sneaky", "fine"].iter().map(|b| b.len() as u64).sum();
    let entry = FileEntry { name: "crafted".into(), size, hash: collection.hash(), kind: Kind::Folder };
    publish_as(&ep, &lookup, &ticket, "mallory", entry).await;

    let guest_dir = tmp_path.join("guest");
    let ticket_text = index.ticket.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let guest = Daemon::peer("guest", &guest_dir, &ticket_text, &[]);
        let saved = guest.json(&["get", "crafted"]);
        (saved, guest)
    })
    .await
    .unwrap();
    let (saved, guest) = saved;
    let root = PathBuf::from(saved["path"].as_str().unwrap());
    assert_eq!(tree(&root).into_keys().collect::<Vec<_>>(), [PathBuf::from("fine/inner.txt")]);
    let note = saved["note"].as_str().unwrap();
    assert!(note.contains("skipped 3 entries"), "the user is told: {note}");
    // Nothing appeared outside the target.
    assert!(!guest.downloads().join("escaped.txt").exists());
    assert!(!tmp_path.join("escaped.txt").exists() && !tmp_path.join("escaped2.txt").exists());
    assert!(!Path::new("/tmp/peernet-absolute-escape.txt").exists());
    tokio::time::timeout(Duration::from_secs(10), router.shutdown()).await.ok();
    admission.detach();
    drop(guest);
    drop(index);
}
