//! The web interface in a real headless Chromium against real daemons:
//! the live map (a sixth peer appears, a killed one disappears, no
//! reload), the chat both ways, and a search and get with a moving
//! progress bar that ends with the file byte-identical. Screenshots of
//! each panel go to `target/tmp/web_ui/`.

mod common;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{browser::Browser, *};
use serde_json::json;

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web_ui")
}

/// Logs `browser` in to `d`'s page with a fresh one-time link.
fn log_in(browser: &Browser, d: &Daemon) {
    let link = d.json(&["ui", "--no-open"]);
    browser.goto(link["url"].as_str().unwrap());
    wait_until(PATIENCE, "the login page to lead to the interface", || {
        browser.exec("return location.pathname", json!([])) == "/" && browser.count("#panel-map") == 1
    });
}

/// The node ids on the page's map list.
fn page_nodes(b: &Browser) -> Vec<String> {
    let v = b.exec("return Array.from(document.querySelectorAll('#map-nodes li'), e => e.dataset.nodeId)", json!([]));
    let mut ids: Vec<String> = v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

/// The links on the page's map list, as (a, b) pairs.
fn page_links(b: &Browser) -> Vec<(String, String)> {
    let v = b.exec("return Array.from(document.querySelectorAll('#map-links li'), e => [e.dataset.a, e.dataset.b])", json!([]));
    v.as_array().unwrap().iter().map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string())).collect()
}

