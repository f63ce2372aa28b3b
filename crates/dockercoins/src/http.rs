//! HTTP serving, the same for every service: the operations endpoints
//! (`/healthz`, `/readyz`, `/metrics`), one access-log line and metrics per
//! request, an `X-Instance` header naming who answered, one-line reasons on
//! 404 and 405, and a graceful stop bounded by `SHUTDOWN_TIMEOUT`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::redis::Redis;
use crate::{Service, metrics};

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
/// routes. Tests drive the result with `oneshot`.
pub fn with_ops(routes: Router, instance: &str, readiness: Readiness) -> Router {
    let instance = HeaderValue::from_str(instance).unwrap_or(HeaderValue::from_static("unknown"));
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready).with_state(readiness))
        .route("/metrics", get(metrics_text));
    routes
        .merge(ops)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn(remember_route))
        .layer(middleware::from_fn_with_state(instance, observe))
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
    let app = with_ops(routes, &instance, readiness);
    if let Ok(address) = listener.local_addr() {
        tracing::info!("listening on {address}");
    }
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
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

/// Copies the route that matched into the response, for [`observe`]
/// (the outer layer runs before routing, so it cannot see it on the request).
async fn remember_route(matched: MatchedPath, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.extensions_mut().insert(matched);
    response
}

/// One access-log line and the request metrics, per request.
async fn observe(State(instance): State<HeaderValue>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let version = request.version();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_canonical().to_string())
        .unwrap_or_else(|| "-".to_owned());

    let mut response = next.run(request).await;
    response.headers_mut().insert(INSTANCE_HEADER, instance);

    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    ::metrics::counter!(
        "http_requests_total",
        "route" => route.clone(), "method" => method_label(&method), "status" => status.to_string()
    )
    .increment(1);
    ::metrics::histogram!("http_request_duration_seconds", "route" => route.clone())
        .record(elapsed.as_secs_f64());
    if OPS_ROUTES.contains(&route.as_str()) {
        tracing::debug!(target: "access", "{peer} \"{method} {path} {version:?}\" {status} {elapsed:.1?}");
    } else {
        tracing::info!(target: "access", "{peer} \"{method} {path} {version:?}\" {status} {elapsed:.1?}");
    }
    response
}

/// The method as a metrics label: the standard ones, and `other` for the rest,
/// so that made-up methods cannot add series without end.
fn method_label(method: &Method) -> &'static str {
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
        .find(|known| *known == method)
        .map(|known| known.as_str())
        .unwrap_or("other")
}
