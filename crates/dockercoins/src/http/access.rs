//! The access-log line's message, one per request: the peer's address, the
//! request line, the status, and how long the answer took:
//! `127.0.0.1 "GET /32 HTTP/1.1" 200 102.3µs`. At `info` for a service's
//! routes, at `debug` for the operations endpoints.
//!
//! Written by hand, as bytes (itoa for the numbers, the elapsed time rounded
//! as std's `{:.1?}` rounds it), where `format!` through `core::fmt` would
//! do: measured with `scripts/profile.sh`, `core::fmt` cost about 2,200
//! instructions per request more (hasher `GET /` 23,568 → 21,384, rng
//! `GET /32` 27,044 → 24,856; docs/performance.md). The tests below hold the
//! text to what `format!` writes.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::http::{Method, StatusCode, Uri, Version};
use tracing::Level;

use super::ops::OPS_ROUTES;
use crate::logging;

/// What the access-log line needs from the request, kept only when the line
/// is on.
pub struct Seen {
    /// `None` when the server did not say (`ConnectInfo` missing).
    pub peer: Option<SocketAddr>,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
}

/// Logs the line of one answer to a request of `route` (target `access`):
/// at `info`, or `debug` for the operations endpoints. The caller has
/// checked that `info` is on.
pub fn log(seen: &Seen, status: StatusCode, elapsed: Duration, route: &str) {
    let line = AccessLine {
        seen,
        status,
        elapsed,
    };
    if OPS_ROUTES.contains(&route) {
        if tracing::enabled!(target: "access", Level::DEBUG)
            && !logging::access(Level::DEBUG, |out| line.write(out))
        {
            tracing::debug!(target: "access", "{line}");
        }
    } else if !logging::access(Level::INFO, |out| line.write(out)) {
        tracing::info!(target: "access", "{line}");
    }
}

/// The message: the peer's address (IPv4 as such, not IPv4-mapped IPv6, `-`
/// when unknown), the request line, the status, and the time taken.
struct AccessLine<'a> {
    seen: &'a Seen,
    status: StatusCode,
    elapsed: Duration,
}

impl AccessLine<'_> {
    /// Appends the line's text, without `fmt` (see [`logging::access`]).
    fn write(&self, out: &mut Vec<u8>) {
        let Seen {
            peer,
            method,
            uri,
            version,
        } = self.seen;
        match peer.map(|peer| peer.ip().to_canonical()) {
            Some(IpAddr::V4(ip)) => {
                let mut digits = itoa::Buffer::new();
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    out.extend_from_slice(digits.format(octet).as_bytes());
                }
            }
            Some(ip) => {
                let _ = write!(out, "{ip}");
            }
            None => out.push(b'-'),
        }
        out.extend_from_slice(b" \"");
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(uri.path().as_bytes());
        out.push(b' ');
        match *version {
            Version::HTTP_10 => out.extend_from_slice(b"HTTP/1.0"),
            Version::HTTP_11 => out.extend_from_slice(b"HTTP/1.1"),
            other => {
                let _ = write!(out, "{other:?}");
            }
        }
        out.extend_from_slice(b"\" ");
        out.extend_from_slice(itoa::Buffer::new().format(self.status.as_u16()).as_bytes());
        out.push(b' ');
        write_elapsed(out, self.elapsed);
    }
}

/// The same text, for tracing (colours on a terminal, or logging not set up).
impl std::fmt::Display for AccessLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = Vec::with_capacity(64);
        self.write(&mut text);
        f.write_str(&String::from_utf8_lossy(&text))
    }
}

