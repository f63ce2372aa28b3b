//! Loopback ports for the servers and services a test starts.

use std::net::TcpListener;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A loopback port in `range` that was free a moment ago, picked at random so
/// that tests running at once rarely try the same one.
pub fn free_port_in(range: std::ops::Range<u16>) -> u16 {
    let span = u64::from(range.end - range.start);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 16);
    for _ in 0..200 {
        // xorshift: good enough to spread tests over the range.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = range.start + (seed % span) as u16;
        // Never the same port twice in one test process: tests run at once.
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !given.contains(&port) && TcpListener::bind(("0.0.0.0", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in {range:?}");
}
