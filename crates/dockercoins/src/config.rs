//! Configuration: every knob is an environment variable with a command-line
//! twin, and its default is the classic app's value. A bad value stops the
//! service at start with one line naming the variable and what it expected.

use std::process::ExitCode;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, FromArgMatches};

use crate::Cli;

/// The knobs every service has.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Port to listen on, on all interfaces.
    #[arg(long, env = "PORT", default_value_t = 80)]
    pub port: u16,

    /// The name this service reports itself by (default: the hostname).
    #[arg(long, env = "INSTANCE")]
    pub instance: Option<String>,

    /// Log format: `text` for people, `json` for log shippers.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// `y`, `yes`... turns on debug logs, as in the classic app.
    #[arg(long, env = "DEBUG", default_value = "")]
    pub debug: String,

    /// After SIGTERM, how long /readyz answers 503 while the listener stays
    /// open and serves, so that load balancers stop sending here first.
    #[arg(long, env = "SHUTDOWN_DRAIN", default_value = "3s", value_parser = duration)]
    pub shutdown_drain: Duration,

    /// Longest wait for open connections after the drain before exiting anyway.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub shutdown_timeout: Duration,
}

impl Common {
    /// `INSTANCE`, or the hostname, or `unknown` where neither can be had.
    pub fn instance(&self) -> String {
        match &self.instance {
            Some(name) if !name.is_empty() => name.clone(),
            _ => hostname(),
        }
    }

    pub fn debug(&self) -> bool {
        self.debug.to_ascii_lowercase().starts_with('y')
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Parses a duration written like `100ms`, `2s`, `1m30s`, or a bare `0`.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|_| "expected a duration such as 100ms, 2s or 0".to_owned())
}

/// Parses the command line and environment. On a bad value it prints one line,
/// `<name>: VARIABLE (--flag): invalid value 'x': what was expected`, and
/// returns the exit code; `--help` and `--version` print as usual.
pub(crate) fn parse<C: Args>(name: &'static str, about: &'static str) -> Result<Cli<C>, ExitCode> {
    let command = crate::command::<C>(name, about);
    let result = command
        .clone()
        .try_get_matches()
        .and_then(|mut matches| Cli::<C>::from_arg_matches_mut(&mut matches));
    match result {
        Ok(cli) => Ok(cli),
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = err.print();
            Err(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("{name}: {}", one_line(&command, &err));
            Err(ExitCode::from(2))
        }
    }
}

/// Turns a Clap error into one line that names the environment variable.
pub fn one_line(command: &clap::Command, err: &clap::Error) -> String {
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    match (
        context(ContextKind::InvalidArg),
        context(ContextKind::InvalidValue),
    ) {
        (Some(arg), Some(value)) => {
            let flag = arg.split_whitespace().next().unwrap_or(&arg);
            let variable = command
                .get_arguments()
                .find(|a| a.get_long().is_some_and(|long| flag == format!("--{long}")))
                .and_then(|a| a.get_env())
                .map(|env| env.to_string_lossy().into_owned());
            let reason = err
                .to_string()
                .lines()
                .next()
                .and_then(|line| line.rsplit_once("': ").map(|(_, r)| r.to_owned()))
                .unwrap_or_else(|| "not accepted".to_owned());
            match variable {
                Some(variable) => {
                    format!("{variable} ({flag}): invalid value '{value}': {reason}")
                }
                None => format!("{flag}: invalid value '{value}': {reason}"),
            }
        }
        _ => err
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid command line")
            .trim_start_matches("error: ")
            .to_owned(),
    }
}
