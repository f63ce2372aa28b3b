//! The Redis connection the worker and webui share: opened lazily, so a
//! service starts and answers while Redis is down, and re-established by the
//! connection manager after Redis restarts.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};
use tokio::sync::Mutex;

/// How long one connection attempt or one reply may take.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Redis {
    client: Client,
    connection: Arc<Mutex<Option<ConnectionManager>>>,
    url: Arc<str>,
}

impl Redis {
    /// Checks the URL; connects on first use.
    pub fn open(url: &str) -> Result<Self, String> {
        let client = Client::open(url).map_err(|err| format!("REDIS_URL={url:?}: {err}"))?;
        Ok(Redis {
            client,
            connection: Arc::default(),
            url: url.into(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection, opening one if none is open. Cheap to call per request.
    pub async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut connection = self.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
    }
}
