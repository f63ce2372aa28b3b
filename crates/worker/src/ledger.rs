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
//! minute and sends the missing ones again, in order, before the new one;
//! missing ones it no longer keeps are counted as lost
//! (`worker_units_lost_total`), from the totals Redis keeps with the number.
//!
//! The record of the last batch applied (`dockercoins:batch:<instance>:<process>`)
//! never expires: a worker idle for days, or a Redis stopped over a weekend,
//! finds it as it left it. A stop deletes it once the last batch is taken.
//! A record that is missing is not read as "nothing applied": if nothing
//! failed and no new connection was opened since the last batch Redis took,
//! the record was deleted by hand and the batches are counted; otherwise the
//! Redis answering lacks all of them and they are sent again.
//!
//! At a stop, the worker keeps sending its last batch until Redis takes it,
//! for at most `WORKER_STOP_TIMEOUT` (a failover takes a few seconds), then
//! says what it could not hand over.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dockercoins::CancellationToken;
use dockercoins::redis::Redis;
use metrics::{Counter, Gauge};
use redis::RedisError;
use serde::Serialize;

/// Applies one batch: `INCRBY hashes`, `HSET wallet` for each coin, once per
/// batch number and in order, and refreshes the worker's report for the web
/// UI. The record of the last batch applied keeps, with its number, this
/// worker's totals of units and coins up to it.
/// KEYS: hashes, wallet, the worker's record, its report.
/// ARGV: batch number, units, total units and total coins up to this batch,
/// report, 1 to apply it even after a gap or without a record (or 0), then
/// hex hash and bytes of each coin.
/// Returns HSET's answer (1 new, 0 already there) for each coin, nothing if
/// this batch number was applied before, the error `GAP <last> <units>
/// <coins>` if batches are missing before it, or `NORECORD` if no record is
/// there for a batch after the first.
/// A script with flags (`#!lua`, Redis 7): Redis refuses it as a whole, before
/// it runs, when it takes no writes (`OOM`, `NOREPLICAS`, `READONLY`), so a
/// batch is never half applied.
const APPLY_BATCH: &str = r"#!lua
local number = tonumber(ARGV[1])
local record = redis.call('GET', KEYS[3])
local last, units, coins = 0, 0, 0
if record then
  local n, u, c = string.match(record, '^(%d+) (%d+) (%d+)$')
  if n then
    last, units, coins = tonumber(n), tonumber(u), tonumber(c)
  else
    last = tonumber(record) or 0
  end
elseif number > 1 and ARGV[6] ~= '1' then
  return redis.error_reply('NORECORD no record of the batches before ' .. number)
end
if last >= number then
  redis.call('SET', KEYS[4], ARGV[5], 'EX', 10)
  return {}
end
if number > last + 1 and ARGV[6] ~= '1' then
  return redis.error_reply('GAP ' .. last .. ' ' .. units .. ' ' .. coins)
