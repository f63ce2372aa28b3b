//! worker: mines DockerCoins.
//!
//! One unit of work, as in the classic app: sleep a little, get 32 random
//! bytes from rng, have hasher hash them; a hash that starts with `0` is a
//! coin for the wallet. Every second the units done go to the `hashes`
//! counter in Redis. On an error the worker logs one line, backs off and
//! carries on; counted units and found coins wait in the [`Ledger`] until
//! Redis takes them, so nothing is lost.

mod client;
mod ledger;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Uri;
use bytes::Bytes;
use clap::Args;
use dockercoins::http::{Readiness, not_found};
use dockercoins::redis::{Redis, RedisOptions};
use dockercoins::{BoxError, CancellationToken, Service};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use crate::client::{Client, Connection};
pub use crate::ledger::{Ledger, Summary};
pub use dockercoins::redis::Coin;

pub const ABOUT: &str = "DockerCoins worker: mines coins with rng and hasher, counts them in Redis";

/// How long a unit in progress may go on after a stop was asked for.
const UNIT_GRACE: Duration = Duration::from_millis(500);

#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Where rng answers.
    #[arg(long = "rng-url", env = "RNG_URL", default_value = "http://rng")]
    pub rng_url: String,

    /// Where hasher answers.
    #[arg(
        long = "hasher-url",
        env = "HASHER_URL",
        default_value = "http://hasher"
    )]
    pub hasher_url: String,

    // Where Redis is: `REDIS_URL`, or the Sentinels.
    #[command(flatten)]
    pub redis: RedisOptions,

    /// With Sentinel: how long a batch waits for a replica to confirm it
    /// (`WAIT 1`); a batch no replica confirmed is sent again.
    #[arg(long = "redis-wait-timeout", env = "REDIS_WAIT_TIMEOUT", default_value = "1s", value_parser = dockercoins::config::duration)]
    pub redis_wait_timeout: Duration,

    /// At a stop, the longest wait for Redis to take (and, with Sentinel, a
    /// replica to confirm) the last batch: a failover takes a few seconds.
    /// Keep it under the grace period before SIGKILL (10 s for Docker).
    #[arg(long = "stop-timeout", env = "WORKER_STOP_TIMEOUT", default_value = "8s", value_parser = dockercoins::config::duration)]
    pub stop_timeout: Duration,

    /// Pause before each unit of work (the classic 0.1 s).
    #[arg(long = "sleep", env = "WORKER_SLEEP", default_value = "100ms", value_parser = dockercoins::config::duration)]
    pub sleep: Duration,

    /// Units of work done at once in this process.
    #[arg(long = "concurrency", env = "WORKER_CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// How often the count of units goes to Redis (the classic 1 s).
    #[arg(long = "flush-interval", env = "WORKER_FLUSH_INTERVAL", default_value = "1s", value_parser = dockercoins::config::duration)]
    pub flush_interval: Duration,

    /// Longest wait for one answer from rng or hasher.
    #[arg(long = "timeout", env = "WORKER_TIMEOUT", default_value = "10s", value_parser = dockercoins::config::duration)]
    pub timeout: Duration,

    /// Longest back-off after an error (the classic waits 10 s).
    #[arg(long = "max-backoff", env = "WORKER_MAX_BACKOFF", default_value = "10s", value_parser = dockercoins::config::duration)]
    pub max_backoff: Duration,

    /// Age at which connections to rng and hasher are replaced, so that calls
    /// spread over every instance behind a name (0 = a new connection per call).
    #[arg(long = "connection-max-age", env = "WORKER_CONNECTION_MAX_AGE", default_value = "1s", value_parser = dockercoins::config::duration)]
    pub connection_max_age: Duration,

    /// Most coins kept in memory while Redis is unreachable.
    #[arg(
        long = "max-pending-coins",
        env = "WORKER_MAX_PENDING_COINS",
        default_value_t = 10_000
    )]
    pub max_pending_coins: usize,

    /// Most coins kept, with their batches, once Redis took them: sent again
    /// if a failover promotes a replica that lacks them. Batches are kept for
    /// a minute, or less when their coins pass this (64 bytes a coin).
    #[arg(
        long = "keep-coins",
        env = "WORKER_KEEP_COINS",
        default_value_t = 16_384
    )]
    pub keep_coins: usize,

    /// Ignore SIGTERM, as the classic worker does (Python as PID 1): a stop
    /// then waits for the orchestrator's SIGKILL. SIGINT still stops it.
    #[arg(long = "ignore-sigterm", env = "WORKER_IGNORE_SIGTERM", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub ignore_sigterm: bool,
}

