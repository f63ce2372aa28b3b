//! Logging: one line per event, text for people or JSON for log shippers.
//! `RUST_LOG` picks levels (`info`, `info,access=warn`: a default level and
//! one per target); without it, `info`, or `debug` for our own code
//! when `DEBUG=y` (the classic app's switch). Logs go to standard output.
//!
//! Events are formatted where they happen, appended to one queue of bytes,
//! and written by a thread of their own, which writes whatever has queued up
//! in one go: a busy service (one access-log line per request) makes one
//! `write` per batch instead of one per line, and an idle one still writes
//! each line at once. Appending allocates nothing: the queue and the batch
//! being written trade places, and each keeps its room.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::Level;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::Common;

const OUR_CRATES: [&str; 6] = ["dockercoins", "rng", "hasher", "worker", "webui", "access"];

/// Bytes waiting for the writer thread before a logging call waits for room
/// (none is dropped): some 1,000 access-log lines.
const QUEUED_BYTES: usize = 128 * 1024;

/// How long the writer lets lines gather after writing a batch. A busy
/// service (one access-log line per request, 100,000 a second) then wakes it
/// and makes a `write` a few hundred times a second instead of every line or
/// two; a line logged when nothing else is still goes out at once.
const LINGER: Duration = Duration::from_millis(2);

/// The lines waiting for the writer thread.
static QUEUE: Queue = Queue {
    state: Mutex::new(Queued {
        bytes: Vec::new(),
        writer_asleep: false,
        waiting_for_room: 0,
        closed: false,
    }),
    lines: Condvar::new(),
    room: Condvar::new(),
};

/// The writer thread, joined by [`finish`].
static WRITER: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

struct Queue {
    state: Mutex<Queued>,
    /// Signalled when lines arrive for a writer asleep, or at the end.
    lines: Condvar,
    /// Signalled when the writer has taken the queued lines.
    room: Condvar,
}

struct Queued {
    bytes: Vec<u8>,
    writer_asleep: bool,
    /// Logging calls waiting for the writer to take the queued lines.
    waiting_for_room: usize,
    closed: bool,
}

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
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(OneLine);
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
    if start_writer() && !ansi {
        let format = if json { ACCESS_JSON } else { ACCESS_TEXT };
        ACCESS_FORMAT.store(format, Ordering::Relaxed);
    }
    // A panic is an event like the others: one line, in the chosen format.
    std::panic::set_hook(Box::new(|panic| {
        tracing::error!("{panic}");
    }));
}

/// Writes the lines still queued and stops the writer thread: the last call
/// before the process exits. Later events are written where they happen.
pub fn finish() {
    lock(&QUEUE.state).closed = true;
    QUEUE.lines.notify_all();
    QUEUE.room.notify_all();
    if let Some(writer) = lock(&WRITER).take() {
        let _ = writer.join();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the thread that writes the queue to standard output; false if the
/// system refused a thread (then each line is written where it is logged).
fn start_writer() -> bool {
    let mut writer = lock(&WRITER);
    if writer.is_some() {
        return true;
    }
    let out = stdout_file();
    match std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_queue(out))
    {
        Ok(thread) => {
            *writer = Some(thread);
            true
        }
        Err(_) => {
            lock(&QUEUE.state).closed = true;
            false
        }
    }
}

/// Standard output as a file of its own, written with one `write` per batch.
/// (`io::stdout()` would `write` at every line break.)
fn stdout_file() -> Box<dyn Write + Send> {
    match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(File::from(fd)),
        Err(_) => Box::new(io::stdout()),
    }
}

/// The writer thread: takes everything queued, writes it, and again, until
/// [`finish`] and the queue is empty.
fn write_queue(mut out: Box<dyn Write + Send>) {
    let mut batch = Vec::with_capacity(QUEUED_BYTES);
    loop {
        let mut queued = lock(&QUEUE.state);
        while queued.bytes.is_empty() && !queued.closed {
            queued.writer_asleep = true;
            queued = QUEUE
                .lines
                .wait(queued)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        queued.writer_asleep = false;
        if queued.bytes.is_empty() {
            return; // closed, and all written
        }
        std::mem::swap(&mut queued.bytes, &mut batch);
        let closed = queued.closed;
        let someone_waits = queued.waiting_for_room > 0;
        drop(queued);
        if someone_waits {
            QUEUE.room.notify_all();
        }
        // Standard output closed: the lines are lost, as they would be anyway.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if !closed {
            std::thread::sleep(LINGER);
        }
    }
}

