//! A headless Chromium driven over the W3C WebDriver protocol (through
//! Debian's chromedriver), and a plain HTTP client for the guard tests.
//! The WebDriver commands a test needs are few (open a page, run a script,
//! click, type, screenshot), so they are spoken here directly, over the
//! HTTP client the CLI already uses.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{json, Value};

use super::{wait_until, PATIENCE};

/// Where Debian puts them (`apt-get install chromium chromium-driver`);
/// PEERNET_CHROMIUM and PEERNET_CHROMEDRIVER name others.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver name of an element in JSON answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Blocking HTTP on a small runtime of its own.
pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Default for Http {
    fn default() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { rt, client }
    }
}

impl Http {
    /// Sends `method url` with `headers` (and a JSON body if given);
    /// returns the status, the response headers and the body.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        self.rt.block_on(async {
            let mut req = self.client.request(method.parse().unwrap(), url).timeout(Duration::from_secs(60));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            (status, headers, resp.text().await.unwrap_or_default())
        })
    }
}

/// A headless Chromium session; the browser and its driver are killed
/// when it is dropped.
pub struct Browser {
    http: Http,
    base: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Whether this machine can run the browser tests; prints why not. On CI
/// (CI=true) a missing browser is a failure: `.ci/run` installs it.
pub fn available() -> bool {
    let (chromium, driver) = paths();
    if chromium.exists() && driver.exists() {
        return true;
    }
    let why =
        format!("needs {} and {} (apt-get install chromium chromium-driver; .ci/run installs them)", chromium.display(), driver.display());
    assert!(std::env::var("CI").is_err(), "browser tests {why}");
    eprintln!("SKIPPED: browser test {why}");
    false
}

fn paths() -> (PathBuf, PathBuf) {
    let chromium = std::env::var_os("PEERNET_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| CHROMIUM.into());
    let driver = std::env::var_os("PEERNET_CHROMEDRIVER").map(PathBuf::from).unwrap_or_else(|| CHROMEDRIVER.into());
    (chromium, driver)
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile,
    /// in a `width` x `height` window.
    pub fn start(width: u32, height: u32) -> Browser {
        let (chromium, driver_bin) = paths();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser { http: Http::default(), base: format!("http://127.0.0.1:{port}"), driver, _profile: profile };
        wait_until(PATIENCE, "chromedriver to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        // The machine's network is closed: Chromium's background
        // connections would only fail (and slow it down).
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--window-size={width},{height}"),
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let answer = browser.call("POST", "/session", Some(&caps));
        let id = answer["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {answer}")).to_string();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    /// One WebDriver command; panics with the driver's message on error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, _, text) = self.http.send(method, &format!("{}{path}", self.base), &[], body);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(status < 400, "WebDriver {method} {path} answered {status}: {text}");
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({"url": url})));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the
    /// page and returns what it returns.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.call("POST", "/execute/sync", Some(&json!({"script": script, "args": args})))
    }

    fn element(&self, css: &str) -> String {
        let v = self.call("POST", "/element", Some(&json!({"using": "css selector", "value": css})));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    /// Clicks the element `css` as a user would.
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), Some(&json!({})));
    }

    /// Types `text` into the element `css` as a user would.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/clear"), Some(&json!({})));
        self.call("POST", &format!("/element/{id}/value"), Some(&json!({"text": text})));
    }

    /// How many elements match `css` now.
    pub fn count(&self, css: &str) -> usize {
        self.exec("return document.querySelectorAll(arguments[0]).length", json!([css])).as_u64().unwrap_or(0) as usize
    }

    /// The text of every element matching `css`.
    pub fn texts(&self, css: &str) -> Vec<String> {
        let v = self.exec("return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent)", json!([css]));
        v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap_or("").to_string()).collect()).unwrap_or_default()
    }

    /// Saves a PNG of the window.
    pub fn screenshot(&self, path: &Path) {
        use data_encoding::BASE64;
        let v = self.call("GET", "/screenshot", None);
        let png = BASE64.decode(v.as_str().expect("a screenshot").as_bytes()).expect("base64 PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    pub fn resize(&self, width: u32, height: u32) {
        self.call("POST", "/window/rect", Some(&json!({"width": width, "height": height})));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium; then the driver, by its PID.
        let _ = self.http.send("DELETE", &self.base, &[], None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
