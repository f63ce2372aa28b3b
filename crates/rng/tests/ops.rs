//! rng as an orchestrator and an operator see it: the real binary's health,
//! readiness and metrics endpoints, its `healthcheck` subcommand, and how it
//! stops on SIGTERM and SIGINT: the drain that keeps serving while `/readyz`
//! says 503, then the stop, and a second signal that cuts the drain short.

use std::time::Duration;

use dockercoins::test_support::{Process, get, healthcheck, sample, undocumented_metrics};

const RNG: &str = env!("CARGO_BIN_EXE_rng");
/// This file's share of the ops tests' loopback ports.
const PORTS: std::ops::Range<u16> = 32100..32250;

async fn start(env: &[(&str, &str)]) -> Process {
    let mut rng = Process::start(RNG, PORTS, env);
    rng.wait_for("/healthz").await;
    rng
}

#[tokio::test]
async fn health_readiness_and_metrics_endpoints() {
    let mut rng = start(&[]).await;
    let (_, _, metrics) = get(&rng.url("/metrics")).await;
    assert_eq!(
        sample(&metrics, "rng_requests_waiting"),
        Some(0.0),
        "from the start: {metrics}"
    );
    assert_eq!(
        sample(&metrics, "rng_wait_seconds_count"),
        Some(0.0),
        "{metrics}"
    );

    let (status, instance, body) = get(&rng.url("/healthz")).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(instance.as_deref(), Some("rng-test"));
    let (status, _, _) = get(&rng.url("/readyz")).await;
    assert_eq!(status, 200, "rng needs nothing to be ready");

    for _ in 0..3 {
        let (status, _, _) = get(&rng.url("/32")).await;
        assert_eq!(status, 200);
    }
    let (status, _, _) = get(&rng.url("/32/extra")).await;
    assert_eq!(status, 404);

    let (status, _, metrics) = get(&rng.url("/metrics")).await;
    assert_eq!(status, 200);
    let requests = r#"http_requests_total{route="/{how_many_bytes}",method="GET",status="200"}"#;
    assert_eq!(sample(&metrics, requests), Some(3.0), "{metrics}");
    let not_found = r#"http_requests_total{route="unmatched",method="GET",status="404"}"#;
    assert_eq!(sample(&metrics, not_found), Some(1.0), "{metrics}");
    let latency = r#"http_request_duration_seconds_count{route="/{how_many_bytes}"}"#;
    assert_eq!(sample(&metrics, latency), Some(3.0), "{metrics}");
    // Each answer takes RNG_DELAY (100 ms): none is in the 0.05 s bucket, all in 0.25 s.
    let fast = r#"http_request_duration_seconds_bucket{route="/{how_many_bytes}",le="0.05"}"#;
    let slow = r#"http_request_duration_seconds_bucket{route="/{how_many_bytes}",le="0.25"}"#;
    assert_eq!(sample(&metrics, fast), Some(0.0), "{metrics}");
    assert_eq!(sample(&metrics, slow), Some(3.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "rng_requests_waiting"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "rng_wait_seconds_count"),
        Some(3.0),
        "{metrics}"
    );
    let build = r#"dockercoins_build_info{service="rng",version="0.1.0"}"#;
    assert_eq!(sample(&metrics, build), Some(1.0), "{metrics}");
    assert!(
        metrics.contains("# HELP rng_requests_waiting "),
        "{metrics}"
    );
    assert_eq!(undocumented_metrics(&metrics), Vec::<String>::new());

    let (status, _) = rng.signal_and_wait("TERM").await;
    assert!(status.success());
}

