//! rng: hands out random bytes.
//!
//! `GET /` says who is running; `GET /<n>` returns n bytes from the OS random
//! source after a short delay. Like the classic single-threaded server, it
//! serves ONE request at a time: the others wait in line. That line is the
//! bottleneck the workshop makes people find (one rng gives at most 10
//! answers a second). `RNG_DELAY` and `RNG_CONCURRENCY` change both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use dockercoins::http::{Readiness, not_found};
use dockercoins::{BoxError, CancellationToken, Service};
use tokio::sync::Semaphore;

pub const ABOUT: &str = "DockerCoins rng: hands out random bytes, one request at a time";

#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Delay before each answer of random bytes (the classic 0.1 s).
    #[arg(long = "delay", env = "RNG_DELAY", default_value = "100ms", value_parser = dockercoins::config::duration)]
    pub delay: Duration,

    /// Requests served at once; the others wait in line (0 = no line).
    #[arg(long = "concurrency", env = "RNG_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,

    /// Most bytes one request may ask for.
    #[arg(long = "max-bytes", env = "RNG_MAX_BYTES", default_value_t = 1_048_576)]
    pub max_bytes: u64,
}

/// What the routes share, behind one `Arc`: a request's `State` costs one
/// reference count, not one per field (and none of the shutdown token's lock).
struct Rng {
    config: Config,
    instance: String,
    /// One permit per request served at once; `None` when there is no line.
    line: Option<Arc<Semaphore>>,
    shutdown: CancellationToken,
}

pub async fn run(config: Config, service: Service) -> Result<(), BoxError> {
    let routes = app(config, &service.instance, service.shutdown.clone());
    dockercoins::http::serve(service, routes, Readiness::Always).await?;
    Ok(())
}

/// The routes, without the operations endpoints.
pub fn app(config: Config, instance: &str, shutdown: CancellationToken) -> Router {
    let line = (config.concurrency > 0).then(|| Arc::new(Semaphore::new(config.concurrency)));
    let rng = Arc::new(Rng {
        config,
        instance: instance.into(),
        line,
        shutdown,
    });
    Router::new()
        .route("/", get(index))
        .route("/{how_many_bytes}", get(random_bytes))
        .fallback(not_found)
        .with_state(rng)
}

async fn index(State(rng): State<Arc<Rng>>) -> Response {
    let running = format!("RNG running on {}\n", rng.instance);
    rng.in_line(async move { running.into_response() }).await
}

async fn random_bytes(State(rng): State<Arc<Rng>>, Path(how_many_bytes): Path<String>) -> Response {
    // Only digits name a size: `/abc` and `/-1` are not found, as in the classic app.
    if how_many_bytes.is_empty() || !how_many_bytes.bytes().all(|b| b.is_ascii_digit()) {
        let line = format!("not found: /{how_many_bytes} is not a number of bytes\n");
        return (StatusCode::NOT_FOUND, line).into_response();
    }
    let max = rng.config.max_bytes;
    let n = match how_many_bytes.parse::<u64>() {
        Ok(n) if n <= max => n as usize,
        _ => {
            let line =
                format!("too many bytes: asked for {how_many_bytes}, RNG_MAX_BYTES is {max}\n");
            return (StatusCode::BAD_REQUEST, line).into_response();
        }
    };
    let delay = rng.config.delay;
    rng.in_line(async move {
        // Simulate a little bit of delay.
        dockercoins::delay(delay).await;
        let mut bytes = vec![0u8; n];
        match getrandom::fill(&mut bytes) {
            Ok(()) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
            Err(err) => {
                tracing::error!("the OS random source failed: {err}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the OS random source failed\n",
                )
                    .into_response()
            }
        }
    })
    .await
}

impl Rng {
    /// Waits for its turn in line, then answers. A request still waiting when
    /// the service stops gets a 503, so that a stop takes one delay, not the line.
    async fn in_line(&self, answer: impl Future<Output = Response>) -> Response {
        let Some(line) = &self.line else {
            return answer.await;
        };
        let queued = Instant::now();
        let waiting = WaitingInLine::enter();
        let permit = tokio::select! {
            permit = line.acquire() => permit,
            () = self.shutdown.cancelled() => {
                return (StatusCode::SERVICE_UNAVAILABLE, "rng is shutting down\n").into_response();
            }
        };
        drop(waiting);
        metrics::histogram!("rng_wait_seconds").record(queued.elapsed().as_secs_f64());
        match permit {
            Ok(_permit) => answer.await,
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "rng is shutting down\n").into_response(),
        }
    }
}

/// Counts a request in `rng_requests_waiting` while it waits, even if its
/// client gives up and the request is dropped.
struct WaitingInLine;

impl WaitingInLine {
    fn enter() -> Self {
        metrics::gauge!("rng_requests_waiting").increment(1.0);
        WaitingInLine
    }
}

impl Drop for WaitingInLine {
    fn drop(&mut self) {
        metrics::gauge!("rng_requests_waiting").decrement(1.0);
    }
}

/// What the `rng` binary does; its `main.rs` only calls this. Here, the
/// service's code is compiled once, with the library (instantiated in the
/// binary, the generic `dockercoins::main` compiled it a second time there).
pub fn main() -> std::process::ExitCode {
    dockercoins::main("rng", ABOUT, run)
}
