//! Shared helpers of the integration tests.

use std::time::Duration;

use gregor_config::Env;
use gregor_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;

/// A relay running inside the test process; stopped (gracefully) on drop.
#[derive(Debug)]
pub struct InProcessRelay {
    cancel: CancellationToken,
    handle: Option<tokio::task::JoinHandle<Result<(), gregor_relay::RelayError>>>,
}

impl InProcessRelay {
    /// Starts a relay on `database_url` and `bootstrap` with quick test timings plus `extra`.
    pub fn start(
        database_url: &str,
        bootstrap: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut env = Env::from_pairs([
            ("DATABASE_URL", database_url),
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap),
            ("GREGOR_RELAY_HTTP_ADDR", "off"),
            ("GREGOR_RELAY_POLL_INTERVAL_MS", "200"),
            ("GREGOR_RELAY_PASS_INTERVAL_MS", "300"),
            ("GREGOR_RELAY_LEASE_TTL_MS", "3000"),
        ]);
        for (k, v) in extra {
            env = env.with(*k, *v);
        }
        let relay = Relay::new(RelayConfig::from_env(&env)?)?;
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(relay.run(cancel.clone()));
        Ok(Self {
            cancel,
            handle: Some(handle),
        })
    }

    /// Stops the relay and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), handle).await???;
        }
        Ok(())
    }
}

impl Drop for InProcessRelay {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Environment for a relay *process* with quick test timings.
pub fn relay_env(database_url: &str, bootstrap: &str) -> Vec<(String, String)> {
    vec![
        ("DATABASE_URL".into(), database_url.into()),
        ("KAFKA_BOOTSTRAP_SERVERS".into(), bootstrap.into()),
        ("GREGOR_RELAY_HTTP_ADDR".into(), "off".into()),
        ("GREGOR_RELAY_POLL_INTERVAL_MS".into(), "200".into()),
        ("GREGOR_RELAY_PASS_INTERVAL_MS".into(), "300".into()),
        ("GREGOR_RELAY_LEASE_TTL_MS".into(), "3000".into()),
        ("RUST_LOG".into(), "info,gregor_relay=debug".into()),
    ]
}

/// Borrowed view of an owned env list, for `gregor_testkit::process`.
pub fn as_pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}
