//! Configuration: every knob is an environment variable with a command-line
//! twin, and its default is the classic app's value. A bad value stops the
//! service at start with one line naming the variable and what it expected
//! ([`bad_value`]); other command-line errors are clap's own.

use std::time::Duration;

use clap::Args;
use clap::error::{ContextKind, ContextValue};

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

/// The one line that says which knob has a bad value:
/// `VARIABLE (--flag): invalid value 'x': what was expected`, made of the
/// parts clap keeps in its error (the argument, the value, and the value
/// parser's own error, or the possible values). `None` when the error is
/// not about a value (an unknown flag, a missing one): clap's own message
/// says it best.
pub fn bad_value(command: &clap::Command, err: &clap::Error) -> Option<String> {
    let text = |kind| match err.get(kind) {
        Some(ContextValue::String(text)) => Some(text),
        _ => None,
    };
    let (arg, value) = (
        text(ContextKind::InvalidArg)?,
        text(ContextKind::InvalidValue)?,
    );
    // Built, the command's arguments render as clap renders them in errors.
    let mut command = command.clone();
    command.build();
    let knob = command
        .get_arguments()
        .find(|known| known.to_string() == *arg)?;
    let flag = match knob.get_long() {
        Some(long) => format!("--{long}"),
        None => arg.clone(),
    };
    let reason = match (
        std::error::Error::source(err),
        err.get(ContextKind::ValidValue),
    ) {
        (Some(reason), _) => reason.to_string(),
        (None, Some(ContextValue::Strings(values))) => {
            format!("possible values: {}", values.join(", "))
        }
        _ => "not accepted".to_owned(),
    };
    Some(match knob.get_env() {
        Some(variable) => format!(
            "{} ({flag}): invalid value '{value}': {reason}",
            variable.to_string_lossy()
        ),
        None => format!("{flag}: invalid value '{value}': {reason}"),
    })
}
