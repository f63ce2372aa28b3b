//! The worker as an orchestrator and an operator see it: the real binary's
//! health, readiness (following a real redis-server down and up) and metrics,
//! its `healthcheck` subcommand, its logs, and a SIGTERM that loses no unit:
//! `hashes` in Redis ends equal to the units the worker did.

use std::time::Duration;

use dockercoins::test_support::{
    Process, RedisServer, Running, get, healthcheck, sample, spawn, undocumented_metrics,
};
use redis::AsyncCommands;

const WORKER: &str = env!("CARGO_BIN_EXE_worker");
/// This file's share of the ops tests' loopback ports.
const PORTS: std::ops::Range<u16> = 32400..32600;

/// rng and hasher in this process, and a real redis-server.
struct Deps {
    rng: Running,
    hasher: Running,
    redis: RedisServer,
}

impl Deps {
    /// With the classic delays, or none.
    async fn start(delays: bool) -> Deps {
        let delay = if delays { "100ms" } else { "0" };
        Deps {
            rng: spawn("rng", &["--delay", delay, "--instance", "rng-a"], rng::run).await,
            hasher: spawn(
                "hasher",
                &["--delay", delay, "--instance", "hasher-a"],
                hasher::run,
            )
            .await,
            redis: RedisServer::start().await,
        }
    }

    async fn worker(&self, env: &[(&str, &str)]) -> Process {
        let rng = self.rng.url("");
        let hasher = self.hasher.url("");
        let redis = self.redis.url();
        let mut all = vec![
            ("RNG_URL", rng.as_str()),
            ("HASHER_URL", hasher.as_str()),
            ("REDIS_URL", redis.as_str()),
        ];
        all.extend_from_slice(env);
        let mut worker = Process::start(WORKER, PORTS, &all);
        worker.wait_for("/readyz").await;
        worker
    }

    async fn hashes(&self) -> u64 {
        let mut redis = self.redis.client().await;
        let hashes: Option<u64> = redis.get("hashes").await.expect("GET hashes");
        hashes.unwrap_or(0)
    }
}

/// `N` and `M` from the last line a worker logs:
/// `N units of work done in all, M counted in redis`.
fn summary(lines: &[String]) -> (u64, u64) {
    let line = lines
        .iter()
        .find(|line| line.contains(" units of work done in all, "))
        .unwrap_or_else(|| panic!("no summary line in {lines:#?}"));
    let (done, counted) = line
        .split_once(" units of work done in all, ")
        .expect("summary");
    let number = |text: &str| -> u64 { text.parse().unwrap_or_else(|_| panic!("{line}")) };
    let done = number(done.rsplit(' ').next().expect("units done"));
    let counted = number(counted.split(' ').next().expect("units counted"));
    (done, counted)
}

