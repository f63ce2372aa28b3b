//! hasher: the SHA-256 of what you POST.
//!
//! `POST /` answers the lowercase hex SHA-256 of the body after a short delay;
//! `GET /` says who is running. Requests are served concurrently: the delay
//! does not queue. A body over `HASHER_MAX_BODY` gets 413; a body that never
//! ends gets 408 after `HASHER_BODY_TIMEOUT`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use dockercoins::http::{Readiness, not_found};
use dockercoins::{BoxError, Service};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sha2::{Digest, Sha256};

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

pub async fn run(config: Config, service: Service) -> Result<(), BoxError> {
    let routes = app(config, &service.instance);
    dockercoins::http::serve(service, routes, Readiness::Always).await?;
    Ok(())
}

/// The routes, without the operations endpoints.
pub fn app(config: Config, instance: &str) -> Router {
    let running = format!("HASHER running on {instance}\n");
    Router::new()
        .route("/", get(|| async move { running }).post(hash))
        .fallback(not_found)
        .with_state(Arc::new(config))
}

async fn hash(State(config): State<Arc<Config>>, body: Body) -> Response {
    // The body and the delay together may take HASHER_BODY_TIMEOUT plus the
    // delay; a client that sends less than it announced gets a 408.
    let within = config.body_timeout + config.delay;
    let answer = async {
        let body = match read_body(body, config.max_body).await {
            Ok(body) => body,
            Err(refused) => return refused,
        };
        // Simulate a bit of delay.
        dockercoins::delay(config.delay).await;
        metrics::counter!("hasher_bytes_hashed_total").increment(body.len() as u64);
        let hex_hash = hex::encode(Sha256::digest(&body));
        ([(header::CONTENT_TYPE, "text/plain")], hex_hash).into_response()
    };
    match tokio::time::timeout(within, answer).await {
        Ok(answer) => answer,
        Err(_) => {
            let line = format!("request timeout: the body did not arrive within {within:?}\n");
            (StatusCode::REQUEST_TIMEOUT, line).into_response()
        }
    }
}

/// The whole body, at most `max` bytes: a body announced over the limit gets
/// its 413 at once, unread, and one that grows over it as soon as it does.
async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, Response> {
    let too_large = || {
        let line = format!("payload too large: the body is over HASHER_MAX_BODY ({max} bytes)\n");
        (StatusCode::PAYLOAD_TOO_LARGE, line).into_response()
    };
    if HttpBody::size_hint(&body).lower() > max as u64 {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(too_large()),
        Err(err) => {
            let line = format!("bad request: cannot read the body: {err}\n");
            Err((StatusCode::BAD_REQUEST, line).into_response())
        }
    }
}

/// What the `hasher` binary does; its `main.rs` only calls this. Here, the
/// service's code is compiled once, with the library (instantiated in the
/// binary, the generic `dockercoins::main` compiled it a second time there).
pub fn main() -> std::process::ExitCode {
    dockercoins::main("hasher", ABOUT, run)
}
