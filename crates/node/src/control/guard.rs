//! Who may use the control server: the CLI with the bearer token from
//! `control.json`, or a browser with the session cookie and page key it got
//! for a one-time login link (`peernet ui`). Every request must also name this
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The bearer token: the CLI, or whoever can read `control.json`.
    Token,
    /// A browser session: its id (from the cookie).
    Browser(String),
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
    #[error("this request lacks the page's key; reload the page, or run `peernet ui` for a new login link")]
    NoPageKey,
}

/// A browser session: the cookie's value, and the key the page keeps in
/// its own storage and sends with every API request. Browsers send a
/// cookie for 127.0.0.1 to every port of it, so a page another program
/// serves on this machine would send ours along; the key, which only our
/// page can read (storage is per port), is what such a page lacks.
#[derive(Debug)]
struct Session {
    id: String,
    key: String,
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
    sessions: Mutex<VecDeque<Session>>,
    login_links: Mutex<HashMap<String, Instant>>,
}

/// What a request shows the guard.
pub struct Request<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
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
    pub fn check(&self, req: &Request) -> Result<Option<Caller>, Refusal> {
        let headers = req.headers;
        let host = header_str(headers, header::HOST).unwrap_or("");
        if !host_is_ours(host, self.bound) {
            return Err(Refusal::ForeignHost);
        }
        // The login page may be opened from anywhere (`peernet ui` opens it
        // through a local file, a cross-site navigation): it holds no data.
        let public = PUBLIC_PATHS.contains(&req.path);
        if public && req.method == Method::GET {
            return Ok(None);
        }
        let origin = header_str(headers, header::ORIGIN);
        // Another port of this host is the same site to a browser, not the same origin.
        let other_site = matches!(header_str(headers, "sec-fetch-site"), Some("cross-site" | "same-site"));
        if other_site || origin.is_some_and(|o| o != format!("http://{host}")) {
            return Err(Refusal::ForeignOrigin);
        }
        if public {
            return Ok(None);
        }
        let bearer = header_str(headers, header::AUTHORIZATION).and_then(|h| h.strip_prefix("Bearer "));
        if bearer.is_some_and(|b| constant_time_eq(b.as_bytes(), self.bearer.as_bytes())) {
            return Ok(Some(Caller::Token));
        }
        let sessions = self.sessions();
        let Some(session) = self.cookies(headers).find_map(|c| sessions.iter().find(|s| constant_time_eq(s.id.as_bytes(), c.as_bytes())))
        else {
            return Err(Refusal::NoCredentials);
        };
        // The page's files hold no data; everything under /v1 needs the key.
        if req.path.starts_with("/v1/") {
            let key = header_str(headers, PAGE_KEY_HEADER).or_else(|| query_value(req.query?, "key"));
            if !key.is_some_and(|k| constant_time_eq(k.as_bytes(), session.key.as_bytes())) {
                return Err(Refusal::NoPageKey);
            }
        }
        // A browser's change of state must say where it comes from:
        // browsers send Origin with every POST, forged forms included.
        if req.method != Method::GET && origin.is_none() {
            return Err(Refusal::ForeignOrigin);
        }
        Ok(Some(Caller::Browser(session.id.clone())))
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, VecDeque<Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Our cookie's values in these headers.
    fn cookies<'a>(&'a self, headers: &'a HeaderMap) -> impl Iterator<Item = &'a str> + 'a {
        headers.get_all(header::COOKIE).iter().filter_map(|h| h.to_str().ok()).filter_map(|h| cookie_value(h, &self.cookie_name))
    }

    /// Whether a session is still open (an open live feed ends when not).
    pub fn has_session(&self, id: &str) -> bool {
        self.sessions().iter().any(|s| s.id == id)
    }

    /// A new one-time login token, valid for [`LOGIN_LINK_TTL`] from `now`.
    pub fn new_login_token(&self, now: Instant) -> String {
        let token = random_token();
        let mut links = self.login_links.lock().unwrap_or_else(|e| e.into_inner());
        links.retain(|_, made| now.duration_since(*made) < LOGIN_LINK_TTL);
        if links.len() >= MAX_LOGIN_LINKS {
            // Unused links are cheap to mint again; the oldest goes.
            if let Some(oldest) = links.iter().min_by_key(|(_, made)| **made).map(|(t, _)| t.clone()) {
                links.remove(&oldest);
            }
        }
        links.insert(token.clone(), now);
        token
    }

    /// Exchanges a login token (once) for a new session: its cookie value
    /// and the page's key.
    pub fn log_in(&self, token: &str, now: Instant) -> Option<(String, String)> {
        let made = self.login_links.lock().unwrap_or_else(|e| e.into_inner()).remove(token)?;
        if now.duration_since(made) >= LOGIN_LINK_TTL {
            return None;
        }
        let session = Session { id: random_token(), key: random_token() };
        let answer = (session.id.clone(), session.key.clone());
        let mut sessions = self.sessions();
        if sessions.len() >= MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(session);
        Some(answer)
    }

    /// Ends the session named in these headers' cookie.
    pub fn log_out(&self, headers: &HeaderMap) {
        let given: Vec<&str> = self.cookies(headers).collect();
        self.sessions().retain(|s| !given.contains(&s.id.as_str()));
    }

    /// The Set-Cookie value for a session: only sent back to this host
    /// (SameSite=Strict), never readable by a script (HttpOnly).
    pub fn session_cookie(&self, session: &str) -> String {
        format!("{}={session}; Path=/; HttpOnly; SameSite=Strict", self.cookie_name)
    }
}

