//! The gregor consumer runtime: at-least-once delivery turned into an exactly-once effect.
//!
//! * **Typed handlers** per topic, `async fn(Context, Event<T>) -> Result<(), HandlerError>`,
//!   decoding through one seam ([`Decoder`]: [`Raw`], [`Json`], `Avro` with the default `avro` feature). Tombstones reach
//!   the handler with `value: None`.
//! * **Offsets** are committed only after a message is handled or durably forwarded (P6), at
//!   each partition's contiguous watermark; on revoke and at shutdown too.
//! * **Dedupe inbox**: with a database, the handler's [`Context::transaction`] already holds
//!   the dedupe row, so effects and mark commit together; duplicates are skipped and counted.
//! * **Failures**: [`HandlerError::Retryable`] (and panics) retry in place with backoff, then
//!   through `<topic>.retry.<n>` tiers whose due time travels in a header, then land in
//!   `<topic>.dlq` with full diagnostics; [`HandlerError::Permanent`] and undecodable payloads
//!   go to the DLQ at once. Where each failure goes is decided in one place (the `router`
//!   module).
//! * **Outages** are waited out, never turned into failures (P9): when the schema registry or
//!   the database cannot be reached ([`is_database_unreachable`]: the dedupe transaction's or
//!   the handler's own SQL, via `From<sqlx::Error>` or [`HandlerError::Unavailable`]), the
//!   message is tried again in place with capped, jittered backoff while its partition pauses behind it;
//!   nothing is forwarded, dead-lettered or reordered, and `/readyz` reports the database down.
//!
//! ```no_run
//! use gregor_consumer::{Consumer, ConsumerConfig, Context, Event, HandlerError, Json};
//! use tokio_util::sync::CancellationToken;
//!
//! #[derive(serde::Deserialize)]
//! struct OrderPlaced { id: i64 }
//!
//! async fn ship(ctx: Context, event: Event<OrderPlaced>) -> Result<(), HandlerError> {
//!     let Some(order) = event.value else { return Ok(()) }; // tombstone
//!     let mut tx = ctx.transaction().await?;
//!     sqlx::query("INSERT INTO shipments (order_id) VALUES ($1)")
//!         .bind(order.id)
//!         .execute(&mut *tx)
//!         .await?;
//!     Ok(())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ConsumerConfig::from_env(&gregor_config::Env::from_process())?;
//! let consumer = Consumer::builder(config)
//!     .route("orders", Json::<OrderPlaced>::new(), ship)
//!     .build()
//!     .await?;
//! consumer.run(CancellationToken::new()).await?;
//! # Ok(()) }
//! ```

#[cfg(feature = "avro")]
mod avro;
mod config;
mod decode;
mod dedupe;
mod dedupe_tx;
mod error;
mod event;
mod forward;
mod forward_error;
mod forwarder;
mod metrics;
mod observe;
mod offsets;
mod origin;
mod outage;
mod retry_headers;
mod route;
mod router;
mod runtime;
mod trace;
mod worker;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "avro")]
pub use avro::Avro;
pub use config::{ConsumerConfig, RetryPolicy, parse_tiers};
pub use decode::{Decoder, Json, Raw};
pub use dedupe::{cleanup as cleanup_dedupe, migrate as migrate_dedupe};
pub use error::{BoxError, ConsumerError, DecodeError, HandlerError};
pub use event::{Context, Event, Tx};
pub use forward_error::ForwardError;
/// What [`migrate_dedupe`] and [`ConsumerError::Schema`] carry.
pub use gregor_pg::PgError;
pub use metrics::{ConsumerMetrics, ConsumerStats};
pub use outage::is_database_unreachable;
pub use route::{DedupeKeyFn, ErrorKind, Handler, RouteOptions};

use forwarder::Forwarder;
use observe::Checks;
use offsets::Offsets;
use route::{RouteEntry, TypedRoute};
use runtime::{GroupContext, PollLoop};
use worker::Worker;

/// Assembles a [`Consumer`].
pub struct ConsumerBuilder {
    config: ConsumerConfig,
    routes: Vec<(String, RouteEntry)>,
    pool: Option<PgPool>,
}

