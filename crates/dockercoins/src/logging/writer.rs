//! The log writer: events are formatted where they happen, appended to one
//! queue of bytes, and written to standard output by a thread of their own,
//! which writes whatever has queued up in one go. A busy service (one
//! access-log line per request) makes one `write` per batch instead of one
//! per line, and an idle one still writes each line at once. Appending
//! allocates nothing: the queue and the batch being written trade places, and
//! each keeps its room. No line is dropped: a full queue makes the logging
//! call wait.
//!
//! Hand-written, in place of tracing-appender's `non_blocking` writer (a
//! crossbeam channel of one buffer per line, a `write` per line, lines
//! dropped when full), which the project does not build (CHANGELOG: "no
//! tracing-appender"); tracing-appender itself was not measured here. What
//! was measured is this writer's batching: letting lines gather 2 ms after
//! each batch took hasher `GET /` from 0.72 to 0.90 of bare axum's
//! throughput, rng `GET /32` from 0.73 to 0.87 (`scripts/bench.sh`,
//! docs/performance.md, "The log writer").

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

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

/// Writes the lines still queued and stops the writer thread. Later events
/// are written where they happen.
pub fn stop() {
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
pub fn start() -> bool {
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
pub struct OneLine;

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = OneLineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter
    }
}

pub struct OneLineWriter;

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
pub fn enqueue_as(event: &[u8], one_line_already: bool) -> io::Result<()> {
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
}
