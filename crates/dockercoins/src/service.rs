//! The service skeleton: the command line every service has, and the whole
//! life of a service binary around the service's own `run`.

use std::future::Future;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use futures_util::future::LocalBoxFuture;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Common};
use crate::error::{BoxError, error_chain};
use crate::{healthcheck, http, logging, metrics, shutdown};

/// The target of the skeleton's log lines: the crate's name, as they have
/// always had (not this module's path).
const LOG_TARGET: &str = "dockercoins";

/// The command line of every service: the shared knobs, the service's own
/// knobs, and the optional `healthcheck` subcommand.
#[derive(Parser, Debug)]
pub struct Cli<C: Args> {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub service: C,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Ask this service's /healthz on 127.0.0.1 and exit 0 if healthy, 1 if not
    /// (what the images' HEALTHCHECK runs: no curl needed).
    Healthcheck {
        /// Port to probe (default: $PORT).
        #[arg(long)]
        port: Option<u16>,
        /// An http:// URL to GET instead, exit 0 on a 2xx answer: another
        /// service through its Service name (the chart's `helm test` pod).
        #[arg(long, conflicts_with = "port")]
        url: Option<String>,
    },
}

/// What a service gets to run with: who it is, where it listens, and the
/// signals that tell it to stop (see [`shutdown`]).
pub struct Service {
    pub instance: String,
    pub listener: tokio::net::TcpListener,
    /// Cancelled when the service must stop: after the drain that follows
    /// SIGTERM.
    pub shutdown: CancellationToken,
    /// Cancelled at SIGTERM, when the drain starts: `/readyz` answers 503.
    pub draining: CancellationToken,
    /// Makes SIGTERM do nothing (the worker's `WORKER_IGNORE_SIGTERM`).
    pub ignore_sigterm: shutdown::IgnoreSigterm,
    pub common: Common,
}

/// The whole life of a service binary. `run` returns when the service has
/// stopped; its error, if any, is logged and turns into exit code 1.
///
/// Only the parsing of the service's own knobs is generic: the rest is
/// [`run_service`], compiled once, here, for the four services.
pub fn main<C, F, Fut>(name: &'static str, about: &'static str, run: F) -> ExitCode
where
    C: Args + std::fmt::Debug + 'static,
    F: FnOnce(C, Service) -> Fut + 'static,
    Fut: Future<Output = Result<(), BoxError>> + 'static,
{
    let cli: Cli<C> = match parse(name, about) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let knobs = format!("{:?}", cli.service);
    let service = cli.service;
    run_service(
        name,
        cli.common,
        cli.command,
        knobs,
        Box::new(move |handed| Box::pin(run(service, handed))),
    )
}

/// What a service does once it has its knobs: the `healthcheck` subcommand,
/// or logging, metrics, the listener, the signals, then `run`.
fn run_service(
    name: &'static str,
    common: Common,
    command: Option<Command>,
    knobs: String,
    run: Box<dyn FnOnce(Service) -> LocalBoxFuture<'static, Result<(), BoxError>>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{name}: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        if let Some(Command::Healthcheck { port, url }) = command {
            let port = port.unwrap_or(common.port);
            let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{port}/healthz"));
            return healthcheck::run(&url).await;
        }
        logging::init(&common);
        metrics::install_for(name);
        let listener = match http::bind(common.port).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(target: LOG_TARGET, "cannot listen on port {}: {err}", common.port);
                return ExitCode::FAILURE;
            }
        };
        let stop = shutdown::on_signal(common.shutdown_drain);
        let instance = common.instance();
        tracing::info!(target: LOG_TARGET, instance, port = common.port, "{name} starting with {knobs}");
        let service = Service {
            instance,
            listener,
            shutdown: stop.shutdown,
            draining: stop.draining,
            ignore_sigterm: stop.ignore_sigterm,
            common,
        };
        match run(service).await {
            Ok(()) => {
                tracing::info!(target: LOG_TARGET, "{name} stopped");
                ExitCode::SUCCESS
            }
            Err(err) => {
                tracing::error!(target: LOG_TARGET, "{name} failed: {}", error_chain(err.as_ref()));
                ExitCode::FAILURE
            }
        }
    });
    logging::finish();
    code
}

/// The Clap command for a service, for tests and `--help`.
pub fn command<C: Args>(name: &'static str, about: &'static str) -> clap::Command {
    Cli::<C>::command().name(name).about(about)
}

/// Parses a service's command line from explicit arguments (tests).
pub fn parse_from<C: Args, I, T>(
    name: &'static str,
    about: &'static str,
    args: I,
) -> Result<Cli<C>, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut matches = command::<C>(name, about).try_get_matches_from(args)?;
    Cli::<C>::from_arg_matches_mut(&mut matches)
}

/// Parses the command line and environment. On a bad value it prints one line,
/// `<name>: VARIABLE (--flag): invalid value 'x': what was expected`
/// ([`config::bad_value`]), and returns exit code 2; other errors are
/// printed as clap writes them (exit code 2), `--help` and `--version` as
/// usual (exit code 0).
fn parse<C: Args>(name: &'static str, about: &'static str) -> Result<Cli<C>, ExitCode> {
    let command = command::<C>(name, about);
    let result = command
        .clone()
        .try_get_matches()
        .and_then(|mut matches| Cli::<C>::from_arg_matches_mut(&mut matches));
    let err = match result {
        Ok(cli) => return Ok(cli),
        Err(err) => err,
    };
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = err.print();
        return Err(ExitCode::SUCCESS);
    }
    match config::bad_value(&command, &err) {
        Some(line) => eprintln!("{name}: {line}"),
        None => {
            let _ = err.print();
        }
    }
    Err(ExitCode::from(2))
}
