//! `--metrics ADDR`: Prometheus/OpenMetrics text at `GET /metrics`, on an
//! address of its own. It needs no token, as Prometheus scrapes expect;
//! it only reads counters, and binds where the operator says.

use std::net::SocketAddr;

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tokio_util::sync::CancellationToken;

use super::guard::host_is_ours;
use crate::node::Node;

/// The content type of OpenMetrics text, which Prometheus reads.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr`; the returned future serves until `cancel`.
pub async fn serve(
    node: Node,
    addr: SocketAddr,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()> + Send + 'static)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/metrics", get(metrics)).with_state((node, addr));
    Ok((addr, super::serve_until(listener, app, cancel, "metrics endpoint")))
}

async fn metrics(State((node, bound)): State<(Node, SocketAddr)>, headers: HeaderMap) -> Response {
    // Bound to loopback, only this machine's names are ours: a web page
    // whose host name was made to point at 127.0.0.1 (DNS rebinding)
    // reads nothing. Elsewhere Prometheus may scrape by any name.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if bound.ip().is_loopback() && !host_is_ours(host, bound) {
        return (StatusCode::FORBIDDEN, "the Host header does not name this metrics endpoint\n").into_response();
    }
    ([(header::CONTENT_TYPE, OPENMETRICS)], node.metrics_text()).into_response()
}
