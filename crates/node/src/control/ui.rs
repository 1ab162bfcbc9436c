//! The web interface, served by the control server: the page and its
//! files (embedded in the binary, nothing fetched at run time), the login
//! exchange, and `/v1/events`, the live feed the page draws from.

use std::{collections::VecDeque, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::{Extension, State},
    http::{header, HeaderMap, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        Html, IntoResponse, Response,
    },
    Json,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{
    guard::{Caller, Guard},
    ApiError, GetRequest,
};
use crate::node::Node;

/// How often the feed looks for new chat lines and download progress;
/// the map, members, status and shares are looked at every
/// [`SLOW_EVERY`] ticks. Only what changed is sent.
const TICK: Duration = Duration::from_millis(250);
const SLOW_EVERY: u64 = 4;
/// Chat lines a page gets when it connects.
const CHAT_HISTORY: usize = 200;
/// Longest wait for the map before the feed goes on without it.
const TOPO_WAIT: Duration = Duration::from_secs(2);

/// What the page and its handlers share.
#[derive(Clone)]
pub struct Ui {
    pub node: Node,
    pub guard: Arc<Guard>,
    /// Ends the event streams when the daemon stops (the server waits for
    /// open connections before it stops).
    pub cancel: CancellationToken,
}

/// A file of the page: its bytes and content type.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
}

const INDEX: Asset = Asset { body: include_bytes!("../../ui/index.html"), content_type: "text/html; charset=utf-8" };
const LOGIN: Asset = Asset { body: include_bytes!("../../ui/login.html"), content_type: "text/html; charset=utf-8" };
const LOGIN_JS: Asset = Asset { body: include_bytes!("../../ui/login.js"), content_type: "text/javascript; charset=utf-8" };
const APP_JS: Asset = Asset { body: include_bytes!("../../ui/app.js"), content_type: "text/javascript; charset=utf-8" };
const APP_CSS: Asset = Asset { body: include_bytes!("../../ui/app.css"), content_type: "text/css; charset=utf-8" };
const FAVICON: Asset = Asset { body: include_bytes!("../../ui/favicon.svg"), content_type: "image/svg+xml" };
const FORCE_GRAPH: Asset =
    Asset { body: include_bytes!("../../ui/vendor/force-graph.min.js"), content_type: "text/javascript; charset=utf-8" };

/// The page's files by path.
fn asset(path: &str) -> Option<&'static Asset> {
    match path {
        "/" | "/index.html" => Some(&INDEX),
        "/login" => Some(&LOGIN),
        "/login.js" => Some(&LOGIN_JS),
        "/app.js" => Some(&APP_JS),
        "/app.css" => Some(&APP_CSS),
        "/favicon.svg" => Some(&FAVICON),
        "/vendor/force-graph.min.js" => Some(&FORCE_GRAPH),
        _ => None,
    }
}

/// Serves a file of the page; the guard has already let the request in.
pub async fn page(uri: axum::http::Uri) -> Response {
    match asset(uri.path()) {
        Some(a) => ([(header::CONTENT_TYPE, a.content_type), (header::CACHE_CONTROL, "no-cache")], a.body).into_response(),
        None => (StatusCode::NOT_FOUND, Json(ApiError { error: format!("no such page: {}", uri.path()) })).into_response(),
    }
}

/// Headers every answer of the control server carries: the page runs
/// only its own scripts, cannot be framed, and leaks no address.
pub fn security_headers(headers: &mut HeaderMap) {
    let set = |headers: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        headers.insert(k, header::HeaderValue::from_static(v));
    };
    // force-graph injects two <style> elements of its own: they are let
    // in by their hashes (ui/vendor/README.md says how to renew them when
    // force-graph is updated), no other inline style or script is.
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; \
         style-src 'self' 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=' 'sha256-jtRRMYY2VbEXuBKbHvqM1/fPT8vazFrEooXdvwUK4y8=' \
         'sha256-9xjtvxMT1ApHlgn9ohbh2FNfvK5Tqtzy94BjfXBeMSY='; \
         img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
}

/// What an unauthenticated browser sees instead of the page.
pub fn login_needed(why: &str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>peernet</title><p>{}</p>",
        why.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
    );
    (StatusCode::UNAUTHORIZED, Html(body)).into_response()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LoginLink {
    /// The address that logs a browser in once.
    pub url: String,
    /// Seconds the link works.
    pub expires_in_secs: u64,
}

