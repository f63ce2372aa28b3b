//! The ledger: the work done that Redis has not taken yet.
//!
//! Units and coins are added by the work loops and written by one flusher,
//! every `WORKER_FLUSH_INTERVAL`, in batches. A batch that fails stays and is
//! sent again, unchanged, until Redis takes it; new work goes to the next
//! batch. Each batch carries a number, and Redis applies a number only once,
//! so a batch sent again after a lost reply is never counted twice.
//!
//! With Sentinel, a batch is taken only once a replica has it too (`WAIT 1`
//! on the same connection, right after the write): a batch no replica
//! confirmed, or that a primary cut off from its replicas refused
//! (`min-replicas-to-write`), stays and is sent again, to whichever Redis is
//! the primary by then. Its number still stops it from counting twice, since
//! the number applied travels with the counts it was applied with.
//!
//! Redis applies a worker's batches in order: one whose number is not the
//! next is refused (`GAP`, with the last number it has). That happens when
//! the Redis answering now lacks batches it took before: a replica promoted
//! without the last ones (Sentinel may pick a replica that `WAIT` did not
//! wait for), or a Redis restarted without the last second of its
//! append-only file. The worker keeps the batches Redis took over the last
//! minute and sends the missing ones again, in order, before the new one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dockercoins::CancellationToken;
use dockercoins::redis::Redis;
use metrics::{Counter, Gauge};
use serde::Serialize;

/// Applies one batch: `INCRBY hashes`, `HSET wallet` for each coin, once per
/// batch number and in order, and refreshes the worker's report for the web UI.
/// KEYS: hashes, wallet, the worker's last batch number, its report.
/// ARGV: batch number, units, report, 1 to apply it even after a gap (or 0),
/// then hex hash and bytes of each coin.
/// Returns HSET's answer (1 new, 0 already there) for each coin, nothing if
/// this batch number was applied before, or the error `GAP <last applied>`
/// if batches are missing before it.
const APPLY_BATCH: &str = r"
redis.call('SET', KEYS[4], ARGV[3], 'EX', 10)
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if last >= tonumber(ARGV[1]) then
  return {}
end
if tonumber(ARGV[1]) > last + 1 and ARGV[4] ~= '1' then
  return redis.error_reply('GAP ' .. last)
end
redis.call('SET', KEYS[3], ARGV[1], 'EX', 86400)
redis.call('INCRBY', KEYS[1], ARGV[2])
local created = {}
for i = 5, #ARGV, 2 do
  created[#created + 1] = redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
return created
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(APPLY_BATCH));

/// The key prefix of the workers' reports, which the web UI reads.
pub const REPORT_PREFIX: &str = "dockercoins:report:";

/// How long batches Redis took are kept, to be sent again to a Redis that
/// turns out to lack them (a failover takes a few seconds).
const KEEP_TAKEN: Duration = Duration::from_secs(60);

/// What a worker did, in all, when it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Units of work done.
    pub units: u64,
    /// Units that Redis counted in `hashes`.
    pub flushed: u64,
    pub coins_found: u64,
    /// Coins dropped because too many waited for Redis.
    pub coins_dropped: u64,
    /// Sends of a batch that had been sent before.
    pub batches_resent: u64,
    /// Batches Redis refused to write (`NOREPLICAS`, `READONLY`, `OOM`).
    pub batches_refused: u64,
    /// Batches written that no replica confirmed in time (`WAIT` said 0).
    pub batches_unconfirmed: u64,
    /// Batches Redis had taken and then lacked (a failover to a replica
    /// without them), sent again.
    pub batches_restored: u64,
}

#[derive(Clone)]
struct Coin {
    hex_hash: String,
    random_bytes: Bytes,
}

#[derive(Clone)]
struct Batch {
    number: u64,
    /// Times sent so far.
    sent: u64,
    units: u64,
    coins: Vec<Coin>,
}

