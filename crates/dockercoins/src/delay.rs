//! The teaching delays (`RNG_DELAY`, `HASHER_DELAY`, `WORKER_SLEEP`).

/// Waits a teaching delay. A zero delay returns at once: a zero
/// `tokio::time::sleep` would still wait for the timer's next millisecond
/// tick, which caps a service with its delays off at about a thousand answers
/// a second.
pub async fn delay(duration: std::time::Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}