/// `POST /v1/ui/link`: a one-time login link, for `peernet ui` (the bearer
/// token holder) only: a browser session cannot mint more sessions.
pub async fn link(State(ui): State<Ui>, Extension(caller): Extension<Option<Caller>>, headers: HeaderMap) -> Response {
    if caller != Some(Caller::Token) {
        return (StatusCode::FORBIDDEN, Json(ApiError { error: "login links are made by `peernet ui`, not from the page".into() }))
            .into_response();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let token = ui.guard.new_login_token();
    Json(LoginLink { url: format!("http://{host}/login#{token}"), expires_in_secs: super::guard::LOGIN_LINK_TTL.as_secs() }).into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    pub token: String,
}

/// `POST /login`: the login page trades its one-time token for the
/// session cookie.
pub async fn login(State(ui): State<Ui>, Json(req): Json<LoginRequest>) -> Response {
    match ui.guard.log_in(&req.token) {
        Some(session) => (StatusCode::NO_CONTENT, [(header::SET_COOKIE, ui.guard.session_cookie(&session))]).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            Json(ApiError { error: "this login link was used already or has expired; run `peernet ui` for a new one".into() }),
        )
            .into_response(),
    }
}

/// `POST /v1/logout`.
pub async fn logout(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    ui.guard.log_out(&headers);
    let expired = format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0", ui.guard.cookie_name());
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, expired)]).into_response()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Started {
    pub id: u64,
}

/// `POST /v1/downloads`: starts a get and answers at once with its id on
/// the board; its progress comes in the `downloads` event.
pub async fn start_download(State(ui): State<Ui>, Json(req): Json<GetRequest>) -> Response {
    if req.out.as_ref().is_some_and(|out| !out.is_absolute()) {
        return (StatusCode::BAD_REQUEST, Json(ApiError { error: "the output directory must be an absolute path".into() })).into_response();
    }
    // Nobody reads the events here: the board does.
    let (events, _) = tokio::sync::mpsc::channel(1);
    let id = ui.node.transfers().spawn_get(req.target, req.out, events);
    Json(Started { id }).into_response()
}

/// `GET /v1/events`: the page's live feed (server-sent events).
pub async fn events(State(ui): State<Ui>) -> Response {
    let feed = Feed { node: ui.node, cancel: ui.cancel, last: Default::default(), chat_after: None, tick: 0, queue: VecDeque::new() };
    let stream = n0_future::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok::<_, Infallible>(event), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// One page's feed: what it was last sent, to send only changes.
struct Feed {
    node: Node,
    cancel: CancellationToken,
    last: std::collections::HashMap<&'static str, String>,
    /// The last chat line sent; `None` before the history.
    chat_after: Option<u64>,
    tick: u64,
    queue: VecDeque<Event>,
}

impl Feed {
    /// The next event, waiting for a change; `None` when the daemon stops.
    async fn next(&mut self) -> Option<Event> {
        while self.queue.is_empty() {
            if self.tick > 0 {
                tokio::select! {
                    _ = self.cancel.cancelled() => return None,
                    _ = tokio::time::sleep(TICK) => {}
                }
            }
            self.look().await;
            self.tick += 1;
        }
        self.queue.pop_front()
    }

    /// Queues whatever changed since the last look.
    async fn look(&mut self) {
        let chat = self.node.chat();
        let lines = match self.chat_after {
            None => {
                let all = chat.messages_after(0);
                all[all.len().saturating_sub(CHAT_HISTORY)..].to_vec()
            }
            Some(after) => chat.messages_after(after),
        };
        self.chat_after = Some(lines.last().map(|m| m.index).or(self.chat_after).unwrap_or(0));
        if !lines.is_empty() || self.tick == 0 {
            self.push_always("chat", &lines);
        }
        self.push("downloads", &self.node.transfers().board());
        if self.tick.is_multiple_of(SLOW_EVERY) {
            self.push("status", &self.node.network().status());
            self.push("members", &self.node.chat().members());
            self.push("shares", &self.node.files().list());
            if let Ok(Ok(graph)) = tokio::time::timeout(TOPO_WAIT, self.node.network().topology()).await {
                self.push("topo", &graph);
            }
        }
    }

    /// Queues `value` as event `name` if it differs from what was sent last.
    fn push<T: Serialize>(&mut self, name: &'static str, value: &T) {
        let json = serde_json::to_string(value).expect("the feed's values always serialize");
        if self.last.get(name) != Some(&json) {
            self.queue.push_back(Event::default().event(name).data(&json));
            self.last.insert(name, json);
        }
    }

    fn push_always<T: Serialize>(&mut self, name: &'static str, value: &T) {
        let json = serde_json::to_string(value).expect("the feed's values always serialize");
        self.queue.push_back(Event::default().event(name).data(json));
    }
}
