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
    /// Both steps of the stop, for tests of the drain.
    pub stop: crate::shutdown::Stop,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Stops the service as SIGTERM would with no drain, and returns what
    /// `run` returned.
    pub async fn stop(self) -> Result<(), String> {
        self.stop.draining.cancel();
        self.shutdown.cancel();
        self.task.await.map_err(|err| err.to_string())?
    }
}

/// Starts a service's `run` with `args` (e.g. `["--delay", "0"]`).
pub async fn spawn<C, F, Fut, E>(name: &'static str, args: &[&str], run: F) -> Running
where
    C: clap::Args + Send + 'static,
    F: FnOnce(C, crate::Service) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let cli = crate::parse_from::<C, _, _>(name, "test", std::iter::once(&name).chain(args))
        .expect("valid test arguments");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("local address");
    let stop = crate::shutdown::Stop::default();
    let service = crate::Service {
        instance: cli.common.instance(),
        listener,
        shutdown: stop.shutdown.clone(),
        draining: stop.draining.clone(),
        ignore_sigterm: stop.ignore_sigterm.clone(),
        common: cli.common,
    };
    let running = run(cli.service, service);
    let task = tokio::spawn(async move { running.await.map_err(|err| err.to_string()) });
    Running {
        address,
        shutdown: stop.shutdown.clone(),
        stop,
        task,
    }
}

static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A loopback port in `range` that was free a moment ago, picked at random so
/// that tests running at once rarely try the same one.
pub fn free_port_in(range: std::ops::Range<u16>) -> u16 {
    let span = u64::from(range.end - range.start);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 16);
    for _ in 0..200 {
        // xorshift: good enough to spread tests over the range.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = range.start + (seed % span) as u16;
        // Never the same port twice in one test process: tests run at once.
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !given.contains(&port) && TcpListener::bind(("0.0.0.0", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in {range:?}");
}

/// A service binary run as a child process on its own port, its standard
/// output kept line by line; SIGKILLed on drop if still running.
pub struct Process {
    pub name: String,
    pub port: u16,
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    /// Starts `binary` with `PORT` set to a free port of `ports`, `INSTANCE`
    /// to its name, `SHUTDOWN_DRAIN=0` (a stop without the drain, unless a
    /// test asks for one), and `env` on top.
    pub fn start(binary: &str, ports: std::ops::Range<u16>, env: &[(&str, &str)]) -> Process {
        let port = free_port_in(ports);
        let name = std::path::Path::new(binary)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| binary.to_owned());
        let mut child = std::process::Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("INSTANCE", format!("{name}-test"))
            .env("SHUTDOWN_DRAIN", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {binary}: {err}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = lines.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("  {line}");
                keep.lock().expect("log lines").push(line);
            }
        });
        Process {
            name,
            port,
            child,
            lines,
            reader: Some(reader),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `GET path` answers 200 (`/healthz`, or `/readyz`).
    pub async fn wait_for(&mut self, path: &str) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = client.get(self.url(path)).send().await
                && response.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status} before {path} answered", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{}: {path} did not answer 200 within 20 s",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` (`TERM`, `INT`) without waiting.
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends `signal` (`TERM`, `INT`) and waits up to 10 s for the exit.
    /// Returns the exit status and the time from the signal to the exit.
    pub async fn signal_and_wait(&mut self, signal: &str) -> (std::process::ExitStatus, Duration) {
        self.signal(signal);
        self.wait_for_exit(&format!("SIG{signal}")).await
    }

    /// Waits up to 10 s for the exit (`after` names what should have caused
    /// it, for the panic message). Returns the exit status and the wait.
    pub async fn wait_for_exit(&mut self, after: &str) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                let elapsed = start.elapsed();
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return (status, elapsed);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                panic!("{} still running 10 s after {after}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Standard output so far, one entry per line.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("log lines").clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of the sample `series` (name and labels exactly as rendered,
/// e.g. `worker_units_total` or `http_requests_total{route="/",method="GET",status="200"}`)
/// in Prometheus text, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

/// The metric names that have a `# TYPE` line in Prometheus text.
pub fn metric_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

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

/// Runs `<binary> healthcheck [args]` with `PORT` set to `port`: its exit
/// code and its standard output.
pub fn healthcheck(binary: &str, port: u16, args: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(binary)
        .env_clear()
        .env("PORT", port.to_string())
        .arg("healthcheck")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {binary}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code().unwrap_or(-1), stdout)
}

/// The metrics in Prometheus text that are missing from [`crate::metrics::METRICS`].
pub fn undocumented_metrics(text: &str) -> Vec<String> {
    metric_names(text)
        .into_iter()
        .filter(|name| !crate::metrics::METRICS.iter().any(|m| m.name == name))
        .collect()
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
