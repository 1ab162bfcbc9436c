//! The control API server (axum). Handlers are thin: they parse, call the
//! [`Node`], and turn errors into `{"error": ...}` bodies.

use std::{convert::Infallible, net::SocketAddr};

use axum::{
    body::Body,
    extract::{Query, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use peernet_proto::index::ErrorCode;

use super::{
    ApiError, GetEvent, GetRequest, MessagesQuery, NickRequest, OnlineReply, SayRequest, SearchQuery, SearchReply, ShareRequest,
    UnshareRequest, AUTH_HEADER,
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

/// Binds 127.0.0.1 on a random port; the returned future serves until `cancel`.
pub async fn serve(
    node: Node,
    token: String,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()> + Send + 'static)> {
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let expected = format!("Bearer {token}");
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/ls", get(ls))
        .route("/v1/share", post(share))
        .route("/v1/unshare", post(unshare))
        .route("/v1/search", get(search))
        .route("/v1/online", get(online))
        .route("/v1/get", post(get_file))
        .route("/v1/down", post(down))
        .route("/v1/say", post(say))
        .route("/v1/nick", post(nick))
        .route("/v1/who", get(who))
        .route("/v1/messages", get(messages))
        .route("/v1/topo", get(topo))
        .route("/v1/stop-network", post(stop_network))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let expected = expected.clone();
            async move {
                let given = req.headers().get(AUTH_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                // Constant-time compare: the token is the only access control.
                if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
                    return (
                        StatusCode::UNAUTHORIZED,
                        Json(ApiError {
                            error: "missing or wrong control token; the token is in control.json in the data directory".into(),
                        }),
                    )
                        .into_response();
                }
                next.run(req).await
            }
        }))
        .with_state(node);
    let server = async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!("control API stopped: {e}");
        }
    };
    Ok((addr, server))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

async fn get_file(State(node): State<Node>, Json(req): Json<GetRequest>) -> Response {
    if let Some(out) = &req.out {
        if !out.is_absolute() {
            return bad_request("the output directory must be an absolute path");
        }
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
