//! What the worker writes and the web UI reads, in one place: the keys, the
//! workers' reports, the batch script and how its answers read.
//!
//! - `hashes`: units of work counted, in all (`INCRBY`);
//! - `wallet`: the coins, hex hash to the random bytes hashed (`HSET`);
//! - `dockercoins:report:<instance>`: each worker's [`Report`], as JSON,
//!   refreshed with every batch and expiring in 10 s;
//! - `dockercoins:batch:<instance>:<process>`: the record of the last batch
//!   a worker process had applied, with its totals (see [`APPLY_BATCH`]).

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{RedisError, Value};
use serde::{Deserialize, Serialize};

use super::connection::Redis;

/// Units of work counted, in all.
pub const HASHES: &str = "hashes";
/// The coins: hex hash to the random bytes it is the SHA-256 of.
pub const WALLET: &str = "wallet";
/// The key prefix of the workers' reports, which the web UI reads.
pub const REPORT_PREFIX: &str = "dockercoins:report:";
/// The key prefix of the workers' records of the last batch applied.
const BATCH_PREFIX: &str = "dockercoins:batch:";

/// What the web UI shows of each worker: what a worker writes to
/// `dockercoins:report:<INSTANCE>` with each batch (JSON, expiring in 10 s).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Report {
    pub instance: String,
    /// The worker process's id, as in its batch record's key: a name that a
    /// later process reuses (a Swarm slot, a pod restarted) is told apart.
    #[serde(default)]
    pub process: String,
    /// Unix seconds when written, by the worker's clock.
    pub time: f64,
    /// Units done since the worker started.
    pub units: u64,
    #[serde(default)]
    pub coins: u64,
    /// Answers received since the worker started, by dependency and instance.
    #[serde(default)]
    pub rng: BTreeMap<String, u64>,
    #[serde(default)]
    pub hasher: BTreeMap<String, u64>,
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
    /// The hash as the wallet's field: 64 hex digits.
    pub fn hex_hash(&self) -> String {
        hex::encode(self.hash)
    }
}

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
pub const APPLY_BATCH: &str = r"#!lua
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

/// One batch as the script takes it: its number, its units, the totals of
/// the worker's batches up to it, and its coins.
pub struct BatchWrite<'a> {
    pub number: u64,
    pub units: u64,
    pub total_units: u64,
    pub total_coins: u64,
    pub coins: &'a [Coin],
}

/// What Redis has applied of a worker's batches: up to `last`, with these
/// totals (the `GAP` error's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub last: u64,
    pub units: u64,
    pub coins: u64,
}

/// Why a batch was not taken, from the script's answer or its absence.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// No connection: nothing was sent.
    #[error("{0}")]
    NotSent(RedisError),
    /// Redis answered that it does not take writes now: a primary without
    /// enough replicas (`NOREPLICAS`), one that became a replica (`READONLY`),
    /// or one full (`OOM`, maxmemory).
    #[error("refused: {0}")]
    Refused(RedisError),
    /// Written, but no replica confirmed it in time (`WAIT` said 0).
    #[error("no replica confirmed batch {number} within {wait:?} (WAIT); keeping it to send again")]
    Unconfirmed { number: u64, wait: Duration },
    /// Batches it took before are missing (`GAP`).
    #[error("redis still lacks the batches after {}", .0.last)]
    Gap(Applied),
    /// No record of this worker's batches, for a batch after the first
    /// (`NORECORD`).
    #[error("redis still has no record of the batches")]
    NoRecord,
    /// A `GAP` without its three numbers.
    #[error("unexpected answer: {0}")]
    BadGap(RedisError),
    /// An answer of another shape than the script's: it ran, whatever it did.
    #[error("unexpected answer: {0}")]
    Unreadable(redis::ParsingError),
    /// Another error; `unanswered` if the batch was sent and no answer came
    /// back: it may have been applied.
    #[error("{source}")]
    Failed {
        source: RedisError,
        unanswered: bool,
    },
}