/// What the web UI shows of each worker (stored as JSON, expiring in 10 s).
#[derive(Serialize)]
struct Report<'a> {
    instance: &'a str,
    /// Unix seconds when written.
    time: f64,
    /// Units done since this worker started.
    units: u64,
    coins: u64,
    /// Answers received since this worker started, by dependency and instance.
    rng: &'a BTreeMap<String, u64>,
    hasher: &'a BTreeMap<String, u64>,
}

/// Answers received, by instance, from each dependency: looked up by the
/// instance's name as it came, with no copy of it but the first.
#[derive(Default)]
struct Answered {
    rng: BTreeMap<String, u64>,
    hasher: BTreeMap<String, u64>,
}

pub struct Ledger {
    instance: String,
    /// Where Redis keeps the number of the last batch it applied; unique per
    /// process, since batch numbers start again at 1 after a restart.
    batch_key: String,
    report_key: String,
    max_pending_coins: usize,
    /// With Sentinel, how long `WAIT 1` waits for a replica.
    wait_timeout: Duration,
    units_waiting: AtomicU64,
    coins_waiting: Mutex<Vec<Coin>>,
    units_done: AtomicU64,
    units_flushed: AtomicU64,
    coins_found: AtomicU64,
    coins_dropped: AtomicU64,
    batches: AtomicU64,
    batches_resent: AtomicU64,
    batches_refused: AtomicU64,
    batches_unconfirmed: AtomicU64,
    batches_restored: AtomicU64,
    /// The batches Redis took over the last `KEEP_TAKEN`, oldest first.
    taken: Mutex<VecDeque<(Instant, Batch)>>,
    answered: Mutex<Answered>,
    redis_failing: AtomicBool,
    /// `worker_units_total` and `worker_units_unflushed`, registered once
    /// instead of looked up at every unit.
    units_total: Counter,
    units_unflushed: Gauge,
}

impl Ledger {
    pub fn new(instance: &str, max_pending_coins: usize, wait_timeout: Duration) -> Self {
        let process = format!("{:016x}", rand::random::<u64>());
        // A series registered before the recorder would go nowhere, for good.
        dockercoins::metrics::install();
        Ledger {
            instance: instance.to_owned(),
            batch_key: format!("dockercoins:batch:{instance}:{process}"),
            report_key: format!("{REPORT_PREFIX}{instance}"),
            max_pending_coins,
            wait_timeout,
            units_waiting: AtomicU64::new(0),
            coins_waiting: Mutex::new(Vec::new()),
            units_done: AtomicU64::new(0),
            units_flushed: AtomicU64::new(0),
            coins_found: AtomicU64::new(0),
            coins_dropped: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batches_resent: AtomicU64::new(0),
            batches_refused: AtomicU64::new(0),
            batches_unconfirmed: AtomicU64::new(0),
            batches_restored: AtomicU64::new(0),
            taken: Mutex::new(VecDeque::new()),
            answered: Mutex::new(Answered::default()),
            redis_failing: AtomicBool::new(false),
            units_total: metrics::counter!("worker_units_total"),
            units_unflushed: metrics::gauge!("worker_units_unflushed"),
        }
    }

    pub fn unit_done(&self) {
        self.units_waiting.fetch_add(1, Ordering::SeqCst);
        self.units_done.fetch_add(1, Ordering::SeqCst);
        self.units_total.increment(1);
        self.units_unflushed.increment(1.0);
    }

    pub fn coin_found(&self, hex_hash: String, random_bytes: Bytes) {
        self.coins_found.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("worker_coins_found_total").increment(1);
        let mut coins = lock(&self.coins_waiting);
        if coins.len() >= self.max_pending_coins {
            let dropped = self.coins_dropped.fetch_add(1, Ordering::SeqCst);
            metrics::counter!("worker_coins_dropped_total").increment(1);
            if dropped == 0 {
                tracing::error!(
                    "{} coins are waiting for redis (WORKER_MAX_PENDING_COINS); dropping new coins until it is back",
                    coins.len()
                );
            }
            return;
        }
        coins.push(Coin {
            hex_hash,
            // A copy: the answer's bytes share the connection's whole read
            // buffer, which a coin waiting for the flush would keep alive.
            random_bytes: Bytes::copy_from_slice(&random_bytes),
        });
        metrics::gauge!("worker_coins_unflushed").set(coins.len() as f64);
    }

