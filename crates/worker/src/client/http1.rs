//! One HTTP/1.1 exchange on a kept connection: the worker's two calls.
//!
//! This replaces hyper's client connection (`hyper::client::conn::http1`)
//! for those calls. Each hyper connection held an 8 KB write buffer, a read
//! buffer and a task of its own that drove it, and every call went from the
//! work loop to that task and back; here a connection is its socket, its
//! loop's one small buffer serves both ways, and the loop itself writes the
//! request and reads the answer. The price is this module (the answer's head
//! is parsed by `httparse`, hyper's own parser). What it saved, measured with
//! `scripts/bench.sh` and `scripts/profile.sh worker_unit` (docs/performance.md,
//! "The worker's memory"): the worker's peak memory in a 70 s pipeline went
//! from 15.1-16.0 to 11.7-12.3 MB with 64 units at once, from 25.3-26.8 to
//! 10.5-11.3 MB with 256, and a unit of work from 40,001 to 15,284
//! instructions.
//!
//! It speaks what the calls need: a request with a body given whole, or
//! none; an answer framed by `Content-Length`, by chunks, or by the end of
//! the connection; informational answers (1xx) skipped. A connection is kept
//! only after an answer read whole, from HTTP/1.1 without `Connection: close`
//! (or HTTP/1.0 with `Connection: keep-alive`). Errors read as hyper's did.

use std::io::Write;

use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use dockercoins::http::INSTANCE_HEADER;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request: its method, its target (`/32`), `Host` and its body, if any
/// (sent as `application/octet-stream`).
pub struct Request<'a> {
    pub method: &'static str,
    pub target: &'a str,
    pub host: &'a [u8],
    pub body: Option<&'a [u8]>,
}

/// A complete answer.
pub struct Answer {
    pub status: StatusCode,
    /// The `X-Instance` header, if any.
    pub instance: Option<HeaderValue>,
    pub body: Bytes,
    /// Whether the connection may carry another request.
    pub reusable: bool,
}

/// Why an exchange failed.
pub enum Failure {
    /// The request could not be written: the other end never had it.
    Unsent(String),
    /// Written, but no complete answer came back.
    Failed(String),
}

/// What a buffer starts with: answers are a couple of hundred bytes.
const INITIAL_BUFFER: usize = 512;
/// A buffer grown past this for a large answer is not kept.
const KEPT_BUFFER: usize = 4096;
/// The longest head of an answer (hyper's limit was about 400 KB).
const MAX_HEAD: usize = 64 * 1024;
/// The most headers in an answer, as with hyper.
const MAX_HEADERS: usize = 100;
/// The longest body of an answer: rng's most bytes for one request
/// (`RNG_MAX_BYTES`' default; the worker asks for 32). A peer announcing more
/// is not a DockerCoins service: its answer is refused, not allocated.
const MAX_BODY: usize = 1024 * 1024;

/// Whether a kept connection, idle since its last answer, is still open: the
/// other end may have closed it meanwhile (or sent what it should not have).
pub fn is_open(stream: &TcpStream) -> bool {
    matches!(stream.try_read(&mut [0; 1]), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock)
}

/// Writes `request` on `stream` and reads its answer, with `buffer` for both.
pub async fn exchange(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    request: &Request<'_>,
) -> Result<Answer, Failure> {
    buffer.clear();
    write_request(buffer, request);
    stream.write_all(buffer).await.map_err(|err| {
        Failure::Unsent(format!(
            "client error (SendRequest): connection error: {err}"
        ))
    })?;
    buffer.clear();
    let answer = read_answer(stream, buffer).await.map_err(Failure::Failed);
    if buffer.capacity() > KEPT_BUFFER {
        *buffer = Vec::new();
    }
    answer
}

