//! HTTP from the outside: a plain `GET`, and raw bytes for the requests no
//! HTTP client would send.

use std::time::Duration;

/// `GET url`: status, the `X-Instance` header, and the body.
pub async fn get(url: &str) -> (u16, Option<String>, String) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let status = response.status().as_u16();
    let instance = response
        .headers()
        .get(crate::http::INSTANCE_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.expect("response body");
    (status, instance, body)
}

/// Sends `request` as it is, bytes and all, on a new connection to
/// `127.0.0.1:port`; returns the status code (0 if none came) and everything
/// that came back. For requests no HTTP client would send.
pub async fn raw_request(port: u16, request: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // The server may answer and close before reading everything (431).
    let _ = stream.write_all(request).await;
    read_answer(stream).await
}

/// Reads until the server closes (or 5 s pass): the status code (0 if none
/// came) and everything that came back.
pub async fn read_answer(mut stream: tokio::net::TcpStream) -> (u16, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let status = String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// The body of a raw HTTP answer: what follows the blank line.
pub fn body_of(answer: &[u8]) -> &[u8] {
    answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|end| &answer[end + 4..])
        .unwrap_or(&[])
}
