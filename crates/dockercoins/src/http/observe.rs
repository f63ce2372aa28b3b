//! The request observation: one tower layer, put around every route and the
//! fallback by [`Router::layer`](axum::Router::layer), that gives each
//! request its access-log line and its metrics, and each answer the
//! `X-Instance` header naming who answered.
//!
//! The route a request counts under is its [`MatchedPath`]: the pattern of
//! the route it matched, a 405 included (the route matched, its method did
//! not); a request that matched no route (the fallback: a 404, or webui's
//! files) counts as `unmatched`.
//!
//! A plain tower service with a future of its own: no boxed future or boxed
//! `Next` of its own (axum's `from_fn` makes several). Each route's metric
//! series are found once, at its first request, and kept by the route's own
//! copy of the layer ([`crate::metrics::HttpRoute`]); the access-log line is
//! formatted only when its level is on ([`access`]).
//!
//! Its price: axum boxes a layered route once more for every request (a
//! clone of the boxed route and a boxed future). Measured with
//! `scripts/profile.sh hasher_get`, the layer on every route cost about 890
//! instructions per request more than the same observation around the whole
//! router with the route found by a second match of the path (17,439 →
//! 18,329, the peer left out; 18,730 with it, docs/performance.md).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::Response;
use tower::{Layer, Service};
use tracing::Level;

use super::access::{self, Seen};
use super::peer;
use crate::metrics::HttpRoute;

/// The header by which rng and hasher (and every service) say who answered.
pub const INSTANCE_HEADER: HeaderName = HeaderName::from_static("x-instance");

/// Observes every request of the routes it is put around.
#[derive(Clone)]
pub struct ObserveLayer {
    instance: HeaderValue,
}

impl ObserveLayer {
    /// Answers name `instance` in their `X-Instance` header.
    pub fn new(instance: &str) -> Self {
        let instance =
            HeaderValue::from_str(instance).unwrap_or(HeaderValue::from_static("unknown"));
        ObserveLayer { instance }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            route: Arc::new(Route {
                instance: self.instance.clone(),
                metrics: OnceLock::new(),
            }),
        }
    }
}

/// [`ObserveLayer`] around one route (axum clones it for each request: one
/// reference count).
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    route: Arc<Route>,
}

/// What one route's observation keeps from request to request.
struct Route {
    instance: HeaderValue,
    /// The metrics of the pattern this route's requests matched so far.
    metrics: OnceLock<&'static HttpRoute>,
}

impl<S> Observe<S> {
    /// The metrics a request counts under: its route's pattern, or
    /// `unmatched`.
    fn metrics_of(&self, request: &Request) -> &'static HttpRoute {
        let Some(matched) = request.extensions().get::<MatchedPath>() else {
            return HttpRoute::unmatched();
        };
        let pattern = matched.as_str();
        let kept = *self.route.metrics.get_or_init(|| HttpRoute::of(pattern));
        // A service nested whole under one route matches patterns of its own.
        if kept.route() == pattern {
            kept
        } else {
            HttpRoute::of(pattern)
        }
    }
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
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
        let metrics = self.metrics_of(&request);
        let seen = tracing::enabled!(target: "access", Level::INFO).then(|| Seen {
            peer: peer::current().or_else(|| {
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
            metrics,
            seen,
            instance: Some(self.route.instance.clone()),
        }
    }
}

pin_project_lite::pin_project! {
    /// The route's answer, observed when it comes.
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        start: Instant,
        method: usize,
        metrics: &'static HttpRoute,
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
        let metrics = *this.metrics;
        let status = response.status();
        metrics.record(*this.method, status.as_u16(), elapsed);
        if let Some(seen) = this.seen.take() {
            access::log(&seen, status, elapsed, metrics.route());
        }
        Poll::Ready(Ok(response))
    }
}

/// The method as an index into [`crate::metrics::HTTP_METHODS`]: the
/// standard ones, and `other` for the rest, so that made-up methods cannot
/// add series without end.
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
