//! Who may use the control server: the CLI with the bearer token from
//! `control.json`, or a browser with the session cookie it got for a
//! one-time login link (`peernet ui`). Every request must also name this
//! server in its Host header, and a browser's Origin must be this server:
//! a web page elsewhere (cross-site requests) or a name that resolves to
//! loopback (DNS rebinding) gets nothing, as Syncthing's GUI does.
//!
//! The checks are pure functions of the request's headers, tested without
//! a socket; [`Guard::check`] is the middleware's whole decision.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::{header, HeaderMap, Method};

/// How long a login link works, and how many may wait unused.
pub const LOGIN_LINK_TTL: Duration = Duration::from_secs(300);
pub const MAX_LOGIN_LINKS: usize = 16;
/// Browser sessions kept; the oldest is logged out beyond this.
pub const MAX_SESSIONS: usize = 64;

/// Paths a browser may load before it has a session: the login page, its
/// script, style and icon (none holds data), and the exchange of a login
/// token for a session.
pub const PUBLIC_PATHS: [&str; 4] = ["/login", "/login.js", "/app.css", "/favicon.svg"];

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The bearer token: the CLI, or whoever can read `control.json`.
    Token,
    /// A browser session cookie.
    Browser,
}

/// Why a request was refused; each is one sentence for the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the Host header does not name this peernet daemon; open the address `peernet ui` prints")]
    ForeignHost,
    #[error("requests from another site are refused; use the page `peernet ui` opens")]
    ForeignOrigin,
    #[error("not logged in: run `peernet ui` for a login link (the CLI uses the token in control.json)")]
    NoCredentials,
}

/// The control server's gatekeeper.
#[derive(Debug)]
pub struct Guard {
    bearer: String,
    /// Unique per daemon: browsers do not separate cookies by port, so two
    /// daemons' pages in one browser must not overwrite each other's.
    cookie_name: String,
    /// The address the server is bound to.
    bound: SocketAddr,
    sessions: Mutex<VecDeque<String>>,
    login_links: Mutex<HashMap<String, Instant>>,
}

impl Guard {
    pub fn new(bearer: String, cookie_name: String, bound: SocketAddr) -> Self {
        Self { bearer, cookie_name, bound, sessions: Default::default(), login_links: Default::default() }
    }

    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// The whole decision for one request: `Ok(None)` for a public path
    /// with good Host and Origin, `Ok(Some(caller))` for a logged-in one.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<Option<Caller>, Refusal> {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !host_is_ours(host, self.bound) {
            return Err(Refusal::ForeignHost);
        }
        let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok());
        let cross_site = headers.get("sec-fetch-site").and_then(|h| h.to_str().ok()) == Some("cross-site");
        if cross_site || origin.is_some_and(|o| o != format!("http://{host}")) {
            return Err(Refusal::ForeignOrigin);
        }
        if PUBLIC_PATHS.contains(&path) {
            return Ok(None);
        }
        let bearer = headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer "));
        if bearer.is_some_and(|b| constant_time_eq(b.as_bytes(), self.bearer.as_bytes())) {
            return Ok(Some(Caller::Token));
        }
        let cookie =
            headers.get_all(header::COOKIE).iter().filter_map(|h| h.to_str().ok()).find_map(|h| cookie_value(h, &self.cookie_name));
        if cookie.is_some_and(|c| self.has_session(c)) {
            // A browser's change of state must say where it comes from:
            // browsers send Origin with every POST, forged forms included.
            if method != Method::GET && origin.is_none() {
                return Err(Refusal::ForeignOrigin);
            }
            return Ok(Some(Caller::Browser));
        }
        Err(Refusal::NoCredentials)
    }

    fn has_session(&self, given: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.iter().any(|s| constant_time_eq(s.as_bytes(), given.as_bytes()))
    }

    /// A new one-time login token, valid for [`LOGIN_LINK_TTL`].
    pub fn new_login_token(&self) -> String {
        let token = random_token();
        let mut links = self.login_links.lock().unwrap_or_else(|e| e.into_inner());
        links.retain(|_, made| made.elapsed() < LOGIN_LINK_TTL);
        if links.len() >= MAX_LOGIN_LINKS {
            // Unused links are cheap to mint again; the oldest goes.
            if let Some(oldest) = links.iter().min_by_key(|(_, made)| **made).map(|(t, _)| t.clone()) {
                links.remove(&oldest);
            }
        }
        links.insert(token.clone(), Instant::now());
        token
    }

    /// Exchanges a login token (once) for a new session id.
    pub fn log_in(&self, token: &str) -> Option<String> {
        let mut links = self.login_links.lock().unwrap_or_else(|e| e.into_inner());
        let made = links.remove(token)?;
        if made.elapsed() >= LOGIN_LINK_TTL {
            return None;
        }
        let session = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(session.clone());
        Some(session)
    }

    /// Ends the session named in these headers' cookie.
    pub fn log_out(&self, headers: &HeaderMap) {
        let given: Vec<String> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .filter_map(|h| cookie_value(h, &self.cookie_name))
            .map(str::to_string)
            .collect();
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).retain(|s| !given.contains(s));
    }

    /// The Set-Cookie value for a session: only sent back to this server's
    /// pages (SameSite=Strict), never readable by a script (HttpOnly).
    pub fn session_cookie(&self, session: &str) -> String {
        format!("{}={session}; Path=/; HttpOnly; SameSite=Strict", self.cookie_name)
    }
}

