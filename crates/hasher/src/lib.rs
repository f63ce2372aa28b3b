//! hasher: the SHA-256 of what you POST.
//!
//! `POST /` answers the lowercase hex SHA-256 of the body after a short delay;
//! `GET /` says who is running. Requests are served concurrently: the delay
//! does not queue. A body over `HASHER_MAX_BODY` gets 413; a body that never
//! ends gets 408 after `HASHER_BODY_TIMEOUT`.

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use clap::Args;
use dockercoins::Service;
use dockercoins::http::{Readiness, not_found};
use sha2::{Digest, Sha256};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub const ABOUT: &str = "DockerCoins hasher: the SHA-256 of what you POST";

#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Delay before each hash (the classic 0.1 s).
    #[arg(long = "delay", env = "HASHER_DELAY", default_value = "100ms", value_parser = dockercoins::config::duration)]
    pub delay: Duration,

    /// Largest body accepted, in bytes; larger gets 413.
    #[arg(
        long = "max-body",
        env = "HASHER_MAX_BODY",
        default_value_t = 1_048_576
    )]
    pub max_body: usize,

    /// Longest time a request may take, body included; longer gets 408.
    #[arg(long = "body-timeout", env = "HASHER_BODY_TIMEOUT", default_value = "10s", value_parser = dockercoins::config::duration)]
    pub body_timeout: Duration,
}

pub async fn run(config: Config, service: Service) -> Result<(), String> {
    let routes = app(config, &service.instance);
    dockercoins::http::serve(service, routes, Readiness::Always).await
}

/// The routes, without the operations endpoints.
pub fn app(config: Config, instance: &str) -> Router {
    let running = format!("HASHER running on {instance}\n");
    Router::new()
        .route("/", get(|| async move { running }).post(hash))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.max_body))
        // A body announced over the limit gets its 413 at once, unread.
        .layer(RequestBodyLimitLayer::new(config.max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.body_timeout + config.delay,
        ))
        .with_state(config.delay)
}

async fn hash(State(delay): State<Duration>, body: Bytes) -> impl IntoResponse {
    // Simulate a bit of delay.
    dockercoins::delay(delay).await;
    metrics::counter!("hasher_bytes_hashed_total").increment(body.len() as u64);
    let hex_hash = hex::encode(Sha256::digest(&body));
    ([(header::CONTENT_TYPE, "text/plain")], hex_hash)
}

/// What the `hasher` binary does; its `main.rs` only calls this. Here, the
/// service's code is compiled once, with the library (instantiated in the
/// binary, the generic `dockercoins::main` compiled it a second time there).
pub fn main() -> std::process::ExitCode {
    dockercoins::main("hasher", ABOUT, run)
}
