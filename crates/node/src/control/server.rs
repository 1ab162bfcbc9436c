//! The control API server (axum). Handlers are thin: they parse, call the
//! [`Node`], and turn errors into `{"error": ...}` bodies.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    extract::{Query, Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use peernet_proto::index::ErrorCode;

use serde::{Deserialize, Serialize};

use super::{
    guard::{self, Guard, Refusal},
    ui::{self, Ui},
    ApiError, GetEvent, GetRequest, MessagesQuery, NickRequest, OnlineReply, SayRequest, SearchQuery, SearchReply, ShareRequest,
    UnshareRequest,
};
use crate::{
    chat::ChatError,
    files::FilesError,
    index_client::IndexError,
    network::NetworkError,
    node::Node,
    resolve::ResolveError,
    search::{SearchError, SearchMode, FLOOD_WINDOW},
    shares::ShareError,
};

/// Events buffered per `get` before the download waits for the client.
const GET_EVENT_BUFFER: usize = 64;

/// The HTTP status each of the node's errors is answered with; the body is
/// always the error's one sentence.
trait HttpStatus: std::fmt::Display {
    fn status(&self) -> StatusCode;

    fn into_response(self) -> Response
    where
        Self: Sized,
    {
        (self.status(), Json(ApiError { error: self.to_string() })).into_response()
    }
}

impl HttpStatus for IndexError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Refused { code: ErrorCode::NotOwner, .. } => StatusCode::FORBIDDEN,
            Self::Refused { code: ErrorCode::NotFound, .. } => StatusCode::NOT_FOUND,
            Self::Refused { .. } => StatusCode::BAD_REQUEST,
            Self::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected => StatusCode::BAD_GATEWAY,
            Self::NoIndex => StatusCode::BAD_REQUEST,
        }
    }
}

impl HttpStatus for SearchError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Index(e) => e.status(),
            Self::NoDht | Self::NotAHash | Self::TooLong(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl HttpStatus for FilesError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Share(ShareError::Unknown(_)) | Self::Resolve(ResolveError::Unknown(_)) => StatusCode::NOT_FOUND,
            Self::Share(ShareError::Persist(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Share(_) | Self::Resolve(_) => StatusCode::BAD_REQUEST,
            Self::Index(e) => e.status(),
            Self::Search(e) => e.status(),
        }
    }
}

