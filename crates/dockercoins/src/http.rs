//! HTTP serving, the same for every service: the operations endpoints
//! (`/healthz`, `/readyz`, `/metrics`), one access-log line and metrics per
//! request, an `X-Instance` header naming who answered, one-line reasons on
//! 404 and 405, and a graceful stop bounded by `SHUTDOWN_TIMEOUT`.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::serve::{IncomingStream, Listener, ListenerExt};
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower::Service as TowerService;
use tracing::Level;

use crate::redis::Redis;
use crate::{Service, logging, metrics};

/// The header by which rng and hasher (and every service) say who answered.
pub const INSTANCE_HEADER: HeaderName = HeaderName::from_static("x-instance");

/// The operations endpoints, which stay out of access logs and rng's line.
pub const OPS_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// What `/readyz` checks before saying the service can do its job.
#[derive(Clone)]
pub enum Readiness {
    /// Needs nothing outside itself (rng, hasher).
    Always,
    /// Needs Redis (worker, webui).
    Redis(Redis),
}

/// Binds `PORT` on all interfaces: IPv6 and IPv4 where the host has IPv6,
/// IPv4 alone where it has not (many containers).
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(listener) => Ok(listener),
        Err(_) => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await,
    }
}

/// A service's routes: axum's `Router`, built the same way, that also keeps
/// each route's pattern, so that the request metrics name the route a
/// request matched without a layer around every route (axum boxes a layered
/// route anew for each request, and that cost more than the metrics).
pub struct Routes<S = ()> {
    router: Router<S>,
    patterns: Vec<&'static str>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Routes {
            router: Router::new(),
            patterns: Vec::new(),
        }
    }

    /// `Router::route`.
    pub fn route(mut self, pattern: &'static str, method_router: MethodRouter<S>) -> Self {
        self.router = self.router.route(pattern, method_router);
        self.patterns.push(pattern);
        self
    }

    /// `Router::fallback`: its answers are `unmatched` in the metrics.
    pub fn fallback<H, T>(mut self, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.router = self.router.fallback(handler);
        self
    }

    /// `Router::fallback_service`: its answers are `unmatched` in the metrics.
    pub fn fallback_service<T>(mut self, service: T) -> Self
    where
        T: TowerService<Request, Error = Infallible> + Clone + Send + Sync + 'static,
        T::Response: IntoResponse,
        T::Future: Send + 'static,
    {
        self.router = self.router.fallback_service(service);
        self
    }

    /// The routes alone, without the operations endpoints and the metrics
    /// (for tests of a service's own routes).
    pub fn into_router(self) -> Router<S> {
        self.router
    }

    /// `Router::with_state`.
    pub fn with_state<S2>(self, state: S) -> Routes<S2> {
        Routes {
            router: self.router.with_state(state),
            patterns: self.patterns,
        }
    }
}

/// Adds the operations endpoints and the per-request plumbing to a service's
/// routes. Tests drive the result with `oneshot`; [`serve`] puts the same
/// plumbing around the whole router instead, once per connection.
pub fn with_ops(routes: Routes, instance: &str, readiness: Readiness) -> Router {
    let (router, routes) = routed(routes, readiness, CancellationToken::new());
    router.layer(ObserveLayer {
        instance: instance_header(instance),
        routes,
    })
}

/// The service's routes and the operations endpoints, and the patterns of
/// them all, which [`Observe`] matches each request's path against (with
/// matchit, as axum does) to name its route in the metrics. `/readyz`
/// answers 503 once `draining` is cancelled.
fn routed(
    routes: Routes,
    readiness: Readiness,
    draining: CancellationToken,
) -> (Router, Arc<RoutePatterns>) {
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready).with_state((readiness, draining)))
        .route("/metrics", get(metrics_text));
    let mut patterns = matchit::Router::new();
    for pattern in routes.patterns.iter().copied().chain(OPS_ROUTES) {
        // axum took the same pattern already, so it is valid and unique.
        let _ = patterns.insert(pattern, metrics::HttpRoute::of(pattern));
    }
    let router = routes
        .router
        .merge(ops)
        .method_not_allowed_fallback(method_not_allowed);
    (router, Arc::new(RoutePatterns(patterns)))
}

/// Every route's pattern, with its metrics.
struct RoutePatterns(matchit::Router<&'static metrics::HttpRoute>);

impl RoutePatterns {
    /// The route whose pattern `path` matches (a 405 is counted under its
    /// route too), or `unmatched`.
    fn of(&self, path: &str) -> &'static metrics::HttpRoute {
        match self.0.at(path) {
            Ok(matched) => matched.value,
            Err(_) => metrics::HttpRoute::unmatched(),
        }
    }
}

