//! `/healthz`, `/readyz` and `/metrics` (served by `gregor_telemetry::health`), and the
//! checks behind `/readyz`.

use std::net::SocketAddr;

use gregor_telemetry::TelemetryError;
use gregor_telemetry::health::{Check, Readiness};
use tokio_util::sync::CancellationToken;

use crate::{RelayError, RelayMetrics};

/// What `/readyz` reports: ready when every check is up.
#[derive(Debug, Clone)]
pub(crate) struct Checks {
    pub(crate) readiness: Readiness,
    /// `database`: the outbox status query answers (status task, every 2 s).
    pub(crate) database: Check,
    /// `broker`: a metadata request answers within 2 s (status task).
    pub(crate) broker: Check,
    /// `membership`: this replica is registered in `gregor_relay_members` — up after its
    /// first lease round, down once no round succeeded for a lease ttl (its membership has
    /// then expired for the other replicas too).
    pub(crate) membership: Check,
    /// `producer`: down while the producer is in librdkafka's fatal state (or stopped
    /// reporting deliveries) and could not be rebuilt.
    pub(crate) producer: Check,
}

impl Default for Checks {
    fn default() -> Self {
        let mut readiness = Readiness::default();
        let database = readiness.check("database");
        let broker = readiness.check("broker");
        let membership = readiness.check("membership");
        let producer = readiness.check("producer");
        producer.set(true);
        Self {
            readiness,
            database,
            broker,
            membership,
            producer,
        }
    }
}

/// Binds `addr` now (so a bad address fails at start) and serves until `cancel`.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: &RelayMetrics,
    checks: &Checks,
    cancel: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), RelayError> {
    gregor_telemetry::health::serve(
        addr,
        metrics.registry().clone(),
        checks.readiness.clone(),
        cancel,
    )
    .await
    .map_err(|e| match e {
        TelemetryError::Listen { addr, source } => RelayError::Http { addr, source },
        other => {
            gregor_config::ConfigError::invalid("GREGOR_RELAY_HTTP_ADDR", other.to_string()).into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_database_broker_membership_and_a_working_producer() {
        let checks = Checks::default();
        checks.database.set(true);
        checks.broker.set(true);
        assert!(!checks.readiness.is_ready(), "not registered yet");
        checks.membership.set(true);
        assert!(checks.readiness.is_ready());
        assert_eq!(
            checks.readiness.report(),
            "database: up\nbroker: up\nmembership: up\nproducer: up\n"
        );
        checks.producer.set(false);
        assert!(
            !checks.readiness.is_ready(),
            "a producer that cannot be rebuilt"
        );
    }

    #[tokio::test]
    async fn a_taken_address_is_an_http_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let metrics = RelayMetrics::new().unwrap();
        let err = serve(addr, &metrics, &Checks::default(), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, RelayError::Http { .. }), "{err}");
        assert!(err.to_string().contains("GREGOR_RELAY_HTTP_ADDR"), "{err}");
    }
}
