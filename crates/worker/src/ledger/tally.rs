//! The tally: what the worker did and what became of it, in atomics that the
//! work loops and the flusher add to without waiting for each other; what
//! `/metrics`, the worker's report for the web UI and its last log lines read.
//!
//! Units and coins done wait here until the flusher takes them for a batch.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dockercoins::redis::{Coin, Report};
use metrics::{Counter, Gauge};

use super::{LOG, lock};

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

/// Answers received, by instance, from each dependency: looked up by the
/// instance's name as it came, with no copy of it but the first.
#[derive(Default)]
struct Answered {
    rng: BTreeMap<String, u64>,
    hasher: BTreeMap<String, u64>,
}

pub(super) struct Tally {
    max_pending_coins: usize,
    units_waiting: AtomicU64,
    coins_waiting: Mutex<Vec<Coin>>,
    units_done: AtomicU64,
    units_flushed: AtomicU64,
    units_unconfirmed: AtomicU64,
    units_lost: AtomicU64,
    coins_found: AtomicU64,
    coins_dropped: AtomicU64,
    coins_lost: AtomicU64,
    batches_resent: AtomicU64,
    batches_refused: AtomicU64,
    batches_unconfirmed: AtomicU64,
    batches_restored: AtomicU64,
    answered: Mutex<Answered>,
    /// Series registered once instead of looked up at every unit.
    units_total: Counter,
    units_unflushed: Gauge,
}

impl Tally {
    pub(super) fn new(max_pending_coins: usize) -> Self {
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
        Tally {
            max_pending_coins,
            units_waiting: AtomicU64::new(0),
            coins_waiting: Mutex::new(Vec::new()),
            units_done: AtomicU64::new(0),
            units_flushed: AtomicU64::new(0),
            units_unconfirmed: AtomicU64::new(0),
            units_lost: AtomicU64::new(0),
            coins_found: AtomicU64::new(0),
            coins_dropped: AtomicU64::new(0),
            coins_lost: AtomicU64::new(0),
            batches_resent: AtomicU64::new(0),
            batches_refused: AtomicU64::new(0),
            batches_unconfirmed: AtomicU64::new(0),
            batches_restored: AtomicU64::new(0),
            answered: Mutex::new(Answered::default()),
            units_total: metrics::counter!("worker_units_total"),
            units_unflushed: metrics::gauge!("worker_units_unflushed"),
        }
    }

    pub(super) fn unit_done(&self) {
        self.units_waiting.fetch_add(1, Ordering::SeqCst);
        self.units_done.fetch_add(1, Ordering::SeqCst);
        self.units_total.increment(1);
        self.units_unflushed.increment(1.0);
    }

    pub(super) fn coin_found(&self, coin: Coin) {
        self.coins_found.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("worker_coins_found_total").increment(1);
        let mut coins = lock(&self.coins_waiting);
        if coins.len() >= self.max_pending_coins {
            let dropped = self.coins_dropped.fetch_add(1, Ordering::SeqCst);
            metrics::counter!("worker_coins_dropped_total").increment(1);
            if dropped == 0 {
                tracing::error!(
                    target: LOG,
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
    pub(super) fn answered_by(&self, dependency: &'static str, instance: &str) {
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

    /// The units and coins waiting, taken for the next batch.
    pub(super) fn take_waiting(&self) -> (u64, Vec<Coin>) {
        let units = self.units_waiting.swap(0, Ordering::SeqCst);
        let coins = std::mem::take(&mut *lock(&self.coins_waiting));
        metrics::gauge!("worker_coins_unflushed").set(0.0);
        (units, coins)
    }

    /// The units and coins waiting, taken at a stop: never sent.
    pub(super) fn take_unsent(&self) -> (u64, u64) {
        let units = self.units_waiting.swap(0, Ordering::SeqCst);
        let coins = std::mem::take(&mut *lock(&self.coins_waiting)).len() as u64;
        (units, coins)
    }

    /// Whether no unit and no coin waits for a batch.
    pub(super) fn nothing_waiting(&self) -> bool {
        self.units_waiting.load(Ordering::SeqCst) == 0 && lock(&self.coins_waiting).is_empty()
    }

    /// A batch of `units` that Redis took.
    pub(super) fn counted(&self, units: u64) {
        self.units_flushed.fetch_add(units, Ordering::SeqCst);
        metrics::counter!("worker_units_counted_total").increment(units);
        self.units_unflushed.decrement(units as f64);
        self.units_unconfirmed.store(0, Ordering::SeqCst);
        metrics::gauge!("worker_units_unconfirmed").set(0.0);
    }

    /// Counts units and coins as lost; `counted` if Redis had counted them.
    pub(super) fn lose(&self, units: u64, coins: u64, counted: bool) {
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

    /// A batch sent again.
    pub(super) fn resent(&self) {
        self.batches_resent.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("worker_batches_resent_total").increment(1);
    }

    /// A batch Redis refused to write.
    pub(super) fn refused(&self) {
        self.batches_refused.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("worker_batches_refused_total").increment(1);
    }

    /// A batch of `units` written that no replica confirmed in time.
    pub(super) fn unconfirmed(&self, units: u64) {
        self.batches_unconfirmed.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("worker_batches_unconfirmed_total").increment(1);
        self.units_unconfirmed.store(units, Ordering::SeqCst);
        metrics::gauge!("worker_units_unconfirmed").set(units as f64);
    }

    /// At a stop: the units written but not confirmed, if any.
    pub(super) fn left_unconfirmed(&self, units: u64) {
        self.units_unconfirmed.store(units, Ordering::SeqCst);
    }

    /// A batch of `units` sent again to a Redis that had taken it and then
    /// lacked it.
    pub(super) fn restored(&self, units: u64) {
        self.batches_restored.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("worker_batches_restored_total").increment(1);
        metrics::counter!("worker_units_restored_total").increment(units);
    }

    /// What the web UI shows of this worker, as of now.
    pub(super) fn report(&self, instance: &str, process: &str) -> Report {
        let answered = lock(&self.answered);
        Report {
            instance: instance.to_owned(),
            process: process.to_owned(),
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            units: self.units_done.load(Ordering::SeqCst),
            coins: self.coins_found.load(Ordering::SeqCst),
            rng: answered.rng.clone(),
            hasher: answered.hasher.clone(),
        }
    }

    pub(super) fn summary(&self) -> Summary {
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
}