fn write_request(buffer: &mut Vec<u8>, request: &Request<'_>) {
    buffer.reserve(INITIAL_BUFFER);
    buffer.extend_from_slice(request.method.as_bytes());
    buffer.push(b' ');
    buffer.extend_from_slice(request.target.as_bytes());
    buffer.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    buffer.extend_from_slice(request.host);
    buffer.extend_from_slice(b"\r\n");
    if let Some(body) = request.body {
        buffer.extend_from_slice(b"content-type: application/octet-stream\r\n");
        // Writing to a Vec cannot fail.
        let _ = write!(buffer, "content-length: {}\r\n\r\n", body.len());
        buffer.extend_from_slice(body);
    } else {
        buffer.extend_from_slice(b"\r\n");
    }
}

/// How the body of an answer ends.
#[derive(PartialEq)]
enum Framing {
    Length(usize),
    Chunked,
    /// At the end of the connection.
    Close,
}

/// What the head of an answer says.
struct Head {
    /// Its length in bytes.
    len: usize,
    status: u16,
    instance: Option<HeaderValue>,
    framing: Framing,
    keep_alive: bool,
}

async fn read_answer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<Answer, String> {
    let head = loop {
        match parse_head(buffer)? {
            // Informational: the answer follows it.
            Some(head) if (100..200).contains(&head.status) && head.status != 101 => {
                buffer.drain(..head.len);
            }
            Some(head) => break head,
            None if buffer.len() >= MAX_HEAD => {
                return Err("client error (SendRequest): message head is too large".to_owned());
            }
            None => {
                if read_more(stream, buffer)
                    .await
                    .map_err(|err| format!("client error (SendRequest): connection error: {err}"))?
                    == 0
                {
                    return Err(
                        "client error (SendRequest): connection closed before message completed"
                            .to_owned(),
                    );
                }
            }
        }
    };
    let status = StatusCode::from_u16(head.status)
        .map_err(|_| "client error (SendRequest): invalid HTTP status-code parsed".to_owned())?;
    let framing = if matches!(head.status, 101 | 204 | 304) {
        Framing::Length(0)
    } else {
        head.framing
    };
    let close = framing == Framing::Close;
    let (body, end) = read_body(stream, buffer, head.len, framing)
        .await
        .map_err(|err| format!("error reading a body from connection: {err}"))?;
    Ok(Answer {
        status,
        instance: head.instance,
        body,
        // Bytes past the answer were never asked for: the connection is off.
        reusable: head.keep_alive && !close && end == buffer.len(),
    })
}

/// Reads what comes into `buffer`'s free room (made if there is none).
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    if buffer.len() == buffer.capacity() {
        buffer.reserve(buffer.capacity().max(INITIAL_BUFFER));
    }
    stream.read_buf(buffer).await
}

fn parse_head(buffer: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => {
            let what = match err {
                httparse::Error::Version => "invalid HTTP version parsed",
                httparse::Error::Status => "invalid HTTP status-code parsed",
                httparse::Error::TooManyHeaders => "message head is too large",
                _ => "invalid HTTP header parsed",
            };
            return Err(format!("client error (SendRequest): {what}"));
        }
    };
    let http11 = response.version == Some(1);
    let mut head = Head {
        len,
        status: response.code.unwrap_or_default(),
        instance: None,
        framing: Framing::Close,
        keep_alive: http11,
    };
    let mut length = None;
    let mut chunked = false;
    for header in response.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(header.value)
                .ok()
                .and_then(|value| value.trim().parse::<usize>().ok());
            match (parsed, length) {
                (Some(value), None) => length = Some(value),
                (Some(value), Some(known)) if value == known => {}
                _ => {
                    return Err(
                        "client error (SendRequest): invalid content-length parsed".to_owned()
                    );
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked only if chunks are the last coding; otherwise the body
            // ends with the connection.
            chunked = header
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            length = None;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(INSTANCE_HEADER.as_str()) && head.instance.is_none() {
            head.instance = HeaderValue::from_bytes(header.value).ok();
        }
    }
    let has_te = response
        .headers
        .iter()
        .any(|header| header.name.eq_ignore_ascii_case("transfer-encoding"));
    head.framing = match (chunked, has_te, length) {
        (true, _, _) => Framing::Chunked,
        (false, true, _) => Framing::Close,
        (false, false, Some(length)) => Framing::Length(length),
        (false, false, None) => Framing::Close,
    };
    Ok(Some(head))
}