impl BatchError {
    /// Whether the batch may have been written all the same.
    pub fn may_have_written(&self) -> bool {
        matches!(
            self,
            BatchError::Unconfirmed { .. }
                | BatchError::Unreadable(_)
                | BatchError::Failed {
                    unanswered: true,
                    ..
                }
        )
    }
}

impl From<RedisError> for BatchError {
    /// Decides on the server's error code, also from inside a pipeline
    /// (whose error only lists the errors of its commands: the first one
    /// says why).
    fn from(err: RedisError) -> Self {
        let Some(server) = server_error(&err) else {
            // Sent, but the answer did not come back: it may have been applied.
            let unanswered = !err.is_connection_refusal();
            return BatchError::Failed {
                source: err,
                unanswered,
            };
        };
        match server.code() {
            "GAP" => {
                let numbers: Vec<u64> = server
                    .details()
                    .unwrap_or("")
                    .split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect();
                match numbers[..] {
                    [last, units, coins] => BatchError::Gap(Applied { last, units, coins }),
                    _ => BatchError::BadGap(err),
                }
            }
            "NORECORD" => BatchError::NoRecord,
            "NOREPLICAS" | "READONLY" | "OOM" => BatchError::Refused(err),
            _ => BatchError::Failed {
                source: err,
                unanswered: false,
            },
        }
    }
}

/// The first of the server's errors, also from inside a pipeline.
fn server_error(err: &RedisError) -> Option<redis::ServerError> {
    err.clone()
        .into_server_errors()
        .and_then(|errors| errors.first().map(|(_, error)| error.clone()))
}

fn is_no_script(err: &RedisError) -> bool {
    server_error(err).is_some_and(|error| error.code() == "NOSCRIPT")
}

/// One worker process's batches: its keys, and how long a replica may take
/// to confirm a batch where one must (with Sentinel).
pub struct Batches {
    /// Where Redis keeps the number of the last batch it applied; unique per
    /// process, since batch numbers start again at 1 after a restart.
    record_key: String,
    report_key: String,
    replica_wait: Duration,
}

impl Batches {
    pub fn new(instance: &str, process: &str, replica_wait: Duration) -> Self {
        Batches {
            record_key: format!("{BATCH_PREFIX}{instance}:{process}"),
            report_key: format!("{REPORT_PREFIX}{instance}"),
            replica_wait,
        }
    }

    /// `dockercoins:batch:<instance>:<process>`.
    pub fn record_key(&self) -> &str {
        &self.record_key
    }

    /// Sends one batch with the worker's report, applied even after a gap or
    /// without a record if `force`; where a replica must confirm it (with
    /// Sentinel), then `WAIT 1` on the same connection, so that it counts the
    /// replicas that have this very batch. Returns `HSET`'s answer for each
    /// coin (1 new, 0 already there), none if this batch number was applied
    /// before.
    pub async fn apply(
        &self,
        redis: &Redis,
        batch: BatchWrite<'_>,
        report: &Report,
        force: bool,
    ) -> Result<Vec<i64>, BatchError> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(HASHES)
            .key(WALLET)
            .key(&self.record_key)
            .key(&self.report_key)
            .arg(batch.number)
            .arg(batch.units)
            .arg(batch.total_units)
            .arg(batch.total_coins)
            .arg(serde_json::to_string(report).unwrap_or_default())
            .arg(u8::from(force));
        for coin in batch.coins {
            invocation.arg(coin.hex_hash()).arg(&coin.random_bytes[..]);
        }
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation);
        let replicated = redis.replicated();
        if replicated {
            let timeout_ms = u64::try_from(self.replica_wait.as_millis()).unwrap_or(u64::MAX);
            pipe.cmd("WAIT").arg(1).arg(timeout_ms.max(1));
        }
        let mut connection = redis.connection().await.map_err(BatchError::NotSent)?;
        let mut answer = pipe.query_async::<Vec<Value>>(&mut connection).await;
        if answer.as_ref().is_err_and(is_no_script) {
            // A Redis that has not seen the script yet (restarted, or
            // promoted): load it, and send again.
            invocation.load_async(&mut connection).await?;
            answer = pipe.query_async(&mut connection).await;
        }
        let answer = answer?;
        let created: Vec<i64> = match answer.first() {
            Some(value) => redis::from_redis_value_ref(value).map_err(BatchError::Unreadable)?,
            None => Vec::new(),
        };
        if replicated {
            let replicas: i64 = match answer.get(1) {
                Some(value) => {
                    redis::from_redis_value_ref(value).map_err(BatchError::Unreadable)?
                }
                None => 0,
            };
            if replicas < 1 {
                return Err(BatchError::Unconfirmed {
                    number: batch.number,
                    wait: self.replica_wait,
                });
            }
        }
        Ok(created)
    }

    /// Deletes the record of the batches applied: no batch will follow.
    pub async fn forget(&self, redis: &Redis) -> Result<(), RedisError> {
        let mut connection = redis.connection().await?;
        redis::cmd("DEL")
            .arg(&self.record_key)
            .query_async::<u64>(&mut connection)
            .await
            .map(drop)
    }
}

