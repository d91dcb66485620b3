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

/// A consumer running inside the test process; stopped (gracefully) on drop.
#[derive(Debug)]
pub struct InProcessConsumer {
    cancel: CancellationToken,
    handle: Option<tokio::task::JoinHandle<Result<(), gregor_consumer::ConsumerError>>>,
    /// Its metrics.
    pub metrics: gregor_consumer::ConsumerMetrics,
}

impl InProcessConsumer {
    /// Builds and starts a consumer.
    pub async fn start(builder: gregor_consumer::ConsumerBuilder) -> anyhow::Result<Self> {
        let consumer = builder.build().await?;
        let metrics = consumer.metrics();
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(consumer.run(cancel.clone()));
        Ok(Self {
            cancel,
            handle: Some(handle),
            metrics,
        })
    }

    /// Stops the consumer (finish running handlers, commit, leave) and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(60), handle).await???;
        }
        Ok(())
    }
}

impl Drop for InProcessConsumer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Consumer settings for tests: the shared broker and database, a fresh group, quick
/// commits and session timeouts, plus `extra` variables.
pub fn consumer_config(
    group: &str,
    database_url: Option<&str>,
    extra: &[(&str, &str)],
) -> anyhow::Result<gregor_consumer::ConsumerConfig> {
    let mut env = Env::from_pairs([
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            gregor_testkit::kafka_bootstrap()?.as_str(),
        ),
        ("GREGOR_CONSUMER_GROUP", group),
        ("GREGOR_CONSUMER_COMMIT_INTERVAL_MS", "200"),
        ("GREGOR_CONSUMER_BACKOFF_MS", "50"),
        ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ("KAFKA_HEARTBEAT_INTERVAL_MS", "500"),
    ]);
    if let Some(url) = database_url {
        env = env.with("DATABASE_URL", url);
    }
    for (k, v) in extra {
        env = env.with(*k, *v);
    }
    Ok(gregor_consumer::ConsumerConfig::from_env(&env)?)
}

/// The id a relay process named `name` registered under in `gregor_relay_members` (waits for
/// it to register).
pub async fn relay_id(pool: &sqlx::PgPool, name: &str) -> anyhow::Result<uuid::Uuid> {
    gregor_testkit::wait_until(
        Duration::from_secs(30),
        &format!("relay {name} to register"),
        || async {
            Ok(
                sqlx::query_scalar("SELECT relay_id FROM gregor_relay_members WHERE name = $1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?,
            )
        },
    )
    .await
}