impl std::fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("config", &self.config)
            .field(
                "topics",
                &self.routes.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ConsumerBuilder {
    /// Routes `topic` (and its retry tiers) to `handler` through `decoder`.
    #[must_use]
    pub fn route<D, H>(self, topic: &str, decoder: D, handler: H) -> Self
    where
        D: Decoder,
        H: Handler<D::Value>,
    {
        self.route_with(topic, decoder, handler, RouteOptions::default())
    }

    /// [`route`](Self::route) with per-topic options.
    #[must_use]
    pub fn route_with<D, H>(
        mut self,
        topic: &str,
        decoder: D,
        handler: H,
        options: RouteOptions,
    ) -> Self
    where
        D: Decoder,
        H: Handler<D::Value>,
    {
        let entry = RouteEntry {
            route: Box::new(TypedRoute { decoder, handler }),
            policy: options.retry.unwrap_or_else(|| self.config.retry.clone()),
            dedupe: options.dedupe,
            dedupe_key: options.dedupe_key,
            batch_size: options.batch_size.clamp(1, 1000),
        };
        self.routes.push((topic.to_owned(), entry));
        self
    }

    /// Uses an existing pool for dedupe and handler transactions instead of `DATABASE_URL`.
    #[must_use]
    pub fn pool(mut self, pool: PgPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Connects, applies the inbox schema, checks that every topic exists and joins nothing
    /// yet: the group is joined by [`Consumer::run`].
    ///
    /// A broker that refuses the credentials or the TLS handshake fails the build at once
    /// with [`ConsumerError::Config`] holding
    /// [`ConfigError::BrokerAuthentication`](gregor_config::ConfigError::BrokerAuthentication)
    /// or [`ConfigError::BrokerTls`](gregor_config::ConfigError::BrokerTls) (not retryable,
    /// no secret in the text); a broker that does not answer within 15 s is a retryable
    /// [`ConsumerError::Kafka`].
    pub async fn build(self) -> Result<Consumer, ConsumerError> {
        let config = self.config;
        config.validate()?;
        if self.routes.is_empty() {
            return Err(ConsumerError::NoRoutes);
        }
        let mut routes = rustc_hash::FxHashMap::default();
        let mut topics = Vec::new();
        for (topic, entry) in self.routes {
            topics.push(topic.clone());
            for tier in 1..=entry.policy.tiers.len() {
                topics.push(gregor_wire::retry_topic(&topic, tier));
            }
            if routes.insert(topic.clone(), Arc::new(entry)).is_some() {
                return Err(ConsumerError::DuplicateRoute(topic));
            }
        }
        let pool = match (self.pool, &config.database_url) {
            (Some(pool), _) => Some(pool),
            (None, Some(url)) => Some(
                PgPoolOptions::new()
                    .max_connections(config.db_pool_size)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url.expose())
                    .await?,
            ),
            (None, None) => None,
        };
        if let Some(pool) = &pool {
            dedupe::migrate(pool).await?;
        }
        let offsets = Arc::new(Offsets::default());
        let metrics = ConsumerMetrics::new()?;
        let group: Arc<str> = Arc::from(config.group.as_str());
        let checks = Checks::new(pool.is_some());
        let consumer: StreamConsumer<GroupContext> = config
            .kafka
            .client_config(&[
                ("auto.offset.reset", "earliest"),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("queued.max.messages.kbytes", "16384"),
                // Short fetch waits and queue backoff: a resumed partition refetches at once.
                ("fetch.wait.max.ms", "100"),
                ("fetch.queue.backoff.ms", "20"),
                // Statistics feed gregor_consumer_lag.
                ("statistics.interval.ms", "5000"),
            ])
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create_with_context(GroupContext {
                offsets: offsets.clone(),
                revoke_timeout: config.shutdown_timeout,
                group: group.clone(),
                metrics: metrics.clone(),
                member: checks.group.clone(),
                assigned: Mutex::new(HashSet::new()),
            })?;
        let forwarder = Forwarder::new(
            config
                .kafka
                .client_config(&[
                    ("linger.ms", "5"),
                    ("partitioner", "murmur2_random"),
                    // The runtime never creates topics: a missing retry or DLQ topic is an
                    // error that names it, not a topic with the broker's defaults.
                    ("allow.auto.create.topics", "false"),
                ])
                .set("enable.idempotence", "true")
                .set("acks", "all")
                // Nothing reads this producer's statistics (a KAFKA_STATISTICS_INTERVAL_MS meant
                // for the consumer would otherwise log them).
                .set("statistics.interval.ms", "0")
                .clone(),
            message_timeout(&config.kafka),
            metrics.producer_rebuilds.clone(),
            metrics.forward_failures.clone(),
            checks.producer.clone(),
        )?;
        let mut dlq_topics: Vec<String> =
            routes.keys().map(|t| gregor_wire::dlq_topic(t)).collect();
        dlq_topics.sort();
        let mut needed = topics.clone();
        needed.extend(dlq_topics.iter().cloned());
        check_broker(&config.kafka).await?;
        let missing = missing_topics(&consumer, &needed).await?;
        if !missing.is_empty() {
            return Err(ConsumerError::MissingTopics(missing));
        }
        let lane_capacity = (config.queue_capacity / config.key_concurrency).max(1);
        let hot = routes
            .keys()
            .map(|topic| (topic.clone(), metrics.topic(topic)))
            .collect();
        let worker = Arc::new(Worker {
            hot,
            group,
            routes,
            pool,
            forwarder: Arc::new(forwarder),
            offsets,
            progress: Arc::new(Notify::new()),
            metrics,
            halt: CancellationToken::new(),
            halted: Mutex::new(None),
        });
        Ok(Consumer {
            poll: PollLoop {
                consumer,
                worker,
                key_concurrency: config.key_concurrency,
                lane_capacity,
                pause_at: config.queue_capacity,
                commit_interval: config.commit_interval,
                shutdown_timeout: config.shutdown_timeout,
            },
            topics,
            retention: config.dedupe_retention,
            cleanup_interval: config.dedupe_cleanup_interval,
            http_addr: config.http_addr,
            checks,
            dlq_topics,
            dlq_depth_interval: config.dlq_depth_interval,
        })
    }
}

/// The forwarding producer's `message.timeout.ms` (or `delivery.timeout.ms`) when set.
fn message_timeout(kafka: &gregor_config::KafkaSettings) -> Option<Duration> {
    ["message.timeout.ms", "delivery.timeout.ms"]
        .iter()
        .find_map(|p| kafka.property(p))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// How long [`ConsumerBuilder::build`] waits for the broker.
const BROKER_TIMEOUT: Duration = Duration::from_secs(15);

/// Fails fast, with a configuration error, when the broker refuses the credentials or the
/// TLS handshake; an unreachable broker is a retryable [`ConsumerError::Kafka`].
async fn check_broker(kafka: &gregor_config::KafkaSettings) -> Result<(), ConsumerError> {
    use gregor_config::BrokerStatus;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    let kafka = kafka.clone();
    match tokio::task::spawn_blocking(move || kafka.check_broker(BROKER_TIMEOUT)).await {
        Ok(Ok(BrokerStatus::Reachable)) => Ok(()),
        Ok(Ok(BrokerStatus::Unreachable(last))) => Err(ConsumerError::Kafka(last.unwrap_or(
            KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut),
        ))),
        Ok(Err(refused)) => Err(ConsumerError::Config(refused)),
        Err(_) => Err(ConsumerError::Kafka(KafkaError::Canceled)),
    }
}

async fn missing_topics(
    consumer: &StreamConsumer<GroupContext>,
    needed: &[String],
) -> Result<Vec<String>, ConsumerError> {
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(15))?;
    let existing: Vec<&str> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.name())
        .collect();
    Ok(needed
        .iter()
        .filter(|t| !existing.contains(&t.as_str()))
        .cloned()
        .collect())
}