fn instance_header(instance: &str) -> HeaderValue {
    HeaderValue::from_str(instance).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Serves `routes` (with [`with_ops`]) until the service's shutdown token is
/// cancelled, then lets requests in flight finish, waiting at most
/// `SHUTDOWN_TIMEOUT`. While the service drains (between SIGTERM and the
/// shutdown token), it serves as before, new connections included, and only
/// `/readyz` changes: 503.
///
/// A boxed future: the server (axum's, hyper's and tokio's generic code) is
/// compiled once, here, not again in every service that awaits it.
pub fn serve(
    service: Service,
    routes: Routes,
    readiness: Readiness,
) -> BoxFuture<'static, Result<(), String>> {
    Box::pin(serve_routes(service, routes, readiness))
}

async fn serve_routes(
    service: Service,
    routes: Routes,
    readiness: Readiness,
) -> Result<(), String> {
    let Service {
        instance,
        listener,
        shutdown,
        draining,
        common,
        ..
    } = service;
    let (router, routes) = routed(routes, readiness, draining);
    let app = MakeObserve {
        router,
        routes,
        instance: instance_header(&instance),
    };
    if let Ok(address) = listener.local_addr() {
        tracing::info!("listening on {address}");
    }
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(common.shutdown_timeout).await;
    };
    tokio::select! {
        result = server => result.map_err(|err| format!("server error: {err}")),
        () = deadline => {
            tracing::warn!("connections still open after {:?}; stopping anyway", common.shutdown_timeout);
            Ok(())
        }
    }
}

/// A 404 with a one-line reason, for services to use as their fallback.
pub async fn not_found(request: Request) -> Response {
    let line = format!("not found: {} {}\n", request.method(), request.uri().path());
    (StatusCode::NOT_FOUND, line).into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    let line = format!(
        "method not allowed: {} {}\n",
        request.method(),
        request.uri().path()
    );
    (StatusCode::METHOD_NOT_ALLOWED, line).into_response()
}

/// The metrics, with the content type of Prometheus' text format (which
/// Prometheus 3 requires to parse a scrape).
async fn metrics_text() -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    (
        [(axum::http::header::CONTENT_TYPE, content_type)],
        metrics::render(),
    )
        .into_response()
}

async fn ready(State((readiness, draining)): State<(Readiness, CancellationToken)>) -> Response {
    if draining.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
            .into_response();
    }
    match readiness {
        Readiness::Always => (StatusCode::OK, "ready\n").into_response(),
        Readiness::Redis(redis) => match redis.ping().await {
            Ok(()) => (StatusCode::OK, "ready\n").into_response(),
            Err(err) => {
                let line = format!("not ready: redis at {} unreachable: {err}\n", redis.url());
                (StatusCode::SERVICE_UNAVAILABLE, line).into_response()
            }
        },
    }
}

// --- the per-request plumbing ---------------------------------------------
//
// A plain tower service with a future of its own: no boxed future, no boxed
// `Next`, no allocation of its own per request (axum's `from_fn` makes
// several), and no layer around each route. The metric series are registered
// once per route, method and status ([`metrics::HttpRoute`]); the access-log
// line is formatted only when its level is on, straight into the log's queue
// ([`logging::access`]).

/// Makes one [`Observe`] per connection, knowing its peer (instead of a
/// `ConnectInfo` added to every request).
#[derive(Clone)]
struct MakeObserve {
    router: Router,
    routes: Arc<RoutePatterns>,
    instance: HeaderValue,
}

impl<'a, L> TowerService<IncomingStream<'a, L>> for MakeObserve
where
    L: Listener<Addr = SocketAddr>,
{
    type Response = Observe<Router>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'a, L>) -> Self::Future {
        std::future::ready(Ok(Observe {
            inner: self.router.clone(),
            routes: self.routes.clone(),
            instance: self.instance.clone(),
            peer: Some(*stream.remote_addr()),
        }))
    }
}

/// [`Observe`] as a layer, for [`with_ops`].
#[derive(Clone)]
struct ObserveLayer {
    instance: HeaderValue,
    routes: Arc<RoutePatterns>,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            routes: self.routes.clone(),
            instance: self.instance.clone(),
            peer: None,
        }
    }
}