pub async fn run(config: Config, service: Service) -> Result<(), BoxError> {
    // A batch's reply comes after `WAIT`: it may take the wait on top.
    let redis = Redis::new(&config.redis)?.with_slower_replies(config.redis_wait_timeout);
    let redis_replicated = redis.replicated();
    service.ignore_sigterm.set(config.ignore_sigterm);
    if config.ignore_sigterm {
        tracing::warn!(
            "WORKER_IGNORE_SIGTERM is on: SIGTERM does nothing, as with the classic worker; \
             `docker stop` and Kubernetes wait for their grace period, then SIGKILL"
        );
    }
    let instance = service.instance.clone();
    // Mining stops at the signal, not after the drain: a worker is nobody's
    // backend, and units done while Redis may be stopping too (a drained node)
    // could not be counted. Its listener still drains, for a last scrape.
    let shutdown = service.draining.clone();
    // The worker listens only for the operations endpoints.
    let ops = dockercoins::http::serve(
        service,
        Router::new().fallback(not_found),
        Readiness::Redis(redis.clone()),
    );
    let (served, mined) = tokio::join!(ops, mine(config, instance, redis, shutdown));
    let summary = mined?;
    tracing::info!(
        "{} units of work done in all, {} counted in redis, {} not confirmed by a replica, {} lost",
        summary.units,
        summary.flushed,
        summary.unconfirmed,
        summary.lost
    );
    let repaired = summary.batches_resent + summary.batches_refused + summary.batches_restored;
    if redis_replicated || repaired > 0 {
        tracing::info!(
            "batches: {} sent again, {} refused by redis, {} not confirmed by a replica, {} restored to a primary that lacked them",
            summary.batches_resent,
            summary.batches_refused,
            summary.batches_unconfirmed,
            summary.batches_restored
        );
    }
    served?;
    Ok(())
}

/// Mines until `shutdown` is cancelled, then flushes what is left and says
/// how much was done and how much of it Redis took.
pub async fn mine(
    config: Config,
    instance: String,
    redis: Redis,
    shutdown: CancellationToken,
) -> Result<Summary, String> {
    let rng = Client::new("rng", &config.rng_url, &config)?;
    let hasher = Client::new("hasher", &config.hasher_url, &config)?;
    let miner = Arc::new(Miner {
        rng_uri: rng.uri("/32")?,
        hasher_uri: hasher.uri("/")?,
        rng,
        hasher,
        ledger: Arc::new(Ledger::new(
            &instance,
            config.max_pending_coins,
            config.keep_coins,
            config.redis_wait_timeout,
            config.stop_timeout,
        )),
        config,
    });
    let stop_flushing = CancellationToken::new();
    let flusher = tokio::spawn(miner.ledger.clone().flush_every(
        miner.config.flush_interval,
        redis,
        stop_flushing.clone(),
    ));
    let mut loops = JoinSet::new();
    for _ in 0..miner.config.concurrency {
        loops.spawn(work_loop(miner.clone(), shutdown.clone()));
    }
    // After a stop is asked for, each loop ends after its unit in progress;
    // those still at it after UNIT_GRACE are stopped where they are. (The
    // loops themselves look at `shutdown` only between units: watching it
    // during each unit took a lock or two each time the unit was polled.)
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(UNIT_GRACE).await;
    };
    tokio::pin!(grace_over);
    loop {
        tokio::select! {
            joined = loops.join_next() => if joined.is_none() { break },
            () = &mut grace_over => {
                loops.abort_all();
                while loops.join_next().await.is_some() {}
                break;
            }
        }
    }
    stop_flushing.cancel();
    flusher
        .await
        .map_err(|err| format!("the flusher failed: {err}"))?;
    Ok(miner.ledger.summary())
}

struct Miner {
    config: Config,
    rng: Client,
    hasher: Client,
    /// What the units call: `GET {RNG_URL}/32` and `POST {HASHER_URL}/`.
    rng_uri: Uri,
    hasher_uri: Uri,
    ledger: Arc<Ledger>,
}