#[tokio::test]
async fn the_line_shows_in_the_metrics_while_it_waits() {
    let mut rng = start(&[("RNG_DELAY", "400ms")]).await;
    let url = rng.url("/32");
    let calls: Vec<_> = (0..5)
        .map(|_| tokio::spawn(get_status(url.clone())))
        .collect();
    // While the first is served (400 ms), the four others wait.
    let mut waiting = Vec::new();
    for _ in 0..20 {
        let (_, _, metrics) = get(&rng.url("/metrics")).await;
        waiting.push(sample(&metrics, "rng_requests_waiting").unwrap_or(0.0));
        if waiting.last() == Some(&4.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        waiting.last(),
        Some(&4.0),
        "rng_requests_waiting was {waiting:?}"
    );
    for call in calls {
        assert_eq!(call.await.expect("call"), 200);
    }
    let (_, _, metrics) = get(&rng.url("/metrics")).await;
    assert_eq!(
        sample(&metrics, "rng_requests_waiting"),
        Some(0.0),
        "{metrics}"
    );
    // The last in line waited for the four before it: about 1.6 s, in the 2.5 s bucket.
    assert_eq!(
        sample(&metrics, r#"rng_wait_seconds_bucket{le="0.25"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, r#"rng_wait_seconds_bucket{le="2.5"}"#),
        Some(5.0)
    );
    let (status, _) = rng.signal_and_wait("TERM").await;
    assert!(status.success());
}

async fn get_status(url: String) -> u16 {
    get(&url).await.0
}

#[tokio::test]
async fn healthcheck_exits_0_when_healthy_and_1_on_a_dead_port() {
    let mut rng = start(&[]).await;

    let (code, out) = healthcheck(RNG, rng.port, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("healthy: ") && out.lines().count() == 1,
        "{out:?}"
    );
    let (code, out) = healthcheck(RNG, 1, &["--port", &rng.port.to_string()]);
    assert_eq!(code, 0, "--port wins over PORT: {out}");

    let (status, _) = rng.signal_and_wait("TERM").await;
    assert!(status.success());
    let (code, out) = healthcheck(RNG, rng.port, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("unhealthy: ") && out.lines().count() == 1,
        "{out:?}"
    );
}

#[tokio::test]
async fn sigterm_and_sigint_exit_0_within_a_second() {
    for signal in ["TERM", "INT"] {
        let mut rng = start(&[]).await;
        let (status, took) = rng.signal_and_wait(signal).await;
        eprintln!("rng: SIG{signal} -> {status} in {took:?}");
        assert_eq!(status.code(), Some(0), "SIG{signal}");
        assert!(took < Duration::from_secs(1), "SIG{signal} took {took:?}");
        let lines = rng.lines();
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("SIG{signal} received"))),
            "{lines:#?}"
        );
        // Every line is written before the process exits, the last one included.
        assert!(
            lines.last().is_some_and(|l| l.ends_with("rng stopped")),
            "{lines:#?}"
        );
    }
}

#[tokio::test]
async fn sigterm_with_a_line_answers_the_one_served_and_503_to_the_rest() {
    let mut rng = start(&[]).await;
    let url = rng.url("/32");
    let calls: Vec<_> = (0..5)
        .map(|_| tokio::spawn(get_status(url.clone())))
        .collect();
    // SIGTERM once one is served and four wait in line.
    for _ in 0..50 {
        let (_, _, metrics) = get(&rng.url("/metrics")).await;
        if sample(&metrics, "rng_requests_waiting") == Some(4.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, took) = rng.signal_and_wait("TERM").await;
    eprintln!("rng: SIGTERM with 5 requests in line -> {status} in {took:?}");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.expect("call"));
    }
    statuses.sort();
    assert_eq!(statuses, [200, 503, 503, 503, 503]);
}

/// `GET url` on a new connection: the status, or `None` if refused.
async fn status_on_a_new_connection(url: &str) -> Option<u16> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let response = client.get(url).send().await.ok()?;
    Some(response.status().as_u16())
}

#[tokio::test]
async fn sigterm_drains_readyz_503_while_new_connections_are_served_then_stops() {
    let drain = Duration::from_millis(1500);
    let mut rng = start(&[("SHUTDOWN_DRAIN", "1500ms")]).await;
    let (readyz, bytes) = (rng.url("/readyz"), rng.url("/32"));
    assert_eq!(status_on_a_new_connection(&readyz).await, Some(200));
    let signalled = std::time::Instant::now();
    rng.signal("TERM");
    // /readyz turns 503 within moments of the signal...
    let mut ready = true;
    while ready && signalled.elapsed() < Duration::from_millis(300) {
        ready = status_on_a_new_connection(&readyz).await == Some(200);
    }
    assert!(!ready, "/readyz still 200 300 ms after SIGTERM");
    // ...while new connections are served as before, through the drain.
    let mut served = 0;
    while signalled.elapsed() < drain - Duration::from_millis(300) {
        assert_eq!(status_on_a_new_connection(&readyz).await, Some(503));
        assert_eq!(
            status_on_a_new_connection(&bytes).await,
            Some(200),
            "GET /32 on a new connection {:?} after SIGTERM",
            signalled.elapsed()
        );
        served += 1;
    }
    assert!(served >= 5, "only {served} requests during the drain");
    let (status, _) = rng.wait_for_exit("SIGTERM").await;
    let took = signalled.elapsed();
    eprintln!("rng: SIGTERM with a 1.5 s drain -> {status} in {took:?}");
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= drain && took < drain + Duration::from_secs(1),
        "a drain of {drain:?}, then exit: took {took:?}"
    );
    assert_eq!(status_on_a_new_connection(&bytes).await, None, "after exit");
    let lines = rng.lines();
    assert!(
        lines.iter().any(|l| l.contains("/readyz now answers 503")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn a_second_signal_during_the_drain_stops_at_once() {
    let mut rng = start(&[("SHUTDOWN_DRAIN", "30s")]).await;
    rng.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status_on_a_new_connection(&rng.url("/32")).await,
        Some(200),
        "still serving while draining"
    );
    let (status, took) = rng.signal_and_wait("INT").await;
    eprintln!("rng: SIGTERM, then SIGINT during a 30 s drain -> {status} in {took:?}");
    assert_eq!(status.code(), Some(130));
    assert!(took < Duration::from_secs(1), "took {took:?}");
}
