//! rng as the workshop sees it: the routes, the bytes, and the line.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dockercoins::CancellationToken;
use dockercoins::test_support::spawn;
use http_body_util::BodyExt;
use tower::ServiceExt;

fn config(args: &[&str]) -> rng::Config {
    let args = std::iter::once("rng").chain(args.iter().copied());
    dockercoins::parse_from::<rng::Config, _, _>("rng", rng::ABOUT, args)
        .expect("valid arguments")
        .service
}

async fn get(app: axum::Router, path: &str) -> (StatusCode, Option<String>, Vec<u8>) {
    let request = Request::get(path).body(Body::empty()).expect("request");
    let response = app.oneshot(request).await.expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap_or("").to_owned());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, content_type, body.to_vec())
}

fn app(args: &[&str]) -> axum::Router {
    rng::app(config(args), "rng-test", CancellationToken::new())
}

#[tokio::test]
async fn index_says_who_is_running() {
    let (status, _, body) = get(app(&[]), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"RNG running on rng-test\n");
}

#[tokio::test]
async fn returns_exactly_the_bytes_asked_for() {
    let (status, content_type, body) = get(app(&["--delay", "0"]), "/32").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(body.len(), 32);
    let (_, _, other) = get(app(&["--delay", "0"]), "/32").await;
    assert_ne!(body, other, "two draws of 32 random bytes should differ");
    let (status, _, body) = get(app(&["--delay", "0"]), "/0").await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
}

#[tokio::test]
async fn paths_that_are_not_sizes_are_not_found() {
    for path in ["/abc", "/-1", "/1.5", "/+3", "/32/extra"] {
        let (status, _, _) = get(app(&["--delay", "0"]), path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn sizes_over_the_limit_are_refused_with_a_reason() {
    let (status, _, body) = get(app(&["--max-bytes", "64"]), "/65").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let reason = String::from_utf8(body).expect("text");
    assert!(reason.contains("RNG_MAX_BYTES"), "{reason}");
    assert_eq!(reason.lines().count(), 1);
    let (status, _, _) = get(app(&[]), "/99999999999999999999999999").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = get(app(&["--max-bytes", "64", "--delay", "0"]), "/64").await;
    assert_eq!((status, body.len()), (StatusCode::OK, 64));
}

/// Sends `n` requests at once and returns their statuses.
async fn at_once(url: String, n: usize) -> Vec<u16> {
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..n)
        .map(|_| tokio::spawn(client.get(&url).send()))
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        let response = request.await.expect("task").expect("response");
        statuses.push(response.status().as_u16());
    }
    statuses
}

/// Five requests at once, one served at a time: they take five delays.
#[tokio::test]
async fn serves_one_request_at_a_time_by_default() {
    let running = spawn("rng", &["--delay", "100ms"], rng::run).await;
    let start = Instant::now();
    assert_eq!(at_once(running.url("/1"), 5).await, [200; 5]);
    assert!(
        start.elapsed() >= Duration::from_millis(490),
        "{:?}",
        start.elapsed()
    );
    running.stop().await.expect("clean stop");
}

/// With `RNG_CONCURRENCY=0` there is no line: five requests take one delay.
#[tokio::test]
async fn no_line_when_concurrency_is_zero() {
    let args = ["--delay", "300ms", "--concurrency", "0"];
    let running = spawn("rng", &args, rng::run).await;
    let start = Instant::now();
    assert_eq!(at_once(running.url("/1"), 5).await, [200; 5]);
    assert!(
        start.elapsed() < Duration::from_millis(1200),
        "{:?}",
        start.elapsed()
    );
    running.stop().await.expect("clean stop");
}

/// `GET /` waits in the same line as the random bytes, as in the classic app.
#[tokio::test]
async fn index_waits_in_line_too() {
    let running = spawn("rng", &["--delay", "300ms"], rng::run).await;
    let busy = tokio::spawn(reqwest::get(running.url("/1")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    let index = reqwest::get(running.url("/")).await.expect("response");
    assert_eq!(index.status(), 200);
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    busy.await.expect("task").expect("response");
    running.stop().await.expect("clean stop");
}
