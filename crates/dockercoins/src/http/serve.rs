//! Serving a service's router: binding `PORT`, the operations endpoints and
//! the request observation added, and a graceful stop bounded by
//! `SHUTDOWN_TIMEOUT`.

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::Router;
use axum::serve::ListenerExt;
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::observe::ObserveLayer;
use super::ops::{self, Readiness};
use super::peer::MakePeer;
use super::reasons::method_not_allowed;
use crate::service::Service;

/// The target of serving's log lines: `dockercoins::http`, as they have
/// always had (not this module's path).
const LOG_TARGET: &str = "dockercoins::http";

/// The server stopped on an error of its own (not a request's).
#[derive(Debug, thiserror::Error)]
#[error("server error: {0}")]
pub struct ServeError(#[source] std::io::Error);

/// Binds `PORT` on all interfaces: IPv6 and IPv4 where the host has IPv6,
/// IPv4 alone where it has not (many containers).
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(listener) => Ok(listener),
        Err(_) => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await,
    }
}

/// A service's routes with the operations endpoints merged in, a 405 with
/// its reason for a method a route lacks, and the request observation
/// around every route and the fallback. Tests drive the result with
/// `oneshot`; [`serve`] serves the same.
pub fn with_ops(routes: Router, instance: &str, readiness: Readiness) -> Router {
    app(routes, instance, readiness, CancellationToken::new())
}

/// [`with_ops`], with `/readyz` answering 503 once `draining` is cancelled.
fn app(
    routes: Router,
    instance: &str,
    readiness: Readiness,
    draining: CancellationToken,
) -> Router {
    routes
        .merge(ops::routes(readiness, draining))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(ObserveLayer::new(instance))
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
    routes: Router,
    readiness: Readiness,
) -> BoxFuture<'static, Result<(), ServeError>> {
    Box::pin(serve_app(service, routes, readiness))
}

async fn serve_app(
    service: Service,
    routes: Router,
    readiness: Readiness,
) -> Result<(), ServeError> {
    let Service {
        instance,
        listener,
        shutdown,
        draining,
        common,
        ..
    } = service;
    let app = app(routes, &instance, readiness, draining);
    if let Ok(address) = listener.local_addr() {
        tracing::info!(target: LOG_TARGET, "listening on {address}");
    }
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // Each connection's peer, for the access-log line.
    let app = MakePeer(app);
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(common.shutdown_timeout).await;
    };
    tokio::select! {
        result = server => result.map_err(ServeError),
        () = deadline => {
            tracing::warn!(target: LOG_TARGET, "connections still open after {:?}; stopping anyway", common.shutdown_timeout);
            Ok(())
        }
    }
}
