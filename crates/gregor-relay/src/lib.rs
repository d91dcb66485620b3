//! The gregor relay: publishes the PostgreSQL outbox to Kafka.
//!
//! * **No loss** — a row is deleted only after the broker acknowledged it (acks=all,
//!   idempotent producer); outages of PostgreSQL or the broker are retried, never dropped.
//! * **Per-key order** — each key hashes to one of 64 shards; a shard has one owner at a time
//!   (leases with fencing), rows are produced in id order, and a key whose row failed waits.
//! * **Several replicas** — relays share the shards fairly and take over a dead one's shards
//!   once its lease expires.
//! * **Poison rows** are parked after `max_attempts`, blocking only their own key.
//! * **Its own tables** — shard leases and members — are the relay's migrations (2001–2999);
//!   [`migrate`] applies them after the outbox's, as the relay does at start.
//!
//! ```no_run
//! use gregor_config::Env;
//! use gregor_relay::{Relay, RelayConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), gregor_relay::RelayError> {
//! let config = RelayConfig::from_env(&Env::from_process())?;
//! let cancel = CancellationToken::new();
//! Relay::new(config)?.run(cancel).await
//! # }
//! ```

mod claim_loop;
mod config;
mod error;
mod http;
mod lease;
mod metrics;
mod publish;
mod schema;
mod store;
mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gregor_config::{BrokerStatus, ConfigError, KafkaSettings};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use config::RelayConfig;
pub use error::RelayError;
/// What [`migrate`] returns.
pub use gregor_pg::PgError;
pub use metrics::RelayMetrics;
pub use schema::{MIGRATIONS, migrate};

use claim_loop::{Backoff, ClaimLoop};
use gregor_telemetry::health::Check;
use http::Checks;
use lease::Leases;
use publish::Publisher;

/// One relay replica.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    pool: PgPool,
    publisher: Arc<Publisher>,
    leases: Arc<Leases>,
    metrics: RelayMetrics,
    checks: Checks,
}

impl Relay {
    /// Creates the relay. Nothing connects yet: [`Relay::run`] connects, and keeps retrying
    /// while PostgreSQL or the broker is unreachable — but stops with
    /// [`ConfigError::BrokerAuthentication`](gregor_config::ConfigError::BrokerAuthentication)
    /// or [`ConfigError::BrokerTls`](gregor_config::ConfigError::BrokerTls) when the broker
    /// refuses its credentials or TLS settings.
    pub fn new(config: RelayConfig) -> Result<Self, RelayError> {
        config.validate()?;
        let options: PgConnectOptions = config.database_url.expose().parse().map_err(|e| {
            gregor_config::ConfigError::invalid("DATABASE_URL", format!("cannot be parsed: {e}"))
        })?;
        let options = options.application_name(&format!("gregor-relay {}", config.name));
        let pool = PgPoolOptions::new()
            .max_connections(config.db_pool_size)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        let metrics = RelayMetrics::new()
            .map_err(|e| gregor_config::ConfigError::invalid("metrics", e.to_string()))?;
        let publisher = Arc::new(
            Publisher::new(
                &config.kafka,
                config.delivery_bound(),
                metrics.producer_rebuilds.clone(),
            )
            .map_err(|e| kafka_config_error(&config, e))?,
        );
        Ok(Self {
            leases: Arc::new(Leases::new(Uuid::new_v4(), config.lease_ttl)),
            config,
            pool,
            publisher,
            metrics,
            checks: Checks::default(),
        })
    }

    /// This replica's id (as in `gregor_relay_members` and the lease table).
    pub fn id(&self) -> Uuid {
        self.leases.relay_id()
    }

    /// The metrics this relay records.
    pub fn metrics(&self) -> &RelayMetrics {
        &self.metrics
    }

