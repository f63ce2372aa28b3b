//! HTTP serving, the same for every service. A service builds an axum
//! [`Router`](axum::Router) of its own routes; [`serve`] adds the operations
//! endpoints and the request observation, and serves it.
//!
//! - [`serve`](mod@serve): binding `PORT`, serving, and the graceful stop
//!   bounded by `SHUTDOWN_TIMEOUT`;
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`;
//! - [`reasons`]: the one-line reasons of 404 and 405;
//! - [`peer`]: each connection's peer, for the access-log line;
//! - [`observe`]: the one layer that observes each request: its access-log
//!   line, its metrics, and the `X-Instance` header naming who answered;
//! - [`access`]: the access-log line's text.

pub mod access;
pub mod observe;
pub mod ops;
pub mod peer;
pub mod reasons;
pub mod serve;

pub use observe::{INSTANCE_HEADER, ObserveLayer};
pub use ops::{OPS_ROUTES, Readiness};
pub use reasons::not_found;
pub use serve::{ServeError, bind, serve, with_ops};
