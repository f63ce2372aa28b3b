//! The web UI as an orchestrator and an operator see it: the real binary's
//! health, readiness (following a real redis-server down and up) and metrics,
//! its `healthcheck` subcommand, and how it stops on SIGTERM and SIGINT, even
//! with a page's live event stream open.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use dockercoins::test_support::{
    Process, RedisServer, get, healthcheck, sample, undocumented_metrics,
};

const WEBUI: &str = env!("CARGO_BIN_EXE_webui");
/// This file's share of the ops tests' loopback ports.
const PORTS: std::ops::Range<u16> = 32600..32700;

async fn start(redis: &RedisServer) -> Process {
    let mut webui = Process::start(WEBUI, PORTS, &[("REDIS_URL", &redis.url())]);
    webui.wait_for("/readyz").await;
    webui
}

/// Polls `path` until it answers `status`; returns how long that took.
async fn wait_for_status(webui: &Process, path: &str, status: u16, limit: Duration) -> Duration {
    let start = std::time::Instant::now();
    loop {
        if get(&webui.url(path)).await.0 == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{path} did not answer {status} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn endpoints_and_readiness_following_redis_down_and_up() {
    let mut redis = RedisServer::start().await;
    let mut webui = start(&redis).await;

    let (status, instance, body) = get(&webui.url("/healthz")).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(instance.as_deref(), Some("webui-test"));
    let (status, _, body) = get(&webui.url("/readyz")).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    for _ in 0..2 {
        assert_eq!(get(&webui.url("/json")).await.0, 200);
    }
    let (status, _, metrics) = get(&webui.url("/metrics")).await;
    assert_eq!(status, 200);
    let json = r#"http_requests_total{route="/json",method="GET",status="200"}"#;
    assert_eq!(sample(&metrics, json), Some(2.0), "{metrics}");
    assert!(sample(&metrics, "webui_redis_duration_seconds_count").unwrap_or(0.0) >= 2.0);
    let build = r#"dockercoins_build_info{service="webui",version="0.1.0"}"#;
    assert_eq!(sample(&metrics, build), Some(1.0), "{metrics}");
    assert_eq!(undocumented_metrics(&metrics), Vec::<String>::new());

    // Redis goes away: not ready, yet alive; /json says why.
    redis.kill().await;
    let waited = wait_for_status(&webui, "/readyz", 503, Duration::from_secs(5)).await;
    eprintln!("webui: /readyz 503 {waited:?} after redis was killed");
    let (_, _, body) = get(&webui.url("/readyz")).await;
    assert!(body.starts_with("not ready: redis at "), "{body:?}");
    assert_eq!(
        get(&webui.url("/healthz")).await.0,
        200,
        "liveness never depends on Redis"
    );
    assert_eq!(get(&webui.url("/json")).await.0, 503);
    let (_, _, metrics) = get(&webui.url("/metrics")).await;
    assert!(
        sample(&metrics, "webui_redis_errors_total").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );

    // Redis is back: ready again.
    redis.restart().await;
    let waited = wait_for_status(&webui, "/readyz", 200, Duration::from_secs(10)).await;
    eprintln!("webui: /readyz 200 {waited:?} after redis came back");
    assert_eq!(get(&webui.url("/json")).await.0, 200);

    let (status, took) = webui.signal_and_wait("TERM").await;
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[tokio::test]
async fn healthcheck_exits_0_when_healthy_and_1_on_a_dead_port() {
    let redis = RedisServer::start().await;
    let mut webui = start(&redis).await;
    let (code, out) = healthcheck(WEBUI, webui.port, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("healthy: ") && out.lines().count() == 1,
        "{out:?}"
    );

    let (status, _) = webui.signal_and_wait("TERM").await;
    assert!(status.success());
    let (code, out) = healthcheck(WEBUI, webui.port, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("unhealthy: ") && out.lines().count() == 1,
        "{out:?}"
    );
}

#[tokio::test]
async fn sigterm_and_sigint_exit_0_within_a_second() {
    let redis = RedisServer::start().await;
    for signal in ["TERM", "INT"] {
        let mut webui = start(&redis).await;
        let (status, took) = webui.signal_and_wait(signal).await;
        eprintln!("webui: SIG{signal} -> {status} in {took:?}");
        assert_eq!(status.code(), Some(0), "SIG{signal}");
        assert!(took < Duration::from_secs(1), "SIG{signal} took {took:?}");
    }
}

#[tokio::test]
async fn sigterm_with_a_page_open_exits_0_within_a_second() {
    let redis = RedisServer::start().await;
    let mut webui = start(&redis).await;
    // A page keeps /events open (read here through a bare socket).
    let mut events = tokio::net::TcpStream::connect(("127.0.0.1", webui.port))
        .await
        .expect("connect");
    events
        .write_all(b"GET /events HTTP/1.1\r\nHost: webui\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("send GET /events");
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("data:") {
        let mut buffer = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), events.read(&mut buffer))
            .await
            .expect("an event within 5 s")
            .expect("read /events");
        assert!(n > 0, "/events closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));

    let (status, took) = webui.signal_and_wait("TERM").await;
    eprintln!("webui: SIGTERM with an event stream open -> {status} in {took:?}");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "took {took:?}");
}
