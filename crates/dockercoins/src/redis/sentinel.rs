//! The primary, found through Sentinel and followed: every second, and at
//! once after an error, the Sentinels are asked again, and when they name
//! another primary the connection goes there, with one log line
//! `redis primary changed: OLD -> NEW`.
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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError};
use tokio::sync::{Mutex, Notify};

use super::error::Error;
use super::options::TIMEOUT;

/// How often the Sentinels are asked which Redis is the primary.
const SENTINEL_CHECK: Duration = Duration::from_secs(1);

/// The log lines' target, as before this module had rooms of its own.
const LOG: &str = "dockercoins::redis";

pub(super) struct Sentinels {
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

impl Sentinels {
    /// The primary named `primary`, through the Sentinels at `addresses`
    /// (`host:port`, or `redis://host:port`).
    pub(super) fn new(addresses: &[String], primary: &str) -> Result<Self, Error> {
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
            Client::open(url.as_str()).map_err(|source| Error::Options {
                knob: "REDIS_SENTINELS",
                value: addresses.join(","),
                source,
            })?;
        }
        if primary.is_empty() {
            return Err(Error::NoPrimaryName);
        }
        Ok(Sentinels {
            asking: urls.iter().map(|_| Mutex::default()).collect(),
            role: Mutex::default(),
            urls,
            primary: primary.to_owned(),
            known: std::sync::Mutex::new(None),
            check: Arc::new(Notify::new()),
            watching: std::sync::Once::new(),
        })
    }

    /// Asks the watcher for a check now (a command failed).
    pub(super) fn check_now(&self) {
        self.check.notify_one();
    }

    /// Starts, once, the task that asks the Sentinels every second (or after
    /// an error) which Redis is the primary: the connection's watcher, which
    /// drops the connection when it is another.
    pub(super) fn start_watching(&self, watcher: impl FnOnce()) {
        self.watching.call_once(watcher);
    }

    /// The next check's moment: a second from now, or at once after an error
    /// ([`Sentinels::check_now`]). Holds nothing of the Sentinels while waiting.
    pub(super) fn next_check(&self) -> impl Future<Output = ()> + 'static {
        let check = self.check.clone();
        async move {
            tokio::select! {
                () = check.notified() => {}
                () = tokio::time::sleep(SENTINEL_CHECK) => {}
            }
        }
    }

    /// The name of the primary asked for (`REDIS_SENTINEL_PRIMARY`).
    pub(super) fn primary(&self) -> &str {
        &self.primary
    }

    /// A client for the primary the Sentinels name: all are asked at once,
    /// the answer with the highest config epoch wins (the first Sentinel
    /// listed, of those that gave it, on a tie), and that Redis must say
    /// `master` to `ROLE`.
    pub(super) async fn find_primary(&self) -> Result<Client, RedisError> {
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
    pub(super) fn found(&self, address: &str) -> bool {
        let mut known = match self.known.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match known.as_deref() {
            Some(old) if old == address => return false,
            Some(old) => tracing::warn!(target: LOG, "redis primary changed: {old} -> {address}"),
            None => tracing::info!(target: LOG, "redis primary {} is at {address}", self.primary),
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

pub(super) fn address_of(client: &Client) -> String {
    client.get_connection_info().addr().to_string()
}
