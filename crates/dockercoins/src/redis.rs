//! The Redis connection the worker and webui share: opened lazily, so a
//! service starts and answers while Redis is down, and re-established by the
//! connection manager after Redis restarts.
//!
//! With `REDIS_SENTINELS` set, the primary is found through Sentinel (the
//! `redis` crate's own support) instead of at `REDIS_URL`, and followed: every
//! second, and at once after an error, the Sentinels are asked again, and when
//! they name another primary the connection goes there, with one log line
//! `redis primary changed: OLD -> NEW`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use clap::Args;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::Sentinel;
use redis::{Client, ErrorKind, RedisError};
use tokio::sync::{Mutex, Notify};

/// How long one connection attempt or one reply may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// How often the Sentinels are asked which Redis is the primary.
const SENTINEL_CHECK: Duration = Duration::from_secs(1);

/// Where the primary is found when Sentinel is used (both services' knobs).
#[derive(Args, Debug, Clone, Default)]
pub struct SentinelOptions {
    /// Sentinels to ask for the primary, `host:port,...`; when set, these are
    /// used instead of REDIS_URL, and a failover is followed without a restart.
    #[arg(
        long = "redis-sentinels",
        env = "REDIS_SENTINELS",
        value_delimiter = ',',
        num_args = 0..
    )]
    pub sentinels: Vec<String>,

    /// The name the Sentinels monitor the primary under.
    #[arg(
        long = "redis-sentinel-primary",
        env = "REDIS_SENTINEL_PRIMARY",
        default_value = "mymaster"
    )]
    pub primary: String,
}

impl SentinelOptions {
    /// The Sentinels' addresses given, blanks left out.
    pub fn addresses(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|address| address.trim().to_owned())
            .filter(|address| !address.is_empty())
            .collect()
    }
}

#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    connection: Mutex<Option<ConnectionManager>>,
    url: String,
}

enum Target {
    Plain(Client),
    Sentinel(Sentinels),
}

struct Sentinels {
    sentinel: Mutex<Sentinel>,
    primary: String,
    /// The primary last found (`host:port`): the one connected to, if any,
    /// and the old side of the log line when it changes.
    known: std::sync::Mutex<Option<String>>,
    /// Wakes the watcher for a check now (after an error).
    check: Arc<Notify>,
    watching: std::sync::Once,
}

impl Redis {
    /// Checks the URL; connects on first use.
    pub fn open(url: &str) -> Result<Self, String> {
        let client = Client::open(url).map_err(|err| format!("REDIS_URL={url:?}: {err}"))?;
        Ok(Redis::with(Target::Plain(client), url.to_owned()))
    }

    /// `url` (`REDIS_URL`), or the Sentinels if any are given.
    pub fn from_options(url: &str, options: &SentinelOptions) -> Result<Self, String> {
        let addresses = options.addresses();
        if addresses.is_empty() {
            return Redis::open(url);
        }
        Redis::sentinel(&addresses, &options.primary)
    }

    /// Finds the primary named `primary` through the Sentinels at `addresses`
    /// (`host:port`, or `redis://host:port`); connects on first use.
    pub fn sentinel(addresses: &[String], primary: &str) -> Result<Self, String> {
        let urls: Vec<String> = addresses
            .iter()
            .map(|address| {
                if address.contains("://") {
                    address.clone()
                } else {
                    format!("redis://{address}")
                }
            })
            .collect();
        let sentinel = Sentinel::build(urls.clone())
            .map_err(|err| format!("REDIS_SENTINELS={:?}: {err}", addresses.join(",")))?;
        if primary.is_empty() {
            return Err("REDIS_SENTINEL_PRIMARY is empty: expected the primary's name".to_owned());
        }
        let described = format!("sentinel {primary} via {}", addresses.join(","));
        Ok(Redis::with(
            Target::Sentinel(Sentinels {
                sentinel: Mutex::new(sentinel),
                primary: primary.to_owned(),
                known: std::sync::Mutex::new(None),
                check: Arc::new(Notify::new()),
                watching: std::sync::Once::new(),
            }),
            described,
        ))
    }

    fn with(target: Target, url: String) -> Self {
        Redis {
            inner: Arc::new(Inner {
                target,
                connection: Mutex::default(),
                url,
            }),
        }
    }

    /// `REDIS_URL`, or `sentinel NAME via HOST:PORT,...`.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// True when the primary is found through Sentinel.
    pub fn uses_sentinel(&self) -> bool {
        matches!(self.inner.target, Target::Sentinel(_))
    }

    /// A connection, opening one if none is open. Cheap to call per request.
    pub async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        let mut slot = self.inner.connection.lock().await;
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let client = match &self.inner.target {
            Target::Plain(client) => client.clone(),
            Target::Sentinel(sentinels) => {
                self.start_watching();
                let client = sentinels.find_primary().await?;
                sentinels.found(&address_of(&client));
                client
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client, config).await?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// Tells that a command failed: with Sentinel, the Sentinels are asked at
    /// once whether the primary moved.
    pub fn failed(&self) {
        if let Target::Sentinel(sentinels) = &self.inner.target {
            sentinels.check.notify_one();
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

    /// Starts, once, the task that asks the Sentinels every second (or after
    /// an error) which Redis is the primary, and drops the connection when it
    /// is another. It ends when the last clone of this `Redis` is dropped.
    fn start_watching(&self) {
        let Target::Sentinel(sentinels) = &self.inner.target else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        sentinels.watching.call_once(|| {
            tokio::spawn(watch(weak));
        });
    }
}

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
                // Under the connection's lock, as `connection` notes the
                // primary it connects to: a primary other than the one noted
                // drops the connection, and the next command goes to the new one.
                let mut slot = strong.connection.lock().await;
                if sentinels.found(&address_of(&client)) {
                    *slot = None;
                }
            }
            Err(err) => tracing::debug!("sentinels: no primary {}: {err}", sentinels.primary),
        }
        let check = sentinels.check.clone();
        // Not holding the service's Redis alive while waiting.
        drop(strong);
        tokio::select! {
            () = check.notified() => {}
            () = tokio::time::sleep(SENTINEL_CHECK) => {}
        }
    }
}

impl Sentinels {
    /// A client for the primary the Sentinels name (checked to be a primary
    /// by its own `ROLE`).
    async fn find_primary(&self) -> Result<Client, RedisError> {
        let lookup = async {
            let mut sentinel = self.sentinel.lock().await;
            sentinel.async_master_for(&self.primary, None).await
        };
        match tokio::time::timeout(TIMEOUT * 2, lookup).await {
            Ok(found) => found,
            Err(_) => Err(RedisError::from((
                ErrorKind::Io,
                "no answer from the sentinels in time",
            ))),
        }
    }

    /// Notes the primary found, and says so when it changed; true when it
    /// is not the one noted before.
    fn found(&self, address: &str) -> bool {
        let mut known = match self.known.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match known.as_deref() {
            Some(old) if old == address => return false,
            Some(old) => tracing::warn!("redis primary changed: {old} -> {address}"),
            None => tracing::info!("redis primary {} is at {address}", self.primary),
        }
        *known = Some(address.to_owned());
        true
    }
}

fn address_of(client: &Client) -> String {
    client.get_connection_info().addr().to_string()
}
