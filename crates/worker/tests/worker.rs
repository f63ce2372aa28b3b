//! The worker against a real redis-server and real rng and hasher services:
//! every unit it does is counted once in `hashes`, and every coin in the
//! wallet is a real one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dockercoins::CancellationToken;
use dockercoins::redis::{Redis, RedisOptions};
use dockercoins::test_support::{RedisServer, Running, spawn};
use redis::AsyncCommands;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};

struct Pipeline {
    redis: RedisServer,
    rng: Running,
    hasher: Running,
}

impl Pipeline {
    async fn start() -> Pipeline {
        Pipeline {
            redis: RedisServer::start().await,
            rng: spawn("rng", &["--delay", "0", "--instance", "rng-a"], rng::run).await,
            hasher: spawn(
                "hasher",
                &["--delay", "0", "--instance", "hasher-a"],
                hasher::run,
            )
            .await,
        }
    }

    fn worker_config(&self, extra: &[&str]) -> worker::Config {
        let rng_url = self.rng.url("");
        let hasher_url = self.hasher.url("");
        let redis_url = self.redis.url();
        let mut args = vec![
            "worker",
            "--rng-url",
            &rng_url,
            "--hasher-url",
            &hasher_url,
            "--redis-url",
            &redis_url,
        ];
        args.extend_from_slice(extra);
        dockercoins::parse_from::<worker::Config, _, _>("worker", worker::ABOUT, args)
            .expect("valid arguments")
            .service
    }

    /// Mines for `duration`, then stops as on SIGTERM.
    async fn mine_for(&self, duration: Duration, extra: &[&str]) -> worker::Summary {
        self.mine(self.worker_config(extra), duration).await
    }

    async fn mine(&self, config: worker::Config, duration: Duration) -> worker::Summary {
        let redis = Redis::new(&RedisOptions::at(self.redis.url())).expect("redis url");
        let shutdown = CancellationToken::new();
        let mining = tokio::spawn(worker::mine(
            config,
            "worker-a".to_owned(),
            redis,
            shutdown.clone(),
        ));
        tokio::time::sleep(duration).await;
        shutdown.cancel();
        mining.await.expect("task").expect("mining")
    }
}

#[tokio::test]
async fn every_unit_is_counted_once_and_every_coin_is_real() {
    let pipeline = Pipeline::start().await;
    let fast = [
        "--sleep",
        "0",
        "--concurrency",
        "4",
        "--flush-interval",
        "200ms",
    ];
    let summary = pipeline.mine_for(Duration::from_secs(2), &fast).await;

    let mut redis = pipeline.redis.client().await;
    let hashes: u64 = redis.get("hashes").await.expect("GET hashes");
    assert!(summary.units > 50, "too little work done: {summary:?}");
    assert_eq!(hashes, summary.units, "{summary:?}");
    assert_eq!(summary.flushed, summary.units);

    let wallet: HashMap<String, Vec<u8>> = redis.hgetall("wallet").await.expect("HGETALL");
    assert!(!wallet.is_empty(), "one hash in 16 is a coin: {summary:?}");
    for (hex_hash, random_bytes) in &wallet {
        assert!(hex_hash.starts_with('0'), "{hex_hash}");
        assert_eq!(random_bytes.len(), 32);
        assert_eq!(hex::encode(Sha256::digest(random_bytes)), *hex_hash);
    }
    assert_eq!(wallet.len() as u64, summary.coins_found);

    pipeline.rng.stop().await.expect("rng stops");
    pipeline.hasher.stop().await.expect("hasher stops");
}

#[tokio::test]
async fn counts_add_up_across_workers_and_runs() {
    let pipeline = Pipeline::start().await;
    let fast = ["--sleep", "0", "--flush-interval", "100ms"];
    let first = pipeline.mine_for(Duration::from_millis(700), &fast).await;
    let second = pipeline.mine_for(Duration::from_millis(700), &fast).await;
    let mut redis = pipeline.redis.client().await;
    let hashes: u64 = redis.get("hashes").await.expect("GET hashes");
    assert_eq!(hashes, first.units + second.units);
}