/// Reads the body that starts at `start` in `buffer`; returns it and where
/// it ended in the buffer.
async fn read_body(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    start: usize,
    framing: Framing,
) -> std::io::Result<(Bytes, usize)> {
    let eof = || {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "end of file before message length reached",
        )
    };
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "answer body larger than 1 MiB",
        )
    };
    match framing {
        Framing::Length(length) => {
            if length > MAX_BODY {
                return Err(too_large());
            }
            let end = start + length;
            while buffer.len() < end {
                buffer.reserve(end - buffer.len());
                if stream.read_buf(buffer).await? == 0 {
                    return Err(eof());
                }
            }
            Ok((Bytes::copy_from_slice(&buffer[start..end]), end))
        }
        Framing::Close => {
            while read_more(stream, buffer).await? > 0 {
                if buffer.len() - start > MAX_BODY {
                    return Err(too_large());
                }
            }
            let end = buffer.len();
            Ok((Bytes::copy_from_slice(&buffer[start..]), end))
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            let mut at = start;
            // Each chunk: its size in hex, a line, the data and CRLF; a
            // chunk of size 0 ends them, then trailer lines and an empty one.
            let mut last = false;
            loop {
                if last {
                    if let Some(line) = buffer[at..].windows(2).position(|w| w == b"\r\n") {
                        at += line + 2;
                        if line == 0 {
                            return Ok((Bytes::from(body), at));
                        }
                        continue;
                    }
                } else {
                    match httparse::parse_chunk_size(&buffer[at..]) {
                        Ok(httparse::Status::Complete((line, size))) => {
                            let size = usize::try_from(size).map_err(|_| invalid_chunk())?;
                            if size > MAX_BODY - body.len() {
                                return Err(too_large());
                            }
                            if size == 0 {
                                at += line;
                                last = true;
                                continue;
                            }
                            let data = at + line;
                            if buffer.len() >= data + size + 2 {
                                if &buffer[data + size..data + size + 2] != b"\r\n" {
                                    return Err(invalid_chunk());
                                }
                                body.extend_from_slice(&buffer[data..data + size]);
                                at = data + size + 2;
                                continue;
                            }
                        }
                        Ok(httparse::Status::Partial) => {}
                        Err(_) => return Err(invalid_chunk()),
                    }
                }
                // What was read is taken: the rest moves to the front.
                buffer.drain(..at);
                at = 0;
                if read_more(stream, buffer).await? == 0 {
                    return Err(eof());
                }
            }
        }
    }
}

