//! The sampler: the webui reads Redis itself, four times a second, whether or
//! not a page is open.
//!
//! Why: a page that polls `/json` knows nothing before it opens and sees the
//! counter jump once a second. Reading here, continuously, lets a page that
//! opens draw the last five minutes at once, gives every page the same smooth
//! speed (see [`crate::history`]), and costs Redis the same whether one page
//! or fifty are open. Pages get the result from `/history` and `/events`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::response::sse::Event;
use dockercoins::CancellationToken;
use dockercoins::redis::Redis;
use futures_util::{Stream, StreamExt, stream};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::history::{History, Report, Series, Status};

/// How often the counters are read.
const READ_EVERY: Duration = Duration::from_millis(250);
/// Every how many readings a point is added and pages are updated (once a second).
const POINT_EVERY: u64 = 4;

/// What the sampler knows, shared with the request handlers.
pub struct Live {
    history: Mutex<History>,
    /// The latest [`Status`], as JSON, for the pages listening.
    updates: watch::Sender<Arc<str>>,
}

/// What `/history` answers: the speed over the last five minutes, and now.
#[derive(Serialize)]
struct Snapshot<'a> {
    series: Series,
    status: Option<&'a Status>,
}

/// Starts sampling `redis` until `shutdown`.
pub fn start(redis: Redis, shutdown: CancellationToken) -> Arc<Live> {
    let live = Arc::new(Live {
        history: Mutex::default(),
        updates: watch::Sender::new(Arc::from("")),
    });
    tokio::spawn(sample(redis, live.clone(), shutdown));
    live
}

async fn sample(redis: Redis, live: Arc<Live>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(READ_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut redis_was_ok = true;
    for reading in 0u64.. {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let counters = crate::read_counters(&redis)
            .await
            .map(|c| (c.hashes, c.coins))
            .map_err(|err| format!("redis at {} unreachable: {err}", redis.url()));
        match (&counters, redis_was_ok) {
            (Err(err), true) => tracing::warn!("{err}; the page says so until it is back"),
            (Ok(_), false) => tracing::info!("redis is back"),
            _ => {}
        }
        redis_was_ok = counters.is_ok();
        metrics::gauge!("webui_redis_up").set(if redis_was_ok { 1.0 } else { 0.0 });
        let now = crate::unix_now();
        lock(&live.history).read_counters(now, counters);
        if reading % POINT_EVERY == 0 {
            let reports = if redis_was_ok {
                read_reports(&redis).await
            } else {
                Vec::new()
            };
            let json = serde_json::to_string(lock(&live.history).add_point(now, reports));
            match json {
                Ok(json) => live.updates.send_replace(Arc::from(json)),
                Err(err) => {
                    tracing::error!("cannot write the status as JSON: {err}");
                    continue;
                }
            };
        }
    }
}

/// The workers' reports; none if Redis fails meanwhile (the counters say so).
async fn read_reports(redis: &Redis) -> Vec<Report> {
    match redis.read_reports().await {
        Ok(reports) => reports
            .into_iter()
            .filter_map(|report| match report {
                Ok(report) => Some(report),
                Err(err) => {
                    tracing::debug!("ignoring a worker report that does not parse: {err}");
                    None
                }
            })
            .collect(),
        Err(err) => {
            tracing::debug!("cannot read the workers' reports: {err}");
            Vec::new()
        }
    }
}

impl Live {
    /// `/history`: the last five minutes and the latest status, as JSON.
    pub fn history_json(&self) -> String {
        let history = lock(&self.history);
        let snapshot = Snapshot {
            series: history.series(),
            status: history.status(),
        };
        serde_json::to_string(&snapshot).unwrap_or_else(|_| "{}".to_owned())
    }

    /// `/events`: a `history` event, then an `update` event with each new
    /// status, until `shutdown` (so that open pages never hold up a stop).
    pub fn events(
        &self,
        shutdown: CancellationToken,
    ) -> impl Stream<Item = Result<Event, Infallible>> + use<> {
        let mut updates = self.updates.subscribe();
        updates.mark_unchanged();
        let history = Event::default()
            .event("history")
            .retry(Duration::from_secs(2))
            .data(self.history_json());
        let next = stream::unfold((updates, shutdown), |(mut updates, shutdown)| async move {
            tokio::select! {
                changed = updates.changed() => changed.ok()?,
                () = shutdown.cancelled() => return None,
            }
            let json = updates.borrow_and_update().clone();
            let update = Event::default().event("update").data(&*json);
            Some((Ok(update), (updates, shutdown)))
        });
        stream::once(async { Ok(history) }).chain(next)
    }
}

/// Locks the history; a panic elsewhere while it was held leaves figures that
/// are still usable, so they are used as they are.
fn lock(history: &Mutex<History>) -> MutexGuard<'_, History> {
    match history.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
