//! The serving plumbing every service shares, through real sockets: request
//! metrics by route, method and status; one-line reasons; a drain that keeps
//! serving while `/readyz` says 503; a graceful stop that lets requests in
//! flight finish, bounded by SHUTDOWN_TIMEOUT.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use dockercoins::http::{Readiness, ServeError, not_found, serve};
use dockercoins::metrics::{METRICS, markdown_table};
use dockercoins::shutdown::Stop;
use dockercoins::{CancellationToken, Service};

#[derive(clap::Args, Debug)]
struct NoKnobs {}

/// A loopback listener in this file's share of the ops tests' ports.
async fn listener() -> tokio::net::TcpListener {
    for port in 32000..32100 {
        if let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            return listener;
        }
    }
    panic!("no free port in 32000..32100");
}

struct Served {
    base: String,
    shutdown: CancellationToken,
    stop: Stop,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

/// Serves `routes` as a service does, with `args` as its command line.
async fn start(routes: Router, args: &[&str]) -> Served {
    dockercoins::metrics::install();
    let cli = dockercoins::parse_from::<NoKnobs, _, _>(
        "test",
        "test",
        std::iter::once(&"test").chain(args),
    )
    .expect("valid arguments");
    let listener = listener().await;
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let stop = Stop::default();
    let service = Service {
        instance: "test-1".into(),
        listener,
        shutdown: stop.shutdown.clone(),
        draining: stop.draining.clone(),
        ignore_sigterm: stop.ignore_sigterm.clone(),
        common: cli.common,
    };
    let task = tokio::spawn(serve(service, routes, Readiness::Always));
    Served {
        base,
        shutdown: stop.shutdown.clone(),
        stop,
        task,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

async fn send(method: &str, url: &str) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let response = client().request(method, url).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn requests_are_counted_by_route_method_and_status() {
    let routes = Router::new()
        .route("/items/{id}", get(|| async { "item\n" }))
        .fallback(not_found);
    let served = start(routes, &[]).await;
    let base = &served.base;

    assert_eq!(send("GET", &format!("{base}/items/1")).await.0, 200);
    assert_eq!(send("GET", &format!("{base}/items/2")).await.0, 200);
    let (status, body) = send("POST", &format!("{base}/items/3")).await;
    assert_eq!(
        (status, body.as_str()),
        (405, "method not allowed: POST /items/3\n")
    );
    let (status, body) = send("GET", &format!("{base}/nowhere/at/all")).await;
    assert_eq!(
        (status, body.as_str()),
        (404, "not found: GET /nowhere/at/all\n")
    );
    assert_eq!(send("BREW", &format!("{base}/items/4")).await.0, 405);
    assert_eq!(
        send("GET", &format!("{base}/healthz")).await,
        (200, "ok\n".into())
    );
    assert_eq!(
        send("GET", &format!("{base}/readyz")).await,
        (200, "ready\n".into())
    );

    let (status, metrics) = send("GET", &format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let response = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET");
    let content_type = response
        .headers()
        .get("content-type")
        .expect("a content type");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let series = |method: &str, status: u16| {
        format!(
            r#"http_requests_total{{route="/items/{{id}}",method="{method}",status="{status}"}}"#
        )
    };
    // One series per route pattern, not per path; made-up methods fold into `other`.
    assert_eq!(value(&metrics, &series("GET", 200)), Some(2.0), "{metrics}");
    assert_eq!(
        value(&metrics, &series("POST", 405)),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, &series("other", 405)),
        Some(1.0),
        "{metrics}"
    );
    assert!(!metrics.contains("BREW"), "{metrics}");
    let unmatched = r#"http_requests_total{route="unmatched",method="GET",status="404"}"#;
    assert!(
        value(&metrics, unmatched).unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    // The latency histogram has the buckets the README's queries use.
    for le in ["0.1", "0.25", "0.5", "1", "2.5", "+Inf"] {
        let bucket =
            format!(r#"http_request_duration_seconds_bucket{{route="/items/{{id}}",le="{le}"}}"#);
        assert!(value(&metrics, &bucket).is_some(), "{bucket}: {metrics}");
    }
    assert!(metrics.contains("# HELP http_requests_total "), "{metrics}");
    assert!(
        metrics.contains("# TYPE http_request_duration_seconds histogram"),
        "{metrics}"
    );

    served.shutdown.cancel();
    served.task.await.expect("join").expect("a clean stop");
}

#[tokio::test]
async fn a_stop_lets_requests_in_flight_finish_and_refuses_new_ones() {
    let routes = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "done\n"
        }),
    );
    let served = start(routes, &[]).await;
    let url = format!("{}/slow", served.base);
    let in_flight = tokio::spawn(async move { send("GET", &url).await });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let stop = Instant::now();
    served.shutdown.cancel();
    // The listener closes at once (here: well before the request in flight ends).
    loop {
        match client()
            .get(format!("{}/healthz", served.base))
            .send()
            .await
        {
            Err(_) => break,
            Ok(_) => assert!(
                stop.elapsed() < Duration::from_millis(200),
                "new connections still accepted {:?} after the stop",
                stop.elapsed()
            ),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(in_flight.await.expect("join"), (200, "done\n".into()));
    served.task.await.expect("join").expect("a clean stop");
    let took = stop.elapsed();
    assert!(took < Duration::from_millis(600), "the stop took {took:?}");
}

/// A new connection's answer to `GET /healthz`, or `None` if refused.
async fn fresh_get(url: &str) -> Option<(u16, String)> {
    // A client of its own: a new connection, never a kept one.
    let response = client().get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

#[tokio::test]
async fn a_drain_says_not_ready_yet_keeps_serving_new_connections_then_closes() {
    let routes = Router::new().route("/work", get(|| async { "done\n" }));
    let served = start(routes, &[]).await;
    let (readyz, work) = (
        format!("{}/readyz", served.base),
        format!("{}/work", served.base),
    );
    assert_eq!(fresh_get(&readyz).await, Some((200, "ready\n".into())));

    let drain = Duration::from_millis(800);
    let stop = served.stop.clone();
    let started = Instant::now();
    let drained = tokio::spawn(async move { stop.drain_then_stop(drain).await });
    // During the drain: /readyz says 503 at once, and new connections are
    // still accepted and served, until the drain is nearly over.
    let mut served_during_drain = 0;
    while started.elapsed() < drain - Duration::from_millis(150) {
        assert_eq!(
            fresh_get(&readyz).await,
            Some((503, "not ready: shutting down\n".into())),
            "/readyz {:?} into the drain",
            started.elapsed()
        );
        assert_eq!(
            fresh_get(&work).await,
            Some((200, "done\n".into())),
            "a new connection {:?} into the drain",
            started.elapsed()
        );
        served_during_drain += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served_during_drain >= 5, "{served_during_drain} requests");
    drained.await.expect("join");
    // After the drain: the listener is closed and the service has stopped.
    served.task.await.expect("join").expect("a clean stop");
    assert_eq!(fresh_get(&work).await, None, "connected after the drain");
    let took = started.elapsed();
    assert!(
        took >= drain && took < drain + Duration::from_millis(400),
        "a drain of {drain:?} took {took:?}"
    );
}

#[tokio::test]
async fn shutdown_timeout_bounds_the_wait_for_requests_that_never_end() {
    let routes = Router::new().route(
        "/forever",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "never\n"
        }),
    );
    let served = start(routes, &["--shutdown-timeout", "200ms"]).await;
    let url = format!("{}/forever", served.base);
    let _hanging = tokio::spawn(async move { client().get(url).send().await.map(drop) });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let stop = Instant::now();
    served.shutdown.cancel();
    served.task.await.expect("join").expect("a clean stop");
    let took = stop.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(700),
        "SHUTDOWN_TIMEOUT=200ms, the stop took {took:?}"
    );
}

#[test]
fn every_metric_is_listed_once_with_its_meaning() {
    let mut names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), METRICS.len(), "a metric is listed twice");
    let table = markdown_table();
    for metric in METRICS {
        assert!(!metric.help.is_empty(), "{} has no meaning", metric.name);
        assert!(table.contains(&format!("`{}`", metric.name)));
        let suffix_ok = match metric.kind {
            dockercoins::metrics::Kind::Counter => metric.name.ends_with("_total"),
            _ => !metric.name.ends_with("_total"),
        };
        assert!(
            suffix_ok,
            "{}: counters, and only they, end in _total",
            metric.name
        );
    }
}
