//! The reference client for `scripts/profile.sh`'s `worker_unit` case: the
//! two calls of the worker's unit of work (`GET /32` from rng, then
//! `POST /` of those bytes to hasher) on hyper's HTTP/1 connections and
//! tokio, with nothing else: no pool, no timeouts, no metrics, no logs, no
//! Redis. Each of CONCURRENCY tasks keeps one connection to each server and
//! does units until UNITS are done in all; then it prints how many were done.
//!
//! Usage: `cargo run --release --example bare_client RNG HASHER UNITS [CONCURRENCY]`
//! (RNG and HASHER as `host:port`; CONCURRENCY defaults to 64).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

struct Target {
    address: String,
    host: HeaderValue,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(rng), Some(hasher), Some(units)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("usage: bare_client RNG HASHER UNITS [CONCURRENCY]");
        return ExitCode::from(2);
    };
    let (Ok(units), Ok(concurrency)) = (
        units.parse::<u64>(),
        args.get(3).map_or(Ok(64), |n| n.parse::<u64>()),
    ) else {
        eprintln!("bare_client: UNITS and CONCURRENCY are numbers");
        return ExitCode::from(2);
    };
    let (Ok(rng_host), Ok(hasher_host)) =
        (HeaderValue::from_str(rng), HeaderValue::from_str(hasher))
    else {
        eprintln!("bare_client: RNG and HASHER are host:port");
        return ExitCode::from(2);
    };
    let rng = Arc::new(Target {
        address: rng.clone(),
        host: rng_host,
    });
    let hasher = Arc::new(Target {
        address: hasher.clone(),
        host: hasher_host,
    });
    let started = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            tokio::spawn(units_until(
                rng.clone(),
                hasher.clone(),
                started.clone(),
                units,
            ))
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        match task.await {
            Ok(Ok(units)) => done += units,
            Ok(Err(err)) => {
                eprintln!("bare_client: {err}");
                return ExitCode::FAILURE;
            }
            Err(err) => {
                eprintln!("bare_client: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{done}");
    ExitCode::SUCCESS
}

/// Does units until `units` have been started in all; returns how many it did.
async fn units_until(
    rng: Arc<Target>,
    hasher: Arc<Target>,
    started: Arc<AtomicU64>,
    units: u64,
) -> Result<u64, String> {
    let mut to_rng = connect(&rng.address).await?;
    let mut to_hasher = connect(&hasher.address).await?;
    let mut done = 0;
    while started.fetch_add(1, Ordering::Relaxed) < units {
        let mut get = Request::new(Full::default());
        *get.uri_mut() = hyper::Uri::from_static("/32");
        get.headers_mut().insert(HOST, rng.host.clone());
        let bytes = call(&mut to_rng, get).await?;
        let mut post = Request::new(Full::new(bytes));
        *post.method_mut() = Method::POST;
        *post.uri_mut() = hyper::Uri::from_static("/");
        post.headers_mut().insert(HOST, hasher.host.clone());
        post.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let hash = call(&mut to_hasher, post).await?;
        if hash.len() != 64 {
            return Err(format!("hasher answered {} bytes", hash.len()));
        }
        done += 1;
    }
    Ok(done)
}

async fn connect(address: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|err| format!("{address}: {err}"))?;
    tcp.set_nodelay(true)
        .map_err(|err| format!("{address}: {err}"))?;
    let (sender, connection) = http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|err| format!("{address}: {err}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn call(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<Bytes, String> {
    sender.ready().await.map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| err.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| err.to_string())?;
    Ok(body.to_bytes())
}
