//! `/json` against a real redis-server, counting what Redis is asked: requests
//! that come together share one read, yet none is answered with counters read
//! before it came, and all of them get the 503 when Redis is gone.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dockercoins::CancellationToken;
use dockercoins::redis::{Redis, RedisOptions};
use dockercoins::test_support::RedisServer;
use http_body_util::BodyExt;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Nothing listens on port 1 of the loopback: connections are refused at once.
const NO_REDIS: &str = "redis://127.0.0.1:1";

/// The routes reading `redis_url`; the sampler reads an absent Redis, so that
/// every read the tested Redis counts is one of `/json`'s.
fn app(redis_url: &str) -> (Router, CancellationToken) {
    let config = webui::Config {
        redis: RedisOptions::at(redis_url),
        assets_dir: None,
    };
    let redis = Redis::new(&RedisOptions::at(redis_url)).expect("a valid url");
    let shutdown = CancellationToken::new();
    let elsewhere = Redis::new(&RedisOptions::at(NO_REDIS)).expect("a valid url");
    let live = webui::sampler::start(elsewhere, shutdown.clone());
    (webui::app(&config, redis, live, shutdown.clone()), shutdown)
}

/// `/json`'s status and body; every answer, 200 or not, is JSON.
async fn get_json(app: Router) -> (StatusCode, String) {
    let request = Request::get("/json")
        .body(Body::empty())
        .expect("a request");
    let response = app.oneshot(request).await.expect("a response");
    let status = response.status();
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `(coins, hashes)` of a 200 answer.
async fn counters(app: &Router) -> (Value, Value) {
    let (status, body) = get_json(app.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert!(body["now"].is_f64(), "{body}");
    (body["coins"].clone(), body["hashes"].clone())
}

/// `count` requests at once, each in its own task; their answers.
async fn at_once(app: &Router, count: usize) -> Vec<(StatusCode, String)> {
    let mut requests = JoinSet::new();
    for _ in 0..count {
        requests.spawn(get_json(app.clone()));
    }
    requests.join_all().await
}

/// How many `HLEN`s Redis has run: one per read of the counters.
async fn reads(redis: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .expect("INFO commandstats");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_hlen:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a number of calls"))
}

async fn seed(redis: &mut MultiplexedConnection, hashes: u64, coins: &[&str]) {
    let _: () = redis.set("hashes", hashes).await.expect("SET");
    for coin in coins {
        let _: () = redis
            .hset("wallet", *coin, [0u8; 32].as_slice())
            .await
            .expect("HSET");
    }
}

#[tokio::test]
async fn requests_at_once_share_reads_and_all_get_the_counters() {
    let server = RedisServer::start().await;
    let mut redis = server.client().await;
    let (app, _stop) = app(&server.url());
    seed(&mut redis, 42, &["0a", "0b", "0c"]).await;

    let requests = 200;
    let answers = at_once(&app, requests).await;
    assert_eq!(answers.len(), requests);
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        let body: Value = serde_json::from_str(body).expect("JSON");
        assert_eq!((&body["coins"], &body["hashes"]), (&json!(3), &json!(42)));
    }
    let reads = reads(&mut redis).await;
    assert!(reads >= 1, "the counters come from Redis");
    assert!(
        reads * 20 <= requests as u64,
        "{reads} reads for {requests} requests at once"
    );
}

#[tokio::test]
async fn a_lone_request_costs_one_read_and_sees_the_latest_counters() {
    let server = RedisServer::start().await;
    let mut redis = server.client().await;
    let (app, _stop) = app(&server.url());

    let coins = ["0a", "0b", "0c", "0d", "0e"];
    for (done, coin) in coins.iter().enumerate() {
        let hashes = 100 + done as u64;
        seed(&mut redis, hashes, &[coin]).await;
        assert_eq!(counters(&app).await, (json!(done + 1), json!(hashes)));
    }
    assert_eq!(reads(&mut redis).await, coins.len() as u64);
}

/// A TCP proxy in front of `redis_port` that holds Redis' replies back while
/// the returned sender says `false`.
async fn proxy(redis_port: u16) -> (String, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("an address").port();
    let (gate, replies_pass) = watch::channel(true);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let mut replies_pass = replies_pass.clone();
            tokio::spawn(async move {
                let server = TcpStream::connect(("127.0.0.1", redis_port))
                    .await
                    .expect("connect to the test redis");
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                });
                let mut buffer = [0u8; 4096];
                loop {
                    match from_server.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if replies_pass.wait_for(|pass| *pass).await.is_err()
                                || to_client.write_all(&buffer[..n]).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (format!("redis://127.0.0.1:{port}"), gate)
}

#[tokio::test]
async fn a_request_during_a_read_waits_for_the_next_one() {
    let server = RedisServer::start().await;
    let mut redis = server.client().await;
    let (url, replies_pass) = proxy(server.port).await;
    let (app, _stop) = app(&url);
    seed(&mut redis, 1, &["0a"]).await;
    assert_eq!(counters(&app).await, (json!(1), json!(1)));

    // A read that Redis has answered, its reply held on the way back.
    replies_pass.send_replace(false);
    let first = tokio::spawn(get_json(app.clone()));
    while reads(&mut redis).await < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Then the counters change, and a request comes while that read is in
    // flight: it must not get the counters read before it came.
    seed(&mut redis, 2, &["0b"]).await;
    let second = tokio::spawn(get_json(app.clone()));
    // Every task ready runs (the second request waits) before the reply passes.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    replies_pass.send_replace(true);

    let (status, body) = first.await.expect("the first request");
    assert_eq!(status, StatusCode::OK, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!((&body["coins"], &body["hashes"]), (&json!(1), &json!(1)));
    let (status, body) = second.await.expect("the second request");
    assert_eq!(status, StatusCode::OK, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!((&body["coins"], &body["hashes"]), (&json!(2), &json!(2)));
    assert_eq!(reads(&mut redis).await, 3);
}

#[tokio::test]
async fn with_redis_gone_every_request_at_once_gets_the_503_then_200_again() {
    let mut server = RedisServer::start().await;
    let (app, _stop) = app(&server.url());
    assert_eq!(counters(&app).await, (json!(0), json!(0)));

    server.kill().await;
    let answers = at_once(&app, 50).await;
    assert_eq!(answers.len(), 50);
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let body: Value = serde_json::from_str(body).expect("JSON");
        let error = body["error"].as_str().expect("an error");
        assert!(error.starts_with("redis unreachable: "), "{error}");
        assert!(!error.contains('\n'), "one line: {error:?}");
    }

    server.restart().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get_json(app.clone()).await.0 != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "no 200 after restart");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let answers = at_once(&app, 50).await;
    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK));
}