/// One access-log line and the request metrics, per request, and the
/// `X-Instance` header on every answer.
#[derive(Clone)]
struct Observe<S> {
    inner: S,
    routes: Arc<RoutePatterns>,
    instance: HeaderValue,
    /// The connection's peer; `None` under [`with_ops`], which looks for a
    /// `ConnectInfo` instead.
    peer: Option<SocketAddr>,
}

/// What the access-log line needs from the request, kept only when the line
/// is on.
struct Seen {
    peer: Option<SocketAddr>,
    method: Method,
    uri: Uri,
    version: Version,
}

impl<S> TowerService<Request> for Observe<S>
where
    S: TowerService<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let start = Instant::now();
        let method = method_index(request.method());
        let route = self.routes.of(request.uri().path());
        let seen = tracing::enabled!(target: "access", Level::INFO).then(|| Seen {
            peer: self.peer.or_else(|| {
                request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(peer)| *peer)
            }),
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
        });
        ObserveFuture {
            inner: self.inner.call(request),
            start,
            method,
            route,
            seen,
            instance: Some(self.instance.clone()),
        }
    }
}

pin_project_lite::pin_project! {
    struct ObserveFuture<F> {
        #[pin]
        inner: F,
        start: Instant,
        method: usize,
        route: &'static metrics::HttpRoute,
        seen: Option<Seen>,
        instance: Option<HeaderValue>,
    }
}

impl<F> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        if let Some(instance) = this.instance.take() {
            response.headers_mut().insert(INSTANCE_HEADER, instance);
        }
        let elapsed = this.start.elapsed();
        let route = *this.route;
        let status = response.status();
        route.record(*this.method, status.as_u16(), elapsed);
        if let Some(seen) = this.seen.take() {
            let line = AccessLine {
                seen: &seen,
                status,
                elapsed,
            };
            if OPS_ROUTES.contains(&route.route()) {
                if tracing::enabled!(target: "access", Level::DEBUG)
                    && !logging::access(Level::DEBUG, |out| line.write(out))
                {
                    tracing::debug!(target: "access", "{line}");
                }
            } else if !logging::access(Level::INFO, |out| line.write(out)) {
                tracing::info!(target: "access", "{line}");
            }
        }
        Poll::Ready(Ok(response))
    }
}

/// The access-log line's message: the peer's address (IPv4 as such, not
/// IPv4-mapped IPv6, `-` when unknown), the request line, the status, and
/// how long the answer took: `127.0.0.1 "GET /32 HTTP/1.1" 200 102.3µs`.
struct AccessLine<'a> {
    seen: &'a Seen,
    status: StatusCode,
    elapsed: Duration,
}

impl AccessLine<'_> {
    /// Appends the line's text, without `fmt` (see [`logging::access`]).
    fn write(&self, out: &mut Vec<u8>) {
        let Seen {
            peer,
            method,
            uri,
            version,
        } = self.seen;
        match peer.map(|peer| peer.ip().to_canonical()) {
            Some(IpAddr::V4(ip)) => {
                let mut digits = itoa::Buffer::new();
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    out.extend_from_slice(digits.format(octet).as_bytes());
                }
            }
            Some(ip) => {
                let _ = write!(out, "{ip}");
            }
            None => out.push(b'-'),
        }
        out.extend_from_slice(b" \"");
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(uri.path().as_bytes());
        out.push(b' ');
        match *version {
            Version::HTTP_10 => out.extend_from_slice(b"HTTP/1.0"),
            Version::HTTP_11 => out.extend_from_slice(b"HTTP/1.1"),
            other => {
                let _ = write!(out, "{other:?}");
            }
        }
        out.extend_from_slice(b"\" ");
        out.extend_from_slice(itoa::Buffer::new().format(self.status.as_u16()).as_bytes());
        out.push(b' ');
        write_elapsed(out, self.elapsed);
    }
}

/// The same text, for tracing (colours on a terminal, or logging not set up).
impl std::fmt::Display for AccessLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = Vec::with_capacity(64);
        self.write(&mut text);
        f.write_str(&String::from_utf8_lossy(&text))
    }
}