    /// Counts which instance of a dependency answered, for the web UI.
    pub fn answered_by(&self, dependency: &'static str, instance: &str) {
        let mut answered = lock(&self.answered);
        let by_instance = if dependency == "rng" {
            &mut answered.rng
        } else {
            &mut answered.hasher
        };
        match by_instance.get_mut(instance) {
            Some(count) => *count += 1,
            None => {
                by_instance.insert(instance.to_owned(), 1);
            }
        }
    }

    pub fn summary(&self) -> Summary {
        Summary {
            units: self.units_done.load(Ordering::SeqCst),
            flushed: self.units_flushed.load(Ordering::SeqCst),
            coins_found: self.coins_found.load(Ordering::SeqCst),
            coins_dropped: self.coins_dropped.load(Ordering::SeqCst),
            batches_resent: self.batches_resent.load(Ordering::SeqCst),
            batches_refused: self.batches_refused.load(Ordering::SeqCst),
            batches_unconfirmed: self.batches_unconfirmed.load(Ordering::SeqCst),
            batches_restored: self.batches_restored.load(Ordering::SeqCst),
        }
    }

    /// Flushes every `interval` until `stop`, then flushes what is left.
    pub async fn flush_every(
        self: Arc<Self>,
        interval: Duration,
        redis: Redis,
        stop: CancellationToken,
    ) {
        let mut pending = None;
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => break,
            }
            self.flush(&redis, &mut pending).await;
        }
        // The last flush: the batch that failed, if any, then what is left.
        for _ in 0..3 {
            if self.flush(&redis, &mut pending).await
                && self.units_waiting.load(Ordering::SeqCst) == 0
                && lock(&self.coins_waiting).is_empty()
            {
                return;
            }
        }
        let left =
            self.units_done.load(Ordering::SeqCst) - self.units_flushed.load(Ordering::SeqCst);
        tracing::error!("stopping with {left} units that redis did not count");
    }

    /// Sends the pending batch, or a new one; true if Redis took it.
    async fn flush(&self, redis: &Redis, pending: &mut Option<Batch>) -> bool {
        let batch = pending.get_or_insert_with(|| self.next_batch());
        if batch.sent > 0 {
            self.batches_resent.fetch_add(1, Ordering::SeqCst);
            metrics::counter!("worker_batches_resent_total").increment(1);
        }
        batch.sent += 1;
        let mut result = self.apply(redis, batch, false).await;
        if let Err(Failure::Gap(last)) = result {
            result = match self.restore(redis, last, batch.number).await {
                Ok(force) => self.apply(redis, batch, force).await,
                Err(failure) => Err(failure),
            };
        }
        match result {
            Ok(created) => {
                if created.len() == batch.coins.len() {
                    for (coin, created) in batch.coins.iter().zip(created) {
                        if created == 0 {
                            tracing::info!("We already had that coin: {}...", &coin.hex_hash[..8]);
                        }
                    }
                }
                self.units_flushed.fetch_add(batch.units, Ordering::SeqCst);
                self.units_unflushed.decrement(batch.units as f64);
                if self.redis_failing.swap(false, Ordering::SeqCst) {
                    tracing::info!("redis is back; the work done meanwhile is counted");
                }
                if let Some(batch) = pending.take() {
                    self.keep_taken(batch);
                }
                true
            }
            Err(failure) => {
                redis.failed();
                let err = match failure {
                    Failure::Refused(err) => {
                        self.batches_refused.fetch_add(1, Ordering::SeqCst);
                        metrics::counter!("worker_batches_refused_total").increment(1);
                        err
                    }
                    Failure::Unconfirmed(err) => {
                        self.batches_unconfirmed.fetch_add(1, Ordering::SeqCst);
                        metrics::counter!("worker_batches_unconfirmed_total").increment(1);
                        err
                    }
                    Failure::Failed(err) => err,
                    Failure::Gap(last) => format!("redis still lacks the batches after {last}"),
                };
                if !self.redis_failing.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        "cannot update the hash counter ({err}); keeping the work for later and retrying every flush"
                    );
                } else {
                    tracing::debug!("redis still failing: {err}");
                }
                metrics::counter!("worker_call_errors_total", "dependency" => "redis").increment(1);
                false
            }
        }
    }

    /// Keeps a batch Redis took for `KEEP_TAKEN`, and forgets older ones.
    fn keep_taken(&self, batch: Batch) {
        let now = Instant::now();
        let mut taken = lock(&self.taken);
        while taken
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > KEEP_TAKEN)
        {
            taken.pop_front();
        }
        taken.push_back((now, batch));
    }

    /// Redis has applied batches up to `last` only, and batch `next` waits:
    /// sends again, in order, the batches after `last` that it took before.
    /// True if the batch `next` must be applied after a gap all the same
    /// (the missing batches are no longer kept: their work is lost).
    async fn restore(&self, redis: &Redis, last: u64, next: u64) -> Result<bool, Failure> {
        let missing: Vec<Batch> = lock(&self.taken)
            .iter()
            .map(|(_, batch)| batch)
            .filter(|batch| batch.number > last && batch.number < next)
            .cloned()
            .collect();
        let kept_from = missing.first().map_or(next, |batch| batch.number);
        let units: u64 = missing.iter().map(|batch| batch.units).sum();
        if kept_from == last + 1 {
            tracing::warn!(
                "redis lacks batches {}..{} ({units} units) that it had taken (a failover to a replica without them); sending them again",
                last + 1,
                next - 1
            );
        } else {
            tracing::error!(
                "redis lacks batches {}..{} that it had taken; {}..{} are no longer kept and their units are lost; sending the {} others again",
                last + 1,
                next - 1,
                last + 1,
                kept_from - 1,
                missing.len()
            );
        }
        for (i, batch) in missing.iter().enumerate() {
            self.apply(redis, batch, i == 0 && kept_from != last + 1)
                .await?;
            self.batches_restored.fetch_add(1, Ordering::SeqCst);
            metrics::counter!("worker_batches_restored_total").increment(1);
        }
        Ok(missing.is_empty())
    }

    fn next_batch(&self) -> Batch {
        let units = self.units_waiting.swap(0, Ordering::SeqCst);
        let coins = std::mem::take(&mut *lock(&self.coins_waiting));
        metrics::gauge!("worker_coins_unflushed").set(0.0);
        if units > 0 {
            tracing::info!("{units} units of work done, updating hash counter");
        } else {
            tracing::debug!("0 units of work done, updating hash counter");
        }
        Batch {
            number: self.batches.fetch_add(1, Ordering::SeqCst) + 1,
            sent: 0,
            units,
            coins,
        }
    }

    async fn apply(&self, redis: &Redis, batch: &Batch, force: bool) -> Result<Vec<i64>, Failure> {
        let start = Instant::now();
        let report = self.report();
        let result = if redis.uses_sentinel() {
            self.apply_replicated(redis, batch, report, force).await
        } else {
            async {
                let mut connection = redis.connection().await?;
                let mut invocation = SCRIPT.prepare_invoke();
                invocation
                    .key("hashes")
                    .key("wallet")
                    .key(&self.batch_key)
                    .key(&self.report_key)
                    .arg(batch.number)
                    .arg(batch.units)
                    .arg(report)
                    .arg(u8::from(force));
                for coin in &batch.coins {
                    invocation
                        .arg(&coin.hex_hash)
                        .arg(coin.random_bytes.as_ref());
                }
                invocation.invoke_async::<Vec<i64>>(&mut connection).await
            }
            .await
            .map_err(Failure::from)
        };
        metrics::histogram!("worker_call_duration_seconds", "dependency" => "redis")
            .record(start.elapsed().as_secs_f64());
        result.map_err(|failure| failure.at(redis.url()))
    }

    /// The batch and `WAIT 1` in one pipeline, so both go on one connection
    /// and `WAIT` counts the replicas that have this very batch.
    async fn apply_replicated(
        &self,
        redis: &Redis,
        batch: &Batch,
        report: String,
        force: bool,
    ) -> Result<Vec<i64>, Failure> {
        let mut connection = redis.connection().await?;
        let mut pipe = redis::pipe();
        let eval = pipe
            .cmd("EVAL")
            .arg(APPLY_BATCH)
            .arg(4)
            .arg("hashes")
            .arg("wallet")
            .arg(&self.batch_key)
            .arg(&self.report_key)
            .arg(batch.number)
            .arg(batch.units)
            .arg(report)
            .arg(u8::from(force));
        for coin in &batch.coins {
            eval.arg(&coin.hex_hash).arg(coin.random_bytes.as_ref());
        }
        let timeout_ms = u64::try_from(self.wait_timeout.as_millis()).unwrap_or(u64::MAX);
        pipe.cmd("WAIT").arg(1).arg(timeout_ms.max(1));
        let (created, replicas): (Vec<i64>, i64) = pipe.query_async(&mut connection).await?;
        if replicas < 1 {
            return Err(Failure::Unconfirmed(format!(
                "no replica confirmed batch {} within {:?} (WAIT); keeping it to send again",
                batch.number, self.wait_timeout
            )));
        }
        Ok(created)
    }

    fn report(&self) -> String {
        let answered = lock(&self.answered);
        let report = Report {
            instance: &self.instance,
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            units: self.units_done.load(Ordering::SeqCst),
            coins: self.coins_found.load(Ordering::SeqCst),
            rng: &answered.rng,
            hasher: &answered.hasher,
        };
        serde_json::to_string(&report).unwrap_or_default()
    }
}