impl HttpStatus for ChatError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::IndexUnreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Taken(_) => StatusCode::CONFLICT,
            Self::Index(e) => e.status(),
            Self::Overlay(_) | Self::DataDir(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl HttpStatus for NetworkError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Index(e) => e.status(),
            Self::NotRoot => StatusCode::FORBIDDEN,
            Self::Overlay(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn bad_request(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(ApiError { error: msg.to_string() })).into_response()
}

/// Where the control server listens and who may use it.
pub struct Listen {
    /// 127.0.0.1 with a random port unless `--ui` names another address.
    pub addr: SocketAddr,
    /// The CLI's bearer token.
    pub token: String,
    /// The browser session cookie's name, unique to this daemon.
    pub cookie_name: String,
}

/// Binds `listen.addr`; the returned future serves until `cancel`.
pub async fn serve(
    node: Node,
    listen: Listen,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()> + Send + 'static)> {
    let listener = tokio::net::TcpListener::bind(listen.addr).await?;
    let addr = listener.local_addr()?;
    let guard = Arc::new(Guard::new(listen.token, listen.cookie_name, addr));
    let ui_state = Ui { node: node.clone(), guard: guard.clone(), cancel: cancel.clone() };
    // Every route that changes something is a POST: a GET changes nothing.
    let api = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/ls", get(ls))
        .route("/v1/share", post(share))
        .route("/v1/unshare", post(unshare))
        .route("/v1/search", get(search))
        .route("/v1/online", get(online))
        .route("/v1/get", post(get_file))
        .route("/v1/downloads", post(start_download))
        .route("/v1/down", post(down))
        .route("/v1/say", post(say))
        .route("/v1/nick", post(nick))
        .route("/v1/who", get(who))
        .route("/v1/messages", get(messages))
        .route("/v1/topo", get(topo))
        .route("/v1/stop-network", post(stop_network))
        .with_state(node);
    let web = Router::new()
        .route("/v1/ui/link", post(ui::link))
        .route("/v1/logout", post(ui::logout))
        .route("/v1/events", get(ui::events))
        .route("/login", get(ui::page).post(ui::login))
        .route("/login.js", get(ui::page))
        .route("/", get(ui::page))
        .route("/index.html", get(ui::page))
        .route("/app.js", get(ui::page))
        .route("/app.css", get(ui::page))
        .route("/favicon.svg", get(ui::page))
        .route("/vendor/force-graph.min.js", get(ui::page))
        .with_state(ui_state);
    let app = api.merge(web).layer(middleware::from_fn_with_state(guard, gate));
    Ok((addr, super::serve_until(listener, app, cancel, "control API")))
}

/// Lets a request in only past the [`Guard`], telling the handler who
/// called; every answer carries the page's security headers.
async fn gate(State(guard): State<Arc<Guard>>, mut req: Request, next: Next) -> Response {
    let decision =
        guard.check(&guard::Request { method: req.method(), path: req.uri().path(), query: req.uri().query(), headers: req.headers() });
    let mut resp = match decision {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => {
            let browser = req.headers().get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("text/html"));
            let status = match refusal {
                Refusal::NoCredentials | Refusal::NoPageKey => StatusCode::UNAUTHORIZED,
                Refusal::ForeignHost | Refusal::ForeignOrigin => StatusCode::FORBIDDEN,
            };
            let mut resp = if browser {
                ui::login_needed(&refusal.to_string())
            } else {
                Json(ApiError { error: refusal.to_string() }).into_response()
            };
            *resp.status_mut() = status;
            resp
        }
    };
    security_headers(resp.headers_mut());
    resp
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

async fn status(State(node): State<Node>) -> Response {
    Json(node.network().status()).into_response()
}

async fn ls(State(node): State<Node>) -> Response {
    Json(node.files().list()).into_response()
}

fn reply<T: serde::Serialize, E: HttpStatus>(result: Result<T, E>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn share(State(node): State<Node>, Json(req): Json<ShareRequest>) -> Response {
    reply(node.files().share(&req.path).await)
}

async fn unshare(State(node): State<Node>, Json(req): Json<UnshareRequest>) -> Response {
    reply(node.files().unshare(&req.target).await)
}

async fn search(State(node): State<Node>, Query(q): Query<SearchQuery>) -> Response {
    if q.q.trim().is_empty() {
        return bad_request("the search query is empty; give a word of the file name or a hash");
    }
    let mode = q.mode.unwrap_or(SearchMode::Both);
    let ttl = q.ttl.unwrap_or(peernet_proto::flood::DEFAULT_TTL);
    let window = q.wait_ms.map(|ms| std::time::Duration::from_millis(ms.min(30_000))).unwrap_or(FLOOD_WINDOW);
    reply(node.search().run(&q.q, q.limit.unwrap_or(20), mode, ttl, window).await.map(|hits| SearchReply { hits }))
}

async fn online(State(node): State<Node>) -> Response {
    reply(node.network().online().await.map(|peers| OnlineReply { peers }))
}

/// A get's output directory must be absolute: the daemon's working
/// directory is not the caller's.
fn relative_out(req: &GetRequest) -> Option<Response> {
    req.out.as_ref().filter(|out| !out.is_absolute()).map(|_| bad_request("the output directory must be an absolute path"))
}

async fn get_file(State(node): State<Node>, Json(req): Json<GetRequest>) -> Response {
    if let Some(refused) = relative_out(&req) {
        return refused;
    }
    let (tx, rx) = mpsc::channel::<GetEvent>(GET_EVENT_BUFFER);
    // The download runs as the node's task: it finishes (and the file is
    // published) even if the client goes away.
    node.transfers().spawn_get(req.target, req.out, tx);
    let lines = n0_future::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).expect("events always serialize");
        line.push(b'\n');
        Some((Ok::<_, Infallible>(line), rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(lines))
        .expect("static response parts are valid")
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Started {
    /// The download's id on the board.
    pub id: u64,
}

/// `POST /v1/downloads` (the page's get): starts a get and answers at once
/// with its id on the board; its progress is on the board (the page's
/// `downloads` event).
async fn start_download(State(node): State<Node>, Json(req): Json<GetRequest>) -> Response {
    if let Some(refused) = relative_out(&req) {
        return refused;
    }
    // Nobody reads these events: the board does.
    let (events, _) = mpsc::channel(1);
    Json(Started { id: node.transfers().spawn_get(req.target, req.out, events) }).into_response()
}

async fn down(State(node): State<Node>) -> Response {
    node.request_shutdown();
    Json(serde_json::json!({"ok": true})).into_response()
}

async fn say(State(node): State<Node>, Json(req): Json<SayRequest>) -> Response {
    reply(node.chat().say(&req.text).await)
}

async fn nick(State(node): State<Node>, Json(req): Json<NickRequest>) -> Response {
    reply(node.chat().rename(&req.nickname).await.map(|_| serde_json::json!({"nickname": req.nickname})))
}

async fn who(State(node): State<Node>) -> Response {
    Json(node.chat().members()).into_response()
}

async fn messages(State(node): State<Node>, Query(q): Query<MessagesQuery>) -> Response {
    Json(node.chat().messages_after(q.after.unwrap_or(0))).into_response()
}

async fn topo(State(node): State<Node>) -> Response {
    reply(node.network().topology().await)
}

async fn stop_network(State(node): State<Node>) -> Response {
    reply(node.network().stop().await.map(|_| serde_json::json!({"ok": true})))
}
