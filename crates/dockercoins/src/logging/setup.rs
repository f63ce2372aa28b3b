//! Setting up logging: `RUST_LOG` picks levels (`info`, `info,access=warn`:
//! a default level and one per target); without it, `info`, or `debug` for
//! our own code when `DEBUG=y` (the classic app's switch). `LOG_FORMAT`
//! picks text or JSON; colours only on a terminal.

use std::io::{self, IsTerminal};

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::{access, writer};
use crate::config::Common;

const OUR_CRATES: [&str; 6] = ["dockercoins", "rng", "hasher", "worker", "webui", "access"];

/// Sets up logging (once per process; a second call changes nothing).
pub fn init(common: &Common) {
    let filter = filter(common);
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(writer::OneLine);
    // A second init (several services in one test process) keeps the first.
    let json = common.log_format == "json";
    let ansi = !json && io::stdout().is_terminal();
    let installed = if json {
        // JSON escapes line breaks itself: one object per line.
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .finish()
            .with(filter)
            .try_init()
    } else {
        builder.with_ansi(ansi).finish().with(filter).try_init()
    };
    if installed.is_err() {
        return;
    }
    if writer::start() && !ansi {
        access::write_directly(json);
    }
    // A panic is an event like the others: one line, in the chosen format.
    std::panic::set_hook(Box::new(|panic| {
        tracing::error!(target: "dockercoins::logging", "{panic}");
    }));
}

/// The levels: `RUST_LOG`, or `info` (`debug` for our crates with `DEBUG=y`).
fn filter(common: &Common) -> Targets {
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => spec.parse().unwrap_or_else(|err| {
            // Logging is not up yet: say it on standard error, once, and go on.
            eprintln!("RUST_LOG={spec:?}: {err}; logging at info");
            Targets::new().with_default(LevelFilter::INFO)
        }),
        _ if common.debug() => OUR_CRATES.iter().fold(
            Targets::new().with_default(LevelFilter::INFO),
            |targets, ours| targets.with_target(*ours, LevelFilter::DEBUG),
        ),
        _ => Targets::new().with_default(LevelFilter::INFO),
    }
}

/// Writes the lines still queued and stops the writer thread: the last call
/// before the process exits. Later events are written where they happen.
pub fn finish() {
    writer::stop();
}
