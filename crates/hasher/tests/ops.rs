//! hasher as an orchestrator and an operator see it: the real binary's
//! health, readiness and metrics endpoints, its `healthcheck` subcommand, and
//! how it stops on SIGTERM and SIGINT.

use std::time::{Duration, Instant};

use dockercoins::test_support::{Process, get, healthcheck, sample, undocumented_metrics};

const HASHER: &str = env!("CARGO_BIN_EXE_hasher");
/// This file's share of the ops tests' loopback ports.
const PORTS: std::ops::Range<u16> = 32250..32400;

async fn start(env: &[(&str, &str)]) -> Process {
    let mut hasher = Process::start(HASHER, PORTS, env);
    hasher.wait_for("/healthz").await;
    hasher
}

async fn post(url: String, body: &'static [u8]) -> (u16, String) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let response = client.post(url).body(body).send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn health_readiness_and_metrics_endpoints() {
    let mut hasher = start(&[]).await;

    let (status, instance, body) = get(&hasher.url("/healthz")).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(instance.as_deref(), Some("hasher-test"));
    let (status, _, _) = get(&hasher.url("/readyz")).await;
    assert_eq!(status, 200, "hasher needs nothing to be ready");

    let (status, _) = post(hasher.url("/"), &[7u8; 32]).await;
    assert_eq!(status, 200);
    let (status, _) = post(hasher.url("/"), b"hello").await;
    assert_eq!(status, 200);

    let (status, _, metrics) = get(&hasher.url("/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(&metrics, "hasher_bytes_hashed_total"),
        Some(37.0),
        "{metrics}"
    );
    let requests = r#"http_requests_total{route="/",method="POST",status="200"}"#;
    assert_eq!(sample(&metrics, requests), Some(2.0), "{metrics}");
    let latency = r#"http_request_duration_seconds_count{route="/"}"#;
    assert_eq!(sample(&metrics, latency), Some(2.0), "{metrics}");
    let build = r#"dockercoins_build_info{service="hasher",version="0.1.0"}"#;
    assert_eq!(sample(&metrics, build), Some(1.0), "{metrics}");
    assert!(
        metrics.contains("# HELP hasher_bytes_hashed_total "),
        "{metrics}"
    );
    assert_eq!(undocumented_metrics(&metrics), Vec::<String>::new());

    let (status, _) = hasher.signal_and_wait("TERM").await;
    assert!(status.success());
}

#[tokio::test]
async fn healthcheck_exits_0_when_healthy_and_1_on_a_dead_port() {
    let mut hasher = start(&[]).await;
    let (code, out) = healthcheck(HASHER, hasher.port, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("healthy: ") && out.lines().count() == 1,
        "{out:?}"
    );

    let (status, _) = hasher.signal_and_wait("TERM").await;
    assert!(status.success());
    let (code, out) = healthcheck(HASHER, 1, &["--port", &hasher.port.to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("unhealthy: ") && out.lines().count() == 1,
        "{out:?}"
    );
}

/// `healthcheck --url`: what the chart's `helm test` pod runs against the
/// Services (any http:// URL, 2xx is healthy).
#[tokio::test]
async fn healthcheck_url_asks_another_address() {
    let mut hasher = start(&[]).await;
    let url = format!("http://127.0.0.1:{}/readyz", hasher.port);
    let (code, out) = healthcheck(HASHER, 1, &["--url", &url]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), format!("healthy: {url} answered 200 OK"));
    let missing = format!("http://127.0.0.1:{}/nothing-here", hasher.port);
    let (code, out) = healthcheck(HASHER, hasher.port, &["--url", &missing]);
    assert_eq!(code, 1, "a 404 is unhealthy: {out}");
    assert!(
        out.starts_with(&format!("unhealthy: {missing} answered 404")),
        "{out:?}"
    );

    let (status, _) = hasher.signal_and_wait("TERM").await;
    assert!(status.success());
    let (code, out) = healthcheck(HASHER, hasher.port, &["--url", &url]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("unhealthy: ") && out.lines().count() == 1,
        "{out:?}"
    );
}

#[tokio::test]
async fn sigterm_and_sigint_exit_0_within_a_second() {
    for signal in ["TERM", "INT"] {
        let mut hasher = start(&[]).await;
        let (status, took) = hasher.signal_and_wait(signal).await;
        eprintln!("hasher: SIG{signal} -> {status} in {took:?}");
        assert_eq!(status.code(), Some(0), "SIG{signal}");
        assert!(took < Duration::from_secs(1), "SIG{signal} took {took:?}");
    }
}

#[tokio::test]
async fn sigterm_lets_the_hashes_in_flight_finish() {
    let mut hasher = start(&[("HASHER_DELAY", "500ms")]).await;
    let calls: Vec<_> = (0..5)
        .map(|_| tokio::spawn(post(hasher.url("/"), b"in flight")))
        .collect();
    // HASHER_DELAY=500ms: the five are in flight well before the signal.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let (status, took) = hasher.signal_and_wait("TERM").await;
    eprintln!("hasher: SIGTERM with 5 hashes in flight -> {status} in {took:?}");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    for call in calls {
        let (status, body) = call.await.expect("call");
        assert_eq!(status, 200, "a hash in flight was cut: {body}");
        assert_eq!(body.len(), 64);
    }
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_second_signal_cuts_a_long_drain_short() {
    let mut hasher = start(&[("HASHER_DELAY", "5s"), ("SHUTDOWN_TIMEOUT", "10s")]).await;
    let url = hasher.url("/");
    let stuck = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        // Cut off by the forced exit.
        client.post(url).body("slow").send().await.is_err()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    hasher.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !hasher.exited(),
        "the first SIGTERM waits for the hash in flight"
    );
    let (status, took) = hasher.signal_and_wait("TERM").await;
    eprintln!("hasher: second SIGTERM while draining -> {status} in {took:?}");
    assert_eq!(status.code(), Some(130));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(stuck.await.expect("join"), "the hash in flight was cut off");
    // The log says why, even though the process exits at once.
    let lines = hasher.lines();
    assert!(
        lines.last().is_some_and(
            |line| line.contains("second signal (SIGTERM) while shutting down; exiting now")
        ),
        "{lines:#?}"
    );
}
