//! The ledger: the work done that Redis has not taken yet.
//!
//! Two rooms: `tally.rs` counts what was done and what became of it (what
//! `/metrics`, the report for the web UI and the last log lines read); this
//! file runs the batch protocol. The batch script, its keys and what its
//! answers mean are the Redis side's (`dockercoins::redis::contract`).
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

mod tally;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dockercoins::CancellationToken;
use dockercoins::redis::{Applied, BatchError, BatchWrite, Batches, Coin, Redis};

pub use self::tally::Summary;
use self::tally::Tally;

/// The log lines' target, the same from each of the ledger's rooms.
const LOG: &str = "worker::ledger";

/// How long batches Redis took are kept, to be sent again to a Redis that
/// turns out to lack them (a failover takes a few seconds), unless their
/// coins pass `WORKER_KEEP_COINS` first.
const KEEP_TAKEN: Duration = Duration::from_secs(60);

/// At a stop, the pause between two sends of a batch Redis did not take.
const STOP_RETRY: Duration = Duration::from_millis(250);

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

    /// As the batch script takes it.
    fn write(&self) -> BatchWrite<'_> {
        BatchWrite {
            number: self.number,
            units: self.units,
            total_units: self.total_units,
            total_coins: self.total_coins,
            coins: &self.coins,
        }
    }
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
    /// This process's keys, and with Sentinel how long `WAIT 1` waits for
    /// a replica.
    batches: Batches,
    /// Most coins kept in the batches Redis took (`WORKER_KEEP_COINS`).
    keep_coins: usize,
    /// At a stop, how long the last batches may wait for Redis.
    stop_timeout: Duration,
    tally: Tally,
    numbering: Mutex<Numbering>,
    /// The batches Redis took over the last `KEEP_TAKEN`, oldest first, at
    /// most `keep_coins` coins in all (but always the last one).
    taken: Mutex<VecDeque<(Instant, Batch)>>,
    redis_failing: AtomicBool,
    /// Whether a call to Redis failed since it last took a batch, and the
    /// connection's generation then: either tells that the Redis answering
    /// may not be the one that took it.
    failed_since_taken: AtomicBool,
    taken_generation: AtomicU64,
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
        Ledger {
            instance: instance.to_owned(),
            batches: Batches::new(instance, &process, wait_timeout),
            process,
            keep_coins,
            stop_timeout,
            tally: Tally::new(max_pending_coins),
            numbering: Mutex::new(Numbering::default()),
            taken: Mutex::new(VecDeque::new()),
            redis_failing: AtomicBool::new(false),
            failed_since_taken: AtomicBool::new(false),
            taken_generation: AtomicU64::new(0),
        }
    }

    pub fn unit_done(&self) {
        self.tally.unit_done();
    }

    pub fn coin_found(&self, coin: Coin) {
        self.tally.coin_found(coin);
    }

    /// Counts which instance of a dependency answered, for the web UI.
    pub fn answered_by(&self, dependency: &'static str, instance: &str) {
        self.tally.answered_by(dependency, instance);
    }

    pub fn summary(&self) -> Summary {
        self.tally.summary()
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
            if taken && self.tally.nothing_waiting() {
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
        let (mut lost_units, mut lost_coins) = self.tally.take_unsent();
        let mut unconfirmed = 0;
        if let Some(batch) = pending.take() {
            if batch.maybe_written {
                unconfirmed = batch.units;
            } else {
                lost_units += batch.units;
                lost_coins += batch.coins.len() as u64;
            }
        }
        self.tally.left_unconfirmed(unconfirmed);
        self.tally.lose(lost_units, lost_coins, false);
        let kept: u64 = lock(&self.taken).iter().map(|(_, batch)| batch.units).sum();
        tracing::error!(
            "redis did not take the last batch within WORKER_STOP_TIMEOUT ({:?}): stopping with {lost_units} units and {lost_coins} coins lost, {unconfirmed} units written but not confirmed by a replica; the {kept} units of the batches it took in the last minute are lost too if a failover promotes a replica without them",
            self.stop_timeout
        );
    }

    /// Deletes the record of the batches applied, once the last is taken: no
    /// batch will follow.
    async fn forget(&self, redis: &Redis) {
        if let Err(err) = self.batches.forget(redis).await {
            tracing::debug!("the record {} stays: {err}", self.batches.record_key());
        }
    }

    /// Sends the pending batch, or a new one; true if Redis took it.
    async fn flush(&self, redis: &Redis, pending: &mut Option<Batch>) -> bool {
        let batch = pending.get_or_insert_with(|| self.next_batch());
        if batch.sent > 0 {
            self.tally.resent();
        }
        batch.sent += 1;
        let mut result = self.send(redis, batch, false).await;
        let missing = match result {
            Err(BatchError::Gap(applied)) => Some(applied),
            Err(BatchError::NoRecord) if self.maybe_another_redis(redis) => Some(Applied {
                last: 0,
                units: 0,
                coins: 0,
            }),
            Err(BatchError::NoRecord) => {
                tracing::warn!(
                    "redis has no record of this worker's batches ({} deleted?) though nothing failed since it took the last one: they are counted, and the record starts again at batch {}",
                    self.batches.record_key(),
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
                        self.tally.lose(units, coins, true);
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
                self.tally.counted(batch.units);
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
                match &failure {
                    BatchError::Refused(_) => self.tally.refused(),
                    BatchError::Unconfirmed { .. } => self.tally.unconfirmed(batch.units),
                    _ => {}
                }
                let err = match failure {
                    BatchError::Gap(_) | BatchError::NoRecord => failure.to_string(),
                    _ => format!("redis at {}: {failure}", redis.url()),
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
    ) -> Result<Option<(u64, u64)>, BatchError> {
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
                self.tally.lose(lost.0, lost.1, true);
            }
            self.tally.restored(batch.units);
        }
        Ok((missing.is_empty() && kept_from != last + 1).then_some(lost))
    }

    fn next_batch(&self) -> Batch {
        let (units, coins) = self.tally.take_waiting();
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
    ) -> Result<Vec<i64>, BatchError> {
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

    /// Sends one batch, with the report as of now, and times it.
    async fn apply(
        &self,
        redis: &Redis,
        batch: &Batch,
        force: bool,
    ) -> Result<Vec<i64>, BatchError> {
        let start = Instant::now();
        let report = self.tally.report(&self.instance, &self.process);
        let result = self
            .batches
            .apply(redis, batch.write(), &report, force)
            .await;
        metrics::histogram!("worker_call_duration_seconds", "dependency" => "redis")
            .record(start.elapsed().as_secs_f64());
        result
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

    use dockercoins::redis::contract::APPLY_BATCH;

    use super::{Batch, Coin, Ledger, lock};

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
