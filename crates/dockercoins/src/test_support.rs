//! A real `redis-server` for tests, started on a free loopback port with
//! append-only persistence in a temporary directory, stopped on drop.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server`; panics with a clear message if it is missing
    /// (the README's test command installs it).
    pub async fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temporary directory for redis");
        let port = free_port();
        let mut server = RedisServer {
            port,
            dir,
            child: None,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and data (after `kill`).
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server not found: install it (apt-get install redis-server)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("redis url");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILLs the server, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// A plain client connection, to read or seed keys.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A service started in-process on `127.0.0.1:0`, from the same command line
/// its binary takes; cancelled and awaited by [`Running::stop`].
pub struct Running {
    pub address: std::net::SocketAddr,
    pub shutdown: crate::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Stops the service as SIGTERM would, and returns what `run` returned.
    pub async fn stop(self) -> Result<(), String> {
        self.shutdown.cancel();
        self.task.await.map_err(|err| err.to_string())?
    }
}

/// Starts a service's `run` with `args` (e.g. `["--delay", "0"]`).
pub async fn spawn<C, F, Fut>(name: &'static str, args: &[&str], run: F) -> Running
where
    C: clap::Args + Send + 'static,
    F: FnOnce(C, crate::Service) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let cli = crate::parse_from::<C, _, _>(name, "test", std::iter::once(&name).chain(args))
        .expect("valid test arguments");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("local address");
    let shutdown = crate::CancellationToken::new();
    let service = crate::Service {
        instance: cli.common.instance(),
        listener,
        shutdown: shutdown.clone(),
        common: cli.common,
    };
    let task = tokio::spawn(run(cli.service, service));
    Running {
        address,
        shutdown,
        task,
    }
}
