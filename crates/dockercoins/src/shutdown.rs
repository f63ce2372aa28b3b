//! Shutdown: SIGTERM (what `docker stop` sends) and SIGINT (Ctrl-C) cancel one
//! token, which is passed to everything that must stop. A second signal while
//! stopping exits at once (a second Ctrl-C when the drain takes too long).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code after a second signal: the stop was cut short.
pub const FORCED_EXIT_CODE: i32 = 130;

/// A token cancelled by the first SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot listen for SIGTERM/SIGINT; stop this service with SIGKILL");
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{name} received, shutting down");
        cancel.cancel();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!("second signal ({name}) while shutting down; exiting now");
        crate::logging::finish();
        std::process::exit(FORCED_EXIT_CODE);
    });
    token
}
