//! The worker against a real redis-server and real rng and hasher services:
//! every unit it does is counted once in `hashes`, and every coin in the
//! wallet is a real one.

use std::collections::HashMap;
use std::time::Duration;

use dockercoins::CancellationToken;
use dockercoins::redis::Redis;
use dockercoins::test_support::{RedisServer, Running, spawn};
use redis::AsyncCommands;
use sha2::{Digest, Sha256};

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
        let config = self.worker_config(extra);
        let redis = Redis::open(&self.redis.url()).expect("redis url");
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

#[test]
fn a_bad_value_names_its_variable() {
    let command = dockercoins::command::<worker::Config>("worker", worker::ABOUT);
    let err = dockercoins::parse_from::<worker::Config, _, _>(
        "worker",
        worker::ABOUT,
        ["worker", "--sleep", "fast"],
    )
    .expect_err("`fast` is no duration");
    let line = dockercoins::config::one_line(&command, &err);
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
    assert!(dockercoins::config::one_line(&command, &err).starts_with("WORKER_CONCURRENCY"));
}
