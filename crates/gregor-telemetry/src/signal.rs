//! Graceful stop for binaries: SIGTERM or SIGINT cancels a token.

use tokio_util::sync::CancellationToken;

/// Cancels `cancel` on the first SIGTERM or SIGINT. When the handlers cannot be installed it
/// logs an error and never cancels (the process then stops only on SIGKILL).
pub async fn cancel_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    cancel.cancel();
}
