//! A highly available Redis for tests: a primary, two replicas and three
//! Sentinels on the loopback, as the Compose override runs them.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::{RedisServer, free_port};

/// A highly available Redis on the loopback: a primary, two replicas and
/// three Sentinels watching it as `mymaster`, as the Compose override runs it.
/// Writes need one replica (`min-replicas-to-write 1`) on every server.
pub struct RedisHa {
    /// The primary first, then the replicas.
    pub servers: Vec<RedisServer>,
    pub sentinel_ports: Vec<u16>,
    sentinels: Vec<Child>,
    _sentinel_dir: tempfile::TempDir,
}

impl RedisHa {
    pub const PRIMARY: &str = "mymaster";

    pub async fn start() -> RedisHa {
        let safety = [
            "--min-replicas-to-write",
            "1",
            "--min-replicas-max-lag",
            "10",
        ];
        let safety: Vec<String> = safety.iter().map(|arg| (*arg).to_owned()).collect();
        let primary = RedisServer::start_with(free_port(), safety.clone()).await;
        let mut servers = vec![primary];
        for _ in 0..2 {
            let mut args = safety.clone();
            args.extend(["--replicaof".to_owned(), "127.0.0.1".to_owned()]);
            args.push(servers[0].port.to_string());
            servers.push(RedisServer::start_with(free_port(), args).await);
        }
        let dir = tempfile::tempdir().expect("temporary directory for sentinels");
        let mut sentinels = Vec::new();
        let mut sentinel_ports = Vec::new();
        for n in 0..3 {
            let (child, port) =
                start_sentinel(dir.path(), &format!("sentinel-{n}"), servers[0].port, 2);
            sentinels.push(child);
            sentinel_ports.push(port);
        }
        let ha = RedisHa {
            servers,
            sentinel_ports,
            sentinels,
            _sentinel_dir: dir,
        };
        ha.wait_until_ready().await;
        ha
    }

    /// `127.0.0.1:port,...`, for `REDIS_SENTINELS`.
    pub fn sentinels(&self) -> String {
        self.sentinel_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Until both replicas are in sync and every Sentinel knows the others.
    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ready = self.replicas_of(self.servers[0].port).await == 2;
            for port in &self.sentinel_ports {
                let info = sentinel_field(*port, "num-other-sentinels").await;
                ready &= info.as_deref() == Some("2");
            }
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the sentinels did not settle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many replicas the server on `port` has online.
    pub async fn replicas_of(&self, port: u16) -> usize {
        let info: String = async {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
            let mut connection = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut connection)
                .await
                .ok()
        }
        .await
        .unwrap_or_default();
        info.lines()
            .filter(|line| line.starts_with("slave") && line.contains("state=online"))
            .count()
    }

    /// The primary's port as the first Sentinel names it.
    pub async fn primary_port(&self) -> Option<u16> {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{}", self.sentinel_ports[0])).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(Self::PRIMARY)
            .query_async(&mut connection)
            .await
            .ok()?;
        Some(port)
    }

    /// The server on `port`.
    pub fn server(&mut self, port: u16) -> &mut RedisServer {
        self.servers
            .iter_mut()
            .find(|server| server.port == port)
            .expect("one of this set's servers")
    }
}

/// A Sentinel on the loopback (`redis-server --sentinel`, killed when the
/// child is dropped) watching the primary at `primary_port` as
/// `RedisHa::PRIMARY`; its configuration is `dir/name.conf`. Returns it and
/// its port.
pub fn start_sentinel(
    dir: &std::path::Path,
    name: &str,
    primary_port: u16,
    quorum: u32,
) -> (Child, u16) {
    let port = free_port();
    let conf = dir.join(format!("{name}.conf"));
    let text = format!(
        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
         sentinel monitor {primary} 127.0.0.1 {primary_port} {quorum}\n\
         sentinel down-after-milliseconds {primary} 1000\n\
         sentinel failover-timeout {primary} 5000\n",
        dir = dir.display(),
        primary = RedisHa::PRIMARY,
    );
    std::fs::write(&conf, text).expect("write sentinel.conf");
    let child = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server not found: install it (apt-get install redis-server)");
    (child, port)
}

impl Drop for RedisHa {
    fn drop(&mut self) {
        for sentinel in &mut self.sentinels {
            let _ = sentinel.start_kill();
        }
    }
}

async fn sentinel_field(port: u16, field: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
    let fields: Vec<String> = redis::cmd("SENTINEL")
        .arg("master")
        .arg(RedisHa::PRIMARY)
        .query_async(&mut connection)
        .await
        .ok()?;
    let at = fields.iter().position(|name| name == field)?;
    fields.get(at + 1).cloned()
}
