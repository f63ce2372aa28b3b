//! Calls to rng and hasher.
//!
//! Connections are kept alive (fast with the delays off), yet calls still
//! spread over every instance behind one name (rng in global mode): a
//! connection lives at most `WORKER_CONNECTION_MAX_AGE`, and each new one
//! resolves the name again and picks one of its addresses at random.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dockercoins::error_chain;
use dockercoins::http::INSTANCE_HEADER;
use rand::seq::SliceRandom;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::Config;
use crate::ledger::Ledger;

pub struct Client {
    /// `rng` or `hasher`: the label of this dependency in logs and metrics.
    dependency: &'static str,
    base_url: String,
    timeout: Duration,
    max_age: Duration,
    current: Mutex<(Instant, reqwest::Client)>,
}

impl Client {
    pub fn new(dependency: &'static str, base_url: &str, config: &Config) -> Result<Self, String> {
        let url = reqwest::Url::parse(base_url)
            .map_err(|err| format!("{}_URL={base_url:?}: {err}", dependency.to_uppercase()))?;
        if !matches!(url.scheme(), "http") {
            return Err(format!(
                "{}_URL={base_url:?}: only http:// is supported",
                dependency.to_uppercase()
            ));
        }
        let client = Client {
            dependency,
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout: config.timeout,
            max_age: config.connection_max_age,
            current: Mutex::new((
                Instant::now(),
                build(config.timeout, config.connection_max_age)?,
            )),
        };
        Ok(client)
    }

    pub async fn get(&self, path: &str, ledger: &Ledger) -> Result<Bytes, String> {
        let request = self.client().get(format!("{}{path}", self.base_url));
        self.call(request, ledger).await
    }

    pub async fn post(&self, path: &str, body: Bytes, ledger: &Ledger) -> Result<Bytes, String> {
        let request = self
            .client()
            .post(format!("{}{path}", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.call(request, ledger).await
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        ledger: &Ledger,
    ) -> Result<Bytes, String> {
        let dependency = self.dependency;
        let start = Instant::now();
        let result = async {
            let response = request.send().await.map_err(|err| error_chain(&err))?;
            let status = response.status();
            let instance = response
                .headers()
                .get(INSTANCE_HEADER)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("unknown")
                .to_owned();
            let body = response.bytes().await.map_err(|err| error_chain(&err))?;
            if !status.is_success() {
                let reason = String::from_utf8_lossy(&body);
                let reason = reason.lines().next().unwrap_or("");
                return Err(format!("answered {status}: {reason}"));
            }
            ledger.answered_by(dependency, &instance);
            Ok(body)
        }
        .await;
        metrics::histogram!("worker_call_duration_seconds", "dependency" => dependency)
            .record(start.elapsed().as_secs_f64());
        result.map_err(|err| {
            metrics::counter!("worker_call_errors_total", "dependency" => dependency).increment(1);
            format!("{dependency} at {}: {err}", self.base_url)
        })
    }

    /// The current client, replaced (with its connections) once it is too old.
    fn client(&self) -> reqwest::Client {
        let mut current = match self.current.lock() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !self.max_age.is_zero() && current.0.elapsed() >= self.max_age {
            match build(self.timeout, self.max_age) {
                Ok(client) => *current = (Instant::now(), client),
                Err(err) => tracing::warn!("keeping old connections: {err}"),
            }
        }
        current.1.clone()
    }
}

fn build(timeout: Duration, max_age: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .tcp_nodelay(true)
        .no_proxy()
        .dns_resolver(Arc::new(ShuffledDns));
    if max_age.is_zero() {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder
        .build()
        .map_err(|err| format!("cannot make an HTTP client: {}", error_chain(&err)))
}

/// The system resolver, with the addresses in random order: glibc sorts the
/// addresses of a name the same way every time, which would send every new
/// connection to the same instance.
struct ShuffledDns;

impl Resolve for ShuffledDns {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let mut addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            addresses.shuffle(&mut rand::rng());
            let addresses: Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}
