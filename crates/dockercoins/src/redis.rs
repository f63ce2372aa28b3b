//! The Redis connection the worker and webui share: opened lazily, so a
//! service starts and answers while Redis is down, and re-established by the
//! connection manager after Redis restarts.
//!
//! With `REDIS_SENTINELS` set, the primary is found through Sentinel instead
//! of at `REDIS_URL`, and followed: every second, and at once after an error,
//! the Sentinels are asked again, and when they name another primary the
//! connection goes there, with one log line `redis primary changed: OLD -> NEW`.
//!
//! Every Sentinel is asked, and the answer with the highest config epoch wins
//! (the epoch is what the Sentinels themselves go by: each failover raises it).
//! The `redis` crate's `Sentinel` takes the first Sentinel that answers; but a
//! Sentinel that was cut off from the others, or that has just restarted from
//! its first configuration, goes on naming the old primary, with an older
//! epoch, until it hears the others. That old primary still says `master` to
//! `ROLE` (it has not been made a replica yet), so the services would follow it
//! there, to a Redis that refuses every write (`NOREPLICAS`).
//!
//! The connections to the Sentinels, and the one that asks the named primary
//! its `ROLE`, are kept open from one check to the next, and opened again
//! only after an error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use clap::Args;
use futures_util::future::{BoxFuture, join_all};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError};
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

struct Sentinels {
    /// `redis://host:port` of each Sentinel.
    urls: Vec<String>,
    /// A connection to each Sentinel (as `urls`), kept between checks.
    asking: Vec<Mutex<Option<MultiplexedConnection>>>,
    /// The connection that asks the named primary its `ROLE`, and its address.
    role: Mutex<Option<(String, MultiplexedConnection)>>,
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
        for url in &urls {
            Client::open(url.as_str())
                .map_err(|err| format!("REDIS_SENTINELS={:?}: {err}", addresses.join(",")))?;
        }
        if primary.is_empty() {
            return Err("REDIS_SENTINEL_PRIMARY is empty: expected the primary's name".to_owned());
        }
        let described = format!("sentinel {primary} via {}", addresses.join(","));
        Ok(Redis::with(
            Target::Sentinel(Sentinels {
                asking: urls.iter().map(|_| Mutex::default()).collect(),
                role: Mutex::default(),
                urls,
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

    /// True when the primary is found through Sentinel.
    pub fn uses_sentinel(&self) -> bool {
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
                self.start_watching();
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
    /// A client for the primary the Sentinels name: all are asked at once,
    /// the answer with the highest config epoch wins (the first Sentinel
    /// listed, of those that gave it, on a tie), and that Redis must say
    /// `master` to `ROLE`.
    async fn find_primary(&self) -> Result<Client, RedisError> {
        let answers = join_all(
            self.urls
                .iter()
                .zip(&self.asking)
                .map(|(url, kept)| async move {
                    tokio::time::timeout(TIMEOUT, self.ask(url, kept))
                        .await
                        .unwrap_or_else(|_| Err(timed_out("the sentinel")))
                }),
        )
        .await;
        let mut best: Option<(u64, String)> = None;
        let mut last_error = None;
        for answer in answers {
            match answer {
                // Strictly higher: on a tie, the first listed stays.
                Ok((epoch, address)) if best.as_ref().is_none_or(|(top, _)| epoch > *top) => {
                    best = Some((epoch, address));
                }
                Ok(_) => {}
                Err(err) => last_error = Some(err),
            }
        }
        let Some((_, address)) = best else {
            return Err(last_error.unwrap_or_else(|| timed_out("the sentinels")));
        };
        let client = Client::open(format!("redis://{address}"))?;
        let role = tokio::time::timeout(TIMEOUT, self.role_of(&client, &address))
            .await
            .unwrap_or_else(|_| Err(timed_out("the primary")));
        if matches!(role?.first(), Some(redis::Value::BulkString(role)) if role == b"master") {
            Ok(client)
        } else {
            Err(RedisError::from((
                ErrorKind::Io,
                "the redis the sentinels name is not a primary (yet)",
            )))
        }
    }

    /// One Sentinel's view, on the connection kept for it (opened again
    /// after an error).
    async fn ask(
        &self,
        url: &str,
        kept: &Mutex<Option<MultiplexedConnection>>,
    ) -> Result<(u64, String), RedisError> {
        let mut slot = kept.lock().await;
        let mut connection = match slot.take() {
            Some(connection) => connection,
            None => {
                Client::open(url)?
                    .get_multiplexed_async_connection_with_config(&connection_config())
                    .await?
            }
        };
        let answer = ask_sentinel(&mut connection, &self.primary).await;
        if answer.is_ok() {
            *slot = Some(connection);
        }
        answer
    }

    /// `ROLE` of the Redis at `address`, on the connection kept for it.
    async fn role_of(
        &self,
        client: &Client,
        address: &str,
    ) -> Result<Vec<redis::Value>, RedisError> {
        let mut slot = self.role.lock().await;
        let mut connection = match slot.take() {
            Some((kept, connection)) if kept == address => connection,
            _ => {
                client
                    .get_multiplexed_async_connection_with_config(&connection_config())
                    .await?
            }
        };
        let role = redis::cmd("ROLE")
            .query_async::<Vec<redis::Value>>(&mut connection)
            .await?;
        *slot = Some((address.to_owned(), connection));
        Ok(role)
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

/// One Sentinel's view of the primary `primary`: the config epoch of that
/// view and the primary's `host:port`. The address is
/// `get-master-addr-by-name`'s, which names the promoted replica as soon as
/// the failover has promoted it; `SENTINEL MASTER`'s own address stays the old
/// one on the Sentinel leading the failover until its end.
async fn ask_sentinel(
    connection: &mut MultiplexedConnection,
    primary: &str,
) -> Result<(u64, String), RedisError> {
    let (fields, (host, port)): (std::collections::HashMap<String, String>, (String, u16)) =
        redis::pipe()
            .cmd("SENTINEL")
            .arg("MASTER")
            .arg(primary)
            .cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(primary)
            .query_async(connection)
            .await?;
    let epoch = fields
        .get("config-epoch")
        .and_then(|epoch| epoch.parse().ok())
        .unwrap_or(0);
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((epoch, address))
}

fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
}

fn timed_out(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Io, "no answer in time from", what.to_owned()))
}

fn address_of(client: &Client) -> String {
    client.get_connection_info().addr().to_string()
}