/// Appends a duration as `format!("{elapsed:.1?}")` would (`102.3µs`, `1.0ms`,
/// `3.2s`, `870.0ns`), as std rounds to one decimal, without `fmt`.
fn write_elapsed(out: &mut Vec<u8>, elapsed: Duration) {
    const NANOS_PER_SEC: u32 = 1_000_000_000;
    let (secs, nanos) = (elapsed.as_secs(), elapsed.subsec_nanos());
    let (whole, fraction, divisor, unit): (u64, u32, u32, &[u8]) = if secs > 0 {
        (secs, nanos, NANOS_PER_SEC / 10, b"s")
    } else if nanos >= 1_000_000 {
        (
            u64::from(nanos / 1_000_000),
            nanos % 1_000_000,
            100_000,
            b"ms",
        )
    } else if nanos >= 1_000 {
        (
            u64::from(nanos / 1_000),
            nanos % 1_000,
            100,
            "µs".as_bytes(),
        )
    } else {
        (u64::from(nanos), 0, 1, b"ns")
    };
    // The first decimal, rounded to the nearest, a tie to the even digit.
    let (mut whole, mut tenth) = (whole, fraction / divisor);
    let (rest, half) = (fraction % divisor, divisor / 2);
    if rest > half || (rest == half && rest > 0 && tenth % 2 == 1) {
        tenth += 1;
        if tenth == 10 {
            tenth = 0;
            whole += 1;
        }
    }
    out.extend_from_slice(itoa::Buffer::new().format(whole).as_bytes());
    out.push(b'.');
    out.push(b'0' + tenth as u8);
    out.extend_from_slice(unit);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations spread over every unit, with the edges of each rounding.
    fn durations() -> impl Iterator<Item = Duration> {
        #[rustfmt::skip]
        let edges = [
            0, 1, 9, 999, 1_000, 1_049, 1_050, 1_051, 1_150, 1_250, 1_950, 9_949, 9_950,
            99_999, 999_949, 999_950, 999_999, 1_000_000, 1_049_999, 1_050_000, 1_150_000,
            999_949_999, 999_950_000, 999_999_999,
        ];
        let seconds = [0, 1, 59, 3_600];
        let spread = (0..200_000u64).map(|i| i.wrapping_mul(2_654_435_761) % 5_000_000_000);
        seconds
            .into_iter()
            .flat_map(move |s| edges.into_iter().map(move |n| s * 1_000_000_000 + n))
            .chain(spread)
            .map(Duration::from_nanos)
    }

    #[test]
    fn elapsed_times_read_as_std_writes_them() {
        for elapsed in durations() {
            let mut ours = Vec::new();
            write_elapsed(&mut ours, elapsed);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                format!("{elapsed:.1?}"),
                "{elapsed:?}"
            );
        }
    }

    #[test]
    fn the_access_line_names_peer_request_status_and_time() {
        let seen = |peer: Option<&str>, method: Method, uri: &str, version: Version| Seen {
            peer: peer.map(|peer| peer.parse().expect("an address")),
            method,
            uri: uri.parse().expect("a URI"),
            version,
        };
        let cases = [
            (
                seen(Some("127.0.0.1:5000"), Method::GET, "/32", Version::HTTP_11),
                StatusCode::OK,
                Duration::from_nanos(102_349),
                r#"127.0.0.1 "GET /32 HTTP/1.1" 200 102.3µs"#,
            ),
            (
                seen(
                    Some("[::ffff:10.0.0.7]:80"),
                    Method::POST,
                    "/?x=1",
                    Version::HTTP_10,
                ),
                StatusCode::PAYLOAD_TOO_LARGE,
                Duration::from_millis(1_200),
                r#"10.0.0.7 "POST / HTTP/1.0" 413 1.2s"#,
            ),
            (
                seen(
                    Some("[fd00::2]:80"),
                    Method::from_bytes(b"BREW").expect("a method"),
                    "/pot",
                    Version::HTTP_2,
                ),
                StatusCode::METHOD_NOT_ALLOWED,
                Duration::from_nanos(870),
                r#"fd00::2 "BREW /pot HTTP/2.0" 405 870.0ns"#,
            ),
            (
                seen(None, Method::GET, "/", Version::HTTP_11),
                StatusCode::NOT_FOUND,
                Duration::from_micros(999_951),
                r#"- "GET / HTTP/1.1" 404 1000.0ms"#,
            ),
        ];
        for (seen, status, elapsed, expected) in cases {
            let line = AccessLine {
                seen: &seen,
                status,
                elapsed,
            };
            let mut bytes = Vec::new();
            line.write(&mut bytes);
            assert_eq!(String::from_utf8_lossy(&bytes), expected);
            assert_eq!(line.to_string(), expected, "through Display");
        }
    }
}
