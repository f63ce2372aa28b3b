//! Bad input to webui, over real sockets: paths that try to leave the assets
//! directory, wrong methods, oversized headers, idle and slow connections,
//! and Redis going away. Each gets a clear answer, and none stops webui from
//! answering the next normal request promptly.

use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use dockercoins::redis::RedisOptions;
use dockercoins::test_support::RedisServer;
use dockercoins::{CancellationToken, Common, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// Ports 33300-33399 belong to these tests.
static NEXT_PORT: AtomicU16 = AtomicU16::new(33300);

/// What the files outside the assets directory hold; no answer may show it.
const SECRET: &str = "secret-outside-the-assets";

struct Webui {
    port: u16,
    stop: CancellationToken,
}

impl Webui {
    /// webui served the way the binary serves it; with `assets_dir`, the
    /// page comes from that directory (the live-editing mode).
    async fn start(redis: &RedisServer, assets_dir: Option<&Path>) -> Webui {
        let (port, listener) = loop {
            let port = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
            assert!(port < 33400, "no free port left in 33300-33399");
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
                break (port, listener);
            }
        };
        let stop = CancellationToken::new();
        let service = Service {
            instance: "webui-bad-input".to_owned(),
            listener,
            shutdown: stop.clone(),
            draining: stop.clone(),
            ignore_sigterm: Default::default(),
            common: Common {
                port,
                instance: None,
                log_format: "text".to_owned(),
                debug: String::new(),
                shutdown_drain: Duration::ZERO,
                shutdown_timeout: Duration::from_secs(1),
            },
        };
        let config = webui::Config {
            redis: RedisOptions::at(redis.url()),
            assets_dir: assets_dir.map(Path::to_owned),
        };
        tokio::spawn(webui::run(config, service));
        Webui { port, stop }
    }

    /// Sends `request` as it is on a new connection; returns the status code
    /// (0 if none came) and everything that came back, as text.
    async fn raw(&self, request: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect");
        // The server may answer and close before reading everything (431).
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        (status, answer)
    }

    async fn request(&self, method: &str, path: &str) -> (u16, String) {
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: webui\r\nConnection: close\r\n\r\n");
        self.raw(request.as_bytes()).await
    }

    /// A normal request: `/json` with the counters, in under a second.
    async fn assert_still_serves(&self) {
        let start = Instant::now();
        let (status, answer) = self.request("GET", "/json").await;
        let took = start.elapsed();
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("\"hashes\":"), "{answer}");
        assert!(took < Duration::from_secs(1), "GET /json took {took:?}");
    }
}

impl Drop for Webui {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Paths that try to reach a file outside the assets directory, raw and
/// percent-encoded, with `/` and `\`.
const TRAVERSALS: [&str; 14] = [
    "/../secret.txt",
    "/../../../../../../etc/passwd",
    "/%2e%2e/secret.txt",
    "/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
    "/%2e%2e%2fsecret.txt",
    "/.%2e/secret.txt",
    "/..%2fsecret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/index.html/../../secret.txt",
    "/./../secret.txt",
    "/%252e%252e/secret.txt",
    "//etc/passwd",
    "/licenses/../../secret.txt",
];

/// A directory with the page in `assets/` and a secret file beside it.
fn assets_with_a_secret_beside() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temporary directory");
    let assets = root.path().join("assets");
    std::fs::create_dir_all(assets.join("licenses")).expect("assets dir");
    std::fs::write(assets.join("index.html"), "<html>page</html>\n").expect("index.html");
    std::fs::write(root.path().join("secret.txt"), SECRET).expect("secret");
    root
}

fn assert_refused(path: &str, status: u16, answer: &str) {
    assert_eq!(status, 404, "GET {path}: {answer}");
    assert!(
        !answer.contains(SECRET) && !answer.contains("root:") && !answer.contains("[package]"),
        "GET {path} leaked a file: {answer}"
    );
}

