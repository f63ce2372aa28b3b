//! Faults the workers must survive with nothing lost: Redis killed and
//! restarted, rng or hasher stopped and restarted, a hasher answering
//! garbage, a stop in the middle of a unit. Each test runs real services (a
//! real redis-server, rng and hasher on loopback) and ends with the
//! invariant: the units the workers did equal `hashes` in Redis, and every
//! coin in the wallet is a real one.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use dockercoins::redis::{Redis, RedisOptions};
use dockercoins::test_support::RedisServer;
use dockercoins::{CancellationToken, Common, Service};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

// Ports 33400-33599 belong to these tests.
static NEXT_PORT: AtomicU16 = AtomicU16::new(33400);

async fn listener() -> (u16, TcpListener) {
    loop {
        let port = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 33600, "no free port left in 33400-33599");
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
            return (port, listener);
        }
    }
}

/// Binds a port again after its server stopped (retrying briefly).
async fn rebind(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return listener,
            Err(err) => {
                assert!(Instant::now() < deadline, "cannot bind {port} again: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn service(name: &str, listener: TcpListener, shutdown: CancellationToken) -> Service {
    let port = listener.local_addr().expect("local address").port();
    Service {
        instance: name.to_owned(),
        listener,
        draining: shutdown.clone(),
        shutdown,
        ignore_sigterm: Default::default(),
        common: Common {
            port,
            instance: Some(name.to_owned()),
            log_format: "text".to_owned(),
            debug: String::new(),
            shutdown_drain: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(1),
        },
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Rng,
    Hasher,
    /// Answers everything but a SHA-256 of the body.
    GarbageHasher,
}

/// rng, hasher or a garbage hasher on a fixed port, which can be stopped and
/// started again on the same port.
struct Server {
    kind: Kind,
    port: u16,
    delay: Duration,
    running: Option<(
        CancellationToken,
        JoinHandle<Result<(), dockercoins::BoxError>>,
    )>,
}

impl Server {
    async fn start(kind: Kind, delay: Duration) -> Server {
        let (port, listener) = listener().await;
        let mut server = Server {
            kind,
            port,
            delay,
            running: None,
        };
        server.spawn(listener);
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self, listener: TcpListener) {
        let token = CancellationToken::new();
        let service = service("test", listener, token.clone());
        let delay = self.delay;
        let handle = match self.kind {
            Kind::Rng => {
                let config = rng::Config {
                    delay,
                    concurrency: 1,
                    max_bytes: 1 << 20,
                };
                tokio::spawn(rng::run(config, service))
            }
            Kind::Hasher => {
                let config = hasher::Config {
                    delay,
                    max_body: 1 << 20,
                    body_timeout: Duration::from_secs(5),
                };
                tokio::spawn(hasher::run(config, service))
            }
            Kind::GarbageHasher => {
                let served = dockercoins::http::serve(
                    service,
                    garbage_hasher(),
                    dockercoins::http::Readiness::Always,
                );
                tokio::spawn(async move { Ok(served.await?) })
            }
        };
        self.running = Some((token, handle));
    }

    async fn stop(&mut self) {
        if let Some((token, handle)) = self.running.take() {
            token.cancel();
            let result = handle.await.expect("server task");
            if let Err(err) = result {
                panic!("the server stopped with an error: {err}");
            }
        }
    }

    /// Starts again on the same port, possibly as another kind of server.
    async fn restart(&mut self, kind: Kind) {
        self.stop().await;
        self.kind = kind;
        let listener = rebind(self.port).await;
        self.spawn(listener);
    }
}

/// A hasher gone wrong: every answer is something other than the SHA-256 of
/// the body, several of them starting with `0` (what a coin looks like).
fn garbage_hasher() -> axum::Router {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    axum::Router::new().route(
        "/",
        post(|| async {
            let zeros = "0".repeat(64);
            let answers: [(StatusCode, String); 11] = [
                (StatusCode::OK, "not a hash".to_owned()),
                (StatusCode::OK, String::new()),
                (
                    StatusCode::OK,
                    "0<html><body>Bad Gateway</body></html>".to_owned(),
                ),
                (StatusCode::OK, "0".repeat(63)),
                (StatusCode::OK, "0".repeat(65)),
                (StatusCode::OK, format!("{}G", "0".repeat(63))),
                (StatusCode::OK, format!("0ABCDEF{}", "0".repeat(57))),
                (StatusCode::OK, format!("{zeros}\n{zeros}")),
                (StatusCode::INTERNAL_SERVER_ERROR, zeros.clone()),
                // Well formed, and a coin by its look, but not the SHA-256 of the body.
                (StatusCode::OK, "0123456789abcdef".repeat(4)),
                (StatusCode::OK, zeros),
            ];
            let call = CALLS.fetch_add(1, Ordering::SeqCst) as usize;
            answers[call % answers.len()].clone().into_response()
        }),
    )
}

fn config(rng: &Server, hasher: &Server, redis: &RedisServer) -> worker::Config {
    worker::Config {
        rng_url: rng.url(),
        hasher_url: hasher.url(),
        redis: RedisOptions::at(redis.url()),
        sleep: Duration::from_millis(5),
        concurrency: 2,
        flush_interval: Duration::from_millis(250),
        timeout: Duration::from_secs(2),
        max_backoff: Duration::from_secs(1),
        connection_max_age: Duration::from_secs(1),
        max_pending_coins: 10_000,
        keep_coins: 16_384,
        ignore_sigterm: false,
        redis_wait_timeout: Duration::from_secs(1),
        stop_timeout: Duration::from_secs(8),
    }
}

/// A worker mining in the background of the test.
struct Worker {
    stop: CancellationToken,
    handle: JoinHandle<Result<worker::Summary, String>>,
}

impl Worker {
    fn start(config: worker::Config, name: &str) -> Worker {
        let redis = Redis::new(&config.redis).expect("redis url");
        let stop = CancellationToken::new();
        let handle = tokio::spawn(worker::mine(config, name.to_owned(), redis, stop.clone()));
        Worker { stop, handle }
    }

    /// Stops the worker as SIGTERM does; checks it stopped promptly and that
    /// Redis counted every unit it did.
    async fn stop(self) -> worker::Summary {
        let asked = Instant::now();
        self.stop.cancel();
        let summary = self
            .handle
            .await
            .expect("worker task")
            .expect("worker result");
        let took = asked.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "the worker took {took:?} to stop"
        );
        assert_eq!(
            summary.units, summary.flushed,
            "units done vs units counted in redis: {summary:?}"
        );
        summary
    }
}

/// `GET hashes`, on a fresh connection; `None` while Redis is down.
async fn hashes(redis: &RedisServer) -> Option<u64> {
    let client = redis::Client::open(redis.url()).ok()?;
    let mut connection = tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    let value: Option<u64> = redis::cmd("GET")
        .arg("hashes")
        .query_async(&mut connection)
        .await
        .ok()?;
    Some(value.unwrap_or(0))
}

/// Waits until `hashes` exceeds `floor`; returns how long it took.
async fn wait_hashes_above(redis: &RedisServer, floor: u64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if hashes(redis).await.is_some_and(|h| h > floor) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "hashes stayed at {floor} or below for {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Watches `hashes` every 20 ms and records every time it went down.
struct Watch {
    stop: CancellationToken,
    handle: JoinHandle<Vec<(u64, u64)>>,
}

impl Watch {
    fn start(redis: &RedisServer) -> Watch {
        let url = redis.url();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            let mut drops = Vec::new();
            let mut highest = 0;
            let client = redis::Client::open(url).expect("redis url");
            while !token.is_cancelled() {
                let read = async {
                    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("GET")
                        .arg("hashes")
                        .query_async::<Option<u64>>(&mut connection)
                        .await
                        .ok()
                };
                if let Ok(Some(value)) = tokio::time::timeout(Duration::from_secs(1), read).await {
                    let value = value.unwrap_or(0);
                    if value < highest {
                        drops.push((highest, value));
                    }
                    highest = highest.max(value);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drops
        });
        Watch { stop, handle }
    }

    async fn assert_never_went_back(self) {
        self.stop.cancel();
        let drops = self.handle.await.expect("watch task");
        assert!(drops.is_empty(), "hashes went back: {drops:?} (from, to)");
    }
}

/// The invariant, once every worker has stopped: `hashes` is the sum of the
/// units they did, and the wallet holds exactly the coins they found, each
/// one a real coin (its SHA-256, checked here, starts with 0).
async fn assert_invariant(redis: &RedisServer, summaries: &[worker::Summary]) {
    let units: u64 = summaries.iter().map(|s| s.units).sum();
    let kept: u64 = summaries
        .iter()
        .map(|s| s.coins_found - s.coins_dropped)
        .sum();
    assert!(units > 0, "the workers did no work at all");
    assert_eq!(
        hashes(redis).await,
        Some(units),
        "hashes in redis vs units the workers did ({summaries:?})"
    );
    let mut connection = redis.client().await;
    let wallet: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
        .arg("wallet")
        .query_async(&mut connection)
        .await
        .expect("HGETALL wallet");
    assert_eq!(
        wallet.len() as u64,
        kept,
        "coins in the wallet vs coins found"
    );
    let mut checker = Server::start(Kind::Hasher, Duration::ZERO).await;
    for (hex_hash, bytes) in &wallet {
        assert_eq!(
            bytes.len(),
            32,
            "coin {hex_hash} holds {} bytes",
            bytes.len()
        );
        assert!(
            hex_hash.starts_with('0'),
            "coin {hex_hash} does not start with 0"
        );
        assert_eq!(
            &sha256_hex(&checker, bytes).await,
            hex_hash,
            "bogus coin in the wallet"
        );
    }
    checker.stop().await;
}

/// SHA-256 as a real hasher (a fresh one, no delay) computes it.
async fn sha256_hex(checker: &Server, bytes: &[u8]) -> String {
    let response = reqwest::Client::new()
        .post(checker.url())
        .body(bytes.to_vec())
        .send()
        .await
        .expect("the checking hasher answers");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body = response.text().await.expect("hasher body");
    body.trim().to_owned()
}

async fn run_for(duration: Duration) {
    tokio::time::sleep(duration).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_loses_nothing() {
    let mut redis = RedisServer::start().await;
    let rng = Server::start(Kind::Rng, Duration::ZERO).await;
    let hasher = Server::start(Kind::Hasher, Duration::ZERO).await;
    let workers = [
        Worker::start(config(&rng, &hasher, &redis), "worker-a"),
        Worker::start(config(&rng, &hasher, &redis), "worker-b"),
    ];
    let watch = Watch::start(&redis);
    wait_hashes_above(&redis, 0, Duration::from_secs(10)).await;
    run_for(Duration::from_secs(1)).await;

    for _ in 0..2 {
        let before = hashes(&redis).await.expect("hashes before the kill");
        redis.kill().await;
        // The workers go on mining and keep the count while Redis is gone.
        run_for(Duration::from_millis(1500)).await;
        redis.restart().await;
        let after_restart = hashes(&redis).await.expect("hashes after the restart");
        assert!(
            after_restart >= before,
            "the counter went back over the restart: {before} -> {after_restart}"
        );
        let resumed = wait_hashes_above(&redis, after_restart, Duration::from_secs(5)).await;
        eprintln!("redis restart: {before} -> {after_restart}, counting again after {resumed:?}");
        run_for(Duration::from_millis(500)).await;
    }

    let mut summaries = Vec::new();
    for worker in workers {
        summaries.push(worker.stop().await);
    }
    watch.assert_never_went_back().await;
    assert_invariant(&redis, &summaries).await;
}

/// A Redis that comes back without the last batches it had taken (restarted
/// from an older copy of its data, here an RDB snapshot, as a replica promoted
/// without them would be): the next batch meets the gap, the worker sends the
/// missing batches again, in order, and every unit is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_without_its_last_batches_gets_them_again() {
    let mut redis = RedisServer::start_with(
        dockercoins::test_support::free_port(),
        vec!["--appendonly".to_owned(), "no".to_owned()],
    )
    .await;
    let rng = Server::start(Kind::Rng, Duration::ZERO).await;
    let hasher = Server::start(Kind::Hasher, Duration::ZERO).await;
    let worker = Worker::start(config(&rng, &hasher, &redis), "worker-gap");
    wait_hashes_above(&redis, 100, Duration::from_secs(10)).await;
    let mut client = redis.client().await;
    let () = redis::cmd("SAVE")
        .query_async(&mut client)
        .await
        .expect("SAVE");
    let saved = hashes(&redis).await.expect("hashes at the snapshot");
    wait_hashes_above(&redis, saved + 200, Duration::from_secs(10)).await;
    redis.kill().await;
    redis.restart().await;
    let restarted = hashes(&redis).await.expect("hashes after the restart");
    assert!(
        restarted <= saved,
        "the restart kept batches taken after the snapshot: {saved} -> {restarted}"
    );
    wait_hashes_above(&redis, saved + 200, Duration::from_secs(10)).await;
    run_for(Duration::from_millis(500)).await;
    let summary = worker.stop().await;
    assert!(
        summary.batches_restored > 0,
        "nothing restored: {summary:?}"
    );
    assert_invariant(&redis, &[summary]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rng_and_hasher_stopped_and_restarted() {
    let redis = RedisServer::start().await;
    let mut rng = Server::start(Kind::Rng, Duration::ZERO).await;
    let mut hasher = Server::start(Kind::Hasher, Duration::ZERO).await;
    let worker = Worker::start(config(&rng, &hasher, &redis), "worker-deps");
    wait_hashes_above(&redis, 0, Duration::from_secs(10)).await;

    for name in ["rng", "hasher", "both"] {
        match name {
            "rng" => rng.stop().await,
            "hasher" => hasher.stop().await,
            _ => {
                rng.stop().await;
                hasher.stop().await;
            }
        }
        // Let every unit in flight land, then check nothing more is counted.
        run_for(Duration::from_millis(800)).await;
        let stalled = hashes(&redis).await.expect("hashes");
        run_for(Duration::from_millis(1000)).await;
        assert_eq!(
            hashes(&redis).await,
            Some(stalled),
            "units were counted with {name} down"
        );
        if name != "hasher" {
            rng.restart(Kind::Rng).await;
        }
        if name != "rng" {
            hasher.restart(Kind::Hasher).await;
        }
        let resumed = wait_hashes_above(&redis, stalled, Duration::from_secs(5)).await;
        eprintln!("{name} restarted: counting again after {resumed:?}");
    }

    let summary = worker.stop().await;
    assert_invariant(&redis, &[summary]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_hasher_counts_nothing_and_stores_no_coin() {
    let redis = RedisServer::start().await;
    let rng = Server::start(Kind::Rng, Duration::ZERO).await;
    let mut hasher = Server::start(Kind::GarbageHasher, Duration::ZERO).await;
    let worker = Worker::start(config(&rng, &hasher, &redis), "worker-garbage");

    // Some 30 garbage answers (the worker backs off between them).
    run_for(Duration::from_secs(4)).await;
    assert_eq!(hashes(&redis).await, Some(0), "garbage was counted as work");
    let mut connection = redis.client().await;
    let coins: u64 = redis::cmd("HLEN")
        .arg("wallet")
        .query_async(&mut connection)
        .await
        .expect("HLEN");
    assert_eq!(coins, 0, "garbage was stored as a coin");

    // A real hasher on the same port: the worker resumes by itself.
    hasher.restart(Kind::Hasher).await;
    let resumed = wait_hashes_above(&redis, 0, Duration::from_secs(5)).await;
    eprintln!("real hasher back: counting again after {resumed:?}");
    run_for(Duration::from_secs(1)).await;

    let summary = worker.stop().await;
    assert_invariant(&redis, &[summary]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_in_the_middle_of_a_unit_flushes_it() {
    let redis = RedisServer::start().await;
    // Slow units (300 ms in rng, 300 ms in hasher): a stop nearly always
    // lands in the middle of one.
    let rng = Server::start(Kind::Rng, Duration::from_millis(300)).await;
    let hasher = Server::start(Kind::Hasher, Duration::from_millis(300)).await;
    let mut summaries = Vec::new();
    for round in 0..4u64 {
        let mut config = config(&rng, &hasher, &redis);
        config.concurrency = 1;
        let worker = Worker::start(config, &format!("worker-stop-{round}"));
        // 1.3 s, 1.45 s...: stops land at different points of a unit.
        run_for(Duration::from_millis(1300 + 150 * round)).await;
        summaries.push(worker.stop().await);
        let units: u64 = summaries.iter().map(|s| s.units).sum();
        assert_eq!(hashes(&redis).await, Some(units), "after stop {round}");
    }
    assert_invariant(&redis, &summaries).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coins_found_while_redis_is_down_are_kept_up_to_the_bound() {
    let mut redis = RedisServer::start().await;
    let rng = Server::start(Kind::Rng, Duration::ZERO).await;
    let hasher = Server::start(Kind::Hasher, Duration::ZERO).await;
    let mut config = config(&rng, &hasher, &redis);
    config.max_pending_coins = 3;
    let worker = Worker::start(config, "worker-bound");
    wait_hashes_above(&redis, 0, Duration::from_secs(10)).await;
    redis.kill().await;
    // One coin in 16 units: enough units to find more than 3 coins.
    run_for(Duration::from_secs(3)).await;
    redis.restart().await;
    run_for(Duration::from_secs(1)).await;
    let summary = worker.stop().await;
    assert!(
        summary.coins_dropped > 0,
        "expected coins over the bound of 3 to be dropped: {summary:?}"
    );
    // Units are never dropped; coins over the bound are, and only those.
    assert_invariant(&redis, &[summary]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_at_once_with_three_workers() {
    let mut redis = RedisServer::start().await;
    let mut rng = Server::start(Kind::Rng, Duration::from_millis(2)).await;
    let mut hasher = Server::start(Kind::Hasher, Duration::from_millis(2)).await;
    let workers: Vec<Worker> = (0..3)
        .map(|n| Worker::start(config(&rng, &hasher, &redis), &format!("worker-{n}")))
        .collect();
    let watch = Watch::start(&redis);
    wait_hashes_above(&redis, 0, Duration::from_secs(10)).await;

    redis.kill().await;
    rng.stop().await;
    run_for(Duration::from_millis(700)).await;
    rng.restart(Kind::Rng).await;
    hasher.restart(Kind::GarbageHasher).await;
    run_for(Duration::from_millis(700)).await;
    redis.restart().await;
    hasher.restart(Kind::Hasher).await;
    let floor = hashes(&redis).await.expect("hashes");
    wait_hashes_above(&redis, floor, Duration::from_secs(5)).await;
    run_for(Duration::from_millis(500)).await;

    let mut summaries = Vec::new();
    for worker in workers {
        summaries.push(worker.stop().await);
    }
    watch.assert_never_went_back().await;
    assert_invariant(&redis, &summaries).await;
}

/// The worker's record of its last batch (`dockercoins:batch:*`), as Redis
/// holds it: its key and its time to live (`-1`: none).
async fn batch_records(redis: &RedisServer) -> Vec<(String, i64)> {
    let mut connection = redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("dockercoins:batch:*")
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    let mut records = Vec::new();
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("TTL");
        records.push((key, ttl));
    }
    records
}

/// The record of a worker's last batch deleted while it runs, as an expiry
/// would have done (a worker idle for a day, a Redis left full over a
/// weekend): nothing failed since Redis took the last batch, so the batches
/// Redis took are counted, not sent again. The record has no expiry, and a
/// stop deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_batch_record_counts_nothing_twice() {
    let redis = RedisServer::start().await;
    let rng = Server::start(Kind::Rng, Duration::ZERO).await;
    let hasher = Server::start(Kind::Hasher, Duration::ZERO).await;
    let worker = Worker::start(config(&rng, &hasher, &redis), "worker-record");
    wait_hashes_above(&redis, 100, Duration::from_secs(10)).await;
    let records = batch_records(&redis).await;
    assert_eq!(
        records.len(),
        1,
        "one record per worker process: {records:?}"
    );
    assert_eq!(records[0].1, -1, "the record expires: {records:?}");
    let mut connection = redis.client().await;
    for _ in 0..2 {
        let deleted: u64 = redis::cmd("DEL")
            .arg(&records[0].0)
            .query_async(&mut connection)
            .await
            .expect("DEL");
        assert_eq!(deleted, 1, "the record was there");
        let now = hashes(&redis).await.expect("hashes");
        wait_hashes_above(&redis, now + 100, Duration::from_secs(10)).await;
    }
    let summary = worker.stop().await;
    assert_eq!(summary.lost, 0, "{summary:?}");
    assert_invariant(&redis, &[summary]).await;
    assert_eq!(
        batch_records(&redis).await,
        Vec::new(),
        "the record outlived a clean stop"
    );
}

/// A Redis that comes back empty (no persistence): no record, and the
/// connection failed since the last batch, so the Redis answering may lack
/// every batch: the worker sends again all it keeps (the last minute: here,
/// everything), and every unit is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_empty_gets_every_kept_batch_again() {
    let mut redis = RedisServer::start_with(
        dockercoins::test_support::free_port(),
        vec!["--appendonly".to_owned(), "no".to_owned()],
    )
    .await;
    let rng = Server::start(Kind::Rng, Duration::ZERO).await;
    let hasher = Server::start(Kind::Hasher, Duration::ZERO).await;
    let worker = Worker::start(config(&rng, &hasher, &redis), "worker-empty");
    wait_hashes_above(&redis, 200, Duration::from_secs(10)).await;
    redis.kill().await;
    redis.restart().await;
    assert_eq!(hashes(&redis).await, Some(0), "redis came back empty");
    wait_hashes_above(&redis, 400, Duration::from_secs(10)).await;
    let summary = worker.stop().await;
    assert!(
        summary.batches_restored > 0,
        "nothing restored: {summary:?}"
    );
    assert_invariant(&redis, &[summary]).await;
}

/// A stop while Redis is down for good: the worker tries for
/// WORKER_STOP_TIMEOUT, then stops and counts what it could not hand over.
/// Units done = counted + unconfirmed + lost, and Redis, once back, holds the
/// counted units (and the unconfirmed ones, if they were applied), never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_redis_gone_says_what_is_lost() {
    let mut redis = RedisServer::start().await;
    let rng = Server::start(Kind::Rng, Duration::ZERO).await;
    let hasher = Server::start(Kind::Hasher, Duration::ZERO).await;
    let mut config = config(&rng, &hasher, &redis);
    config.stop_timeout = Duration::from_secs(1);
    let worker = Worker::start(config, "worker-gone");
    wait_hashes_above(&redis, 100, Duration::from_secs(10)).await;
    redis.kill().await;
    run_for(Duration::from_millis(600)).await;
    let asked = Instant::now();
    worker.stop.cancel();
    let summary = worker
        .handle
        .await
        .expect("worker task")
        .expect("worker result");
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "the stop took {took:?}, WORKER_STOP_TIMEOUT is 1 s"
    );
    assert!(summary.lost > 0, "nothing said lost: {summary:?}");
    assert_eq!(
        summary.units,
        summary.flushed + summary.unconfirmed + summary.lost,
        "{summary:?}"
    );
    redis.restart().await;
    let counted = hashes(&redis).await.expect("hashes");
    assert!(
        counted >= summary.flushed && counted <= summary.flushed + summary.unconfirmed,
        "hashes {counted} vs {summary:?}"
    );
}
