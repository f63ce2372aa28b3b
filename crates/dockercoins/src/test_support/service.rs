//! A service run in-process, on `127.0.0.1:0`, from the same command line its
//! binary takes: its routes and its work, without a child process.

/// A service started in-process on `127.0.0.1:0`, from the same command line
/// its binary takes; cancelled and awaited by [`Running::stop`].
pub struct Running {
    pub address: std::net::SocketAddr,
    pub shutdown: tokio_util::sync::CancellationToken,
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
    F: FnOnce(C, crate::service::Service) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let cli =
        crate::service::parse_from::<C, _, _>(name, "test", std::iter::once(&name).chain(args))
            .expect("valid test arguments");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("local address");
    let stop = crate::shutdown::Stop::default();
    let service = crate::service::Service {
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