#[test]
fn the_page_shows_the_live_network_chats_and_downloads() {
    if !browser::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // n3 serves slowly (6 MB/s), so the progress bar has time to move.
    let mut peers = vec![Daemon::host("n0", &dir.path().join("n0"), &[])];
    for i in 1..5 {
        let extra: &[&str] = if i == 3 { &["--upload-limit", "6MB"] } else { &[] };
        peers.push(Daemon::peer(&format!("n{i}"), &dir.path().join(format!("n{i}")), &peers[0].ticket.clone(), extra));
    }
    let me = &peers[1];
    let browser = Browser::start(1366, 860);
    log_in(&browser, me);

    // The map: 5 peers, linked into one network.
    let mut ids: Vec<String> = peers.iter().map(Daemon::id).collect();
    ids.sort();
    wait_until(PATIENCE, "the page's map to show the 5 peers, linked", || {
        let links = page_links(&browser);
        page_nodes(&browser) == ids && ids.iter().all(|id| links.iter().any(|(a, b)| a == id || b == id))
    });
    assert_eq!(browser.count("#map-nodes li[data-root='true']"), 1, "the root is marked");
    assert_eq!(browser.count("#map-nodes li[data-self='true']"), 1, "this peer is marked");
    browser.screenshot(&shots().join("map.png"));

    // A sixth peer appears without a reload (a reload would lose the marker).
    browser.exec("window.peernetNoReload = 42", json!([]));
    let mut sixth = Daemon::peer("n5", &dir.path().join("n5"), &peers[0].ticket, &[]);
    let joined = Instant::now();
    let sixth_id = sixth.id();
    wait_until(PATIENCE, "the sixth peer on the page", || page_nodes(&browser).contains(&sixth_id));
    let appeared = joined.elapsed();
    println!("a new peer appeared on the page {} ms after it joined", appeared.as_millis());
    assert!(appeared <= Duration::from_secs(5), "the new peer took {appeared:?} to appear (at most 5 s)");
    assert_eq!(browser.exec("return window.peernetNoReload", json!([])), 42, "the page was not reloaded");

    // A killed peer disappears once its lease runs out.
    sixth.kill9();
    let killed = Instant::now();
    wait_until(PATIENCE, "the killed peer to leave the page", || !page_nodes(&browser).contains(&sixth_id));
    let gone = killed.elapsed();
    println!("a killed peer left the page {} ms after it died (lease {LEASE_TTL})", gone.as_millis());
    assert!(gone <= LEASE_TTL_DURATION + Duration::from_secs(3), "the dead peer stayed {gone:?}, beyond its lease");

    // Chat: a line typed in the page reaches another peer...
    browser.click("#tab-chat");
    browser.type_into("#chat-input", "hello from the browser");
    browser.click("#chat-form button[type='submit']");
    let other = &peers[2];
    wait_until(PATIENCE, "the page's line at another peer", || texts_from(other, &me.id()).contains(&"hello from the browser".to_string()));
    // ...and a line said elsewhere appears in the page.
    other.ok(&["say", "hello to the browser"]);
    let said = Instant::now();
    wait_until(PATIENCE, "another peer's line in the page", || {
        browser.texts("#chat-log li.msg").iter().any(|t| t.contains("hello to the browser"))
    });
    let shown = said.elapsed();
    println!("a chat line appeared in the page {} ms after `say` returned", shown.as_millis());
    assert!(shown <= Duration::from_secs(2), "the chat line took {shown:?} (at most 2 s)");
    let line = browser.texts("#chat-log li.msg").into_iter().find(|t| t.contains("hello to the browser")).unwrap();
    assert!(line.contains(&other.id()[..10]), "names carry the short id: {line}");
    browser.screenshot(&shots().join("chat.png"));

    // Files: search finds another peer's 30 MB file; the get's progress
    // bar moves and the file arrives byte-identical.
    let provider = &peers[3];
    let file = dir.path().join("holiday-video.bin");
    random_file(&file, 30 * 1024 * 1024, 12);
    provider.ok(&["share", file.to_str().unwrap()]);
    browser.click("#tab-files");
    browser.type_into("#search-input", "holiday");
    browser.click("#search-form button[type='submit']");
    wait_until(PATIENCE, "the search result in the page", || browser.count("#search-results li[data-hash] button.get") >= 1);
    browser.screenshot(&shots().join("search.png"));
    browser.click("#search-results li[data-hash] button.get");
    let mut seen = std::collections::BTreeSet::new();
    wait_until(PATIENCE, "the download to be saved", || {
        let v = browser.exec(
            "const p = document.querySelector('#downloads li progress'); const li = document.querySelector('#downloads li');\
             return p && li ? [p.value, p.max, li.dataset.state] : null",
            json!([]),
        );
        if let Some(a) = v.as_array() {
            seen.insert(a[0].as_f64().unwrap_or(0.0) as u64);
            if seen.len() == 3 {
                browser.screenshot(&shots().join("download.png"));
            }
            return a[2] == "saved";
        }
        false
    });
    println!("the progress bar showed {} different values", seen.len());
    assert!(seen.iter().filter(|v| **v > 0 && **v < 30 * 1024 * 1024).count() >= 2, "the bar moved: {seen:?}");
    let saved = me.downloads().join("holiday-video.bin");
    assert!(same_bytes(&file, &saved), "the file saved from the page is byte-identical");
    browser.screenshot(&shots().join("files.png"));

    // Share a path from the page, then unshare it.
    let notes = dir.path().join("meeting-notes.txt");
    std::fs::write(&notes, b"agenda: the web interface").unwrap();
    browser.type_into("#share-path", notes.to_str().unwrap());
    browser.click("#share-form button[type='submit']");
    let shared_hash = || {
        me.json(&["ls"])
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "meeting-notes.txt")
            .map(|s| s["hash"].as_str().unwrap().to_string())
    };
    wait_until(PATIENCE, "the page's share to reach the daemon", || shared_hash().is_some());
    let hash = shared_hash().unwrap();
    let row = format!("#shares li[data-hash='{hash}'] button.unshare");
    wait_until(PATIENCE, "the share listed in the page", || browser.count(&row) == 1);
    browser.click(&row);
    wait_until(PATIENCE, "the unshare to reach the daemon and the page", || shared_hash().is_none() && browser.count(&row) == 0);

    browser.click("#tab-status");
    wait_until(PATIENCE, "the status panel", || browser.texts("#ticket").first().is_some_and(|t| t.starts_with("peernet2")));
    // The layers, as `status` words them: this peer runs no DHT node.
    assert!(browser.texts("#status-dht").first().is_some_and(|t| t.starts_with("off")), "{:?}", browser.texts("#status-dht"));
    browser.screenshot(&shots().join("status.png"));

    // A phone-sized window: one panel at a time, nothing wider than it.
    browser.resize(390, 844);
    browser.click("#tab-map");
    let width = browser.exec("return document.documentElement.scrollWidth", json!([])).as_u64().unwrap();
    browser.screenshot(&shots().join("phone-map.png"));
    browser.click("#tab-chat");
    browser.screenshot(&shots().join("phone-chat.png"));
    let viewport = browser.exec("return window.innerWidth", json!([])).as_u64().unwrap();
    assert!(width <= viewport, "the page scrolls sideways on a phone: {width} > {viewport}");
    println!("screenshots in {}", shots().display());
}