#[tokio::test]
async fn path_traversal_is_refused_with_embedded_assets() {
    let redis = RedisServer::start().await;
    let webui = Webui::start(&redis, None).await;
    let (status, answer) = webui.request("GET", "/index.html").await;
    assert_eq!(status, 200, "{answer}");
    // The embedded assets come from crates/webui/assets: its Cargo.toml is
    // one step up.
    let beside = ["/../Cargo.toml", "/%2e%2e/Cargo.toml", "/..%2fCargo.toml"];
    for path in TRAVERSALS.iter().chain(&beside) {
        let (status, answer) = webui.request("GET", path).await;
        assert_refused(path, status, &answer);
    }
    // Requests for a file with no leading slash are not HTTP.
    let (status, _) = webui.request("GET", "../../etc/passwd").await;
    assert_eq!(status, 400, "a target that is not a path");
    webui.assert_still_serves().await;
}

#[tokio::test]
async fn path_traversal_is_refused_with_an_assets_directory() {
    let redis = RedisServer::start().await;
    let root = assets_with_a_secret_beside();
    let webui = Webui::start(&redis, Some(&root.path().join("assets"))).await;
    let (status, answer) = webui.request("GET", "/index.html").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("page"), "{answer}");
    for path in TRAVERSALS {
        let (status, answer) = webui.request("GET", path).await;
        assert_refused(path, status, &answer);
    }
    webui.assert_still_serves().await;
}

#[tokio::test]
async fn wrong_methods_on_json_get_405() {
    let redis = RedisServer::start().await;
    let webui = Webui::start(&redis, None).await;
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let request = format!(
            "{method} /json HTTP/1.1\r\nHost: webui\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let (status, answer) = webui.raw(request.as_bytes()).await;
        assert_eq!(status, 405, "{method} /json: {answer}");
    }
    webui.assert_still_serves().await;
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let redis = RedisServer::start().await;
    let webui = Webui::start(&redis, None).await;
    let big = format!(
        "GET /json HTTP/1.1\r\nHost: webui\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (status, _) = webui.raw(big.as_bytes()).await;
    assert_eq!(status, 431, "a 1 MiB header");
    let many: String = (0..200).map(|n| format!("X-Header-{n}: {n}\r\n")).collect();
    let many = format!("GET /json HTTP/1.1\r\nHost: webui\r\n{many}Connection: close\r\n\r\n");
    let (status, _) = webui.raw(many.as_bytes()).await;
    assert_eq!(status, 431, "200 headers");
    webui.assert_still_serves().await;
}

#[tokio::test]
async fn idle_slow_and_streaming_connections_do_not_block_a_normal_request() {
    let redis = RedisServer::start().await;
    let webui = Webui::start(&redis, None).await;
    let connect = || TcpStream::connect(("127.0.0.1", webui.port));
    let mut held = Vec::new();
    for _ in 0..150 {
        held.push(connect().await.expect("connect"));
    }
    let mut slow = Vec::new();
    for _ in 0..150 {
        let mut stream = connect().await.expect("connect");
        stream
            .write_all(b"GET /json HTTP/1.1\r\nHost: webui\r\nX-Slow: a")
            .await
            .expect("write");
        slow.push(stream);
    }
    // Pages left open: event streams that are never read.
    for _ in 0..100 {
        let mut stream = connect().await.expect("connect");
        stream
            .write_all(b"GET /events HTTP/1.1\r\nHost: webui\r\n\r\n")
            .await
            .expect("write");
        held.push(stream);
    }
    for _ in 0..3 {
        for stream in &mut slow {
            let _ = stream.write_all(b"a").await;
        }
        webui.assert_still_serves().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(held);
    drop(slow);
    webui.assert_still_serves().await;
}

#[tokio::test]
async fn redis_down_gets_503_json_then_recovers() {
    let mut redis = RedisServer::start().await;
    let webui = Webui::start(&redis, None).await;
    webui.assert_still_serves().await;
    redis.kill().await;
    for _ in 0..3 {
        let start = Instant::now();
        let (status, answer) = webui.request("GET", "/json").await;
        let took = start.elapsed();
        assert_eq!(status, 503, "{answer}");
        assert!(answer.contains("application/json"), "{answer}");
        assert!(
            answer.contains("{\"error\":\"redis unreachable"),
            "{answer}"
        );
        assert!(took < Duration::from_secs(5), "the 503 took {took:?}");
    }
    let (status, _) = webui.request("GET", "/readyz").await;
    assert_eq!(status, 503, "/readyz with redis down");
    let (status, _) = webui.request("GET", "/index.html").await;
    assert_eq!(status, 200, "the page is still served with redis down");
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = webui.request("GET", "/json").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/json still {status} 5 s after redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    webui.assert_still_serves().await;
}
