//! Shutdown in two steps, as a load balancer needs them. SIGTERM (what
//! `docker stop` and the kubelet send) or SIGINT (Ctrl-C) first starts the
//! drain: `/readyz` answers 503 at once, but the listener stays open and
//! keeps serving for `SHUTDOWN_DRAIN`, the time kube-proxy or Swarm's load
//! balancer takes to stop sending new connections here. Then the stop: the
//! listener closes and requests in flight finish (at most `SHUTDOWN_TIMEOUT`).
//! A second signal, at any point, exits at once (a second Ctrl-C when the
//! stop takes too long).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code after a second signal: the stop was cut short.
pub const FORCED_EXIT_CODE: i32 = 130;

/// The two steps of a stop, and the switch that makes SIGTERM do nothing.
#[derive(Clone, Default)]
pub struct Stop {
    /// Cancelled by the first signal: `/readyz` answers 503 from then on.
    pub draining: CancellationToken,
    /// Cancelled when the drain is over: the listener closes, work stops.
    pub shutdown: CancellationToken,
    /// Set, SIGTERM is logged and ignored (the classic worker's trap, one
    /// knob away); SIGINT and SIGKILL still stop.
    pub ignore_sigterm: IgnoreSigterm,
}

/// Whether SIGTERM is ignored; shared with the signal handler.
#[derive(Clone, Default)]
pub struct IgnoreSigterm(Arc<AtomicBool>);

impl IgnoreSigterm {
    pub fn set(&self, ignore: bool) {
        self.0.store(ignore, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Stop {
    /// The drain and then the stop, as the first signal starts them (tests
    /// call it instead of sending a signal). A zero `drain` stops at once.
    pub async fn drain_then_stop(&self, drain: Duration) {
        self.draining.cancel();
        if !drain.is_zero() {
            tokio::time::sleep(drain).await;
            tracing::info!("drain over after {drain:?}; closing the listener");
        }
        self.shutdown.cancel();
    }
}

/// A [`Stop`] driven by SIGTERM and SIGINT, with a drain of `drain`.
pub fn on_signal(drain: Duration) -> Stop {
    let stop = Stop::default();
    let handled = stop.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot listen for SIGTERM/SIGINT; stop this service with SIGKILL");
            return;
        };
        let name = next_signal(&mut term, &mut int, &handled.ignore_sigterm).await;
        if drain.is_zero() {
            tracing::info!("{name} received, shutting down");
        } else {
            tracing::info!(
                "{name} received: /readyz now answers 503; serving {drain:?} more \
                 (SHUTDOWN_DRAIN) while load balancers stop sending here, then \
                 shutting down; a second signal stops at once"
            );
        }
        let during_drain = tokio::select! {
            () = handled.drain_then_stop(drain) => None,
            name = next_signal(&mut term, &mut int, &handled.ignore_sigterm) => Some(name),
        };
        let name = match during_drain {
            Some(name) => name,
            None => next_signal(&mut term, &mut int, &handled.ignore_sigterm).await,
        };
        tracing::warn!("second signal ({name}) while shutting down; exiting now");
        crate::logging::finish();
        std::process::exit(FORCED_EXIT_CODE);
    });
    stop
}

/// The name of the next signal that counts: SIGINT, or SIGTERM unless ignored.
async fn next_signal(term: &mut Signal, int: &mut Signal, ignore: &IgnoreSigterm) -> &'static str {
    loop {
        tokio::select! {
            _ = term.recv() => {
                if !ignore.get() {
                    return "SIGTERM";
                }
                tracing::warn!(
                    "SIGTERM ignored (WORKER_IGNORE_SIGTERM=true, as the classic worker); \
                     SIGINT or SIGKILL stops this process"
                );
            }
            _ = int.recv() => return "SIGINT",
        }
    }
}
