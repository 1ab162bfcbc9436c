//! The control server's guard, from outside, against a real daemon: no
//! page or API answers without the token or a session cookie; a foreign
//! Host or Origin is refused even with them; a GET changes nothing; a
//! login link works once; two daemons' cookies have different names.

mod common;

use common::{browser::Http, *};
use serde_json::{json, Value};

struct Control {
    base: String,
    host: String,
    token: String,
}

fn control(d: &Daemon) -> Control {
    let info = d.control_json();
    let addr = info["addr"].as_str().unwrap().to_string();
    Control { base: format!("http://{addr}"), host: addr, token: info["token"].as_str().unwrap().to_string() }
}

/// Every path the server answers, pages and API, but the login page's
/// own (public, and holding no data).
const GETS: [&str; 13] = [
    "/",
    "/index.html",
    "/app.js",
    "/vendor/force-graph.min.js",
    "/v1/status",
    "/v1/ls",
    "/v1/search?q=a",
    "/v1/online",
    "/v1/who",
    "/v1/messages",
    "/v1/topo",
    "/v1/events",
    "/nowhere",
];
const POSTS: [&str; 12] = [
    "/v1/share",
    "/v1/unshare",
    "/v1/get",
    "/v1/down",
    "/v1/say",
    "/v1/nick",
    "/v1/stop-network",
    "/v1/ui/link",
    "/v1/logout",
    "/v1/downloads",
    "/v1/events",
    "/",
];

