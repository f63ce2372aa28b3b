//! HTTP serving, the same for every service: the operations endpoints
//! (`/healthz`, `/readyz`, `/metrics`), one access-log line and metrics per
//! request, an `X-Instance` header naming who answered, one-line reasons on
//! 404 and 405, and a graceful stop bounded by `SHUTDOWN_TIMEOUT`.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::{IncomingStream, Listener, ListenerExt};
use tokio::net::TcpListener;
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

/// Adds the operations endpoints and the per-request plumbing to a service's
/// routes. Tests drive the result with `oneshot`; [`serve`] puts the same
/// plumbing around the whole router instead, once per connection.
pub fn with_ops(routes: Router, instance: &str, readiness: Readiness) -> Router {
    routed(routes, readiness).layer(ObserveLayer {
        instance: instance_header(instance),
    })
}

/// The service's routes and the operations endpoints, each route marking its
/// answers with its pattern for [`Observe`].
fn routed(routes: Router, readiness: Readiness) -> Router {
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready).with_state(readiness))
        .route("/metrics", get(metrics_text));
    routes
        .merge(ops)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(MarkRouteLayer)
}

fn instance_header(instance: &str) -> HeaderValue {
    HeaderValue::from_str(instance).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Serves `routes` (with [`with_ops`]) until the service's shutdown token is
/// cancelled, then lets requests in flight finish, waiting at most
/// `SHUTDOWN_TIMEOUT`.
pub async fn serve(service: Service, routes: Router, readiness: Readiness) -> Result<(), String> {
    let Service {
        instance,
        listener,
        shutdown,
        common,
    } = service;
    let app = MakeObserve {
        routes: routed(routes, readiness),
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

async fn ready(State(readiness): State<Readiness>) -> Response {
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
// Plain tower services with futures of their own: no boxed future, no boxed
// `Next`, no allocation of their own per request (axum's `from_fn` makes
// several). The metric series are registered once per route, method and
// status ([`metrics::HttpRoute`]); the access-log line is formatted only when
// its level is on, straight into the log's queue ([`logging::access`]).

/// Makes one [`Observe`] per connection, knowing its peer (instead of a
/// `ConnectInfo` added to every request).
#[derive(Clone)]
struct MakeObserve {
    routes: Router,
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
            inner: self.routes.clone(),
            instance: self.instance.clone(),
            peer: Some(*stream.remote_addr()),
        }))
    }
}

/// [`Observe`] as a layer, for [`with_ops`].
#[derive(Clone)]
struct ObserveLayer {
    instance: HeaderValue,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
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
        let route = match response.extensions_mut().remove::<RouteMark>() {
            Some(RouteMark(route)) => route,
            None => metrics::HttpRoute::unmatched(),
        };
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
                    && !logging::access(Level::DEBUG, format_args!("{line}"))
                {
                    tracing::debug!(target: "access", "{line}");
                }
            } else if !logging::access(Level::INFO, format_args!("{line}")) {
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

impl std::fmt::Display for AccessLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Seen {
            peer,
            method,
            uri,
            version,
        } = self.seen;
        match peer {
            Some(peer) => write!(f, "{}", peer.ip().to_canonical())?,
            None => f.write_str("-")?,
        }
        let (path, status, elapsed) = (uri.path(), self.status.as_u16(), self.elapsed);
        write!(f, " \"{method} {path} {version:?}\" {status} {elapsed:.1?}")
    }
}

/// Marks each answer of a route with the route's metrics, for [`Observe`]
/// (which runs before routing, so it cannot see the route on the request).
#[derive(Clone)]
struct MarkRouteLayer;

impl<S> Layer<S> for MarkRouteLayer {
    type Service = MarkRoute<S>;

    fn layer(&self, inner: S) -> MarkRoute<S> {
        MarkRoute { inner }
    }
}

#[derive(Clone)]
struct MarkRoute<S> {
    inner: S,
}

#[derive(Clone, Copy)]
struct RouteMark(&'static metrics::HttpRoute);

impl<S> TowerService<Request> for MarkRoute<S>
where
    S: TowerService<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = MarkRouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(|matched| metrics::HttpRoute::of(matched.as_str()));
        MarkRouteFuture {
            inner: self.inner.call(request),
            route,
        }
    }
}

pin_project_lite::pin_project! {
    struct MarkRouteFuture<F> {
        #[pin]
        inner: F,
        route: Option<&'static metrics::HttpRoute>,
    }
}

impl<F> Future for MarkRouteFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        if let Some(route) = *this.route {
            response.extensions_mut().insert(RouteMark(route));
        }
        Poll::Ready(Ok(response))
    }
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