/// A consumer ready to join its group.
pub struct Consumer {
    poll: PollLoop,
    topics: Vec<String>,
    retention: Duration,
    cleanup_interval: Duration,
    http_addr: Option<SocketAddr>,
    checks: Checks,
    dlq_topics: Vec<String>,
    dlq_depth_interval: Duration,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.poll.worker.group)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A builder for `config`.
    pub fn builder(config: ConsumerConfig) -> ConsumerBuilder {
        ConsumerBuilder {
            config,
            routes: Vec::new(),
            pool: None,
        }
    }

    /// The metrics (clone it before [`run`](Self::run) to read them while it runs).
    pub fn metrics(&self) -> ConsumerMetrics {
        self.poll.worker.metrics.clone()
    }

    /// Joins the group and consumes until `shutdown` is cancelled; then stops fetching,
    /// lets running handlers finish (bounded by the shutdown timeout), commits and leaves.
    ///
    /// With [`ConsumerConfig::http_addr`] it first binds that address (failing with
    /// [`ConsumerError::Http`] when it cannot) and serves, until it returns, `/healthz`,
    /// `/metrics` and `/readyz`. Ready means every check is up: `database` (with a pool:
    /// `SELECT 1` answers), `broker` (a metadata request answers) — both refreshed every
    /// second with a 2 s timeout — and `group` (the group assigned this member its
    /// partitions, possibly none; down again after a failed rebalance or a lost assignment)
    /// and `producer` (the forwarding producer works; down while a needed rebuild failed).
    ///
    /// A retry or dead-letter copy that can never be forwarded (its topic is missing,
    /// invalid or not writable, or it is too large even without its payload) stops the
    /// consumer as a shutdown would, leaving that message uncommitted, and `run` returns
    /// [`ConsumerError::Forward`] naming the topic and the cause.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ConsumerError> {
        // Stops the endpoint and the status tasks when `run` returns, however it returns.
        let background = CancellationToken::new();
        let _stop_background = background.clone().drop_guard();
        let mut tasks = Vec::new();
        if let Some(addr) = self.http_addr {
            let (addr, server) = gregor_telemetry::health::serve(
                addr,
                self.poll.worker.metrics.registry().clone(),
                self.checks.readiness.clone(),
                background.clone(),
            )
            .await?;
            tracing::info!(%addr, "serving /healthz, /readyz, /metrics");
            tasks.push(server);
            tasks.push(tokio::spawn(observe::status_task(
                self.poll.worker.pool.clone(),
                self.poll.worker.forwarder.clone(),
                self.topics[0].clone(),
                self.checks.clone(),
                background.clone(),
            )));
        }
        if !self.dlq_depth_interval.is_zero() {
            tasks.push(tokio::spawn(observe::dlq_depth_task(
                self.poll.worker.forwarder.clone(),
                self.dlq_topics.clone(),
                self.poll.worker.metrics.dlq_depth.clone(),
                self.dlq_depth_interval,
                background.clone(),
            )));
        }
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.poll.consumer.subscribe(&topics)?;
        // Also stops when the consumer halts on a copy it cannot forward.
        let cleanup_token = shutdown.child_token();
        let cleanup = self.poll.worker.pool.clone().map(|pool| {
            let group = self.poll.worker.group.to_string();
            let token = cleanup_token.clone();
            let (retention, interval) = (self.retention, self.cleanup_interval);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                loop {
                    tokio::select! {
                        () = token.cancelled() => return,
                        _ = tick.tick() => match dedupe::cleanup(&pool, &group, retention).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(deleted = n, "expired dedupe rows removed"),
                            Err(e) => tracing::warn!(error = %e, "dedupe cleanup failed"),
                        },
                    }
                }
            })
        });
        let halted = self.poll.run(shutdown).await;
        cleanup_token.cancel();
        if let Some(task) = cleanup {
            let _ = task.await;
        }
        background.cancel();
        for task in tasks {
            // The server waits for open connections; do not let a lingering client hold us.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        match halted {
            Some(error) => Err(ConsumerError::Forward(error)),
            None => Ok(()),
        }
    }
}
