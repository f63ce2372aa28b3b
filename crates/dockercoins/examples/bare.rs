//! The reference server for `scripts/bench.sh`: the work of hasher's and
//! rng's routes on axum and tokio with nothing else (no layers, no metrics,
//! no access log, no limits), so that a service's throughput divided by this
//! one's is what our shared plumbing leaves of the machine.
//!
//! - `GET /`: a line of text (hasher's and rng's `GET /`);
//! - `POST /`: the hex SHA-256 of the body (hasher);
//! - `GET /{n}`: n random bytes from the OS (rng).
//!
//! Usage: `cargo run --release --example bare [PORT]` (default 8080, or `$PORT`).

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), String> {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
        .map_or(Ok(8080), |port| port.parse())
        .map_err(|err| format!("bare: PORT: {err}"))?;
    let listener = match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(listener) => listener,
        Err(_) => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .await
            .map_err(|err| format!("bare: cannot listen on port {port}: {err}"))?,
    };
    // The same socket option as the services: it is not plumbing.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new()
        .route("/", get(|| async { "BARE running\n" }).post(hash))
        .route("/{how_many_bytes}", get(random_bytes));
    axum::serve(listener, app)
        .await
        .map_err(|err| format!("bare: {err}"))
}

async fn hash(body: Bytes) -> impl IntoResponse {
    let hex_hash = hex::encode(Sha256::digest(&body));
    ([(header::CONTENT_TYPE, "text/plain")], hex_hash)
}

async fn random_bytes(Path(how_many_bytes): Path<String>) -> Response {
    let Ok(n) = how_many_bytes.parse::<usize>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if n > 1_048_576 {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let mut bytes = vec![0u8; n];
    match getrandom::fill(&mut bytes) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
