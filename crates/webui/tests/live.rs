//! Against a real redis-server: `/json` reads the classic keys, the sampler
//! turns the counter and the workers' reports into the speed and the cluster,
//! and the page's status follows Redis going away and coming back.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use dockercoins::CancellationToken;
use dockercoins::redis::{Redis, RedisOptions};
use dockercoins::test_support::RedisServer;
use http_body_util::BodyExt;
use redis::AsyncCommands;
use serde_json::{Value, json};
use tower::ServiceExt;

fn app(server: &RedisServer) -> (Router, CancellationToken) {
    let config = webui::Config {
        redis: RedisOptions::at(server.url()),
        assets_dir: None,
    };
    let redis = Redis::new(&RedisOptions::at(server.url())).expect("a valid url");
    let shutdown = CancellationToken::new();
    let live = webui::sampler::start(redis.clone(), shutdown.clone());
    (webui::app(&config, redis, live, shutdown.clone()), shutdown)
}

async fn get_json(app: &Router, path: &str) -> (StatusCode, Value) {
    let request = Request::get(path).body(Body::empty()).expect("a request");
    let response = app.clone().oneshot(request).await.expect("a response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, serde_json::from_slice(&body).expect("JSON"))
}

/// Polls `/history` until `check` accepts its status, or panics after `limit`.
async fn wait_for(
    app: &Router,
    limit: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (_, body) = get_json(app, "/history").await;
        if check(&body["status"]) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {limit:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

#[tokio::test]
async fn json_reads_the_classic_keys() {
    let server = RedisServer::start().await;
    let mut redis = server.client().await;
    let (app, _stop) = app(&server);

    let (status, body) = get_json(&app, "/json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&body["coins"], &body["hashes"]), (&json!(0), &json!(0)));

    let _: () = redis.set("hashes", 42).await.expect("SET");
    for coin in ["0a", "0b", "0c"] {
        let _: () = redis
            .hset("wallet", coin, [0u8; 32].as_slice())
            .await
            .expect("HSET");
    }
    let (status, body) = get_json(&app, "/json").await;
    assert_eq!(status, StatusCode::OK);
    let keys: Vec<&String> = body.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["coins", "hashes", "now"]);
    assert_eq!((&body["coins"], &body["hashes"]), (&json!(3), &json!(42)));
    let now = body["now"].as_f64().expect("now, a float");
    assert!((now - unix_now()).abs() < 5.0, "{now}");
}

#[tokio::test]
async fn speed_workers_and_instances_from_the_counter_and_the_reports() {
    let server = RedisServer::start().await;
    let mut redis = server.client().await;
    let (app, _stop) = app(&server);

    // Two workers doing 2 and 3 units a second: the counter grows by 5 a
    // second, once a second, as the workers flush it. w1 is answered by rng-a,
    // w2 by rng-a and rng-b in turn; hasher-1 answers both.
    let writer = tokio::spawn(async move {
        let start = unix_now();
        for second in 1..=30u64 {
            let time = start + second as f64;
            let _: () = redis.incr("hashes", 5).await.expect("INCRBY");
            for (name, units, rng) in [
                ("w1", 2 * second, json!({"rng-a": 2 * second})),
                (
                    "w2",
                    3 * second,
                    json!({"rng-a": 2 * second, "rng-b": second}),
                ),
            ] {
                let report = json!({"instance": name, "time": time, "units": units, "coins": 0,
                                    "rng": rng, "hasher": {"hasher-1": units}});
                let key = format!("dockercoins:report:{name}");
                let _: () = redis
                    .set_ex(key, report.to_string(), 10)
                    .await
                    .expect("SET");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let body = wait_for(
        &app,
        Duration::from_secs(20),
        "speed near 5 and both workers",
        |status| {
            let speed = status["speed"].as_f64().unwrap_or(0.0);
            (4.5..=5.5).contains(&speed)
                && status["workers"].as_array().is_some_and(|w| w.len() == 2)
                && status["workers"]
                    .as_array()
                    .is_some_and(|w| w.iter().all(|w| w["speed"].is_number()))
        },
    )
    .await;
    let status = &body["status"];
    let workers: Vec<(&str, f64)> = status["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| {
            (
                w["name"].as_str().expect("name"),
                w["speed"].as_f64().expect("speed"),
            )
        })
        .collect();
    assert_eq!(workers, [("w1", 2.0), ("w2", 3.0)]);
    let shares: Vec<(&str, f64)> = status["rng"]
        .as_array()
        .expect("rng")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().expect("name"),
                i["share"].as_f64().expect("share"),
            )
        })
        .collect();
    assert_eq!(shares, [("rng-a", 0.8), ("rng-b", 0.2)]);
    assert_eq!(status["hasher"][0]["name"], "hasher-1");
    assert_eq!(status["hasher"][0]["share"], 1.0);
    assert!(status["last_hash_age"].as_f64().expect("last hash age") < 1.5);
    assert!(status["redis_error"].is_null());
    let series = &body["series"];
    assert_eq!(
        series["time"].as_array().map(Vec::len),
        series["speed"].as_array().map(Vec::len)
    );
    assert!(series["time"].as_array().expect("times").len() >= 3);
    writer.abort();
}

#[tokio::test]
async fn the_status_follows_redis_going_away_and_coming_back() {
    let mut server = RedisServer::start().await;
    let (app, _stop) = app(&server);
    wait_for(&app, Duration::from_secs(5), "first status", |s| {
        s["hashes"].is_number()
    })
    .await;

    server.kill().await;
    let (status, body) = get_json(&app, "/json").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("redis")),
        "{body}"
    );
    wait_for(&app, Duration::from_secs(10), "redis_error", |s| {
        s["redis_error"].is_string() && s["speed"].is_null() && s["hashes"].is_null()
    })
    .await;

    server.restart().await;
    wait_for(&app, Duration::from_secs(15), "recovery", |s| {
        s["redis_error"].is_null() && s["hashes"].is_number()
    })
    .await;
    let (status, _) = get_json(&app, "/json").await;
    assert_eq!(status, StatusCode::OK);
}