/// Whether a Host header names this server: `localhost` or an IP address
/// (loopback, the bound address, or any when bound to all addresses), with
/// the server's port. Host names other than localhost are refused: a name
/// is what a DNS-rebinding page controls.
pub fn host_is_ours(host: &str, bound: SocketAddr) -> bool {
    let Some((name, port)) = host.rsplit_once(':') else { return false };
    if port.parse::<u16>().ok() != Some(bound.port()) {
        return false;
    }
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let name = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == bound.ip() || bound.ip().is_unspecified(),
        Err(_) => false,
    }
}

/// The value of cookie `name` in a Cookie header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|pair| pair.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

fn random_token() -> String {
    data_encoding::HEXLOWER.encode(&rand::random::<[u8; 32]>())
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn bound() -> SocketAddr {
        "127.0.0.1:4000".parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_this_servers_host_names_pass() {
        for ok in ["127.0.0.1:4000", "localhost:4000", "LOCALHOST:4000", "[::1]:4000"] {
            assert!(host_is_ours(ok, bound()), "{ok}");
        }
        for bad in ["evil.example:4000", "127.0.0.1:4001", "127.0.0.1", "", "10.0.0.5:4000", "localhost.evil.example:4000"] {
            assert!(!host_is_ours(bad, bound()), "{bad}");
        }
        let all: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        assert!(host_is_ours("10.0.0.5:4000", all));
        assert!(!host_is_ours("peer.example:4000", all), "a name is never trusted, whatever the binding");
    }

    #[test]
    fn the_token_or_a_session_and_nothing_else() {
        let guard = Guard::new("secret".into(), "peernet-abc".into(), bound());
        let host = ("host", "127.0.0.1:4000");
        let get = Method::GET;
        assert_eq!(guard.check(&get, "/v1/status", &headers(&[host])), Err(Refusal::NoCredentials));
        assert_eq!(guard.check(&get, "/v1/status", &headers(&[host, ("authorization", "Bearer secret")])), Ok(Some(Caller::Token)));
        assert_eq!(guard.check(&get, "/v1/status", &headers(&[host, ("authorization", "Bearer secreT")])), Err(Refusal::NoCredentials));
        assert_eq!(guard.check(&get, "/login", &headers(&[host])), Ok(None), "the login page is public");

        let token = guard.new_login_token();
        let session = guard.log_in(&token).expect("a fresh token logs in");
        assert_eq!(guard.log_in(&token), None, "a login token works once");
        let cookie = format!("other=1; peernet-abc={session}");
        assert_eq!(guard.check(&get, "/", &headers(&[host, ("cookie", &cookie)])), Ok(Some(Caller::Browser)));
        let wrong = "peernet-xyz=".to_string() + &session;
        assert_eq!(guard.check(&get, "/", &headers(&[host, ("cookie", &wrong)])), Err(Refusal::NoCredentials), "another daemon's cookie");

        let post = Method::POST;
        let origin = ("origin", "http://127.0.0.1:4000");
        assert_eq!(guard.check(&post, "/v1/say", &headers(&[host, ("cookie", &cookie), origin])), Ok(Some(Caller::Browser)));
        assert_eq!(guard.check(&post, "/v1/say", &headers(&[host, ("cookie", &cookie)])), Err(Refusal::ForeignOrigin));
        let evil = ("origin", "http://evil.example");
        assert_eq!(guard.check(&post, "/v1/say", &headers(&[host, ("cookie", &cookie), evil])), Err(Refusal::ForeignOrigin));
        let rebound = ("host", "evil.example:4000");
        assert_eq!(guard.check(&get, "/", &headers(&[rebound, ("cookie", &cookie)])), Err(Refusal::ForeignHost));
        let cross = ("sec-fetch-site", "cross-site");
        assert_eq!(guard.check(&get, "/", &headers(&[host, ("cookie", &cookie), cross])), Err(Refusal::ForeignOrigin));

        guard.log_out(&headers(&[("cookie", &cookie)]));
        assert_eq!(guard.check(&get, "/", &headers(&[host, ("cookie", &cookie)])), Err(Refusal::NoCredentials));
    }

    #[test]
    fn sessions_and_links_are_bounded() {
        let guard = Guard::new("t".into(), "c".into(), bound());
        let tokens: Vec<String> = (0..MAX_LOGIN_LINKS + 5).map(|_| guard.new_login_token()).collect();
        assert_eq!(guard.login_links.lock().unwrap().len(), MAX_LOGIN_LINKS);
        assert!(guard.log_in(tokens.last().unwrap()).is_some());
        for _ in 0..MAX_SESSIONS + 5 {
            let t = guard.new_login_token();
            guard.log_in(&t).unwrap();
        }
        assert_eq!(guard.sessions.lock().unwrap().len(), MAX_SESSIONS);
    }
}