#[test]
fn nothing_answers_without_credentials_or_from_a_foreign_site() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::host("guarded", &dir.path().join("a"), &[]);
    let c = control(&d);
    let http = Http::default();
    let secret = d.id();

    for path in GETS {
        let (status, _, body) = http.send("GET", &format!("{}{path}", c.base), &[("accept", "text/html")], None);
        assert_eq!(status, 401, "GET {path} without credentials: {body}");
        assert!(!body.contains(&secret) && !body.contains("peernet2"), "GET {path} leaked: {body}");
    }
    for path in ["/login", "/login.js", "/app.css", "/favicon.svg"] {
        let (status, _, body) = http.send("GET", &format!("{}{path}", c.base), &[], None);
        assert_eq!(status, 200, "the login page's {path} is public");
        assert!(!body.contains(&secret) && !body.contains("peernet2"), "GET {path} leaked: {body}");
    }
    for path in POSTS {
        let (status, _, body) = http.send("POST", &format!("{}{path}", c.base), &[], Some(&json!({"text": "x", "path": "/etc"})));
        assert_eq!(status, 401, "POST {path} without credentials: {body}");
        assert!(body.contains("peernet ui"), "the refusal says what to do: {body}");
    }
    let bearer = format!("Bearer {}", c.token);
    let wrong = format!("Bearer {}0", c.token);
    let (status, _, _) = http.send("GET", &format!("{}/v1/status", c.base), &[("authorization", &wrong)], None);
    assert_eq!(status, 401, "a wrong token");
    let (status, _, body) = http.send("GET", &format!("{}/v1/status", c.base), &[("authorization", &bearer)], None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&secret));

    // A foreign Host (DNS rebinding) or Origin (another site) is refused even with the token.
    let port = c.host.rsplit_once(':').unwrap().1;
    let rebound = format!("attacker.example:{port}");
    for (what, headers) in [
        ("foreign Host", vec![("authorization", bearer.as_str()), ("host", rebound.as_str())]),
        ("foreign Origin", vec![("authorization", bearer.as_str()), ("origin", "http://attacker.example")]),
        ("null Origin", vec![("authorization", bearer.as_str()), ("origin", "null")]),
        ("cross-site fetch", vec![("authorization", bearer.as_str()), ("sec-fetch-site", "cross-site")]),
        ("a page on another port", vec![("authorization", bearer.as_str()), ("sec-fetch-site", "same-site")]),
    ] {
        let (status, _, body) = http.send("GET", &format!("{}/v1/status", c.base), &headers, None);
        assert_eq!(status, 403, "{what}: {body}");
        assert!(!body.contains(&secret), "{what} leaked: {body}");
        let (status, _, _) = http.send("POST", &format!("{}/v1/say", c.base), &headers, Some(&json!({"text": "forged"})));
        assert_eq!(status, 403, "{what} POST");
    }

    // A GET changes nothing: every state-changing route is POST only.
    let file = dir.path().join("secret.txt");
    std::fs::write(&file, b"private").unwrap();
    let auth = [("authorization", bearer.as_str())];
    for path in [
        format!("/v1/share?path={}", file.display()),
        "/v1/say?text=forged".to_string(),
        "/v1/nick?nickname=forged".to_string(),
        "/v1/down".to_string(),
        "/v1/stop-network".to_string(),
        "/v1/downloads?target=abc".to_string(),
        "/v1/ui/link".to_string(),
        "/v1/logout".to_string(),
    ] {
        let (status, _, _) = http.send("GET", &format!("{}{path}", c.base), &auth, None);
        assert_eq!(status, 405, "GET {path} is not allowed");
    }
    assert_eq!(d.json(&["ls"]).as_array().unwrap().len(), 0, "nothing was shared by a GET");
    assert!(d.json(&["messages"]).as_array().unwrap().is_empty(), "nothing was said by a GET");
    assert_eq!(d.json(&["status"])["nickname"], "guarded", "no rename by a GET");

    // A login link works once, and only by POST from this server's page.
    let link = d.json(&["ui", "--no-open"]);
    let url = link["url"].as_str().unwrap();
    let token = url.split_once('#').unwrap().1;
    let origin = format!("http://{}", c.host);
    let (status, _, _) = http.send("GET", &format!("{}/login?token={token}", c.base), &[], None);
    assert_eq!(status, 200, "the login page itself is public (and holds no data)");
    let (status, _, _) =
        http.send("POST", &format!("{}/login", c.base), &[("origin", "http://attacker.example")], Some(&json!({"token": token})));
    assert_eq!(status, 403, "a login from another site");
    let (status, headers, body) = http.send("POST", &format!("{}/login", c.base), &[("origin", &origin)], Some(&json!({"token": token})));
    assert_eq!(status, 200, "{body}");
    let key = serde_json::from_str::<Value>(&body).unwrap()["key"].as_str().unwrap().to_string();
    let set_cookie = headers["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie_name = format!("peernet-{}", &secret[..10]);
    assert!(set_cookie.starts_with(&format!("{cookie_name}=")), "the cookie is named for this daemon: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let (status, _, _) = http.send("POST", &format!("{}/login", c.base), &[("origin", &origin)], Some(&json!({"token": token})));
    assert_eq!(status, 401, "a login link works once");

    // With the cookie: the page's files. The API needs the page's key too:
    // a page served on another port of this machine gets our cookie from
    // the browser, but cannot read the key our page keeps.
    let (status, _, body) = http.send("GET", &format!("{}/", c.base), &[("cookie", &cookie)], None);
    assert_eq!(status, 200);
    assert!(body.contains("force-graph.min.js"), "the page itself");
    for path in ["/v1/status", "/v1/events", "/v1/messages"] {
        let (status, _, body) = http.send("GET", &format!("{}{path}", c.base), &[("cookie", &cookie)], None);
        assert_eq!(status, 401, "the cookie alone reads nothing: {path}");
        assert!(!body.contains(&secret), "{body}");
    }
    let (status, _, _) = http.send("GET", &format!("{}/v1/status", c.base), &[("cookie", &cookie), ("x-peernet-key", &key)], None);
    assert_eq!(status, 200);
    let page = [("cookie", cookie.as_str()), ("x-peernet-key", key.as_str())];
    let (status, _, _) = http.send("POST", &format!("{}/v1/say", c.base), &page, Some(&json!({"text": "no origin"})));
    assert_eq!(status, 403, "a cookie POST without Origin (a forged form from an old browser)");
    let page_post = [page[0], page[1], ("origin", origin.as_str())];
    let (status, _, _) = http.send("POST", &format!("{}/v1/say", c.base), &page_post, Some(&json!({"text": "from the page"})));
    assert_eq!(status, 200);
    let (status, _, _) = http.send("POST", &format!("{}/v1/say", c.base), &page_post[..2], Some(&json!({"text": "x"})));
    assert_eq!(status, 403);
    let (status, _, _) = http.send("POST", &format!("{}/v1/ui/link", c.base), &page_post, Some(&json!({})));
    assert_eq!(status, 403, "a browser session cannot make login links");

    // Another daemon on this machine: another cookie name, and this cookie does not open it.
    let e = Daemon::host("other", &dir.path().join("b"), &[]);
    let c2 = control(&e);
    let (status, _, _) = http.send("GET", &format!("{}/v1/status", c2.base), &[("cookie", &cookie)], None);
    assert_eq!(status, 401, "one daemon's session is not another's");
    let link = e.json(&["ui", "--no-open"]);
    let token = link["url"].as_str().unwrap().split_once('#').unwrap().1.to_string();
    let origin2 = format!("http://{}", c2.host);
    let (_, headers, _) = http.send("POST", &format!("{}/login", c2.base), &[("origin", &origin2)], Some(&json!({"token": token})));
    let other_cookie = headers["set-cookie"].to_str().unwrap().split('=').next().unwrap().to_string();
    assert_ne!(other_cookie, cookie_name, "each daemon names its cookie");

    // Logging out ends the session.
    let (status, _, _) = http.send("POST", &format!("{}/v1/logout", c.base), &page_post, Some(&json!({})));
    assert_eq!(status, 204);
    let (status, _, _) = http.send("GET", &format!("{}/v1/status", c.base), &page, None);
    assert_eq!(status, 401, "logged out");
    assert!(d.cli(&["status"]).status.success(), "the daemon kept serving throughout");
}

/// `peernet ui` opens the browser ($BROWSER here, a script that records
/// what it was given) with a file that only its owner can read and that
/// redirects to the link: the token never appears in a program's
/// arguments, which every user of the machine can read.
#[cfg(unix)]
#[test]
fn the_browser_gets_the_link_through_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::host("opener", &dir.path().join("a"), &[]);
    let seen = dir.path().join("browser-args");
    let browser = dir.path().join("browser.sh");
    std::fs::write(&browser, format!("#!/bin/sh\necho \"$@\" > {}\n", seen.display())).unwrap();
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = std::process::Command::new(BIN).args(["ui"]).env("PEERNET_DATA_DIR", &d.data_dir).env("BROWSER", &browser).output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("opened the web interface"), "{printed}");
    let url = printed.lines().find(|l| l.starts_with("http://")).expect("the link is printed too").to_string();
    wait_until(PATIENCE, "the browser to be started", || seen.exists() && !std::fs::read_to_string(&seen).unwrap().is_empty());
    let args = std::fs::read_to_string(&seen).unwrap();
    let token = url.split_once('#').unwrap().1;
    assert!(!args.contains(token), "the token is not in the browser's arguments: {args}");
    let file = std::path::PathBuf::from(args.trim());
    assert!(file.starts_with(&d.data_dir), "the redirect file is in the data directory: {args}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&file).unwrap().contains(&url), "the file redirects to the link");
}
