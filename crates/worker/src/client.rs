//! Calls to rng and hasher.
//!
//! Connections are kept alive (fast with the delays off), yet calls still
//! spread over every instance behind one name (rng in global mode): a
//! connection lives at most `WORKER_CONNECTION_MAX_AGE`, and each new one
//! resolves the name again and picks one of its addresses at random.
//!
//! Each connection gets its own lifetime, between half and all of the maximum
//! age, and is retired after the answer that finds it expired. Connections are
//! thus replaced a few at a time: replacing them all at once, every second,
//! made every unit reconnect at the same moment and, under load, cost the
//! worker 3 MB of memory in the churn.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{Method, Request, Uri, header};
use bytes::Bytes;
use dockercoins::error_chain;
use dockercoins::http::INSTANCE_HEADER;
use http_body_util::{BodyExt, Full};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::{
    Connected, Connection, HttpConnector, capture_connection,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics::Histogram;
use rand::seq::SliceRandom;
use tokio::net::TcpStream;

use crate::Config;
use crate::ledger::Ledger;

/// A pool of HTTP/1.1 connections. (hyper's client, without reqwest on top:
/// with the delays off, reqwest parsed each URL three times per call, a
/// quarter of the worker's time.)
type Pool = HttpClient<Aging, Full<Bytes>>;

/// Bytes read from a connection at a time: answers are a few hundred bytes
/// (hyper's default starts at 8 KB per connection).
const READ_BUFFER: usize = 2048;

pub struct Client {
    /// `rng` or `hasher`: the label of this dependency in logs and metrics.
    dependency: &'static str,
    base_url: String,
    timeout: Duration,
    pool: Pool,
    /// `worker_call_duration_seconds{dependency}`, registered at the first
    /// call instead of looked up with its label at every call.
    duration: OnceLock<Histogram>,
}

impl Client {
    pub fn new(dependency: &'static str, base_url: &str, config: &Config) -> Result<Self, String> {
        let name = dependency.to_uppercase();
        let url: Uri = base_url
            .parse()
            .map_err(|err| format!("{name}_URL={base_url:?}: {err}"))?;
        if url.scheme_str() != Some("http") {
            return Err(format!(
                "{name}_URL={base_url:?}: only http:// is supported"
            ));
        }
        if url.host().is_none_or(str::is_empty) {
            return Err(format!("{name}_URL={base_url:?}: no host"));
        }
        Ok(Client {
            dependency,
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout: config.timeout,
            pool: build(config.timeout, config.connection_max_age),
            duration: OnceLock::new(),
        })
    }

    /// The URI of `path` under the base URL, parsed once by the caller.
    pub fn uri(&self, path: &str) -> Result<Uri, String> {
        let url = format!("{}{path}", self.base_url);
        url.parse()
            .map_err(|err| format!("{} URL {url:?}: {err}", self.dependency))
    }

    pub async fn get(&self, uri: &Uri, ledger: &Ledger) -> Result<Bytes, String> {
        let request = Request::get(uri.clone()).body(Full::default());
        self.call(request, ledger).await
    }

    pub async fn post(&self, uri: &Uri, body: Bytes, ledger: &Ledger) -> Result<Bytes, String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(body));
        self.call(request, ledger).await
    }

    async fn call(
        &self,
        request: Result<Request<Full<Bytes>>, axum::http::Error>,
        ledger: &Ledger,
    ) -> Result<Bytes, String> {
        let dependency = self.dependency;
        let start = Instant::now();
        let exchange = async {
            let mut request = request.map_err(|err| error_chain(&err))?;
            let connection = capture_connection(&mut request);
            let response = self
                .pool
                .request(request)
                .await
                .map_err(|err| error_chain(&err))?;
            let expired = response
                .extensions()
                .get::<Expiry>()
                .is_some_and(|expiry| Instant::now() >= expiry.0);
            if let (true, Some(connected)) = (expired, &*connection.connection_metadata()) {
                // Not reused: the pool closes it, and a later call opens a new one.
                connected.poison();
            }
            let (head, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|err| error_chain(&err))?
                .to_bytes();
            if !head.status.is_success() {
                let reason = String::from_utf8_lossy(&body);
                let reason = reason.lines().next().unwrap_or("");
                return Err(format!("answered {}: {reason}", head.status));
            }
            let instance = head
                .headers
                .get(INSTANCE_HEADER)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("unknown");
            ledger.answered_by(dependency, instance);
            Ok(body)
        };
        let result = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        self.duration
            .get_or_init(|| {
                // A series registered before the recorder would go nowhere, for good.
                dockercoins::metrics::install();
                metrics::histogram!("worker_call_duration_seconds", "dependency" => dependency)
            })
            .record(start.elapsed().as_secs_f64());
        result.map_err(|err| {
            metrics::counter!("worker_call_errors_total", "dependency" => dependency).increment(1);
            format!("{dependency} at {}: {err}", self.base_url)
        })
    }
}

fn build(timeout: Duration, max_age: Duration) -> Pool {
    let mut connector = HttpConnector::new_with_resolver(ShuffledDns);
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(2))));
    let mut builder = HttpClient::builder(TokioExecutor::new());
    builder.http1_read_buf_exact_size(READ_BUFFER);
    if max_age.is_zero() {
        builder.pool_max_idle_per_host(0);
    }
    builder.build(Aging { connector, max_age })
}

/// When a connection is to be retired, carried with each of its answers.
#[derive(Clone, Copy)]
struct Expiry(Instant);

/// Opens connections with [`ShuffledDns`], each with its [`Expiry`].
#[derive(Clone)]
struct Aging {
    connector: HttpConnector<ShuffledDns>,
    max_age: Duration,
}

impl tower::Service<Uri> for Aging {
    type Response = Aged;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Aged, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.connector.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.connector.call(uri);
        let lifetime = self.max_age.mul_f64(rand::random_range(0.5..=1.0));
        Box::pin(async move {
            let io = connecting.await?;
            Ok(Aged {
                io,
                expiry: Expiry(Instant::now() + lifetime),
            })
        })
    }
}

/// A connection and its [`Expiry`]; reads and writes go straight through.
struct Aged {
    io: TokioIo<TcpStream>,
    expiry: Expiry,
}

impl Connection for Aged {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.expiry)
    }
}

impl Read for Aged {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Aged {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The system resolver, with the addresses in random order: glibc sorts the
/// addresses of a name the same way every time, which would send every new
/// connection to the same instance.
#[derive(Clone)]
struct ShuffledDns;

type Resolving =
    Pin<Box<dyn Future<Output = std::io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower::Service<Name> for ShuffledDns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        Box::pin(async move {
            let mut addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            addresses.shuffle(&mut rand::rng());
            Ok(addresses.into_iter())
        })
    }
}