/// The header in which the page sends its key.
pub const PAGE_KEY_HEADER: &str = "x-peernet-key";

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|h| h.to_str().ok())
}

/// Whether a Host header names this server: `localhost` or an IP address
/// (loopback, the bound address, or any when bound to all addresses),
/// with any port (an SSH tunnel may forward another). Host names other
/// than localhost are refused: a name is what a DNS-rebinding page
/// controls.
pub fn host_is_ours(host: &str, bound: SocketAddr) -> bool {
    let name = match host.rsplit_once(':') {
        // An IPv6 address without a port has colons of its own.
        Some((name, port)) if port.parse::<u16>().is_ok() && !name.ends_with(':') => name,
        _ => host,
    };
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

/// The value of `name` in a query string (hex keys need no decoding).
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
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

    fn check(guard: &Guard, method: Method, target: &str, pairs: &[(&'static str, &str)]) -> Result<Option<Caller>, Refusal> {
        let (path, query) = target.split_once('?').map(|(p, q)| (p, Some(q))).unwrap_or((target, None));
        guard.check(&Request { method: &method, path, query, headers: &headers(pairs) })
    }

    #[test]
    fn only_this_servers_host_names_pass() {
        for ok in ["127.0.0.1:4000", "localhost:4000", "LOCALHOST:4000", "[::1]:4000", "127.0.0.1:8080", "localhost", "::1"] {
            assert!(host_is_ours(ok, bound()), "{ok}");
        }
        for bad in ["evil.example:4000", "", "10.0.0.5:4000", "localhost.evil.example:4000", "127.0.0.1.nip.io:4000"] {
            assert!(!host_is_ours(bad, bound()), "{bad}");
        }
        let all: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        assert!(host_is_ours("10.0.0.5:4000", all));
        assert!(!host_is_ours("peer.example:4000", all), "a name is never trusted, whatever the binding");
    }

    #[test]
    fn the_token_or_a_session_with_its_key_and_nothing_else() {
        let guard = Guard::new("secret".into(), "peernet-abc".into(), bound());
        let host = ("host", "127.0.0.1:4000");
        assert_eq!(check(&guard, Method::GET, "/v1/status", &[host]), Err(Refusal::NoCredentials));
        assert_eq!(check(&guard, Method::GET, "/v1/status", &[host, ("authorization", "Bearer secret")]), Ok(Some(Caller::Token)));
        assert_eq!(check(&guard, Method::GET, "/v1/status", &[host, ("authorization", "Bearer secreT")]), Err(Refusal::NoCredentials));
        assert_eq!(check(&guard, Method::GET, "/login", &[host]), Ok(None), "the login page is public");

        let now = Instant::now();
        let token = guard.new_login_token(now);
        let (session, key) = guard.log_in(&token, now).expect("a fresh token logs in");
        assert_eq!(guard.log_in(&token, now), None, "a login token works once");
        let browser = Ok(Some(Caller::Browser(session.clone())));
        let cookie = format!("other=1; peernet-abc={session}");
        let cookie = ("cookie", cookie.as_str());
        assert_eq!(check(&guard, Method::GET, "/", &[host, cookie]), browser, "the page's files need the cookie only");
        assert_eq!(check(&guard, Method::GET, "/v1/status", &[host, cookie]), Err(Refusal::NoPageKey), "the cookie alone reads nothing");
        assert_eq!(check(&guard, Method::GET, "/v1/status", &[host, cookie, ("x-peernet-key", &key)]), browser);
        assert_eq!(check(&guard, Method::GET, &format!("/v1/events?key={key}"), &[host, cookie]), browser);
        assert_eq!(check(&guard, Method::GET, "/v1/events?key=00", &[host, cookie]), Err(Refusal::NoPageKey));
        let wrong = format!("peernet-xyz={session}");
        assert_eq!(check(&guard, Method::GET, "/", &[host, ("cookie", &wrong)]), Err(Refusal::NoCredentials), "another daemon's cookie");

        let page_key = ("x-peernet-key", key.as_str());
        let origin = ("origin", "http://127.0.0.1:4000");
        assert_eq!(check(&guard, Method::POST, "/v1/say", &[host, cookie, page_key, origin]), browser);
        assert_eq!(check(&guard, Method::POST, "/v1/say", &[host, cookie, page_key]), Err(Refusal::ForeignOrigin));
        let evil = ("origin", "http://evil.example");
        assert_eq!(check(&guard, Method::POST, "/v1/say", &[host, cookie, page_key, evil]), Err(Refusal::ForeignOrigin));
        let rebound = ("host", "evil.example:4000");
        assert_eq!(check(&guard, Method::GET, "/", &[rebound, cookie]), Err(Refusal::ForeignHost));
        for site in ["cross-site", "same-site"] {
            assert_eq!(check(&guard, Method::GET, "/", &[host, cookie, ("sec-fetch-site", site)]), Err(Refusal::ForeignOrigin));
        }
        assert!(guard.has_session(&session));
        guard.log_out(&headers(&[cookie]));
        assert!(!guard.has_session(&session));
        assert_eq!(check(&guard, Method::GET, "/", &[host, cookie]), Err(Refusal::NoCredentials));
    }

    #[test]
    fn a_login_link_expires() {
        let guard = Guard::new("t".into(), "c".into(), bound());
        let t0 = Instant::now();
        let token = guard.new_login_token(t0);
        assert_eq!(guard.log_in(&token, t0 + LOGIN_LINK_TTL), None);
        let token = guard.new_login_token(t0);
        assert!(guard.log_in(&token, t0 + LOGIN_LINK_TTL - Duration::from_secs(1)).is_some());
    }

    #[test]
    fn sessions_and_links_are_bounded() {
        let guard = Guard::new("t".into(), "c".into(), bound());
        let now = Instant::now();
        let tokens: Vec<String> = (0..MAX_LOGIN_LINKS + 5).map(|_| guard.new_login_token(now)).collect();
        assert_eq!(guard.login_links.lock().unwrap().len(), MAX_LOGIN_LINKS);
        assert!(guard.log_in(tokens.last().unwrap(), now).is_some());
        let (first, _) = guard.log_in(&guard.new_login_token(now), now).unwrap();
        for _ in 0..MAX_SESSIONS {
            let t = guard.new_login_token(now);
            guard.log_in(&t, now).unwrap();
        }
        assert_eq!(guard.sessions.lock().unwrap().len(), MAX_SESSIONS);
        assert!(!guard.has_session(&first), "the oldest session was logged out");
    }
}
