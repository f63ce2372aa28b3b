//! The Redis connection the worker and webui share: opened lazily, so a
//! service starts and answers while Redis is down, and re-established by the
//! connection manager after Redis restarts. With Sentinels, the primary is
//! found by the `sentinel` module and followed by the watcher below.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};
use tokio::sync::Mutex;

use super::error::Error;
use super::options::{RedisOptions, TIMEOUT};
use super::sentinel::{Sentinels, address_of};

#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    connection: Mutex<Option<ConnectionManager>>,
    url: String,
    /// How long one reply may take (a command that waits, such as `WAIT`,
    /// needs its own wait on top of `TIMEOUT`).
    reply_timeout: Duration,
    /// Connections opened so far: one more each time the connection is
    /// opened anew (first use, or after the Sentinels named another primary).
    generation: AtomicU64,
}

enum Target {
    Plain(Client),
    Sentinel(Sentinels),
}

impl Redis {
    /// The Redis at `options.url`, or the primary the Sentinels name if any
    /// are given. Checks the options; connects on first use.
    pub fn new(options: &RedisOptions) -> Result<Self, Error> {
        let addresses = options.sentinel_addresses();
        if addresses.is_empty() {
            let url = &options.url;
            let client = Client::open(url.as_str()).map_err(|source| Error::Options {
                knob: "REDIS_URL",
                value: url.clone(),
                source,
            })?;
            return Ok(Redis::with(Target::Plain(client), url.clone()));
        }
        let primary = &options.primary;
        let sentinels = Sentinels::new(&addresses, primary)?;
        let described = format!("sentinel {primary} via {}", addresses.join(","));
        Ok(Redis::with(Target::Sentinel(sentinels), described))
    }

    fn with(target: Target, url: String) -> Self {
        Redis {
            inner: Arc::new(Inner {
                target,
                connection: Mutex::default(),
                url,
                reply_timeout: TIMEOUT,
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Lets each reply take `extra` more than the usual 2 s, for commands
    /// that wait on the server (`WAIT`). Call it before the first clone.
    #[must_use]
    pub fn with_slower_replies(mut self, extra: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.reply_timeout = TIMEOUT + extra;
        }
        self
    }

    /// How many times a connection was opened: when it changes, the Redis
    /// answering may be another (a failover) than the one before.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// `REDIS_URL`, or `sentinel NAME via HOST:PORT,...`.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// True when a write counts only once a replica has it too (`WAIT 1`):
    /// with Sentinel, whose failover may promote any replica.
    pub fn replicated(&self) -> bool {
        matches!(self.inner.target, Target::Sentinel(_))
    }

    /// A connection, opening one if none is open. Cheap to call per request.
    ///
    /// A boxed future: the connecting code (the redis crate's, generic) is
    /// compiled once, here, not again in every service that awaits it.
    pub fn connection(&self) -> BoxFuture<'_, Result<ConnectionManager, RedisError>> {
        Box::pin(self.open_connection())
    }

    async fn open_connection(&self) -> Result<ConnectionManager, RedisError> {
        let mut slot = self.inner.connection.lock().await;
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let client = match &self.inner.target {
            Target::Plain(client) => client.clone(),
            Target::Sentinel(sentinels) => {
                let inner = Arc::downgrade(&self.inner);
                sentinels.start_watching(|| {
                    tokio::spawn(watch(inner));
                });
                let client = sentinels.find_primary().await?;
                sentinels.found(&address_of(&client));
                client
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(self.inner.reply_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client, config).await?;
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// Tells that a command failed: with Sentinel, the Sentinels are asked at
    /// once whether the primary moved.
    pub fn failed(&self) {
        if let Target::Sentinel(sentinels) = &self.inner.target {
            sentinels.check_now();
        }
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let result = async {
            let mut connection = self.connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(drop)
        }
        .await;
        if result.is_err() {
            self.failed();
        }
        result
    }
}

/// The watcher of a Redis found through Sentinel: asks the Sentinels every
/// second, or at once after an error, and drops the connection when they name
/// another primary, so that the next command goes to the new one. It ends
/// when the last clone of the `Redis` is dropped.
async fn watch(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let Target::Sentinel(sentinels) = &strong.target else {
            return;
        };
        match sentinels.find_primary().await {
            Ok(client) => {
                // Under the connection's lock, as `open_connection` notes the
                // primary it connects to: a primary other than the one noted
                // drops the connection.
                let mut slot = strong.connection.lock().await;
                if sentinels.found(&address_of(&client)) {
                    *slot = None;
                }
            }
            Err(err) => tracing::debug!(
                target: "dockercoins::redis",
                "sentinels: no primary {}: {err}",
                sentinels.primary()
            ),
        }
        let next_check = sentinels.next_check();
        // Not holding the service's Redis alive while waiting.
        drop(strong);
        next_check.await;
    }
}

#[cfg(test)]
mod tests {
    use super::{Redis, RedisOptions};

    /// Options that name no usable Redis are refused at the start, with the
    /// knob to fix; nothing is connected before the first use.
    #[test]
    fn options_are_checked_before_any_connection() {
        let err = Redis::new(&RedisOptions::at("http://redis")).err();
        let err = err.map(|err| err.to_string()).unwrap_or_default();
        assert!(err.starts_with("REDIS_URL=\"http://redis\": "), "{err}");

        let mut options = RedisOptions::at("redis://unused");
        options.sentinels = vec![" s1:26379".to_owned(), String::new(), "s2:26379".to_owned()];
        let redis = Redis::new(&options).ok();
        let described = redis.as_ref().map(Redis::url);
        assert_eq!(described, Some("sentinel mymaster via s1:26379,s2:26379"));
        assert_eq!(redis.map(|redis| redis.replicated()), Some(true));

        options.primary = String::new();
        let err = Redis::new(&options).err().map(|err| err.to_string());
        assert_eq!(
            err.as_deref(),
            Some("REDIS_SENTINEL_PRIMARY is empty: expected the primary's name")
        );
        let plain = Redis::new(&RedisOptions::at("redis://127.0.0.1:6379")).ok();
        assert_eq!(plain.map(|redis| redis.replicated()), Some(false));
    }
}
