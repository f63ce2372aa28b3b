//! Logging: one line per event, text for people or JSON for log shippers.
//! `RUST_LOG` picks levels (`info`, `info,access=warn`: a default level and
//! one per target); without it, `info`, or `debug` for our own code
//! when `DEBUG=y` (the classic app's switch). Logs go to standard output.
//!
//! Events are formatted where they happen and written by a thread of their
//! own, which writes whatever has queued up in one go: a busy service (one
//! access-log line per request) makes one `write` per batch instead of one per
//! line, and an idle one still writes each line at once.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::fd::AsFd;
use std::sync::Mutex;

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::Common;

const OUR_CRATES: [&str; 6] = ["dockercoins", "rng", "hasher", "worker", "webui", "access"];

/// Lines waiting for the writer thread before a logging call waits for room
/// (none is dropped).
const QUEUED_LINES: usize = 1024;

/// The most bytes the writer thread gathers before a `write`.
const BATCH_BYTES: usize = 16 * 1024;

/// The writer thread's guard: dropping it writes what is still queued.
static WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Sets up logging (once per process; a second call changes nothing).
pub fn init(common: &Common) {
    let filter = match std::env::var("RUST_LOG") {
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
    };
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(batched_stdout());
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(OneLine(writer));
    // A second init (several services in one test process) keeps the first.
    let installed = if common.log_format == "json" {
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
        builder
            .with_ansi(io::stdout().is_terminal())
            .finish()
            .with(filter)
            .try_init()
    };
    if installed.is_err() {
        return;
    }
    *lock(&WRITER) = Some(guard);
    // A panic is an event like the others: one line, in the chosen format.
    std::panic::set_hook(Box::new(|panic| {
        tracing::error!("{panic}");
    }));
}

/// Writes the lines still queued and stops the writer thread: the last call
/// before the process exits. Later events are not written.
pub fn finish() {
    drop(lock(&WRITER).take());
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Standard output behind a buffer that the writer thread flushes each time
/// the queue is empty. (`io::stdout()` would `write` at every line break.)
fn batched_stdout() -> Box<dyn Write + Send> {
    match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(BufWriter::with_capacity(BATCH_BYTES, File::from(fd))),
        Err(_) => Box::new(io::stdout()),
    }
}

/// The log writer, with the line breaks inside an event (an error message
/// quoting a multi-line answer) written as `\n`, so that each event stays one
/// line. The formatter writes each event with a single `write_all`.
struct OneLine(NonBlocking);

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = OneLineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(self.0.clone())
    }
}

struct OneLineWriter(NonBlocking);

impl Write for OneLineWriter {
    fn write(&mut self, event: &[u8]) -> io::Result<usize> {
        self.0.write_all(&one_line(event))?;
        Ok(event.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
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