/// Appends a duration as `format!("{elapsed:.1?}")` would (`102.3µs`, `1.0ms`,
/// `3.2s`, `870.0ns`), as std rounds to one decimal, without `fmt`.
fn write_elapsed(out: &mut Vec<u8>, elapsed: Duration) {
    const NANOS_PER_SEC: u32 = 1_000_000_000;
    let (secs, nanos) = (elapsed.as_secs(), elapsed.subsec_nanos());
    let (whole, fraction, divisor, unit): (u64, u32, u32, &[u8]) = if secs > 0 {
        (secs, nanos, NANOS_PER_SEC / 10, b"s")
    } else if nanos >= 1_000_000 {
        (
            u64::from(nanos / 1_000_000),
            nanos % 1_000_000,
            100_000,
            b"ms",
        )
    } else if nanos >= 1_000 {
        (
            u64::from(nanos / 1_000),
            nanos % 1_000,
            100,
            "µs".as_bytes(),
        )
    } else {
        (u64::from(nanos), 0, 1, b"ns")
    };
    // The first decimal, rounded to the nearest, a tie to the even digit.
    let (mut whole, mut tenth) = (whole, fraction / divisor);
    let (rest, half) = (fraction % divisor, divisor / 2);
    if rest > half || (rest == half && rest > 0 && tenth % 2 == 1) {
        tenth += 1;
        if tenth == 10 {
            tenth = 0;
            whole += 1;
        }
    }
    out.extend_from_slice(itoa::Buffer::new().format(whole).as_bytes());
    out.push(b'.');
    out.push(b'0' + tenth as u8);
    out.extend_from_slice(unit);
}

/// The method as an index into [`metrics::HTTP_METHODS`]: the standard
/// ones, and `other` for the rest, so that made-up methods cannot add series
/// without end.
fn method_index(method: &Method) -> usize {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .position(|known| known == method)
        .unwrap_or(KNOWN.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations spread over every unit, with the edges of each rounding.
    fn durations() -> impl Iterator<Item = Duration> {
        #[rustfmt::skip]
        let edges = [
            0, 1, 9, 999, 1_000, 1_049, 1_050, 1_051, 1_150, 1_250, 1_950, 9_949, 9_950,
            99_999, 999_949, 999_950, 999_999, 1_000_000, 1_049_999, 1_050_000, 1_150_000,
            999_949_999, 999_950_000, 999_999_999,
        ];
        let seconds = [0, 1, 59, 3_600];
        let spread = (0..200_000u64).map(|i| i.wrapping_mul(2_654_435_761) % 5_000_000_000);
        seconds
            .into_iter()
            .flat_map(move |s| edges.into_iter().map(move |n| s * 1_000_000_000 + n))
            .chain(spread)
            .map(Duration::from_nanos)
    }

    #[test]
    fn elapsed_times_read_as_std_writes_them() {
        for elapsed in durations() {
            let mut ours = Vec::new();
            write_elapsed(&mut ours, elapsed);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                format!("{elapsed:.1?}"),
                "{elapsed:?}"
            );
        }
    }

    #[test]
    fn the_access_line_names_peer_request_status_and_time() {
        let seen = |peer: Option<&str>, method: Method, uri: &str, version: Version| Seen {
            peer: peer.map(|peer| peer.parse().expect("an address")),
            method,
            uri: uri.parse().expect("a URI"),
            version,
        };
        let cases = [
            (
                seen(Some("127.0.0.1:5000"), Method::GET, "/32", Version::HTTP_11),
                StatusCode::OK,
                Duration::from_nanos(102_349),
                r#"127.0.0.1 "GET /32 HTTP/1.1" 200 102.3µs"#,
            ),
            (
                seen(
                    Some("[::ffff:10.0.0.7]:80"),
                    Method::POST,
                    "/?x=1",
                    Version::HTTP_10,
                ),
                StatusCode::PAYLOAD_TOO_LARGE,
                Duration::from_millis(1_200),
                r#"10.0.0.7 "POST / HTTP/1.0" 413 1.2s"#,
            ),
            (
                seen(
                    Some("[fd00::2]:80"),
                    Method::from_bytes(b"BREW").expect("a method"),
                    "/pot",
                    Version::HTTP_2,
                ),
                StatusCode::METHOD_NOT_ALLOWED,
                Duration::from_nanos(870),
                r#"fd00::2 "BREW /pot HTTP/2.0" 405 870.0ns"#,
            ),
            (
                seen(None, Method::GET, "/", Version::HTTP_11),
                StatusCode::NOT_FOUND,
                Duration::from_micros(999_951),
                r#"- "GET / HTTP/1.1" 404 1000.0ms"#,
            ),
        ];
        for (seen, status, elapsed, expected) in cases {
            let line = AccessLine {
                seen: &seen,
                status,
                elapsed,
            };
            let mut bytes = Vec::new();
            line.write(&mut bytes);
            assert_eq!(String::from_utf8_lossy(&bytes), expected);
            assert_eq!(line.to_string(), expected, "through Display");
        }
    }
}
