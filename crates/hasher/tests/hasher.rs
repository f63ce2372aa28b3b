//! hasher as the workshop sees it: SHA-256 of the body, served concurrently.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dockercoins::test_support::spawn;
use http_body_util::BodyExt;
use tower::ServiceExt;

fn app(args: &[&str]) -> axum::Router {
    let args = std::iter::once("hasher").chain(args.iter().copied());
    let config = dockercoins::parse_from::<hasher::Config, _, _>("hasher", hasher::ABOUT, args)
        .expect("valid arguments")
        .service;
    // The router the binary serves: the service's routes and the shared layers.
    dockercoins::http::with_ops(
        hasher::app(config, "hasher-test"),
        "hasher-test",
        dockercoins::http::Readiness::Always,
    )
}

async fn call(app: axum::Router, request: Request<Body>) -> (StatusCode, String, String) {
    let response = app.oneshot(request).await.expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn post(body: &'static [u8]) -> Request<Body> {
    Request::post("/")
        .header("content-type", "application/octet-stream")
        .body(Body::from(body))
        .expect("request")
}

#[tokio::test]
async fn hashes_the_body() {
    let (status, content_type, body) = call(app(&["--delay", "0"]), post(b"abc")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(
        body,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let (_, _, empty) = call(app(&["--delay", "0"]), post(b"")).await;
    assert_eq!(
        empty,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[tokio::test]
async fn index_says_who_is_running() {
    let request = Request::get("/").body(Body::empty()).expect("request");
    let (status, _, body) = call(app(&[]), request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "HASHER running on hasher-test\n");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let (status, _, body) = call(app(&["--max-body", "2", "--delay", "0"]), post(b"abc")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        body,
        "payload too large: the body is over HASHER_MAX_BODY (2 bytes)\n"
    );
    let (status, _, _) = call(app(&["--max-body", "3", "--delay", "0"]), post(b"abc")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn wrong_method_and_path_are_refused_with_a_reason() {
    let request = Request::delete("/").body(Body::empty()).expect("request");
    let (status, _, body) = call(app(&[]), request).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body, "method not allowed: DELETE /\n");
    let request = Request::post("/nothing")
        .body(Body::empty())
        .expect("request");
    let (status, _, body) = call(app(&[]), request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "not found: POST /nothing\n");
}

/// Unlike rng, the delay does not queue: ten hashes at once take one delay.
#[tokio::test]
async fn serves_requests_concurrently() {
    let running = spawn("hasher", &["--delay", "300ms"], hasher::run).await;
    let client = reqwest::Client::new();
    let start = Instant::now();
    let requests: Vec<_> = (0..10)
        .map(|_| tokio::spawn(client.post(running.url("/")).body("x").send()))
        .collect();
    for request in requests {
        let response = request.await.expect("task").expect("response");
        assert_eq!(response.status(), 200);
    }
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    running.stop().await.expect("clean stop");
}
