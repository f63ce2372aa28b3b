//! A real `redis-server` for tests, started on a free loopback port with
//! append-only persistence in a temporary directory, stopped on drop.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::free_port;

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// More `redis-server` arguments (replication settings).
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts `redis-server`; panics with a clear message if it is missing
    /// (the README's test command installs it).
    pub async fn start() -> RedisServer {
        RedisServer::start_with(free_port(), Vec::new()).await
    }

    /// Starts `redis-server` on `port` with more arguments.
    pub async fn start_with(port: u16, extra: Vec<String>) -> RedisServer {
        let dir = tempfile::tempdir().expect("temporary directory for redis");
        let mut server = RedisServer {
            port,
            dir,
            child: None,
            extra,
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
            .args(&self.extra)
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

    /// Sends `signal` (`STOP`, `CONT`) to the server: a stopped server
    /// answers nothing, as one cut off would.
    pub fn signal(&self, signal: &str) {
        let Some(pid) = self.child.as_ref().and_then(Child::id) else {
            return;
        };
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed");
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
