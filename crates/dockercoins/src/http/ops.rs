//! The operations endpoints every service answers: `/healthz`, `/readyz`
//! and `/metrics`, as an axum `Router` that [`serve`](super::serve) merges
//! into the service's own.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::redis::Redis;

/// The operations endpoints, which stay out of access logs and rng's line.
pub const OPS_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// What `/readyz` checks before saying the service can do its job.
#[derive(Clone)]
pub enum Readiness {
    /// Needs nothing outside itself (rng, hasher).
    Always,
    /// Needs Redis (worker, webui).
    Redis(Redis),
}

/// `/healthz`, `/readyz` (503 once `draining` is cancelled) and `/metrics`.
pub fn routes(readiness: Readiness, draining: CancellationToken) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready).with_state((readiness, draining)))
        .route("/metrics", get(metrics_text))
}

/// The metrics, with the content type of Prometheus' text format (which
/// Prometheus 3 requires to parse a scrape).
async fn metrics_text() -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    (
        [(axum::http::header::CONTENT_TYPE, content_type)],
        metrics::render(),
    )
        .into_response()
}

async fn ready(State((readiness, draining)): State<(Readiness, CancellationToken)>) -> Response {
    if draining.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
            .into_response();
    }
    match readiness {
        Readiness::Always => (StatusCode::OK, "ready\n").into_response(),
        Readiness::Redis(redis) => match redis.ping().await {
            Ok(()) => (StatusCode::OK, "ready\n").into_response(),
            Err(err) => {
                let line = format!("not ready: redis at {} unreachable: {err}\n", redis.url());
                (StatusCode::SERVICE_UNAVAILABLE, line).into_response()
            }
        },
    }
}
