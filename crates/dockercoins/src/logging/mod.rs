//! Logging: one line per event, text for people or JSON for log shippers,
//! on standard output.
//!
//! - [`setup`]: the levels (`RUST_LOG`, `DEBUG`), the format, and the end;
//! - [`writer`]: the queue of formatted lines and the thread that writes it;
//! - [`access`]: the access-log line, written as tracing would write it.

pub mod access;
pub mod setup;
pub mod writer;

pub use access::access;
pub use setup::{finish, init};