fn invalid_chunk() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid chunk size line")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes())
            .unwrap_or_else(|err| panic!("{err}"))
            .expect("a whole head")
    }

    #[test]
    fn framing_and_keep_alive_as_the_head_says() {
        let plain = head("HTTP/1.1 200 OK\r\ncontent-length: 32\r\nx-instance: rng-a\r\n\r\n");
        assert!(plain.framing == Framing::Length(32) && plain.keep_alive);
        assert_eq!(
            plain.instance.as_ref().map(|v| v.as_bytes()),
            Some(&b"rng-a"[..])
        );
        let chunked = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(chunked.framing == Framing::Chunked);
        let closed = head("HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\n");
        assert!(!closed.keep_alive);
        let old = head("HTTP/1.0 200 OK\r\n\r\n");
        assert!(old.framing == Framing::Close && !old.keep_alive);
        let kept = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(kept.keep_alive);
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n")
                .is_err()
        );
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le"),
            Ok(None)
        ));
    }

    /// rng's call, as the worker makes it.
    const GET_32: Request<'static> = Request {
        method: "GET",
        target: "/32",
        host: b"rng",
        body: None,
    };

    /// Answers each request on one connection with the next of `answers`,
    /// written in pieces of `piece` bytes; returns the address.
    async fn server(answers: &'static [&'static str], piece: usize) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = [0; 1024];
            for answer in answers {
                let _ = stream.read(&mut request).await;
                for bytes in answer.as_bytes().chunks(piece) {
                    stream.write_all(bytes).await.expect("write");
                    stream.flush().await.expect("flush");
                    tokio::task::yield_now().await;
                }
            }
        });
        address
    }

    async fn exchanges(
        answers: &'static [&'static str],
        piece: usize,
    ) -> Vec<(u16, Vec<u8>, bool)> {
        let mut stream = TcpStream::connect(server(answers, piece).await)
            .await
            .expect("connect");
        let mut buffer = Vec::new();
        let mut got = Vec::new();
        for _ in answers {
            match exchange(&mut stream, &mut buffer, &GET_32).await {
                Ok(answer) => got.push((
                    answer.status.as_u16(),
                    answer.body.to_vec(),
                    answer.reusable,
                )),
                Err(Failure::Unsent(err) | Failure::Failed(err)) => panic!("{err}"),
            }
        }
        got
    }

    #[tokio::test]
    async fn answers_framed_every_way_come_whole() {
        static ANSWERS: &[&str] = &[
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nt: 1\r\n\r\n",
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy",
            "HTTP/1.0 200 OK\r\n\r\nuntil the end",
        ];
        for piece in [1, 7, 1000] {
            let got = exchanges(ANSWERS, piece).await;
            assert_eq!(
                got,
                [
                    (200, b"hello".to_vec(), true),
                    (200, b"abcde".to_vec(), true),
                    (503, b"busy".to_vec(), true),
                    (200, b"until the end".to_vec(), false),
                ],
                "in pieces of {piece} bytes"
            );
        }
    }

    /// The error one exchange on `answers`' server fails with, and the
    /// capacity the buffer kept.
    async fn failure(answers: &'static [&'static str]) -> (String, usize) {
        let mut stream = TcpStream::connect(server(answers, 1000).await)
            .await
            .expect("connect");
        let mut buffer = Vec::new();
        match exchange(&mut stream, &mut buffer, &GET_32).await {
            Err(Failure::Failed(err)) => (err, buffer.capacity()),
            Err(Failure::Unsent(err)) => panic!("not sent: {err}"),
            Ok(_) => panic!("an answer of {:?} was taken", answers[0]),
        }
    }

    #[tokio::test]
    async fn an_answer_cut_short_is_an_error() {
        static ANSWERS: &[&str] = &["HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel"];
        assert_eq!(
            failure(ANSWERS).await.0,
            "error reading a body from connection: end of file before message length reached"
        );
    }

    #[tokio::test]
    async fn an_answer_larger_than_any_dockercoins_answer_is_refused() {
        static TOO_LONG: &[&str] =
            &["HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\n"];
        static TOO_MANY_CHUNKS: &[&str] =
            &["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\n"];
        for answers in [TOO_LONG, TOO_MANY_CHUNKS] {
            let (err, held) = failure(answers).await;
            assert_eq!(
                err,
                "error reading a body from connection: answer body larger than 1 MiB"
            );
            assert!(held < MAX_BODY, "{held} bytes held");
        }
    }

    #[test]
    fn a_request_as_hyper_wrote_it() {
        let mut buffer = Vec::new();
        let request = Request {
            method: "POST",
            target: "/",
            host: b"hasher:8080",
            body: Some(b"abc"),
        };
        write_request(&mut buffer, &request);
        assert_eq!(
            buffer,
            b"POST / HTTP/1.1\r\nhost: hasher:8080\r\ncontent-type: application/octet-stream\r\ncontent-length: 3\r\n\r\nabc"
        );
    }
}
