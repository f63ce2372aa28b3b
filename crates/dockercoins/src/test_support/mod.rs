//! What the services' tests start and read, one room each:
//! - [`ports`]: loopback ports that were free a moment ago;
//! - [`redis`]: a real `redis-server` on one of them;
//! - [`redis_ha`]: a primary, two replicas and three Sentinels;
//! - [`service`]: a service run in-process from its command line;
//! - [`process`]: a service binary run as a child process;
//! - [`http`]: requests from the outside, plain or raw bytes;
//! - [`prometheus`]: the text `/metrics` answers.
//!
//! Everything is at this module's root: `dockercoins::test_support::RedisServer`.

mod http;
mod ports;
mod process;
mod prometheus;
mod redis;
mod redis_ha;
mod service;

pub use self::http::{body_of, get, raw_request, read_answer};
pub use self::ports::{free_port, free_port_in};
pub use self::process::{Process, healthcheck};
pub use self::prometheus::{metric_names, sample, undocumented_metrics};
pub use self::redis::RedisServer;
pub use self::redis_ha::{RedisHa, start_sentinel};
pub use self::service::{Running, spawn};
