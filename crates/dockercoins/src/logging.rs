//! Logging: one line per event, text for people or JSON for log shippers.
//! `RUST_LOG` picks levels; without it, `info`, or `debug` for our own code
//! when `DEBUG=y` (the classic app's switch). Logs go to standard output.

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

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
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second init (several services in one test process) keeps the first.
    let _ = if common.log_format == "json" {
        // JSON escapes line breaks itself: one object per line.
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .with_ansi(io::stdout().is_terminal())
            .with_writer(OneLine)
            .try_init()
    };
    // A panic is an event like the others: one line, in the chosen format.
    std::panic::set_hook(Box::new(|panic| {
        tracing::error!("{panic}");
    }));
}

/// Standard output, with the line breaks inside an event (an error message
/// quoting a multi-line answer) written as `\n`, so that each event stays one
/// line. The formatter writes each event with a single `write_all`.
struct OneLine;

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = OneLineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter
    }
}

struct OneLineWriter;

impl Write for OneLineWriter {
    fn write(&mut self, event: &[u8]) -> io::Result<usize> {
        io::stdout().lock().write_all(&one_line(event))?;
        Ok(event.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

/// One formatted event as one line: inner line breaks become `\n`, `\r`.
fn one_line(event: &[u8]) -> Cow<'_, [u8]> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    if !body.iter().any(|&byte| byte == b'\n' || byte == b'\r') {
        return Cow::Borrowed(event);
    }
    let mut line = Vec::with_capacity(event.len() + 8);
    for &byte in body {
        match byte {
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            _ => line.push(byte),
        }
    }
    line.push(b'\n');
    Cow::Owned(line)
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn an_event_with_line_breaks_stays_one_line() {
        assert_eq!(
            &*one_line(b"INFO worker: all is well\n"),
            b"INFO worker: all is well\n"
        );
        assert_eq!(
            &*one_line(b"WARN worker: hasher answered 500: oops\r\nsecond line\n"),
            b"WARN worker: hasher answered 500: oops\\r\\nsecond line\n"
        );
        assert_eq!(&*one_line(b"no newline at all"), b"no newline at all");
    }
}
