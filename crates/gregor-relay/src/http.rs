//! `/healthz`, `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::{RelayError, RelayMetrics};

/// What `/readyz` reports, updated by the relay's status task.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    pub(crate) database: AtomicBool,
    pub(crate) broker: AtomicBool,
}

#[derive(Clone)]
struct AppState {
    metrics: RelayMetrics,
    ready: Arc<Readiness>,
}

/// Binds the listener now (so a bad address fails at start) and serves until `cancel`.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: RelayMetrics,
    ready: Arc<Readiness>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), RelayError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RelayError::Http { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| RelayError::Http { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { metrics, ready });
    let handle = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "health/metrics server stopped");
        }
    });
    Ok((local, handle))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let db = state.ready.database.load(Ordering::Acquire);
    let broker = state.ready.broker.load(Ordering::Acquire);
    let code = if db && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        format!("database: {}\nbroker: {}\n", up(db), up(broker)),
    )
}

fn up(ok: bool) -> &'static str {
    if ok { "up" } else { "down" }
}

async fn metrics_text(
    State(state): State<AppState>,
) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
