//! Prometheus metrics. Services record with the `metrics` macros
//! (`counter!`, `gauge!`, `histogram!`); `/metrics` renders them.
//!
//! [`METRICS`] is the one list of every metric the services export, with its
//! labels and meaning: it gives `/metrics` its `# HELP` lines, and the README's
//! metrics table is written from it.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) that separate a free call from one that waited
/// in rng's line behind a class of workers.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets when nobody
/// scrapes (each scrape folds them too). Each sample is kept until then: at
/// 60,000 requests a second, folding every 5 s held 5 to 10 MB of samples.
const UPKEEP_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric: who exports it, its name, labels, and meaning.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// `all`, or the one service that exports it.
    pub service: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static str,
    pub help: &'static str,
}

const fn metric(
    service: &'static str,
    name: &'static str,
    kind: Kind,
    labels: &'static str,
    help: &'static str,
) -> Metric {
    Metric {
        service,
        name,
        kind,
        labels,
        help,
    }
}

/// Every metric the services export.
#[rustfmt::skip]
pub const METRICS: [Metric; 26] = [
    metric("all", "dockercoins_build_info", Kind::Gauge, "service, version",
        "Always 1: which service and version answers."),
    metric("all", "process_start_time_seconds", Kind::Gauge, "",
        "When the process started, in Unix seconds."),
    metric("all", "http_requests_total", Kind::Counter, "route, method, status",
        "HTTP requests answered, by route pattern (`unmatched` for 404s), method (`other` for non-standard ones) and status."),
    metric("all", "http_request_duration_seconds", Kind::Histogram, "route",
        "Time to answer an HTTP request, waiting in line included."),
    metric("rng", "rng_requests_waiting", Kind::Gauge, "",
        "Requests waiting in line for their turn (RNG_CONCURRENCY are served at a time; GET / waits too)."),
    metric("rng", "rng_wait_seconds", Kind::Histogram, "",
        "Time a request waited in line before its turn."),
    metric("hasher", "hasher_bytes_hashed_total", Kind::Counter, "",
        "Bytes hashed."),
    metric("worker", "worker_units_total", Kind::Counter, "",
        "Units of work done (each one is one hash, counted in `hashes` in Redis)."),
    metric("worker", "worker_coins_found_total", Kind::Counter, "",
        "Coins found (hashes starting with 0)."),
    metric("worker", "worker_coins_dropped_total", Kind::Counter, "",
        "Coins dropped because more than WORKER_MAX_PENDING_COINS waited for Redis."),
    metric("worker", "worker_call_duration_seconds", Kind::Histogram, "dependency",
        "Time of one call to a dependency: rng, hasher, or redis (one flush)."),
    metric("worker", "worker_call_errors_total", Kind::Counter, "dependency",
        "Failed calls to a dependency: rng, hasher, or redis."),
    metric("worker", "worker_units_counted_total", Kind::Counter, "",
        "Units Redis took in `hashes` (with Sentinel, once a replica confirmed them)."),
    metric("worker", "worker_units_unflushed", Kind::Gauge, "",
        "Units done that Redis has not counted yet."),
    metric("worker", "worker_units_unconfirmed", Kind::Gauge, "",
        "With Sentinel: units of the batch waiting to be sent again that was written but that no replica confirmed (or whose answer never came): counted unless a failover loses them."),
    metric("worker", "worker_units_restored_total", Kind::Counter, "",
        "Units of the batches sent again to a Redis that had taken them and then lacked them (a failover)."),
    metric("worker", "worker_units_lost_total", Kind::Counter, "",
        "Units Redis will never count: taken, then lost by a failover or a restart while the worker no longer kept them (after a minute), or not handed over within WORKER_STOP_TIMEOUT at a stop."),
    metric("worker", "worker_coins_lost_total", Kind::Counter, "",
        "Coins of those units."),
    metric("worker", "worker_coins_unflushed", Kind::Gauge, "",
        "Coins found that are not in Redis' wallet yet."),
    metric("worker", "worker_batches_resent_total", Kind::Counter, "",
        "Batches sent to Redis again, after an error, a refusal or no replica's confirmation (their numbers stop them from counting twice)."),
    metric("worker", "worker_batches_refused_total", Kind::Counter, "",
        "Batches Redis refused: a primary without enough replicas (NOREPLICAS), one turned replica (READONLY), or one full (OOM)."),
    metric("worker", "worker_batches_unconfirmed_total", Kind::Counter, "",
        "With Sentinel: batches written that no replica confirmed within REDIS_WAIT_TIMEOUT (WAIT 1), kept to be sent again."),
    metric("worker", "worker_batches_restored_total", Kind::Counter, "",
        "Batches Redis had taken and then lacked (a replica promoted without them, a restart that lost the end of its append-only file), sent again in order."),
    metric("webui", "webui_redis_duration_seconds", Kind::Histogram, "",
        "Time to read the counters from Redis (four times a second, and for GET /json: one read answers every request that waited for it)."),
    metric("webui", "webui_redis_errors_total", Kind::Counter, "",
        "Failed reads of the counters from Redis for GET /json (one read answers every request that waited for it; each of them gets a 503)."),
    metric("webui", "webui_redis_up", Kind::Gauge, "",
        "1 if the last read of the counters (four times a second) worked, 0 if not."),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        // Histograms keep samples until drained; drain them even if nobody scrapes.
        let upkeep = handle.clone();
        let started = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            });
        if let Err(err) = started {
            tracing::warn!(
                "no metrics upkeep thread ({err}); histograms are drained by scrapes only"
            );
        }
        handle
    })
}