/// The log writer, with the line breaks inside an event (an error message
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
        enqueue(event)?;
        Ok(event.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Queues one formatted event for the writer thread (waiting for room if
/// the queue is full), as one line.
fn enqueue(event: &[u8]) -> io::Result<()> {
    enqueue_as(event, false)
}

/// [`enqueue`], told whether the event is known to hold no line break inside.
fn enqueue_as(event: &[u8], one_line_already: bool) -> io::Result<()> {
    let mut queued = lock(&QUEUE.state);
    while queued.bytes.len() >= QUEUED_BYTES && !queued.closed {
        queued.waiting_for_room += 1;
        queued = QUEUE
            .room
            .wait(queued)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        queued.waiting_for_room -= 1;
    }
    if queued.closed {
        // Before the writer started or after it stopped: written here.
        drop(queued);
        return io::stdout().write_all(&one_line(event));
    }
    if one_line_already {
        queued.bytes.extend_from_slice(event);
    } else {
        append_one_line(&mut queued.bytes, event);
    }
    if queued.writer_asleep {
        queued.writer_asleep = false;
        QUEUE.lines.notify_one();
    }
    Ok(())
}

// --- the access-log line ------------------------------------------------------
//
// One line per request is most of what a busy service logs. Through tracing,
// each one is an event whose message is formatted, escaped a character at a
// time, and then copied into the queue; [`access`] writes the same bytes into
// a buffer of the thread's, the message written by the caller as bytes, with
// no event, no `fmt` machinery and no allocation.

/// How [`access`] writes its line: not at all (the caller goes through
/// tracing: colours on a terminal, or logging not set up), as text, or JSON.
static ACCESS_FORMAT: AtomicU8 = AtomicU8::new(ACCESS_TRACING);
const ACCESS_TRACING: u8 = 0;
const ACCESS_TEXT: u8 = 1;
const ACCESS_JSON: u8 = 2;

thread_local! {
    /// The message, the line, and the last second's timestamp to the second.
    static ACCESS_LINE: RefCell<AccessLine> = const {
        RefCell::new(AccessLine { message: Vec::new(), line: Vec::new(), second: None })
    };
}

struct AccessLine {
    message: Vec<u8>,
    line: Vec<u8>,
    /// `YYYY-MM-DDTHH:MM:SS` of the last line's second.
    second: Option<(u64, [u8; 19])>,
}

/// Writes one access-log line (target `access`) at `level`, byte for byte as
/// tracing's formatter would, straight into the queue; `message` appends the
/// message's text (UTF-8) to the buffer it is given. The caller has checked
/// that the level is on. False when it cannot (colours, or logging not set
/// up): the caller logs the line through tracing instead.
pub fn access(level: Level, message: impl FnOnce(&mut Vec<u8>)) -> bool {
    let format = ACCESS_FORMAT.load(Ordering::Relaxed);
    if format == ACCESS_TRACING {
        return false;
    }
    ACCESS_LINE.with(|cell| {
        let Ok(mut buffers) = cell.try_borrow_mut() else {
            return false;
        };
        let buffers = &mut *buffers;
        let plain = format_access(format, level, SystemTime::now(), message, buffers);
        let _ = enqueue_as(&buffers.line, plain);
        true
    })
}

/// Formats the line into `buffers.line`; true when it is known to be one
/// line already (no line break inside).
fn format_access(
    format: u8,
    level: Level,
    now: SystemTime,
    message: impl FnOnce(&mut Vec<u8>),
    buffers: &mut AccessLine,
) -> bool {
    let AccessLine {
        message: text,
        line,
        second,
    } = buffers;
    text.clear();
    line.clear();
    message(text);
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let prefix = match *second {
        Some((at, prefix)) if at == since.as_secs() => prefix,
        _ => {
            let prefix = date_and_time(since.as_secs());
            *second = Some((since.as_secs(), prefix));
            prefix
        }
    };
    if format == ACCESS_JSON {
        line.extend_from_slice(b"{\"timestamp\":\"");
    }
    line.extend_from_slice(&prefix);
    line.push(b'.');
    // The microseconds, zero-padded to six digits.
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(since.subsec_micros());
    line.extend_from_slice(&b"000000"[micros.len().min(6)..]);
    line.extend_from_slice(micros.as_bytes());
    if format == ACCESS_JSON {
        line.extend_from_slice(b"Z\",\"level\":\"");
        line.extend_from_slice(level.as_str().as_bytes());
        line.extend_from_slice(b"\",\"message\":");
        let _ = serde_json::to_writer(&mut *line, &String::from_utf8_lossy(text));
        line.extend_from_slice(b",\"target\":\"access\"}\n");
        true
    } else {
        line.extend_from_slice(match level {
            Level::ERROR => b"Z ERROR access: ",
            Level::WARN => b"Z  WARN access: ",
            Level::INFO => b"Z  INFO access: ",
            Level::DEBUG => b"Z DEBUG access: ",
            Level::TRACE => b"Z TRACE access: ",
        });
        let plain = sanitize(text, line);
        line.push(b'\n');
        plain
    }
}

/// True when a message (UTF-8) holds nothing that [`sanitize`] escapes and no
/// line break: no control character, C0 or C1 (U+0080 to U+009F, which UTF-8
/// writes as 0xC2 0x80 to 0xC2 0x9F), and no DEL. An access line nearly always
/// passes: its only character outside ASCII is the `µ` of `µs`.
fn nothing_to_escape(text: &[u8]) -> bool {
    text.iter().all(|&byte| byte >= b' ' && byte != 0x7f)
        && !text
            .windows(2)
            .any(|pair| pair[0] == 0xc2 && (0x80..0xa0).contains(&pair[1]))
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time in seconds.
fn date_and_time(unix: u64) -> [u8; 19] {
    let days = (unix / 86_400) as i64;
    let in_day = unix % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let mut text = [0u8; 19];
    let mut cursor = io::Cursor::new(&mut text[..]);
    let _ = write!(
        cursor,
        "{:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        year.clamp(0, 9999),
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    );
    text
}

/// The message with the characters that could steer a terminal escaped, as
/// tracing's formatter escapes them; true when it had nothing to escape and
/// no line break (nearly always: then it is copied as it is).
fn sanitize(message: &[u8], line: &mut Vec<u8>) -> bool {
    if nothing_to_escape(message) {
        line.extend_from_slice(message);
        return true;
    }
    for ch in String::from_utf8_lossy(message).chars() {
        match ch {
            '\x1b' => line.extend_from_slice(b"\\x1b"),
            '\x07' => line.extend_from_slice(b"\\x07"),
            '\x08' => line.extend_from_slice(b"\\x08"),
            '\x0c' => line.extend_from_slice(b"\\x0c"),
            '\x7f' => line.extend_from_slice(b"\\x7f"),
            ch @ '\u{80}'..='\u{9f}' => {
                let _ = write!(line, "\\u{{{:x}}}", ch as u32);
            }
            ch => {
                let mut utf8 = [0u8; 4];
                line.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    false
}

/// Appends one formatted event as one line: inner line breaks become `\n`, `\r`.
fn append_one_line(line: &mut Vec<u8>, event: &[u8]) {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    if !body.iter().any(|&byte| byte == b'\n' || byte == b'\r') {
        line.extend_from_slice(event);
        return;
    }
    for &byte in body {
        match byte {
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            _ => line.push(byte),
        }
    }
    line.push(b'\n');
}

/// One formatted event as one line, on its own.
fn one_line(event: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(event.len() + 8);
    append_one_line(&mut line, event);
    line
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// What tracing's formatter writes for an access-log event, set up as
    /// [`init`] sets it up.
    fn through_tracing(json: bool, level: Level, message: &str) -> String {
        #[derive(Clone, Default)]
        struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);
        impl Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                lock(&self.0).extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Captured {
            type Writer = Captured;
            fn make_writer(&'a self) -> Captured {
                self.clone()
            }
        }
        let captured = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_max_level(LevelFilter::TRACE)
            .with_writer(captured.clone());
        let emit = || match level {
            Level::DEBUG => tracing::debug!(target: "access", "{message}"),
            _ => tracing::info!(target: "access", "{message}"),
        };
        if json {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish();
            tracing::subscriber::with_default(subscriber, emit);
        } else {
            tracing::subscriber::with_default(builder.with_ansi(false).finish(), emit);
        }
        let bytes = lock(&captured.0).clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    fn ours(format: u8, level: Level, message: &str) -> String {
        let mut buffers = AccessLine {
            message: Vec::new(),
            line: Vec::new(),
            second: None,
        };
        format_access(
            format,
            level,
            SystemTime::now(),
            |out| out.extend_from_slice(message.as_bytes()),
            &mut buffers,
        );
        String::from_utf8(buffers.line).expect("UTF-8")
    }

    /// The line with its timestamp (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, 27
    /// characters) replaced by `T`: the two were written at different times.
    fn untimed(line: &str) -> String {
        let at = line.find("Z").expect("a timestamp");
        line.replacen(&line[at - 26..=at], "T", 1)
    }

    #[test]
    fn the_access_line_is_what_tracing_would_write() {
        let messages = [
            r#"127.0.0.1 "GET /32 HTTP/1.1" 200 102.3µs"#,
            r#"::1 "BREW /a"b\c HTTP/1.1" 405 1.0ms"#,
            "10.0.0.1 \"GET /\u{1b}[31m\u{85}x HTTP/1.0\" 404 3.2s",
        ];
        for message in messages {
            for level in [Level::INFO, Level::DEBUG] {
                let text = ours(ACCESS_TEXT, level, message);
                assert_eq!(
                    untimed(&text),
                    untimed(&through_tracing(false, level, message))
                );
                let json = ours(ACCESS_JSON, level, message);
                assert_eq!(
                    untimed(&json),
                    untimed(&through_tracing(true, level, message))
                );
            }
        }
        let text = ours(ACCESS_TEXT, Level::INFO, "x");
        let theirs = through_tracing(false, Level::INFO, "x");
        assert_eq!(text.find('Z'), theirs.find('Z'), "{text} against {theirs}");
    }

    #[test]
    fn only_lines_with_something_to_escape_take_the_slow_way() {
        let plain = r#"127.0.0.1 "GET /32 HTTP/1.1" 200 102.3µs"#;
        assert!(nothing_to_escape(plain.as_bytes()));
        for risky in [
            "a\nb",
            "a\rb",
            "\u{1b}[31m",
            "\u{7}",
            "\u{7f}",
            "\u{85}",
            "\u{9f}",
            "\t",
        ] {
            assert!(!nothing_to_escape(risky.as_bytes()), "{risky:?}");
            // What the slow way writes is what tracing would write (the test above).
            let text = ours(ACCESS_TEXT, Level::INFO, risky);
            assert_eq!(
                untimed(&text),
                untimed(&through_tracing(false, Level::INFO, risky))
            );
        }
        assert!(nothing_to_escape("é ü \u{a0} \u{100}".as_bytes()));
    }

    #[test]
    fn timestamps_are_utc_to_the_microsecond() {
        let at = |secs: u64, micros: u64| {
            let mut buffers = AccessLine {
                message: Vec::new(),
                line: Vec::new(),
                second: None,
            };
            let now = UNIX_EPOCH + std::time::Duration::from_micros(secs * 1_000_000 + micros);
            format_access(
                ACCESS_TEXT,
                Level::INFO,
                now,
                |out| out.extend_from_slice(b"m"),
                &mut buffers,
            );
            String::from_utf8(buffers.line).expect("UTF-8")
        };
        assert_eq!(
            at(1_764_625_106, 829_618),
            "2025-12-01T21:38:26.829618Z  INFO access: m\n"
        );
        assert_eq!(
            at(951_782_400, 7),
            "2000-02-29T00:00:00.000007Z  INFO access: m\n"
        );
        assert_eq!(
            at(4_107_542_399, 999_999),
            "2100-02-28T23:59:59.999999Z  INFO access: m\n"
        );
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z  INFO access: m\n");
    }
}