/// The sum of `K` in the flush lines: `K units of work done, updating hash counter`.
fn flushed(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|line| line.split_once(" units of work done, updating hash counter"))
        .filter_map(|(before, _)| before.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn metric(worker: &Process, series: &str) -> Option<f64> {
    let (_, _, metrics) = get(&worker.url("/metrics")).await;
    sample(&metrics, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_readiness_following_redis_down_and_up() {
    let mut deps = Deps::start(true).await;
    let mut worker = deps.worker(&[]).await;

    let (status, instance, body) = get(&worker.url("/healthz")).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(instance.as_deref(), Some("worker-test"));
    let (status, _, body) = get(&worker.url("/readyz")).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, _, _) = get(&worker.url("/")).await;
    assert_eq!(
        status, 404,
        "the worker's listener serves only the ops endpoints"
    );

    // After a flush or two, every worker metric is there.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, _, metrics) = get(&worker.url("/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        sample(&metrics, "worker_units_total").unwrap_or(0.0) >= 3.0,
        "{metrics}"
    );
    for dependency in ["rng", "hasher", "redis"] {
        let calls = format!(r#"worker_call_duration_seconds_count{{dependency="{dependency}"}}"#);
        assert!(
            sample(&metrics, &calls).unwrap_or(0.0) >= 1.0,
            "{calls}: {metrics}"
        );
    }
    // rng and hasher each take 100 ms: no call in the 0.05 s bucket.
    let fast = r#"worker_call_duration_seconds_bucket{dependency="rng",le="0.05"}"#;
    assert_eq!(sample(&metrics, fast), Some(0.0), "{metrics}");
    assert!(
        sample(&metrics, "worker_units_unflushed").is_some(),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "worker_coins_unflushed").is_some(),
        "{metrics}"
    );
    let build = r#"dockercoins_build_info{service="worker",version="0.1.0"}"#;
    assert_eq!(sample(&metrics, build), Some(1.0), "{metrics}");
    assert_eq!(undocumented_metrics(&metrics), Vec::<String>::new());

    // Redis goes away: not ready (yet alive), and the flush errors are counted.
    deps.redis.kill().await;
    let waited = wait_for_status(&worker, "/readyz", 503, Duration::from_secs(5)).await;
    eprintln!("worker: /readyz 503 {waited:?} after redis was killed");
    let (status, _, body) = get(&worker.url("/readyz")).await;
    assert_eq!(status, 503);
    assert!(body.starts_with("not ready: redis at "), "{body:?}");
    let (status, _, _) = get(&worker.url("/healthz")).await;
    assert_eq!(status, 200, "liveness never depends on Redis");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let errors = r#"worker_call_errors_total{dependency="redis"}"#;
    assert!(metric(&worker, errors).await.unwrap_or(0.0) >= 1.0);
    assert!(
        metric(&worker, "worker_units_unflushed")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    // Redis is back: ready again, and the units kept meanwhile are counted.
    deps.redis.restart().await;
    let waited = wait_for_status(&worker, "/readyz", 200, Duration::from_secs(10)).await;
    eprintln!("worker: /readyz 200 {waited:?} after redis came back");
    let start = std::time::Instant::now();
    while metric(&worker, "worker_units_unflushed")
        .await
        .unwrap_or(9.0)
        > 1.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the kept units were not flushed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "worker: units kept during the outage flushed {:?} after ready",
        start.elapsed()
    );

    let (status, took) = worker.signal_and_wait("TERM").await;
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// Polls `path` until it answers `status`; returns how long that took.
async fn wait_for_status(worker: &Process, path: &str, status: u16, limit: Duration) -> Duration {
    let start = std::time::Instant::now();
    loop {
        if get(&worker.url(path)).await.0 == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{path} did not answer {status} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_hashes_equal_to_the_units_done() {
    let deps = Deps::start(true).await;
    let mut worker = deps.worker(&[]).await;
    // Stop between two flushes, so that the last one has work to do.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let scraped = metric(&worker, "worker_units_total").await.unwrap_or(0.0) as u64;

    let (status, took) = worker.signal_and_wait("TERM").await;
    eprintln!("worker: SIGTERM -> {status} in {took:?}");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "took {took:?}");

    let lines = worker.lines();
    let (done, counted) = summary(&lines);
    let hashes = deps.hashes().await;
    eprintln!(
        "worker: {done} units done, {counted} counted, hashes={hashes}, flush lines sum to {}, \
         worker_units_total was {scraped} just before SIGTERM",
        flushed(&lines)
    );
    assert!(done >= 5, "the worker hardly worked: {done} units");
    assert_eq!(counted, done, "{lines:#?}");
    assert_eq!(hashes, done);
    assert_eq!(flushed(&lines), done, "{lines:#?}");
    // A unit in progress at the scrape may finish before the stop.
    assert!(
        scraped <= done && done <= scraped + 1,
        "scraped {scraped}, done {done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_at_full_speed_loses_nothing_and_logs_json_lines() {
    let deps = Deps::start(false).await;
    let env = [
        ("WORKER_SLEEP", "0"),
        ("WORKER_CONCURRENCY", "8"),
        ("WORKER_FLUSH_INTERVAL", "300ms"),
        ("LOG_FORMAT", "json"),
    ];
    let mut worker = deps.worker(&env).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (status, took) = worker.signal_and_wait("TERM").await;
    eprintln!("worker: SIGTERM at full speed -> {status} in {took:?}");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "took {took:?}");

    let lines = worker.lines();
    let mut messages = Vec::new();
    for line in &lines {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not one JSON object per line ({err}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(event.get(field).is_some(), "no {field} in {line}");
        }
        messages.push(event["message"].as_str().expect("message").to_owned());
    }
    let (done, counted) = summary(&messages);
    let hashes = deps.hashes().await;
    eprintln!("worker at full speed: {done} units done, {counted} counted, hashes={hashes}");
    assert!(done >= 100, "the worker hardly worked: {done} units");
    assert_eq!((counted, hashes, flushed(&messages)), (done, done, done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exit_codes_and_sigint() {
    let deps = Deps::start(true).await;
    let mut worker = deps.worker(&[]).await;
    let (code, out) = healthcheck(WORKER, worker.port, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("healthy: ") && out.lines().count() == 1,
        "{out:?}"
    );

    let (status, took) = worker.signal_and_wait("INT").await;
    eprintln!("worker: SIGINT -> {status} in {took:?}");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let (code, out) = healthcheck(WORKER, worker.port, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("unhealthy: ") && out.lines().count() == 1,
        "{out:?}"
    );
    let (done, counted) = summary(&worker.lines());
    assert_eq!((counted, deps.hashes().await), (done, done));
}

/// With a drain, the worker stops mining at SIGTERM and flushes at once; only
/// its listener waits out the drain (a worker is nobody's backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_drain_stops_mining_at_once_and_exits_after_the_drain() {
    let deps = Deps::start(true).await;
    let mut worker = deps.worker(&[("SHUTDOWN_DRAIN", "2s")]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    worker.signal("TERM");
    // The last flush comes within the unit grace, well before the drain ends.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!worker.exited(), "the worker exited before its drain");
    let (status, _, _) = get(&worker.url("/readyz")).await;
    assert_eq!(status, 503, "not ready while draining");
    let flushed_early = deps.hashes().await;
    let (status, took) = worker.wait_for_exit("the drain").await;
    eprintln!("worker: exit {status} {took:?} after the check, 1 s into the drain");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_millis(1800), "took {took:?} more");
    let lines = worker.lines();
    let (done, counted) = summary(&lines);
    assert!(done >= 3, "the worker hardly worked: {done} units");
    assert_eq!((counted, deps.hashes().await), (done, done), "{lines:#?}");
    assert_eq!(flushed_early, done, "units done after SIGTERM: {lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_ignore_sigterm_keeps_mining_through_sigterm_until_sigint() {
    let deps = Deps::start(true).await;
    let mut worker = deps.worker(&[("WORKER_IGNORE_SIGTERM", "true")]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.signal("TERM");
    let before = deps.hashes().await;
    // Ignored: still running, still ready, still counting, well past a second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!worker.exited(), "the worker exited on SIGTERM");
    let (status, _, _) = get(&worker.url("/readyz")).await;
    assert_eq!(status, 200, "ready while ignoring SIGTERM");
    let after = deps.hashes().await;
    assert!(after > before, "hashes stayed at {before} after SIGTERM");
    // SIGINT still stops it, gracefully: nothing lost.
    let (status, took) = worker.signal_and_wait("INT").await;
    eprintln!("worker: SIGTERM ignored, then SIGINT -> {status} in {took:?}");
    assert_eq!(status.code(), Some(0));
    let lines = worker.lines();
    assert!(
        lines.iter().any(|l| l.contains("SIGTERM ignored")),
        "{lines:#?}"
    );
    let (done, counted) = summary(&lines);
    assert_eq!((counted, deps.hashes().await), (done, done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_ignore_sigterm_still_dies_on_sigkill() {
    let deps = Deps::start(true).await;
    let mut worker = deps.worker(&[("WORKER_IGNORE_SIGTERM", "yes")]).await;
    worker.signal("TERM");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!worker.exited(), "the worker exited on SIGTERM");
    let (status, took) = worker.signal_and_wait("KILL").await;
    assert_eq!(status.code(), None, "killed by a signal: {status}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}