/// Installs the recorder for the service `name` and sets the series every
/// service has from its start, so that `/metrics` is never empty.
pub fn install_for(name: &'static str) -> &'static PrometheusHandle {
    let handle = install();
    metrics::gauge!(
        "dockercoins_build_info",
        "service" => name, "version" => env!("CARGO_PKG_VERSION")
    )
    .set(1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_secs_f64())
        .unwrap_or(0.0);
    metrics::gauge!("process_start_time_seconds").set(now);
    // The service's own series without labels exist from the start, at 0, so
    // that a query finds them before the first event (and `rate` sees it).
    for metric in METRICS
        .iter()
        .filter(|m| m.service == name && m.labels.is_empty())
    {
        match metric.kind {
            Kind::Counter => metrics::counter!(metric.name).absolute(0),
            Kind::Gauge => metrics::gauge!(metric.name).set(0.0),
            Kind::Histogram => drop(metrics::histogram!(metric.name)),
        }
    }
    handle
}

fn describe() {
    for metric in METRICS {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

/// The `method` label of `http_requests_total`: the standard methods, and
/// `other` for the rest (index 9).
pub const HTTP_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
];

/// The statuses whose `http_requests_total` series are kept at hand; others
/// (rare) are looked up on each request.
const HTTP_STATUSES: [u16; 24] = [
    200, 201, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 413, 414, 415,
    429, 431, 500, 502, 503,
];

/// The request metrics of one route pattern (or `unmatched`): its series
/// registered once, on first use, instead of looked up with labels made
/// anew for every request.
pub struct HttpRoute {
    route: &'static str,
    duration: Histogram,
    requests: [[OnceLock<Counter>; HTTP_STATUSES.len()]; HTTP_METHODS.len()],
}

/// Every route seen so far; each lives as long as the process (there are as
/// many as the services have route patterns).
static HTTP_ROUTES: Mutex<Vec<&'static HttpRoute>> = Mutex::new(Vec::new());

impl HttpRoute {
    /// The metrics of the route with this pattern (registered at its first
    /// use; the serving plumbing asks once per route, when it starts).
    pub fn of(route: &str) -> &'static HttpRoute {
        Self::shared(route)
    }

    /// The metrics of requests that matched no route.
    pub fn unmatched() -> &'static HttpRoute {
        static UNMATCHED: OnceLock<&'static HttpRoute> = OnceLock::new();
        UNMATCHED.get_or_init(|| Self::shared("unmatched"))
    }

    fn shared(route: &str) -> &'static HttpRoute {
        let mut routes = HTTP_ROUTES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = routes.iter().find(|known| known.route == route) {
            return found;
        }
        // A series registered before the recorder would go nowhere, for good.
        install();
        let route: &'static str = Box::leak(route.into());
        let created: &'static HttpRoute = Box::leak(Box::new(HttpRoute {
            route,
            duration: metrics::histogram!("http_request_duration_seconds", "route" => route),
            requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
        }));
        routes.push(created);
        created
    }

    /// The route pattern, as in the `route` label.
    pub fn route(&self) -> &'static str {
        self.route
    }

    /// Counts one answer, with the method as an index into [`HTTP_METHODS`],
    /// and records how long it took.
    pub fn record(&self, method: usize, status: u16, elapsed: Duration) {
        let method = method.min(HTTP_METHODS.len() - 1);
        match HTTP_STATUSES.iter().position(|&known| known == status) {
            Some(slot) => self.requests[method][slot]
                .get_or_init(|| self.counter(method, status))
                .increment(1),
            None => self.counter(method, status).increment(1),
        }
        self.duration.record(elapsed.as_secs_f64());
    }

    fn counter(&self, method: usize, status: u16) -> Counter {
        metrics::counter!(
            "http_requests_total",
            "route" => self.route, "method" => HTTP_METHODS[method], "status" => status.to_string()
        )
    }
}

/// The metrics in Prometheus' text format.
pub fn render() -> String {
    install().render()
}

/// The README's metrics table, from [`METRICS`].
pub fn markdown_table() -> String {
    let mut table =
        String::from("| Service | Metric | Type | Labels | Meaning |\n|---|---|---|---|---|\n");
    for metric in METRICS {
        let kind = match metric.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        table.push_str(&format!(
            "| {} | `{}` | {kind} | {} | {} |\n",
            metric.service, metric.name, metric.labels, metric.help
        ));
    }
    table
}