/// This loop's connections to rng and hasher, kept from unit to unit.
#[derive(Default)]
struct Connections {
    rng: Connection,
    hasher: Connection,
}

async fn work_loop(miner: Arc<Miner>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(miner.config.max_backoff);
    let mut connections = Connections::default();
    loop {
        if miner.config.sleep.is_zero() {
            if shutdown.is_cancelled() {
                return;
            }
        } else {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(miner.config.sleep) => {}
            }
        }
        // A unit in progress when the stop comes may finish, briefly: `mine`
        // stops the loops still at it after UNIT_GRACE.
        match miner.work_once(&mut connections).await {
            Ok(()) => backoff.reset(),
            Err(err) => {
                let delay = backoff.next();
                tracing::warn!("{err}; waiting {delay:?} and restarting");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

impl Miner {
    async fn work_once(&self, connections: &mut Connections) -> Result<(), String> {
        tracing::debug!("Doing one unit of work");
        let random_bytes = self.get_random_bytes(&mut connections.rng).await?;
        let hex_hash = self
            .hash_bytes(&mut connections.hasher, random_bytes.clone())
            .await?;
        if hex_hash.starts_with(b"0") {
            let hash: [u8; 32] = Sha256::digest(&random_bytes).into();
            // Only a real coin goes to the wallet: a hasher gone wrong must not fill it.
            if hex::encode(hash).as_bytes() != hex_hash {
                metrics::counter!("worker_call_errors_total", "dependency" => "hasher")
                    .increment(1);
                return Err(format!(
                    "hasher answered {}..., not the SHA-256 of the bytes sent: no coin",
                    String::from_utf8_lossy(&hex_hash[..8])
                ));
            }
            tracing::info!("Coin found: {}...", String::from_utf8_lossy(&hex_hash[..8]));
            let random_bytes = <[u8; 32]>::try_from(&random_bytes[..])
                .map_err(|_| format!("rng answered {} bytes instead of 32", random_bytes.len()))?;
            self.ledger.coin_found(Coin { hash, random_bytes });
        }
        self.ledger.unit_done();
        Ok(())
    }

    async fn get_random_bytes(&self, connection: &mut Connection) -> Result<Bytes, String> {
        let reply = self.rng.get(connection, &self.rng_uri).await?;
        self.ledger.answered_by("rng", reply.instance());
        let bytes = reply.body;
        if bytes.len() != 32 {
            return Err(format!("rng answered {} bytes instead of 32", bytes.len()));
        }
        Ok(bytes)
    }

    /// The SHA-256 of `data` from hasher, in hex: 64 digits and lowercase
    /// letters (whitespace around them left out), as the answer's bytes.
    async fn hash_bytes(&self, connection: &mut Connection, data: Bytes) -> Result<Bytes, String> {
        let reply = self.hasher.post(connection, &self.hasher_uri, data).await?;
        self.ledger.answered_by("hasher", reply.instance());
        let body = reply.body;
        let hex_hash = body.trim_ascii();
        if is_sha256_hex(hex_hash) {
            return Ok(body.slice_ref(hex_hash));
        }
        // Not one as it came: as text, with every kind of whitespace left out.
        let hex_hash = String::from_utf8_lossy(&body).trim().to_owned();
        if !is_sha256_hex(hex_hash.as_bytes()) {
            metrics::counter!("worker_call_errors_total", "dependency" => "hasher").increment(1);
            let shown: String = hex_hash.chars().take(40).collect();
            return Err(format!("hasher answered {shown:?}, not a SHA-256"));
        }
        Ok(Bytes::from(hex_hash))
    }
}

fn is_sha256_hex(text: &[u8]) -> bool {
    text.len() == 64
        && text
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Doubling waits after consecutive errors: 250 ms, 500 ms, 1 s... up to a cap.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);

    fn new(max: Duration) -> Self {
        Backoff {
            next: Self::FIRST.min(max),
            max,
        }
    }

    fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }
}

/// What the `worker` binary does; its `main.rs` only calls this. Here, the
/// service's code is compiled once, with the library (instantiated in the
/// binary, the generic `dockercoins::main` compiled it a second time there).
pub fn main() -> std::process::ExitCode {
    dockercoins::main("worker", ABOUT, run)
}
