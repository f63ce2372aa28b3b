//! The peer's address of the request being routed, for its access-log line.
//!
//! [`serve`](super::serve) knows each connection's peer; [`Peer`] wraps the
//! router once per connection and says who the peer is while the router
//! handles one of its requests, where the observation layer
//! ([`observe`](super::observe)) asks [`current`]. This stands in for axum's
//! `ConnectInfo`, which boxes the address into every request's extensions:
//! measured with `scripts/profile.sh hasher_get`, that cost 948 instructions
//! per request (19,277 against 18,329), an allocation and the growth of the
//! request's extension map.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::{Future, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use tower::Service;

thread_local! {
    /// The peer of the request this thread is routing, if any.
    static CURRENT: Cell<Option<SocketAddr>> = const { Cell::new(None) };
}

/// The peer of the request being routed on this thread: `None` outside
/// [`Peer`] (a router driven by `oneshot` in tests).
pub fn current() -> Option<SocketAddr> {
    CURRENT.get()
}

/// Runs `f` with `peer` as the current peer.
fn with<T>(peer: SocketAddr, f: impl FnOnce() -> T) -> T {
    let outer = CURRENT.replace(Some(peer));
    let result = f();
    CURRENT.set(outer);
    result
}

/// Makes one [`Peer`] per connection, knowing its address.
#[derive(Clone)]
pub struct MakePeer(pub Router);

impl<'a, L> Service<IncomingStream<'a, L>> for MakePeer
where
    L: Listener<Addr = SocketAddr>,
{
    type Response = Peer;
    type Error = Infallible;
    type Future = Ready<Result<Peer, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'a, L>) -> Self::Future {
        std::future::ready(Ok(Peer {
            router: self.0.clone(),
            peer: *stream.remote_addr(),
        }))
    }
}

/// The router for one connection: its peer is [`current`] while the router
/// takes a request and while its answer is being made.
#[derive(Clone)]
pub struct Peer {
    router: Router,
    peer: SocketAddr,
}

impl Service<Request> for Peer {
    type Response = Response;
    type Error = Infallible;
    type Future = PeerFuture<<Router as Service<Request>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let peer = self.peer;
        PeerFuture {
            inner: with(peer, || self.router.call(request)),
            peer,
        }
    }
}

pin_project_lite::pin_project! {
    /// The router's answer, polled with its peer current.
    pub struct PeerFuture<F> {
        #[pin]
        inner: F,
        peer: SocketAddr,
    }
}

impl<F: Future> Future for PeerFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        with(*this.peer, || this.inner.poll(cx))
    }
}