    /// Runs until `cancel` fires, then finishes the batch in flight (bounded by the shutdown
    /// timeout), releases its leases and returns.
    ///
    /// Until the broker first answers, a check connects with the relay's own settings: if
    /// the broker refuses the credentials or the TLS handshake, the relay stops as if
    /// cancelled and returns that error (a configuration error: retrying cannot help). An
    /// unreachable broker is waited for.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), RelayError> {
        self.run_with_http_addr(cancel, |_| {}).await
    }

    /// Like [`Relay::run`], calling `on_listen` with the bound health/metrics address.
    pub async fn run_with_http_addr(
        self,
        cancel: CancellationToken,
        on_listen: impl FnOnce(SocketAddr),
    ) -> Result<(), RelayError> {
        let background = CancellationToken::new();
        // Cancelled by `cancel`, or by the broker check when the broker refuses us.
        let stop = cancel.child_token();
        let check = tokio::spawn(broker_check(self.config.kafka.clone(), stop.clone()));
        let mut tasks = Vec::new();
        if let Some(addr) = self.config.http_addr {
            let (local, handle) =
                http::serve(addr, &self.metrics, &self.checks, background.clone()).await?;
            tracing::info!(%local, "serving /healthz, /readyz and /metrics");
            on_listen(local);
            tasks.push(handle);
        }
        tasks.push(tokio::spawn(status_task(
            self.pool.clone(),
            self.publisher.clone(),
            self.metrics.clone(),
            self.leases.clone(),
            self.checks.clone(),
            background.clone(),
        )));
        match self.migrate_until_ready(&stop).await {
            Startup::Ready => {}
            Startup::Cancelled => {
                background.cancel();
                return refused(check).await;
            }
            Startup::Refused(error) => {
                stop.cancel();
                background.cancel();
                return Err(error.into());
            }
        }
        tracing::info!(relay = %self.id(), name = %self.config.name, "relay started");
        let wake = Arc::new(Notify::new());
        tasks.push(tokio::spawn(lease_task(
            self.pool.clone(),
            self.leases.clone(),
            self.config.name.clone(),
            self.checks.membership.clone(),
            background.clone(),
        )));
        tasks.push(tokio::spawn(listen_task(
            self.pool.clone(),
            wake.clone(),
            self.leases.clone(),
            background.clone(),
        )));

        let claim = ClaimLoop {
            pool: self.pool.clone(),
            config: self.config.clone(),
            publisher: self.publisher.clone(),
            leases: self.leases.clone(),
            metrics: self.metrics.clone(),
            wake,
        };
        let drained = claim.run(&stop).await;

        tracing::info!("relay stopping: releasing leases");
        self.publisher.flush(Duration::from_secs(1));
        background.cancel();
        for task in tasks {
            let _ = task.await;
        }
        let left = if drained {
            self.leases.leave(&self.pool).await
        } else {
            // Records may still leave the producer: releasing now would let a new owner
            // publish a key's later rows first. The leases expire after the ttl instead.
            tracing::warn!("stopping with records in flight: leases are left to expire");
            self.leases.leave_without_release(&self.pool).await
        };
        if let Err(e) = left {
            tracing::warn!(error = %e, "could not release leases at shutdown; they expire after the lease ttl");
        }
        self.pool.close().await;
        let result = refused(check).await;
        if result.is_ok() {
            tracing::info!("relay stopped");
        }
        result
    }

    /// Applies the outbox's and the relay's migrations ([`migrate`]), retrying while the
    /// database is unreachable; a TLS failure (certificate not trusted, wrong host name, no
    /// TLS under `sslmode=require`) ends the start, since retrying cannot fix it.
    async fn migrate_until_ready(&self, cancel: &CancellationToken) -> Startup {
        let mut backoff = Backoff::default();
        loop {
            match migrate(&self.pool).await {
                Ok(()) => return Startup::Ready,
                Err(e) if gregor_pg::is_tls_failure(e.sqlx()) => {
                    let reason = e.sqlx().to_string();
                    return Startup::Refused(ConfigError::invalid(
                        "DATABASE_URL",
                        format!(
                            "TLS with PostgreSQL at {} failed: {reason} (check sslmode and \
                             sslrootcert: the CA that signed the server's certificate)",
                            self.config.database_url.redacted()
                        ),
                    ));
                }
                Err(e) => tracing::warn!(error = %e, "database not ready; retrying"),
            }
            backoff.wait(cancel).await;
            if cancel.is_cancelled() {
                return Startup::Cancelled;
            }
        }
    }
}

/// How the start-up migration ended.
enum Startup {
    Ready,
    Cancelled,
    Refused(ConfigError),
}

/// librdkafka's own config error text includes the value, which may be a secret: keep only
/// the property and the reason, and name the variable it came from.
fn kafka_config_error(config: &RelayConfig, error: rdkafka::error::KafkaError) -> RelayError {
    match error {
        rdkafka::error::KafkaError::ClientConfig(_, description, property, _value) => {
            let var = config.kafka.source_of(&property).map_or_else(
                || format!("KAFKA_{}", property.to_ascii_uppercase().replace('.', "_")),
                str::to_owned,
            );
            gregor_config::ConfigError::invalid(var, description).into()
        }
        other => RelayError::Kafka(other),
    }
}

