//! The web interface, served by the control server: the page and its
//! files (embedded in the binary, nothing fetched at run time), the login
//! exchange, and `/v1/events`, the live feed the page draws from. Who may
//! use them is [`super::guard`]'s decision.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

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

use peernet_proto::topo::Graph;

use super::{
    guard::{Caller, Guard},
    ApiError,
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
    let token = ui.guard.new_login_token(Instant::now());
    Json(LoginLink { url: format!("http://{host}/login#{token}"), expires_in_secs: super::guard::LOGIN_LINK_TTL.as_secs() }).into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    pub token: String,
}

/// What the login page gets for its token, besides the cookie: the key it
/// keeps in its own storage and sends with every API request.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoggedIn {
    pub key: String,
}

/// `POST /login`: the login page trades its one-time token for the
/// session cookie and the page's key.
pub async fn login(State(ui): State<Ui>, Json(req): Json<LoginRequest>) -> Response {
    match ui.guard.log_in(&req.token, Instant::now()) {
        Some((session, key)) => ([(header::SET_COOKIE, ui.guard.session_cookie(&session))], Json(LoggedIn { key })).into_response(),
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

/// `GET /v1/events`: the page's live feed (server-sent events).
pub async fn events(State(ui): State<Ui>, Extension(caller): Extension<Option<Caller>>) -> Response {
    let session = match caller {
        Some(Caller::Browser(id)) => Some(id),
        _ => None,
    };
    let feed = Feed {
        node: ui.node,
        cancel: ui.cancel,
        guard: ui.guard,
        session,
        last: Default::default(),
        chat_after: None,
        tick: 0,
        queue: VecDeque::new(),
        topo: None,
    };
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
    guard: Arc<Guard>,
    /// The browser session it serves: the feed ends when it does.
    session: Option<String>,
    /// The map being fetched: the index may be slow, and chat and progress
    /// must not wait for it.
    topo: Option<tokio::task::JoinHandle<Option<Graph>>>,
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
            if self.session.as_ref().is_some_and(|id| !self.guard.has_session(id)) {
                // Logged out (or pushed out by newer sessions).
                return None;
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
        // New lines are always news; the first (possibly empty) history too.
        if !lines.is_empty() || self.tick == 0 {
            self.push("chat", &lines, true);
        }
        self.push("downloads", &self.node.transfers().board(Instant::now()), false);
        if let Some(done) = self.topo.take_if(|t| t.is_finished()) {
            // Finished: this await does not wait.
            if let Ok(Some(graph)) = done.await {
                self.push("topo", &graph, false);
            }
        }
        if self.tick.is_multiple_of(SLOW_EVERY) {
            self.push("status", &self.node.network().status(), false);
            self.push("members", &self.node.chat().members(), false);
            self.push("shares", &self.node.files().list(), false);
            if self.topo.is_none() {
                let node = self.node.clone();
                // Ends by itself within TOPO_WAIT, even if the page has gone.
                self.topo = Some(tokio::spawn(async move {
                    tokio::time::timeout(TOPO_WAIT, node.network().topology()).await.ok().and_then(Result::ok)
                }));
            }
        }
    }

    /// Queues `value` as event `name` if it differs from what was sent
    /// last (or `always`).
    fn push<T: Serialize>(&mut self, name: &'static str, value: &T, always: bool) {
        let json = serde_json::to_string(value).expect("the feed's values always serialize");
        if always || self.last.get(name) != Some(&json) {
            self.queue.push_back(Event::default().event(name).data(&json));
            self.last.insert(name, json);
        }
    }
}
