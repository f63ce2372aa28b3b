//! Where Redis is: at one URL, or wherever the Sentinels say the primary is.
//! The same knobs for every service that uses Redis.

use std::time::Duration;

use clap::Args;

/// How long one connection attempt or one reply may take, of Redis or of a
/// Sentinel.
pub(super) const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Args, Debug, Clone)]
pub struct RedisOptions {
    /// Where Redis answers.
    #[arg(
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "redis://redis:6379"
    )]
    pub url: String,

    /// Sentinels to ask for the primary, `host:port,...`; when set, these are
    /// used instead of REDIS_URL, and a failover is followed without a restart.
    #[arg(
        long = "redis-sentinels",
        env = "REDIS_SENTINELS",
        value_delimiter = ',',
        num_args = 0..
    )]
    pub sentinels: Vec<String>,

    /// The name the Sentinels monitor the primary under.
    #[arg(
        long = "redis-sentinel-primary",
        env = "REDIS_SENTINEL_PRIMARY",
        default_value = "mymaster"
    )]
    pub primary: String,
}

impl RedisOptions {
    /// The Redis at `url`, no Sentinel.
    pub fn at(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            sentinels: Vec::new(),
            primary: "mymaster".to_owned(),
        }
    }

    /// The Sentinels' addresses given, blanks left out.
    pub fn sentinel_addresses(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|address| address.trim().to_owned())
            .filter(|address| !address.is_empty())
            .collect()
    }
}