/// The counters, as the web UI reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Coins in the wallet.
    pub coins: u64,
    /// Units of work counted (0 before the first).
    pub hashes: u64,
}

impl Redis {
    /// The counters, in one round trip.
    pub async fn read_counts(&self) -> Result<Counts, RedisError> {
        let read = async {
            let mut connection = self.connection().await?;
            redis::pipe()
                .hlen(WALLET)
                .get(HASHES)
                .query_async(&mut connection)
                .await
        };
        let (coins, hashes): (u64, Option<u64>) = read.await.inspect_err(|_| self.failed())?;
        Ok(Counts {
            coins,
            hashes: hashes.unwrap_or(0),
        })
    }

    /// The workers' reports, each as it parses or why it does not.
    pub async fn read_reports(&self) -> Result<Vec<Result<Report, serde_json::Error>>, RedisError> {
        let mut connection = self.connection().await?;
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, mut batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{REPORT_PREFIX}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await?;
            keys.append(&mut batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values = redis::cmd("MGET")
            .arg(&keys)
            .query_async::<Vec<Option<String>>>(&mut connection)
            .await?;
        Ok(values
            .into_iter()
            .flatten()
            .map(|json| serde_json::from_str(&json))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::{Applied, BatchError, Report};

    /// The report as the web UI has always read it: the same fields in the
    /// same order, and a report without the newer fields still reads.
    #[test]
    fn a_report_reads_as_it_was_written() {
        let report = Report {
            instance: "w".to_owned(),
            process: "p".to_owned(),
            time: 1.5,
            units: 2,
            coins: 1,
            rng: BTreeMap::from([("rng-1".to_owned(), 2)]),
            hasher: BTreeMap::new(),
        };
        let json = serde_json::to_string(&report).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"instance":"w","process":"p","time":1.5,"units":2,"coins":1,"rng":{"rng-1":2},"hasher":{}}"#
        );
        assert_eq!(serde_json::from_str::<Report>(&json).ok(), Some(report));
        let old: Option<Report> =
            serde_json::from_str(r#"{"instance":"w","time":1.0,"units":3}"#).ok();
        assert_eq!(
            old.map(|old| (old.units, old.coins, old.process)),
            Some((3, 0, String::new()))
        );
    }

    /// What the worker's log lines say of a batch not taken.
    #[test]
    fn a_batch_not_taken_says_why() {
        let unconfirmed = BatchError::Unconfirmed {
            number: 7,
            wait: Duration::from_secs(1),
        };
        assert_eq!(
            unconfirmed.to_string(),
            "no replica confirmed batch 7 within 1s (WAIT); keeping it to send again"
        );
        assert!(unconfirmed.may_have_written());
        let gap = BatchError::Gap(Applied {
            last: 3,
            units: 48,
            coins: 1,
        });
        assert_eq!(gap.to_string(), "redis still lacks the batches after 3");
        assert!(!gap.may_have_written());
        assert_eq!(
            BatchError::NoRecord.to_string(),
            "redis still has no record of the batches"
        );
    }
}
