//! The `healthcheck` subcommand, which a container's `HEALTHCHECK` runs:
//! the image has no shell and no curl, so the binary asks itself.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The `healthcheck` subcommand: `GET http://127.0.0.1:<port>/healthz`, or
/// the `--url` given (an http:// URL), and exit 0 on a 2xx answer.
///
/// hyper's client, the one the worker uses: it reads no `HTTP_PROXY`, so a
/// proxy in the container's environment cannot take the probe elsewhere.
pub async fn run(url: &str) -> ExitCode {
    let client: HyperClient<HttpConnector, Empty<Bytes>> =
        HyperClient::builder(TokioExecutor::new()).build_http();
    let request = match url.parse() {
        Ok(uri) => client.get(uri),
        Err(err) => {
            println!("unhealthy: {url}: {err}");
            return ExitCode::FAILURE;
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), request).await {
        Ok(Ok(response)) if response.status().is_success() => {
            println!("healthy: {url} answered {}", response.status());
            ExitCode::SUCCESS
        }
        Ok(Ok(response)) => {
            println!("unhealthy: {url} answered {}", response.status());
            ExitCode::FAILURE
        }
        Ok(Err(err)) => {
            println!("unhealthy: {url}: {}", crate::error::error_chain(&err));
            ExitCode::FAILURE
        }
        Err(_) => {
            println!("unhealthy: {url}: no answer within 2 s");
            ExitCode::FAILURE
        }
    }
}
