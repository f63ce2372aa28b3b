//! Logging: one line per event, text for people or JSON for log shippers.
//! `RUST_LOG` picks levels; without it, `info`, or `debug` for our own code
//! when `DEBUG=y` (the classic app's switch).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::Common;

const OUR_CRATES: [&str; 6] = ["dockercoins", "rng", "hasher", "worker", "webui", "access"];

pub fn init(common: &Common) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::new(spec),
        _ if common.debug() => {
            let ours: Vec<String> = OUR_CRATES.iter().map(|c| format!("{c}=debug")).collect();
            EnvFilter::new(format!("info,{}", ours.join(",")))
        }
        _ => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    // A second init (several services in one test process) keeps the first.
    let _ = if common.log_format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
