//! Calls to rng and hasher.
//!
//! Connections are kept alive (fast with the delays off), yet calls still
//! spread over every instance behind one name (rng in global mode): a
//! connection lives at most `WORKER_CONNECTION_MAX_AGE`, and each new one
//! resolves the name again and picks one of its addresses at random.
//!
//! Each connection gets its own lifetime, between half and all of the maximum
//! age, and is retired (closed, never reused) after the answer that finds it
//! expired, or before a call if it expired while idle. Connections are thus
//! replaced a few at a time: replacing them all at once, every second, made
//! every unit reconnect at the same moment and, under load, cost the worker
//! 3 MB of memory in the churn.
//!
//! Each work loop keeps its own connection to each dependency, a
//! [`Connection`], used for one call at a time: a loop makes one call at a
//! time anyway, and a pool shared by the loops cost more per call (its
//! lookups, locks and wake-ups) than the call itself. The loop itself writes
//! each request and reads its answer ([`http1`]): no task per connection.
//!
//! A call returns what it got, a [`Reply`]: the body and the instance that
//! answered (`X-Instance`). What the worker makes of them is the work loop's.

mod http1;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Uri};
use bytes::Bytes;
use dockercoins::error_chain;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use metrics::Histogram;
use rand::seq::SliceRandom;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tower::ServiceExt;

use self::http1::{Failure, Request};
use crate::Config;

/// An answer: its body, and the instance that sent it.
pub struct Reply {
    pub body: Bytes,
    /// The `X-Instance` header, if any.
    instance: Option<HeaderValue>,
}

impl Reply {
    /// The instance that answered, `unknown` if it did not say.
    pub fn instance(&self) -> &str {
        self.instance
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .unwrap_or("unknown")
    }
}

pub struct Client {
    /// `rng` or `hasher`: the label of this dependency in logs and metrics.
    dependency: &'static str,
    base_url: String,
    /// `http://host[:port]`, where connections go.
    destination: Uri,
    /// The `Host` header of every request: the host, and the port unless 80.
    host: HeaderValue,
    timeout: Duration,
    max_age: Duration,
    connector: HttpConnector<ShuffledDns>,
    /// `worker_call_duration_seconds{dependency}`, registered at the first
    /// call instead of looked up with its label at every call.
    duration: OnceLock<Histogram>,
}

/// One work loop's connection to one dependency, kept from call to call,
/// the deadline of its calls, and the buffer they write and read with.
#[derive(Default)]
pub struct Connection {
    open: Option<Open>,
    buffer: Vec<u8>,
    /// One timer, moved on at each call: to a later deadline, that only
    /// changes a number, where a timer per call was registered with the
    /// runtime's timers and removed again.
    deadline: Option<Pin<Box<Sleep>>>,
}

