//! What goes wrong at the Redis module's boundary, typed: callers decide on
//! the kind of error, never on its text.

use redis::RedisError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A knob that names no usable Redis (`REDIS_URL`, `REDIS_SENTINELS`).
    #[error("{knob}={value:?}: {source}")]
    Options {
        knob: &'static str,
        value: String,
        source: RedisError,
    },
    /// Sentinels given, but no name to ask them about.
    #[error("REDIS_SENTINEL_PRIMARY is empty: expected the primary's name")]
    NoPrimaryName,
}
