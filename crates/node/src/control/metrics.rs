//! `--metrics ADDR`: Prometheus/OpenMetrics text at `GET /metrics`, on an
//! address of its own. It needs no token, as Prometheus scrapes expect;
//! it only reads counters, and binds where the operator says.

use std::net::SocketAddr;

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use tokio_util::sync::CancellationToken;

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
    let app = Router::new().route("/metrics", get(metrics)).with_state(node);
    let server = async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!("metrics endpoint stopped: {e}");
        }
    };
    Ok((addr, server))
}

async fn metrics(State(node): State<Node>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS)], node.metrics_text())
}
