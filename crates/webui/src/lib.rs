//! webui: the mining speed, live, in a browser.
//!
//! `GET /json` reads the counters from Redis: coins in the wallet, hashes
//! done, and the time, as in the classic app (requests that come together
//! share one read). The page (`/index.html`, served
//! from assets built into the binary, or from `WEBUI_ASSETS_DIR` for live
//! editing) gets the last five minutes from `/history` and then a new status
//! every second from `/events`, both made by the [`sampler`], which reads
//! Redis on its own.

mod assets;
mod counters;
pub mod history;
pub mod sampler;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use dockercoins::http::Readiness;
use dockercoins::redis::{Redis, RedisOptions};
use dockercoins::{BoxError, CancellationToken, Service};
use serde::Serialize;

use crate::counters::SharedReads;
use crate::sampler::Live;

pub const ABOUT: &str = "DockerCoins webui: the mining speed, live, in a browser";

#[derive(Args, Debug, Clone)]
pub struct Config {
    // Where Redis is: `REDIS_URL`, or the Sentinels.
    #[command(flatten)]
    pub redis: RedisOptions,

    /// Serve the page from this directory instead of the built-in copy, so
    /// that edits show on reload (the classic development mode).
    #[arg(long = "assets-dir", env = "WEBUI_ASSETS_DIR")]
    pub assets_dir: Option<PathBuf>,
}

/// What the handlers share, behind one `Arc`: axum clones the state for
/// every request, and one reference count costs less than three.
struct Webui {
    counters: SharedReads,
    live: Arc<Live>,
    shutdown: CancellationToken,
}

pub async fn run(config: Config, service: Service) -> Result<(), BoxError> {
    let redis = Redis::new(&config.redis)?;
    let live = sampler::start(redis.clone(), service.shutdown.clone());
    let routes = app(&config, redis.clone(), live, service.shutdown.clone());
    dockercoins::http::serve(service, routes, Readiness::Redis(redis)).await?;
    Ok(())
}

/// The routes, without the operations endpoints. `live` is what the sampler
/// knows; `shutdown` ends the event streams so that open pages never hold up
/// a stop.
pub fn app(config: &Config, redis: Redis, live: Arc<Live>, shutdown: CancellationToken) -> Router {
    Router::new()
        // A relative redirect, as every URL of the page is relative: behind a
        // proxy that adds a path (`kubectl proxy`'s
        // `/api/v1/namespaces/<ns>/services/webui/proxy/`, an Ingress with a
        // path prefix) the browser stays under that path.
        .route(
            "/",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "index.html")]) }),
        )
        .route("/json", get(json))
        .route("/history", get(history))
        .route("/events", get(events))
        .with_state(Arc::new(Webui {
            counters: SharedReads::new(redis),
            live,
            shutdown,
        }))
        .fallback_service(assets::service(config.assets_dir.as_deref()))
}

/// What `/json` answers, as the classic app does (but with `hashes` a number).
#[derive(Serialize, Debug, PartialEq)]
pub struct Counters {
    pub coins: u64,
    pub hashes: u64,
    pub now: f64,
}

async fn json(State(webui): State<Arc<Webui>>) -> Response {
    let answer = webui.counters.read().await;
    let json = HeaderValue::from_static("application/json");
    (answer.status, [(header::CONTENT_TYPE, json)], answer.json).into_response()
}

/// The speed over the last five minutes and the latest status, for a page
/// that opens: `{"series": {"time": [...], "speed": [...]}, "status": {...}}`.
async fn history(State(webui): State<Arc<Webui>>) -> Response {
    let json = webui.live.history_json();
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// A server-sent event stream: `history` at once, then `update` every second
/// with the latest status (see [`history::Status`]).
async fn events(State(webui): State<Arc<Webui>>) -> impl IntoResponse {
    Sse::new(webui.live.events(webui.shutdown.clone()))
}

pub(crate) async fn read_counters(redis: &Redis) -> Result<Counters, redis::RedisError> {
    let start = Instant::now();
    let counts = redis.read_counts().await?;
    metrics::histogram!("webui_redis_duration_seconds").record(start.elapsed().as_secs_f64());
    Ok(Counters {
        coins: counts.coins,
        hashes: counts.hashes,
        now: unix_now(),
    })
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the `webui` binary does; its `main.rs` only calls this. Here, the
/// service's code is compiled once, with the library (instantiated in the
/// binary, the generic `dockercoins::main` compiled it a second time there).
pub fn main() -> std::process::ExitCode {
    dockercoins::main("webui", ABOUT, run)
}
