//! A service binary run as a child process, as an operator runs it: its port,
//! its standard output line by line, its signals and its exit; and its
//! `healthcheck` subcommand.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::free_port_in;

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