struct Open {
    stream: TcpStream,
    /// When it is to be retired.
    expiry: Instant,
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
        let Some(authority) = url
            .authority()
            .filter(|authority| !authority.host().is_empty())
        else {
            return Err(format!("{name}_URL={base_url:?}: no host"));
        };
        let host = match authority.port_u16() {
            Some(port) if port != 80 => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let host =
            HeaderValue::try_from(host).map_err(|err| format!("{name}_URL={base_url:?}: {err}"))?;
        let destination = Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|err| format!("{name}_URL={base_url:?}: {err}"))?;
        let mut connector = HttpConnector::new_with_resolver(ShuffledDns);
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout.min(Duration::from_secs(2))));
        Ok(Client {
            dependency,
            base_url: base_url.trim_end_matches('/').to_owned(),
            destination,
            host,
            timeout: config.timeout,
            max_age: config.connection_max_age,
            connector,
            duration: OnceLock::new(),
        })
    }

    /// The URI of `path` under the base URL, parsed once by the caller, in
    /// the form a request line carries (`/32`: no scheme, no host).
    pub fn uri(&self, path: &str) -> Result<Uri, String> {
        let url = format!("{}{path}", self.base_url);
        let uri: Uri = url
            .parse()
            .map_err(|err| format!("{} URL {url:?}: {err}", self.dependency))?;
        match uri.path_and_query() {
            Some(path) => Uri::try_from(path.as_str())
                .map_err(|err| format!("{} URL {url:?}: {err}", self.dependency)),
            None => Ok(Uri::from_static("/")),
        }
    }

    pub async fn get(&self, connection: &mut Connection, uri: &Uri) -> Result<Reply, String> {
        self.call(connection, &self.request("GET", uri, None)).await
    }

    pub async fn post(
        &self,
        connection: &mut Connection,
        uri: &Uri,
        body: Bytes,
    ) -> Result<Reply, String> {
        self.call(connection, &self.request("POST", uri, Some(&body)))
            .await
    }

    fn request<'a>(
        &'a self,
        method: &'static str,
        uri: &'a Uri,
        body: Option<&'a [u8]>,
    ) -> Request<'a> {
        Request {
            method,
            target: uri.path_and_query().map_or("/", |path| path.as_str()),
            host: self.host.as_bytes(),
            body,
        }
    }

    async fn call(
        &self,
        connection: &mut Connection,
        request: &Request<'_>,
    ) -> Result<Reply, String> {
        let dependency = self.dependency;
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start) + self.timeout;
        let timer = match &mut connection.deadline {
            Some(timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            none => none.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        let result = tokio::select! {
            biased;
            result = self.exchange(&mut connection.open, &mut connection.buffer, request, start) => result,
            () = timer.as_mut() => {
                // Cut short, the call may leave a request half-sent or an
                // answer half-read: its connection is not reused.
                connection.open = None;
                Err(format!("no answer within {:?}", self.timeout))
            }
        };
        let end = Instant::now();
        if connection
            .open
            .as_ref()
            .is_some_and(|open| end >= open.expiry)
        {
            // The answer found it expired: dropped, it is closed, and a later
            // call opens a new one.
            connection.open = None;
        }
        self.duration
            .get_or_init(|| {
                // A series registered before the recorder would go nowhere, for good.
                dockercoins::metrics::install();
                metrics::histogram!("worker_call_duration_seconds", "dependency" => dependency)
            })
            .record(end.saturating_duration_since(start).as_secs_f64());
        result.map_err(|err| {
            metrics::counter!("worker_call_errors_total", "dependency" => dependency).increment(1);
            format!("{dependency} at {}: {err}", self.base_url)
        })
    }

    /// Sends `request` on the loop's connection, or on a new one, and reads
    /// the answer.
    async fn exchange(
        &self,
        connection: &mut Option<Open>,
        buffer: &mut Vec<u8>,
        request: &Request<'_>,
        start: Instant,
    ) -> Result<Reply, String> {
        let answer = loop {
            let (open, reused) = match &mut *connection {
                Some(open) if start < open.expiry && http1::is_open(&open.stream) => (open, true),
                // Boxed: a rare path, which would otherwise make every call's
                // future as large as a connection attempt's, copied at each call.
                slot => (slot.insert(Box::pin(self.connect()).await?), false),
            };
            match http1::exchange(&mut open.stream, buffer, request).await {
                Ok(answer) => break answer,
                // A kept connection that the other end closed meanwhile is
                // replaced, and the request, not sent, goes on a new one.
                Err(Failure::Unsent(_)) if reused => *connection = None,
                Err(Failure::Unsent(err) | Failure::Failed(err)) => {
                    *connection = None;
                    return Err(err);
                }
            }
        };
        if !answer.reusable {
            *connection = None;
        }
        if !answer.status.is_success() {
            let reason = String::from_utf8_lossy(&answer.body);
            let reason = reason.lines().next().unwrap_or("");
            return Err(format!("answered {}: {reason}", answer.status));
        }
        Ok(Reply {
            body: answer.body,
            instance: answer.instance,
        })
    }

    /// A new connection, with its lifetime.
    async fn connect(&self) -> Result<Open, String> {
        let stream = self
            .connector
            .clone()
            .oneshot(self.destination.clone())
            .await
            .map_err(|err| format!("client error (Connect): {}", error_chain(&err)))?
            .into_inner();
        let lifetime = self.max_age.mul_f64(rand::random_range(0.5..=1.0));
        Ok(Open {
            stream,
            expiry: Instant::now() + lifetime,
        })
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
