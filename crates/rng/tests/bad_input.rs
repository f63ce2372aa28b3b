//! Bad input to rng, over real sockets: each gets a clear 4xx, and none
//! stops rng from answering the next normal request promptly.

use std::time::{Duration, Instant};

use dockercoins::CancellationToken;
use dockercoins::test_support::{body_of, raw_request, spawn};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// rng served the way the binary serves it (operations endpoints, limits),
/// with the classic 100 ms delay and its line of one.
struct Rng {
    port: u16,
    stop: CancellationToken,
}

impl Rng {
    async fn start() -> Rng {
        let args = [
            "--instance",
            "rng-bad-input",
            "--delay",
            "100ms",
            "--concurrency",
            "1",
            "--shutdown-timeout",
            "1s",
        ];
        let running = spawn("rng", &args, rng::run).await;
        Rng {
            port: running.address.port(),
            stop: running.shutdown.clone(),
        }
    }

    /// Sends `request` as it is on a new connection; returns the status code
    /// (0 if none came) and everything that came back.
    async fn raw(&self, request: &[u8]) -> (u16, Vec<u8>) {
        raw_request(self.port, request).await
    }

    async fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: rng\r\nConnection: close\r\n\r\n");
        self.raw(request.as_bytes()).await
    }

    /// A normal request: 32 bytes, served in under a second.
    async fn assert_still_serves(&self) {
        let start = Instant::now();
        let (status, answer) = self.get("/32").await;
        let took = start.elapsed();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        assert_eq!(body_of(&answer).len(), 32);
        assert!(took < Duration::from_secs(1), "GET /32 took {took:?}");
    }
}

impl Drop for Rng {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn sizes_that_are_not_a_number_of_bytes() {
    let rng = Rng::start().await;
    let cases = [
        // (path, status, what it is)
        ("/abc", 404, "not an integer"),
        ("/1.5", 404, "not an integer"),
        ("/0x20", 404, "not decimal"),
        ("/-1", 404, "negative"),
        ("/-32", 404, "negative"),
        ("/+32", 404, "a sign"),
        ("/%20", 404, "an encoded space"),
        ("/1e3", 404, "an exponent"),
        ("/18446744073709551616", 400, "huge (2^64)"),
        ("/99999999999999999999999999999999", 400, "huge"),
        ("/1048577", 400, "over RNG_MAX_BYTES"),
        ("/4294967296", 400, "over RNG_MAX_BYTES (4 GiB)"),
    ];
    for (path, status, what) in cases {
        let (got, answer) = rng.get(path).await;
        let text = String::from_utf8_lossy(body_of(&answer)).into_owned();
        assert_eq!(got, status, "GET {path} ({what}): {text}");
        assert_eq!(
            text.lines().count(),
            1,
            "GET {path}: one line of reason: {text:?}"
        );
    }
    rng.assert_still_serves().await;
}

#[tokio::test]
async fn sizes_at_the_limits_are_served() {
    let rng = Rng::start().await;
    for (path, len) in [
        ("/0", 0),
        ("/32", 32),
        ("/00032", 32),
        ("/1048576", 1_048_576),
    ] {
        let (status, answer) = rng.get(path).await;
        assert_eq!(status, 200, "GET {path}");
        assert_eq!(body_of(&answer).len(), len, "GET {path}");
    }
}

#[tokio::test]
async fn wrong_methods_and_paths() {
    let rng = Rng::start().await;
    for (request, status) in [
        (
            "POST /32 HTTP/1.1\r\nHost: rng\r\nContent-Length: 0\r\n",
            405,
        ),
        ("DELETE / HTTP/1.1\r\nHost: rng\r\n", 405),
        ("GET /32/64 HTTP/1.1\r\nHost: rng\r\n", 404),
        ("GET /../../etc/passwd HTTP/1.1\r\nHost: rng\r\n", 404),
        ("BREW /32 HTTP/1.1\r\nHost: rng\r\n", 405),
        ("GET /32 HTTP/9.9\r\nHost: rng\r\n", 400),
        ("this is not http\r\n", 400),
    ] {
        let request = format!("{request}Connection: close\r\n\r\n");
        let (got, answer) = rng.raw(request.as_bytes()).await;
        assert_eq!(
            got,
            status,
            "{request:?}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    rng.assert_still_serves().await;
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let rng = Rng::start().await;
    // One header of 1 MiB, more than hyper's ~400 KiB request-head buffer.
    let big = format!(
        "GET /32 HTTP/1.1\r\nHost: rng\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (status, _) = rng.raw(big.as_bytes()).await;
    assert_eq!(status, 431, "a 1 MiB header");
    // 200 small headers, more than the 100 allowed.
    let many: String = (0..200).map(|n| format!("X-Header-{n}: {n}\r\n")).collect();
    let many = format!("GET /32 HTTP/1.1\r\nHost: rng\r\n{many}Connection: close\r\n\r\n");
    let (status, _) = rng.raw(many.as_bytes()).await;
    assert_eq!(status, 431, "200 headers");
    rng.assert_still_serves().await;
}

#[tokio::test]
async fn idle_and_slow_connections_do_not_block_a_normal_request() {
    let rng = Rng::start().await;
    let mut held = Vec::new();
    // 200 connections that send nothing...
    for _ in 0..200 {
        held.push(
            TcpStream::connect(("127.0.0.1", rng.port))
                .await
                .expect("connect"),
        );
    }
    // ...and 200 that send half a request and then nothing.
    for _ in 0..200 {
        let mut stream = TcpStream::connect(("127.0.0.1", rng.port))
            .await
            .expect("connect");
        stream
            .write_all(b"GET /32 HTTP/1.1\r\nHost: rng\r\nX-Slow: a")
            .await
            .expect("write");
        held.push(stream);
    }
    // A byte now and then on each slow one, while normal requests come.
    for round in 0..3 {
        for stream in held.iter_mut().skip(200) {
            let _ = stream.write_all(b"a").await;
        }
        rng.assert_still_serves().await;
        tokio::time::sleep(Duration::from_millis(200 * round)).await;
    }
    drop(held);
    rng.assert_still_serves().await;
}