/// Checks the broker with the relay's settings until it answers once: a refusal
/// (authentication, TLS) cancels `stop` and is returned; an unreachable broker is retried.
async fn broker_check(kafka: KafkaSettings, stop: CancellationToken) -> Option<ConfigError> {
    const WINDOW: Duration = Duration::from_secs(30);
    let mut warned = false;
    while !stop.is_cancelled() {
        let (settings, token) = (kafka.clone(), stop.clone());
        let checked = tokio::task::spawn_blocking(move || {
            settings.check_broker_while(WINDOW, || !token.is_cancelled())
        })
        .await;
        match checked {
            Ok(Ok(BrokerStatus::Reachable)) => {
                tracing::info!("the broker accepted the relay's connection");
                return None;
            }
            Ok(Ok(_unreachable)) => {
                if !warned && !stop.is_cancelled() {
                    tracing::warn!(
                        bootstrap = kafka.bootstrap_servers(),
                        "the broker does not answer yet; waiting for it"
                    );
                    warned = true;
                }
            }
            Ok(Err(refusal)) => {
                stop.cancel();
                return Some(refusal);
            }
            Err(_) => return None,
        }
    }
    None
}

/// The broker check's refusal, if it found one.
async fn refused(check: tokio::task::JoinHandle<Option<ConfigError>>) -> Result<(), RelayError> {
    match check.await {
        Ok(Some(refusal)) => Err(RelayError::Config(refusal)),
        _ => Ok(()),
    }
}

/// Renews and rebalances leases every ttl/5 — often enough that the per-record fence, which
/// needs the deadline further away than the delivery bound plus librdkafka's scan slack, always
/// has room — sooner after an error and at once when another replica released shards or
/// joined. `membership` is up from the first round that registered this replica until no round
/// succeeded for a ttl.
async fn lease_task(
    pool: PgPool,
    leases: Arc<Leases>,
    name: String,
    membership: Check,
    cancel: CancellationToken,
) {
    let every = leases_interval(&leases);
    let mut backoff = Backoff::default();
    let mut joined = false;
    let mut last_round: Option<Instant> = None;
    while !cancel.is_cancelled() {
        match leases.tick(&pool, &name, !joined).await {
            Ok(()) => {
                joined = true;
                last_round = Some(Instant::now());
                membership.set(true);
                backoff.reset();
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = tokio::time::sleep(every) => {}
                    // Another replica released shards or joined: rebalance now.
                    () = leases.nudge.notified() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed; retrying");
                if last_round.is_none_or(|t| t.elapsed() >= leases.ttl_for_renewal()) {
                    membership.set(false);
                }
                backoff.wait(&cancel).await;
            }
        }
    }
}

fn leases_interval(leases: &Leases) -> Duration {
    leases.ttl_for_renewal() / 5
}

/// Forwards `NOTIFY gregor_outbox` to the claim loop and `NOTIFY gregor_relay_leases` to the
/// lease task; reconnects after errors (the claim loop's poll and the heartbeat cover anything
/// missed meanwhile).
async fn listen_task(
    pool: PgPool,
    wake: Arc<Notify>,
    leases: Arc<Leases>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::default();
    while !cancel.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "LISTEN connection failed; polling meanwhile");
                backoff.wait(&cancel).await;
                continue;
            }
        };
        if let Err(e) = listener
            .listen_all([gregor_outbox::NOTIFY_CHANNEL, lease::LEASES_CHANNEL])
            .await
        {
            tracing::debug!(error = %e, "LISTEN failed; polling meanwhile");
            backoff.wait(&cancel).await;
            continue;
        }
        backoff.reset();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                got = listener.try_recv() => match got {
                    Ok(Some(n)) if n.channel() == lease::LEASES_CHANNEL => leases.nudge.notify_one(),
                    Ok(Some(_)) => wake.notify_one(),
                    // The connection was lost and will be re-established: wake to catch up.
                    Ok(None) => {
                        wake.notify_one();
                        leases.nudge.notify_one();
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "LISTEN connection lost");
                        break;
                    }
                },
            }
        }
    }
}

/// Refreshes backlog metrics and readiness every two seconds, with index-bounded queries
/// (see `store::status`).
async fn status_task(
    pool: PgPool,
    publisher: Arc<Publisher>,
    metrics: RelayMetrics,
    leases: Arc<Leases>,
    checks: Checks,
    cancel: CancellationToken,
) {
    let mut oldest_hint = 0;
    while !cancel.is_cancelled() {
        match store::status(&pool, &mut oldest_hint).await {
            Ok(s) => {
                metrics.backlog.set(s.backlog);
                metrics.parked.set(s.parked);
                metrics.oldest_age.set(s.oldest_age_seconds);
                checks.database.set(true);
            }
            Err(_) => checks.database.set(false),
        }
        metrics
            .leases
            .set(i64::try_from(leases.count()).unwrap_or(0));
        let broker = publisher.broker_reachable(Duration::from_secs(2)).await;
        checks.broker.set(broker);
        checks.producer.set(publisher.healthy());
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

#[cfg(test)]
mod send_check {
    fn is_send<T: Send>(_: T) {}

    /// Compile-time guard: the relay future can be spawned on a multi-threaded runtime.
    #[allow(dead_code)]
    fn relay_future_is_send(relay: super::Relay, cancel: super::CancellationToken) {
        is_send(relay.run(cancel));
    }
}
