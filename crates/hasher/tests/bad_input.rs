//! Bad input to hasher, over real sockets: each gets a clear 4xx (413 for a
//! body over the limit, 408 for a body that never ends), and none stops
//! hasher from answering the next normal request promptly.

use std::time::{Duration, Instant};

use dockercoins::CancellationToken;
use dockercoins::test_support::{body_of, raw_request, read_answer, spawn};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_BODY: usize = 1_048_576;
const BODY_TIMEOUT: Duration = Duration::from_secs(1);
const DELAY: Duration = Duration::from_millis(100);

/// hasher served the way the binary serves it, with the classic 100 ms
/// delay, the default 1 MiB limit and a body timeout of 1 s.
struct Hasher {
    port: u16,
    stop: CancellationToken,
}

impl Hasher {
    async fn start() -> Hasher {
        let (delay, max_body, body_timeout) = (
            format!("{}ms", DELAY.as_millis()),
            MAX_BODY.to_string(),
            format!("{}ms", BODY_TIMEOUT.as_millis()),
        );
        let args = [
            "--instance",
            "hasher-bad-input",
            "--delay",
            &delay,
            "--max-body",
            &max_body,
            "--body-timeout",
            &body_timeout,
            "--shutdown-timeout",
            "1s",
        ];
        let running = spawn("hasher", &args, hasher::run).await;
        Hasher {
            port: running.address.port(),
            stop: running.shutdown.clone(),
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect")
    }

    /// Sends `request` as it is on a new connection; returns the status code
    /// (0 if none came) and everything that came back.
    async fn raw(&self, request: &[u8]) -> (u16, Vec<u8>) {
        raw_request(self.port, request).await
    }

    async fn post(&self, body: &[u8]) -> (u16, Vec<u8>) {
        let mut request = format!(
            "POST / HTTP/1.1\r\nHost: hasher\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.raw(&request).await
    }

    /// A normal request: the right hash, in under a second.
    async fn assert_still_serves(&self) {
        let start = Instant::now();
        let (status, answer) = self.post(b"abc").await;
        let took = start.elapsed();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        assert_eq!(
            body_of(&answer),
            b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(took < Duration::from_secs(1), "POST / took {took:?}");
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn wrong_methods_and_paths() {
    let hasher = Hasher::start().await;
    for (request, status) in [
        (
            "PUT / HTTP/1.1\r\nHost: hasher\r\nContent-Length: 3\r\n\r\nabc",
            405,
        ),
        ("DELETE / HTTP/1.1\r\nHost: hasher\r\n\r\n", 405),
        (
            "PATCH / HTTP/1.1\r\nHost: hasher\r\nContent-Length: 0\r\n\r\n",
            405,
        ),
        (
            "POST /hash HTTP/1.1\r\nHost: hasher\r\nContent-Length: 3\r\n\r\nabc",
            404,
        ),
        ("GET /nope HTTP/1.1\r\nHost: hasher\r\n\r\n", 404),
        (
            "POST / HTTP/1.1\r\nHost: hasher\r\nContent-Length: abc\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: hasher\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: hasher\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        ("GET / HTTP/1.1\r\nHost: hasher\r\n\r\n", 200),
    ] {
        let request = request.replacen("\r\n", "\r\nConnection: close\r\n", 1);
        let (got, answer) = hasher.raw(request.as_bytes()).await;
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(got, status, "{request:?}: {text}");
    }
    hasher.assert_still_serves().await;
}

#[tokio::test]
async fn bodies_up_to_the_limit_are_hashed() {
    let hasher = Hasher::start().await;
    for body_len in [0, 1, 32, MAX_BODY] {
        let data = vec![b'x'; body_len];
        let (status, answer) = hasher.post(&data).await;
        assert_eq!(status, 200, "{body_len} bytes");
        assert_eq!(body_of(&answer), hex(&data).as_bytes(), "{body_len} bytes");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let hasher = Hasher::start().await;
    // Announced with Content-Length: refused before it is sent.
    let request = format!(
        "POST / HTTP/1.1\r\nHost: hasher\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        MAX_BODY + 1
    );
    let (status, answer) = hasher.raw(request.as_bytes()).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    // Announced as a huge size.
    let request = "POST / HTTP/1.1\r\nHost: hasher\r\nContent-Length: 99999999999\r\nConnection: close\r\n\r\n";
    let (status, _) = hasher.raw(request.as_bytes()).await;
    assert_eq!(status, 413, "Content-Length: 99999999999");
    // Chunked, with no size announced: refused once it passes the limit.
    let mut stream = hasher.connect().await;
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: hasher\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let chunk = format!("10000\r\n{}\r\n", "y".repeat(0x10000));
    let sender = tokio::spawn(async move {
        let mut stream = stream;
        for _ in 0..(MAX_BODY / 0x10000 + 1) {
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        stream
    });
    let stream = sender.await.expect("sender");
    let (status, answer) = read_answer(stream).await;
    assert_eq!(
        status,
        413,
        "a chunked body over the limit: {}",
        String::from_utf8_lossy(&answer)
    );
    hasher.assert_still_serves().await;
}

#[tokio::test]
async fn a_body_that_never_ends_gets_408() {
    let hasher = Hasher::start().await;
    // Announces 100 bytes, sends 10.
    let start = Instant::now();
    let mut short = hasher.connect().await;
    short
        .write_all(b"POST / HTTP/1.1\r\nHost: hasher\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    // Chunked, a chunk every 100 ms, never the last one.
    let mut endless = hasher.connect().await;
    endless
        .write_all(b"POST / HTTP/1.1\r\nHost: hasher\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("write");
    let dripping = tokio::spawn(async move {
        let mut answer = Vec::new();
        loop {
            tokio::select! {
                read = endless.read_buf(&mut answer) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        return answer;
                    }
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        return answer;
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if endless.write_all(b"1\r\nz\r\n").await.is_err() {
                        return answer;
                    }
                }
            }
        }
    });
    // Meanwhile, normal requests are served.
    hasher.assert_still_serves().await;

    let (status, answer) = read_answer(short).await;
    let took = start.elapsed();
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&answer));
    assert!(
        String::from_utf8_lossy(&answer)
            .contains("request timeout: the body did not arrive within"),
        "a one-line reason: {}",
        String::from_utf8_lossy(&answer)
    );
    let limit = BODY_TIMEOUT + DELAY;
    assert!(
        took >= limit && took < limit + Duration::from_secs(1),
        "408 after {took:?}, expected about {limit:?}"
    );
    let answer = dripping.await.expect("dripping task");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "an endless chunked body: {text}"
    );
    hasher.assert_still_serves().await;
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let hasher = Hasher::start().await;
    let big = format!(
        "POST / HTTP/1.1\r\nHost: hasher\r\nX-Big: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (status, _) = hasher.raw(big.as_bytes()).await;
    assert_eq!(status, 431, "a 1 MiB header");
    let many: String = (0..200).map(|n| format!("X-Header-{n}: {n}\r\n")).collect();
    let many = format!(
        "POST / HTTP/1.1\r\nHost: hasher\r\n{many}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (status, _) = hasher.raw(many.as_bytes()).await;
    assert_eq!(status, 431, "200 headers");
    hasher.assert_still_serves().await;
}

#[tokio::test]
async fn idle_and_slow_connections_do_not_block_a_normal_request() {
    let hasher = Hasher::start().await;
    let mut idle = Vec::new();
    let mut slow = Vec::new();
    for _ in 0..150 {
        idle.push(hasher.connect().await);
    }
    // Half a request head...
    for _ in 0..150 {
        let mut stream = hasher.connect().await;
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: hasher\r\nX-Slow: a")
            .await
            .expect("write");
        slow.push(stream);
    }
    // ...and a body sent a byte at a time.
    for _ in 0..150 {
        let mut stream = hasher.connect().await;
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: hasher\r\nContent-Length: 1000\r\n\r\nb")
            .await
            .expect("write");
        slow.push(stream);
    }
    for _ in 0..3 {
        for stream in &mut slow {
            let _ = stream.write_all(b"b").await;
        }
        hasher.assert_still_serves().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(idle);
    drop(slow);
    hasher.assert_still_serves().await;
}

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