end
redis.call('SET', KEYS[3], ARGV[1] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('SET', KEYS[4], ARGV[5], 'EX', 10)
local created = {}
for i = 7, #ARGV, 2 do
  created[#created + 1] = redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
return created
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(APPLY_BATCH));

/// The key prefix of the workers' reports, which the web UI reads.
pub const REPORT_PREFIX: &str = "dockercoins:report:";

/// How long batches Redis took are kept, to be sent again to a Redis that
/// turns out to lack them (a failover takes a few seconds), unless their
/// coins pass `WORKER_KEEP_COINS` first.
const KEEP_TAKEN: Duration = Duration::from_secs(60);

/// At a stop, the pause between two sends of a batch Redis did not take.
const STOP_RETRY: Duration = Duration::from_millis(250);

/// What a worker did, in all, when it stopped. Units done = counted +
/// unconfirmed + lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Units of work done.
    pub units: u64,
    /// Units that Redis counted in `hashes` (and, with Sentinel, a replica
    /// confirmed), less those a Redis lost afterwards.
    pub flushed: u64,
    /// Units of the last batch, written to Redis but not confirmed by a
    /// replica (or whose answer never came) when the worker gave up: counted
    /// unless a failover loses them.
    pub unconfirmed: u64,
    /// Units Redis will never count: batches it lost that the worker no
    /// longer kept, and what it could not hand over before it stopped.
    pub lost: u64,
    pub coins_found: u64,
    /// Coins dropped because too many waited for Redis.
    pub coins_dropped: u64,
    /// Coins of the units lost.
    pub coins_lost: u64,
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

/// A coin as Redis's wallet keeps it: the hash (hex there) and the random
/// bytes it is the SHA-256 of. 64 bytes, none on the heap: a fast worker
/// keeps thousands (`WORKER_KEEP_COINS`).
#[derive(Clone)]
pub struct Coin {
    pub hash: [u8; 32],
    pub random_bytes: [u8; 32],
}

impl Coin {
    fn hex_hash(&self) -> String {
        hex::encode(self.hash)
    }
}

#[derive(Clone)]
struct Batch {
    number: u64,
    /// Times sent so far.
    sent: u64,
    units: u64,
    coins: Vec<Coin>,
    /// Units and coins of this worker's batches up to this one, in all.
    total_units: u64,
    total_coins: u64,
    /// A send may have been applied: written but not confirmed by a
    /// replica, or sent without an answer.
    maybe_written: bool,
}

impl Batch {
    /// Units and coins of the batches before this one, in all.
    fn before(&self) -> (u64, u64) {
        (
            self.total_units - self.units,
            self.total_coins - self.coins.len() as u64,
        )
    }
}

/// What Redis has applied of this worker's batches: up to `last`, with these
/// totals.
#[derive(Debug, Clone, Copy)]
struct Applied {
    last: u64,
    units: u64,
    coins: u64,
}

/// What the web UI shows of each worker (stored as JSON, expiring in 10 s).
#[derive(Serialize)]
struct Report<'a> {
    instance: &'a str,
    /// This worker process's id, as in its batch record's key: a name that a
    /// later process reuses (a Swarm slot, a pod restarted) is told apart.
    process: &'a str,
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

/// Batch numbers and totals, given out by the flusher alone.
#[derive(Default)]
struct Numbering {
    number: u64,
    units: u64,
    coins: u64,
}

pub struct Ledger {
    instance: String,
    /// A random id, as the batch record's key and the report say it.
    process: String,
    /// Where Redis keeps the number of the last batch it applied; unique per
    /// process, since batch numbers start again at 1 after a restart.
    batch_key: String,
    report_key: String,
    max_pending_coins: usize,
    /// Most coins kept in the batches Redis took (`WORKER_KEEP_COINS`).
    keep_coins: usize,
    /// With Sentinel, how long `WAIT 1` waits for a replica.
    wait_timeout: Duration,
    /// At a stop, how long the last batches may wait for Redis.
    stop_timeout: Duration,
    units_waiting: AtomicU64,
    coins_waiting: Mutex<Vec<Coin>>,
    units_done: AtomicU64,
    units_flushed: AtomicU64,
    units_unconfirmed: AtomicU64,
    units_lost: AtomicU64,
    coins_found: AtomicU64,
    coins_dropped: AtomicU64,
    coins_lost: AtomicU64,
    numbering: Mutex<Numbering>,
    batches_resent: AtomicU64,
    batches_refused: AtomicU64,
    batches_unconfirmed: AtomicU64,
    batches_restored: AtomicU64,
    /// The batches Redis took over the last `KEEP_TAKEN`, oldest first, at
    /// most `keep_coins` coins in all (but always the last one).
    taken: Mutex<VecDeque<(Instant, Batch)>>,
    answered: Mutex<Answered>,
    redis_failing: AtomicBool,
    /// Whether a call to Redis failed since it last took a batch, and the
    /// connection's generation then: either tells that the Redis answering
    /// may not be the one that took it.
    failed_since_taken: AtomicBool,
    taken_generation: AtomicU64,
    /// Series registered once instead of looked up at every unit.
    units_total: Counter,
    units_unflushed: Gauge,
}

impl Ledger {
    pub fn new(
        instance: &str,
        max_pending_coins: usize,
        keep_coins: usize,
        wait_timeout: Duration,
        stop_timeout: Duration,
    ) -> Self {
        let process = format!("{:016x}", rand::random::<u64>());
        // A series registered before the recorder would go nowhere, for good.
        dockercoins::metrics::install();
        // Shown from the start, at 0, so that a rate or an alert has a series.
        for counter in [
            "worker_units_counted_total",
            "worker_units_restored_total",
            "worker_units_lost_total",
            "worker_coins_lost_total",
        ] {
            metrics::counter!(counter).increment(0);
        }
        metrics::gauge!("worker_units_unconfirmed").set(0.0);
        Ledger {
            instance: instance.to_owned(),
            batch_key: format!("dockercoins:batch:{instance}:{process}"),
            process,
            report_key: format!("{REPORT_PREFIX}{instance}"),
            max_pending_coins,
            keep_coins,
            wait_timeout,
            stop_timeout,
            units_waiting: AtomicU64::new(0),
            coins_waiting: Mutex::new(Vec::new()),
            units_done: AtomicU64::new(0),
            units_flushed: AtomicU64::new(0),
            units_unconfirmed: AtomicU64::new(0),
            units_lost: AtomicU64::new(0),
            coins_found: AtomicU64::new(0),
            coins_dropped: AtomicU64::new(0),
            coins_lost: AtomicU64::new(0),
            numbering: Mutex::new(Numbering::default()),
            batches_resent: AtomicU64::new(0),
            batches_refused: AtomicU64::new(0),
            batches_unconfirmed: AtomicU64::new(0),
            batches_restored: AtomicU64::new(0),
            taken: Mutex::new(VecDeque::new()),
            answered: Mutex::new(Answered::default()),
            redis_failing: AtomicBool::new(false),
            failed_since_taken: AtomicBool::new(false),
            taken_generation: AtomicU64::new(0),
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

    pub fn coin_found(&self, coin: Coin) {
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
        coins.push(coin);
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
            unconfirmed: self.units_unconfirmed.load(Ordering::SeqCst),
            lost: self.units_lost.load(Ordering::SeqCst),
            coins_found: self.coins_found.load(Ordering::SeqCst),
            coins_dropped: self.coins_dropped.load(Ordering::SeqCst),
            coins_lost: self.coins_lost.load(Ordering::SeqCst),
            batches_resent: self.batches_resent.load(Ordering::SeqCst),
            batches_refused: self.batches_refused.load(Ordering::SeqCst),
            batches_unconfirmed: self.batches_unconfirmed.load(Ordering::SeqCst),
            batches_restored: self.batches_restored.load(Ordering::SeqCst),
        }
    }

    /// Flushes every `interval` until `stop`, then hands over what is left.
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
        self.hand_over(&redis, &mut pending).await;
    }

    /// The last flush: the batch that failed, if any, then what is left,
    /// sent again until Redis takes it, for at most `stop_timeout`. Then the
    /// record is deleted; or, if time ran out, what was not handed over is
    /// counted and said.
    async fn hand_over(&self, redis: &Redis, pending: &mut Option<Batch>) {
        let deadline = Instant::now() + self.stop_timeout;
        loop {
            // One send at least, even with no time left.
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100));
            let taken = tokio::time::timeout(left, self.flush(redis, pending))
                .await
                .unwrap_or(false);
            if taken
                && self.units_waiting.load(Ordering::SeqCst) == 0
                && lock(&self.coins_waiting).is_empty()
            {
                self.forget(redis).await;
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            if !taken {
                tokio::time::sleep(STOP_RETRY.min(deadline - Instant::now())).await;
            }
        }
        // What never reached Redis, and what may have (written, not confirmed).
        let mut lost_units = self.units_waiting.swap(0, Ordering::SeqCst);
        let mut lost_coins = std::mem::take(&mut *lock(&self.coins_waiting)).len() as u64;
        let mut unconfirmed = 0;
        if let Some(batch) = pending.take() {
            if batch.maybe_written {
                unconfirmed = batch.units;
            } else {
                lost_units += batch.units;
                lost_coins += batch.coins.len() as u64;
            }
        }
        self.units_unconfirmed.store(unconfirmed, Ordering::SeqCst);
        self.lose(lost_units, lost_coins, false);
        let kept: u64 = lock(&self.taken).iter().map(|(_, batch)| batch.units).sum();
        tracing::error!(
            "redis did not take the last batch within WORKER_STOP_TIMEOUT ({:?}): stopping with {lost_units} units and {lost_coins} coins lost, {unconfirmed} units written but not confirmed by a replica; the {kept} units of the batches it took in the last minute are lost too if a failover promotes a replica without them",
            self.stop_timeout
        );
    }

    /// Deletes the record of the batches applied, once the last is taken: no
    /// batch will follow.
    async fn forget(&self, redis: &Redis) {
        let deleted = async {
            let mut connection = redis.connection().await?;
            redis::cmd("DEL")
                .arg(&self.batch_key)
                .query_async::<u64>(&mut connection)
                .await
        };
        if let Err(err) = deleted.await {
            tracing::debug!("the record {} stays: {err}", self.batch_key);
        }
    }

    /// Counts units and coins as lost; `counted` if Redis had counted them.
    fn lose(&self, units: u64, coins: u64, counted: bool) {
        if counted {
            let _ = self
                .units_flushed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.saturating_sub(units))
                });
        }
        self.units_lost.fetch_add(units, Ordering::SeqCst);
        self.coins_lost.fetch_add(coins, Ordering::SeqCst);
        metrics::counter!("worker_units_lost_total").increment(units);
        metrics::counter!("worker_coins_lost_total").increment(coins);
    }

    /// Sends the pending batch, or a new one; true if Redis took it.
    async fn flush(&self, redis: &Redis, pending: &mut Option<Batch>) -> bool {
        let batch = pending.get_or_insert_with(|| self.next_batch());
        if batch.sent > 0 {
            self.batches_resent.fetch_add(1, Ordering::SeqCst);
            metrics::counter!("worker_batches_resent_total").increment(1);
        }
        batch.sent += 1;
        let mut result = self.send(redis, batch, false).await;
        let missing = match result {
            Err(Failure::Gap(applied)) => Some(applied),
            Err(Failure::NoRecord) if self.maybe_another_redis(redis) => Some(Applied {
                last: 0,
                units: 0,
                coins: 0,
            }),
            Err(Failure::NoRecord) => {
                tracing::warn!(
                    "redis has no record of this worker's batches ({} deleted?) though nothing failed since it took the last one: they are counted, and the record starts again at batch {}",
                    self.batch_key,
                    batch.number
                );
                result = self.send(redis, batch, true).await;
                None
            }
            _ => None,
        };
        if let Some(applied) = missing {
            result = match self.restore(redis, applied, batch).await {
                Ok(None) => self.send(redis, batch, false).await,
                Ok(Some((units, coins))) => {
                    let forced = self.send(redis, batch, true).await;
                    if forced.is_ok() {
                        self.lose(units, coins, true);
                    }
                    forced
                }
                Err(failure) => Err(failure),
            };
        }
        match result {
            Ok(created) => {
                if created.len() == batch.coins.len() {
                    for (coin, created) in batch.coins.iter().zip(created) {
                        if created == 0 {
                            tracing::info!(
                                "We already had that coin: {}...",
                                &coin.hex_hash()[..8]
                            );
                        }
                    }
                }
                self.units_flushed.fetch_add(batch.units, Ordering::SeqCst);
                metrics::counter!("worker_units_counted_total").increment(batch.units);
                self.units_unflushed.decrement(batch.units as f64);
                self.units_unconfirmed.store(0, Ordering::SeqCst);
                metrics::gauge!("worker_units_unconfirmed").set(0.0);
                if self.redis_failing.swap(false, Ordering::SeqCst) {
                    tracing::info!("redis is back; the work done meanwhile is counted");
                }
                self.failed_since_taken.store(false, Ordering::SeqCst);
                self.taken_generation
                    .store(redis.generation(), Ordering::SeqCst);
                if let Some(batch) = pending.take() {
                    self.keep_taken(batch);
                }
                true
            }
            Err(failure) => {
                redis.failed();
                self.failed_since_taken.store(true, Ordering::SeqCst);
                let err = match failure {
                    Failure::Refused(err) => {
                        self.batches_refused.fetch_add(1, Ordering::SeqCst);
                        metrics::counter!("worker_batches_refused_total").increment(1);
                        err
                    }
                    Failure::Unconfirmed(err) => {
                        self.batches_unconfirmed.fetch_add(1, Ordering::SeqCst);
                        metrics::counter!("worker_batches_unconfirmed_total").increment(1);
                        self.units_unconfirmed.store(batch.units, Ordering::SeqCst);
                        metrics::gauge!("worker_units_unconfirmed").set(batch.units as f64);
                        err
                    }
                    Failure::Failed(err, _) => err,
                    Failure::Gap(applied) => {
                        format!("redis still lacks the batches after {}", applied.last)
                    }
                    Failure::NoRecord => "redis still has no record of the batches".to_owned(),
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

    /// Whether the Redis answering may lack what the one that took the last
    /// batch had: a call failed since, or a new connection was opened (to
    /// another primary, after a failover).
    fn maybe_another_redis(&self, redis: &Redis) -> bool {
        self.failed_since_taken.load(Ordering::SeqCst)
            || redis.generation() != self.taken_generation.load(Ordering::SeqCst)
    }

    /// Keeps a batch Redis took, and forgets those older than `KEEP_TAKEN`
    /// and the oldest ones past `keep_coins` coins in all: what a worker
    /// holds is bounded however fast it mines.
    fn keep_taken(&self, batch: Batch) {
        let now = Instant::now();
        let mut taken = lock(&self.taken);
        let mut coins = batch.coins.len()
            + taken
                .iter()
                .map(|(_, kept)| kept.coins.len())
                .sum::<usize>();
        taken.push_back((now, batch));
        while taken.len() > 1
            && taken.front().is_some_and(|(at, _)| {
                now.duration_since(*at) > KEEP_TAKEN || coins > self.keep_coins
            })
        {
            if let Some((_, oldest)) = taken.pop_front() {
                coins -= oldest.coins.len();
            }
        }
    }

    /// Redis has applied batches up to `applied.last` only, and batch `next`
    /// waits: sends again, in order, the batches after it that Redis took
    /// before. Returns the units and coins lost, if batches just after
    /// `applied.last` are no longer kept: then `next` must be applied after a
    /// gap all the same (and the loss counted once it is).
    async fn restore(
        &self,
        redis: &Redis,
        applied: Applied,
        next: &Batch,
    ) -> Result<Option<(u64, u64)>, Failure> {
        let last = applied.last;
        let missing: Vec<Batch> = lock(&self.taken)
            .iter()
            .map(|(_, batch)| batch)
            .filter(|batch| batch.number > last && batch.number < next.number)
            .cloned()
            .collect();
        let first = missing.first().unwrap_or(next);
        let kept_from = first.number;
        let (units_before, coins_before) = first.before();
        let lost = (
            units_before.saturating_sub(applied.units),
            coins_before.saturating_sub(applied.coins),
        );
        let units: u64 = missing.iter().map(|batch| batch.units).sum();
        if kept_from == last + 1 {
            tracing::warn!(
                "redis lacks batches {}..{} ({units} units) that it had taken (a failover to a replica without them); sending them again",
                last + 1,
                next.number - 1
            );
        } else {
            tracing::error!(
                "redis lacks batches {}..{} that it had taken; {}..{} are no longer kept: {} units and {} coins lost (worker_units_lost_total); sending the {} others again",
                last + 1,
                next.number - 1,
                last + 1,
                kept_from - 1,
                lost.0,
                lost.1,
                missing.len()
            );
        }
        for (i, batch) in missing.iter().enumerate() {
            let force = i == 0 && kept_from != last + 1;
            self.apply(redis, batch, force).await?;
            if force {
                self.lose(lost.0, lost.1, true);
            }
            self.batches_restored.fetch_add(1, Ordering::SeqCst);
            metrics::counter!("worker_batches_restored_total").increment(1);
            metrics::counter!("worker_units_restored_total").increment(batch.units);
        }
        Ok((missing.is_empty() && kept_from != last + 1).then_some(lost))
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
        let mut numbering = lock(&self.numbering);
        numbering.number += 1;
        numbering.units += units;
        numbering.coins += coins.len() as u64;
        Batch {
            number: numbering.number,
            sent: 0,
            units,
            coins,
            total_units: numbering.units,
            total_coins: numbering.coins,
            maybe_written: false,
        }
    }

    /// Sends one batch (with Sentinel, then `WAIT 1` on the same connection,
    /// so that it counts the replicas that have this very batch), and notes
    /// on the batch whether it may have been written.
    async fn send(
        &self,
        redis: &Redis,
        batch: &mut Batch,
        force: bool,
    ) -> Result<Vec<i64>, Failure> {
        let before = batch.maybe_written;
        batch.maybe_written = true;
        let result = self.apply(redis, batch, force).await;
        if let Err(failure) = &result
            && !failure.may_have_written()
        {
            batch.maybe_written = before;
        }
        result
    }

    async fn apply(&self, redis: &Redis, batch: &Batch, force: bool) -> Result<Vec<i64>, Failure> {
        let start = Instant::now();
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key("hashes")
            .key("wallet")
            .key(&self.batch_key)
            .key(&self.report_key)
            .arg(batch.number)
            .arg(batch.units)
            .arg(batch.total_units)
            .arg(batch.total_coins)
            .arg(self.report())
            .arg(u8::from(force));
        for coin in &batch.coins {
            invocation.arg(coin.hex_hash()).arg(&coin.random_bytes[..]);
        }
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation);
        let replicated = redis.uses_sentinel();
        if replicated {
            let timeout_ms = u64::try_from(self.wait_timeout.as_millis()).unwrap_or(u64::MAX);
            pipe.cmd("WAIT").arg(1).arg(timeout_ms.max(1));
        }
        let result = async {
            let mut connection = redis.connection().await.map_err(Failure::not_sent)?;
            let mut answer = pipe.query_async::<Vec<redis::Value>>(&mut connection).await;
            if answer.as_ref().is_err_and(is_no_script) {
                // A Redis that has not seen the script yet (restarted, or
                // promoted): load it, and send again.
                invocation.load_async(&mut connection).await?;
                answer = pipe.query_async(&mut connection).await;
            }
            let answer = answer?;
            let created: Vec<i64> = match answer.first() {
                Some(value) => redis::from_redis_value_ref(value).map_err(Failure::unexpected)?,
                None => Vec::new(),
            };
            if replicated {
                let replicas: i64 = match answer.get(1) {
                    Some(value) => {
                        redis::from_redis_value_ref(value).map_err(Failure::unexpected)?
                    }
                    None => 0,
                };
                if replicas < 1 {
                    return Err(Failure::Unconfirmed(format!(
                        "no replica confirmed batch {} within {:?} (WAIT); keeping it to send again",
                        batch.number, self.wait_timeout
                    )));
                }
            }
            Ok(created)
        }
        .await;
        metrics::histogram!("worker_call_duration_seconds", "dependency" => "redis")
            .record(start.elapsed().as_secs_f64());
        result.map_err(|failure: Failure| failure.at(redis.url()))
    }

    fn report(&self) -> String {
        let answered = lock(&self.answered);
        let report = Report {
            instance: &self.instance,
            process: &self.process,
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
    /// Batches it took before are missing (`GAP`).
    Gap(Applied),
    /// No record of this worker's batches, for a batch after the first.
    NoRecord,
    /// No answer, or another error; true if the batch may have been written
    /// (sent, and no answer came back).
    Failed(String, bool),
}

fn is_no_script(err: &RedisError) -> bool {
    server_error(err).is_some_and(|(code, _)| code == "NOSCRIPT")
}

/// The server's error, also from inside a pipeline (whose error only lists
/// the errors of its commands): the first one says why.
fn server_error(err: &RedisError) -> Option<(String, Option<String>)> {
    err.clone().into_server_errors().and_then(|errors| {
        errors
            .first()
            .map(|(_, error)| (error.code().to_owned(), error.details().map(str::to_owned)))
    })
}

impl From<RedisError> for Failure {
    fn from(err: RedisError) -> Self {
        match server_error(&err) {
            Some((code, details)) => match code.as_str() {
                "GAP" => {
                    let numbers: Vec<u64> = details
                        .as_deref()
                        .unwrap_or("")
                        .split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect();
                    match numbers[..] {
                        [last, units, coins] => Failure::Gap(Applied { last, units, coins }),
                        _ => Failure::Failed(format!("unexpected answer: {err}"), false),
                    }
                }
                "NORECORD" => Failure::NoRecord,
                "NOREPLICAS" | "READONLY" | "OOM" => Failure::Refused(format!("refused: {err}")),
                _ => Failure::Failed(err.to_string(), false),
            },
            // Sent, but the answer did not come back: it may have been applied.
            None => {
                let unanswered = !err.is_connection_refusal();
                Failure::Failed(err.to_string(), unanswered)
            }
        }
    }
}

impl Failure {
    /// A failure before anything was sent (no connection).
    fn not_sent(err: RedisError) -> Self {
        Failure::Failed(err.to_string(), false)
    }

    /// An answer of another shape than the script's: it ran, whatever it did.
    fn unexpected(err: impl std::fmt::Display) -> Self {
        Failure::Failed(format!("unexpected answer: {err}"), true)
    }

    fn may_have_written(&self) -> bool {
        matches!(self, Failure::Unconfirmed(_) | Failure::Failed(_, true))
    }

    fn at(self, url: &str) -> Self {
        match self {
            Failure::Refused(err) => Failure::Refused(format!("redis at {url}: {err}")),
            Failure::Unconfirmed(err) => Failure::Unconfirmed(format!("redis at {url}: {err}")),
            Failure::Failed(err, written) => {
                Failure::Failed(format!("redis at {url}: {err}"), written)
            }
            other => other,
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

#[cfg(test)]
mod tests {
    use dockercoins::test_support::RedisServer;

    use std::time::Duration;

    use super::{APPLY_BATCH, Batch, Coin, Ledger, lock};

    /// The batch script on its own: `EVAL` of batch `number` with 5 units
    /// (totals `total`), against the record `record:w`.
    async fn apply(
        connection: &mut redis::aio::MultiplexedConnection,
        number: u64,
        total: u64,
        force: bool,
    ) -> redis::RedisResult<Vec<i64>> {
        redis::cmd("EVAL")
            .arg(APPLY_BATCH)
            .arg(4)
            .arg(&["hashes", "wallet", "record:w", "report:w"])
            .arg(number)
            .arg(5)
            .arg(total)
            .arg(0)
            .arg("{}")
            .arg(u8::from(force))
            .query_async(connection)
            .await
    }

    async fn exists(connection: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query_async::<u64>(connection)
            .await
            .expect("EXISTS")
            == 1
    }

    /// In order, once, the totals kept with the number; a refused batch
    /// (`GAP`, `NORECORD`) writes nothing, not even the report.
    #[tokio::test]
    async fn the_script_applies_in_order_and_refused_batches_write_nothing() {
        let redis = RedisServer::start().await;
        let mut connection = redis.client().await;
        let no_record = apply(&mut connection, 2, 10, false).await.unwrap_err();
        assert_eq!(no_record.code(), Some("NORECORD"), "{no_record}");
        assert!(!exists(&mut connection, "report:w").await);
        assert_eq!(apply(&mut connection, 1, 5, false).await.ok(), Some(vec![]));
        let gap = apply(&mut connection, 3, 15, false).await.unwrap_err();
        assert_eq!((gap.code(), gap.detail()), (Some("GAP"), Some("1 5 0")));
        redis::cmd("DEL")
            .arg("report:w")
            .query_async::<u64>(&mut connection)
            .await
            .expect("DEL");
        let gap = apply(&mut connection, 3, 15, false).await.unwrap_err();
        assert_eq!(gap.code(), Some("GAP"));
        assert!(
            !exists(&mut connection, "report:w").await,
            "a refused batch wrote the report"
        );
        assert_eq!(
            apply(&mut connection, 2, 10, false).await.ok(),
            Some(vec![])
        );
        // A duplicate refreshes the report and counts nothing.
        assert_eq!(
            apply(&mut connection, 2, 10, false).await.ok(),
            Some(vec![])
        );
        assert!(exists(&mut connection, "report:w").await);
        assert_eq!(apply(&mut connection, 5, 25, true).await.ok(), Some(vec![]));
        let (hashes, record): (u64, String) = redis::pipe()
            .get("hashes")
            .get("record:w")
            .query_async(&mut connection)
            .await
            .expect("GET");
        assert_eq!((hashes, record.as_str()), (15, "5 25 0"));
    }

    fn batch(number: u64, coins: usize) -> Batch {
        Batch {
            number,
            sent: 1,
            units: 16 * coins as u64,
            coins: vec![
                Coin {
                    hash: [0; 32],
                    random_bytes: [0; 32],
                };
                coins
            ],
            total_units: 0,
            total_coins: 0,
            maybe_written: false,
        }
    }

    /// However fast the worker mines, the batches kept for a failover hold
    /// at most `WORKER_KEEP_COINS` coins, the newest batches first, and
    /// always the last one.
    #[test]
    fn the_batches_kept_are_bounded_by_their_coins() {
        let ledger = Ledger::new("w", 100, 10, Duration::ZERO, Duration::ZERO);
        let kept = || -> Vec<u64> {
            lock(&ledger.taken)
                .iter()
                .map(|(_, batch)| batch.number)
                .collect()
        };
        for number in 1..=5 {
            ledger.keep_taken(batch(number, 4));
        }
        assert_eq!(kept(), vec![4, 5], "8 coins of at most 10");
        ledger.keep_taken(batch(6, 0));
        assert_eq!(kept(), vec![4, 5, 6]);
        ledger.keep_taken(batch(7, 50));
        assert_eq!(kept(), vec![7], "the last batch stays, however many coins");
    }
}