/// Why a batch was not taken.
enum Failure {
    /// Redis answered that it does not take writes now: a primary without
    /// enough replicas (`NOREPLICAS`), one that became a replica (`READONLY`),
    /// or one full (`OOM`, maxmemory).
    Refused(String),
    /// Written, but no replica confirmed it in time.
    Unconfirmed(String),
    /// Batches it took before are missing (`GAP`): it has applied this
    /// worker's batches up to this number only.
    Gap(u64),
    /// No answer, or another error.
    Failed(String),
}

impl From<redis::RedisError> for Failure {
    fn from(err: redis::RedisError) -> Self {
        // The server's error, also from inside a pipeline (whose error only
        // lists the errors of its commands): the first one says why.
        let server = err.clone().into_server_errors().and_then(|errors| {
            errors.first().map(|(_, error)| {
                let last = error.details().and_then(|last| last.parse::<u64>().ok());
                (error.code().to_owned(), last)
            })
        });
        match server.as_ref().map(|(code, last)| (code.as_str(), *last)) {
            Some(("GAP", Some(last))) => Failure::Gap(last),
            Some(("NOREPLICAS" | "READONLY" | "OOM", _)) => {
                Failure::Refused(format!("refused: {err}"))
            }
            _ => Failure::Failed(err.to_string()),
        }
    }
}

impl Failure {
    fn at(self, url: &str) -> Self {
        match self {
            Failure::Refused(err) => Failure::Refused(format!("redis at {url}: {err}")),
            Failure::Unconfirmed(err) => Failure::Unconfirmed(format!("redis at {url}: {err}")),
            Failure::Failed(err) => Failure::Failed(format!("redis at {url}: {err}")),
            gap @ Failure::Gap(_) => gap,
        }
    }
}

/// Locks a mutex; a panic elsewhere while it was held leaves data that is
/// still consistent (counters and lists), so it is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
