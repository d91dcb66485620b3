//! `/healthz`, `/readyz` and `/metrics` for a process: liveness, named readiness checks that
//! the process keeps current, and the Prometheus text exposition of a registry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

use crate::TelemetryError;

/// One readiness condition (say, "database"), set by whoever watches it. Starts down.
#[derive(Debug, Clone, Default)]
pub struct Check(Arc<AtomicBool>);

impl Check {
    /// Records whether the condition holds now.
    pub fn set(&self, up: bool) {
        self.0.store(up, Ordering::Release);
    }

    /// Whether the condition held when last checked.
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The named checks behind `/readyz`; ready when every one is up.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

impl Readiness {
    /// Adds a named check (down until set) and returns it.
    pub fn check(&mut self, name: &'static str) -> Check {
        let check = Check::default();
        self.checks.push((name, check.clone()));
        check
    }

    /// Whether every check is up.
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|(_, c)| c.is_up())
    }

    /// One `name: up|down` line per check.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for (name, check) in &self.checks {
            out.push_str(name);
            out.push_str(if check.is_up() { ": up\n" } else { ": down\n" });
        }
        out
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    readiness: Readiness,
}

/// Binds `addr` now (so a bad address fails at start) and serves until `cancel`. Returns the
/// bound address (useful with port 0) and the server task.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    readiness: Readiness,
    cancel: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), TelemetryError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| TelemetryError::Listen { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState {
            registry,
            readiness,
        });
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
    let code = if state.readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, state.readiness.report())
}

async fn metrics(State(state): State<AppState>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        render(&state.registry),
    )
}

/// The Prometheus text exposition of every metric in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding into a Vec fails only for malformed families, which registration refuses.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_is_up() {
        let mut readiness = Readiness::default();
        let db = readiness.check("database");
        let broker = readiness.check("broker");
        assert!(!readiness.is_ready());
        db.set(true);
        assert!(!readiness.is_ready());
        broker.set(true);
        assert!(readiness.is_ready());
        assert_eq!(readiness.report(), "database: up\nbroker: up\n");
        db.set(false);
        assert!(!readiness.is_ready());
    }
}
