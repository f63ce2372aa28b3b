//! webui: the mining speed, live, in a browser.
//!
//! `GET /json` reads the counters from Redis: coins in the wallet, hashes
//! done, and the time. The page (`/index.html`, served from assets built into
//! the binary, or from `WEBUI_ASSETS_DIR` for live editing) polls it every
//! second and draws the speed.

mod assets;

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use dockercoins::Service;
use dockercoins::http::Readiness;
use dockercoins::redis::Redis;
use serde::Serialize;

pub const ABOUT: &str = "DockerCoins webui: the mining speed, live, in a browser";

#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Where Redis answers.
    #[arg(long = "redis-url", env = "REDIS_URL", default_value = "redis://redis:6379")]
    pub redis_url: String,

    /// Serve the page from this directory instead of the built-in copy, so
    /// that edits show on reload (the classic development mode).
    #[arg(long = "assets-dir", env = "WEBUI_ASSETS_DIR")]
    pub assets_dir: Option<PathBuf>,
}

#[derive(Clone)]
struct Webui {
    redis: Redis,
}

pub async fn run(config: Config, service: Service) -> Result<(), String> {
    let redis = Redis::open(&config.redis_url)?;
    let routes = app(&config, redis.clone());
    dockercoins::http::serve(service, routes, Readiness::Redis(redis)).await
}

/// The routes, without the operations endpoints.
pub fn app(config: &Config, redis: Redis) -> Router {
    Router::new()
        .route("/", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/index.html")]) }))
        .route("/json", get(json))
        .with_state(Webui { redis })
        .fallback_service(assets::service(config.assets_dir.as_deref()))
}

/// What `/json` answers, as the classic app does (but with `hashes` a number).
#[derive(Serialize, Debug, PartialEq)]
pub struct Counters {
    pub coins: u64,
    pub hashes: u64,
    pub now: f64,
}

async fn json(State(webui): State<Webui>) -> Response {
    match read_counters(&webui.redis).await {
        Ok(counters) => Json(counters).into_response(),
        Err(err) => {
            tracing::warn!("cannot read the counters: {err}");
            let body = serde_json::json!({ "error": format!("redis unreachable: {err}") });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn read_counters(redis: &Redis) -> Result<Counters, redis::RedisError> {
    let start = Instant::now();
    let mut connection = redis.connection().await?;
    let (coins, hashes): (u64, Option<u64>) = redis::pipe()
        .hlen("wallet")
        .get("hashes")
        .query_async(&mut connection)
        .await?;
    metrics::histogram!("webui_redis_duration_seconds").record(start.elapsed().as_secs_f64());
    Ok(Counters {
        coins,
        hashes: hashes.unwrap_or(0),
        now: unix_now(),
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs_f64())
        .unwrap_or(0.0)
}
