//! What every DockerCoins service shares, so that each service's own crate
//! holds nothing but its routes and its work.
//!
//! A service's `main.rs` is one call to [`main`] ([`service`]): it parses the
//! command line and environment ([`config`]), answers the `healthcheck`
//! subcommand ([`healthcheck`]), sets up logging ([`logging`]) and metrics
//! ([`metrics`]), binds `PORT`, wires SIGTERM/SIGINT to a
//! [`CancellationToken`] ([`shutdown`]), and hands the rest to the service's
//! `run` function, which serves its axum `Router` with [`http::serve`].

pub mod config;
pub mod delay;
pub mod error;
pub mod healthcheck;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod redis;
pub mod service;
pub mod shutdown;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use config::Common;
pub use delay::delay;
pub use error::{BoxError, error_chain};
pub use service::{Cli, Command, Service, command, main, parse_from};
pub use tokio_util::sync::CancellationToken;
