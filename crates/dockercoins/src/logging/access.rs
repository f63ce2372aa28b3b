//! The access-log line, one per request, most of what a busy service logs.
//! Through tracing, each one is an event whose message is formatted, escaped
//! a character at a time, and then copied into the queue; [`access`] writes
//! the same bytes into a buffer of the thread's, the message written by the
//! caller as bytes, with no event, no `fmt` machinery and no allocation. The
//! tests below hold it to what tracing's formatter writes, byte for byte.
//!
//! Hand-written in place of tracing-subscriber's formatter for this one line:
//! what is left of it costs about 1,200 instructions per request, the
//! message and the timestamp appended, the check for characters to escape
//! and the queue's lock (`scripts/profile.sh`, docs/performance.md); its
//! steps measured one by one are in the same page's table. The date comes
//! from humantime (already a dependency, for durations), once a second.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::Level;

use super::writer::enqueue_as;

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

/// From now on [`access`] writes its lines itself, as JSON or as text
/// (logging is set up, the writer thread runs, and there are no colours).
pub fn write_directly(json: bool) {
    let format = if json { ACCESS_JSON } else { ACCESS_TEXT };
    ACCESS_FORMAT.store(format, Ordering::Relaxed);
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time in seconds (the last second of
/// year 9999 after it).
fn date_and_time(unix: u64) -> [u8; 19] {
    const LAST: u64 = 253_402_300_799;
    let at = UNIX_EPOCH + Duration::from_secs(unix.min(LAST));
    // `YYYY-MM-DDTHH:MM:SSZ`, of which the `Z` is left out.
    let mut text = [0u8; 20];
    let _ = write!(
        io::Cursor::new(&mut text[..]),
        "{}",
        humantime::format_rfc3339_seconds(at)
    );
    let mut date = [0u8; 19];
    date.copy_from_slice(&text[..19]);
    date
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

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, MutexGuard};

    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
