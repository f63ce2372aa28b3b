//! Redis, as the worker and the web UI use it, one room each:
//! - [`options`]: where Redis is, one URL or the Sentinels (`REDIS_URL`,
//!   `REDIS_SENTINELS`, `REDIS_SENTINEL_PRIMARY`);
//! - [`connection`]: the [`Redis`] handle, opened lazily, so a service starts
//!   and answers while Redis is down, and re-established by the connection
//!   manager after Redis restarts;
//! - `sentinel`: with Sentinels, finding the primary (the highest config
//!   epoch wins) and following it through a failover;
//! - [`contract`]: what the worker writes and the web UI reads: the keys,
//!   the workers' reports, the batch script;
//! - [`error`]: what goes wrong at this module's boundary, typed.

pub mod connection;
pub mod contract;
pub mod error;
pub mod options;
mod sentinel;

pub use self::connection::Redis;
pub use self::contract::{Applied, BatchError, BatchWrite, Batches, Coin, Counts, Report};
pub use self::error::Error;
pub use self::options::RedisOptions;