/// The web UI learns from each worker's report who answered it.
#[tokio::test]
async fn reports_which_instances_answered() {
    let pipeline = Pipeline::start().await;
    let summary = pipeline
        .mine_for(
            Duration::from_millis(800),
            &["--sleep", "0", "--flush-interval", "100ms"],
        )
        .await;
    let mut redis = pipeline.redis.client().await;
    let report: String = redis
        .get("dockercoins:report:worker-a")
        .await
        .expect("the worker's report");
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(report["instance"], "worker-a");
    assert!(report["rng"]["rng-a"].as_u64() >= Some(summary.units));
    assert!(report["hasher"]["hasher-a"].as_u64() >= Some(summary.units));
    let ttl: i64 = redis.ttl("dockercoins:report:worker-a").await.expect("TTL");
    assert!((1..=10).contains(&ttl), "reports expire: ttl {ttl}");
}

/// A TCP relay in front of a real service, counting the connections made
/// through it.
struct Relay {
    url: String,
    connections: Arc<AtomicU64>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay { url, connections }
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Calls to rng reuse connections, yet each connection is retired within
/// `WORKER_CONNECTION_MAX_AGE`, so that new ones can reach other instances.
#[tokio::test]
async fn connections_are_reused_and_retired_at_their_age() {
    let pipeline = Pipeline::start().await;
    let mine = |max_age: &'static str| {
        let pipeline = &pipeline;
        async move {
            let relay = Relay::start(pipeline.rng.address).await;
            let mut config =
                pipeline.worker_config(&["--sleep", "0", "--connection-max-age", max_age]);
            config.rng_url = relay.url.clone();
            let summary = pipeline.mine(config, Duration::from_millis(1200)).await;
            assert!(
                summary.units >= 50,
                "only {} units with max age {max_age}",
                summary.units
            );
            (summary.units, relay.connections())
        }
    };

    let (units, connections) = mine("1h").await;
    assert_eq!(connections, 1, "one connection for all {units} calls");

    // Each connection lives 100 to 200 ms: 6 to 12 of them in 1.2 s.
    let (units, connections) = mine("200ms").await;
    assert!(
        (4..=20).contains(&connections),
        "{connections} connections for {units} calls with a 200 ms max age"
    );

    let (units, connections) = mine("0").await;
    assert!(
        connections >= units,
        "{connections} connections for {units} calls with max age 0: one per call"
    );
}

/// A call that gets no answer gives up after `WORKER_TIMEOUT`, and its
/// connection is not used again: mining goes on over a new one.
#[tokio::test]
async fn a_call_without_an_answer_times_out_and_mining_goes_on() {
    let pipeline = Pipeline::start().await;
    // The first connection is accepted and never answered; the next ones
    // reach rng.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let target = pipeline.rng.address;
    let connections = Arc::new(AtomicU64::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        let mut unanswered = Vec::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                unanswered.push(inbound);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let mut config = pipeline.worker_config(&[
        "--sleep",
        "0",
        "--timeout",
        "300ms",
        "--max-backoff",
        "250ms",
        "--connection-max-age",
        "1h",
    ]);
    config.rng_url = url;
    let summary = pipeline.mine(config, Duration::from_millis(1500)).await;

    assert!(summary.units >= 10, "mining did not go on: {summary:?}");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "the unanswered connection, then one for all the other calls"
    );
    let mut redis = pipeline.redis.client().await;
    let hashes: u64 = redis.get("hashes").await.expect("GET hashes");
    assert_eq!(hashes, summary.units);
}

#[test]
fn a_bad_value_names_its_variable() {
    let command = dockercoins::command::<worker::Config>("worker", worker::ABOUT);
    let err = dockercoins::parse_from::<worker::Config, _, _>(
        "worker",
        worker::ABOUT,
        ["worker", "--sleep", "fast"],
    )
    .expect_err("`fast` is no duration");
    let line = dockercoins::config::bad_value(&command, &err).expect("a bad value");
    assert_eq!(
        line,
        "WORKER_SLEEP (--sleep): invalid value 'fast': expected a duration such as 100ms, 2s or 0"
    );
    let err = dockercoins::parse_from::<worker::Config, _, _>(
        "worker",
        worker::ABOUT,
        ["worker", "--concurrency", "0"],
    )
    .expect_err("no workers is no worker");
    let line = dockercoins::config::bad_value(&command, &err).expect("a bad value");
    assert_eq!(
        line,
        "WORKER_CONCURRENCY (--concurrency): invalid value '0': 0 is not in 1..=4294967295"
    );
}
