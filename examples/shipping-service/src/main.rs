//! `shipping-service`: consumes `order.placed` events and records one shipment per order in
//! PostgreSQL, inside the dedupe transaction, so redelivery never ships twice.
//!
//! Configuration is the consumer runtime's (`KAFKA_BOOTSTRAP_SERVERS`, `GREGOR_CONSUMER_*`,
//! `DATABASE_URL`), `SCHEMA_REGISTRY_URL` (and `SCHEMA_REGISTRY_*`) plus:
//! * `SHIPPING_TOPIC` (default `orders`): the topic to consume;
//! * `SHIPPING_FLAKY_EVERY=N`: orders whose amount is a multiple of N fail their first
//!   attempt (a carrier timeout), to show retries;
//! * `SHIPPING_REJECT_EVERY=N`: orders whose amount is a multiple of N are rejected for good
//!   (an undeliverable address), to show the dead-letter topic;
//! * `SHIPPING_DELAY_MS` (default 0): simulated carrier-call time per order, to show lag;
//! * `SHIPPING_STATS_INTERVAL_MS` (default 1000): how often a stats line is printed;
//! * `SHIPPING_BATCH_SIZE` (default 32): orders shipped per dedupe transaction (the handler
//!   writes only inside that transaction, so batching is safe).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Duration;

use gregor::config::Env;
use gregor::consumer::{
    Avro, Consumer, ConsumerConfig, ConsumerStats, Context, Event, HandlerError, RouteOptions,
};
use serde::Deserialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::fmt::Hyphenated;

/// The `order.placed` event of order-service, as this service reads it: Avro decoded with
/// its own reader schema (`schemas/shipping-service/order_placed.avsc`, its declared contract
/// in `schemas/catalog.toml`), resolved against whatever schema order-service wrote with.
#[derive(Debug, Deserialize)]
struct OrderPlaced {
    /// A UUID as Avro text (a bare `Uuid` would expect 16 bytes from apache-avro's serde).
    order_id: Hyphenated,
    customer: String,
    amount_cents: i64,
}

const READER_SCHEMA: &str = include_str!("../../../schemas/shipping-service/order_placed.avsc");

#[derive(Debug, Clone, Copy)]
struct Faults {
    flaky_every: Option<i64>,
    reject_every: Option<i64>,
    delay: Duration,
}

async fn ship(faults: Faults, ctx: Context, event: Event<OrderPlaced>) -> Result<(), HandlerError> {
    let Some(order) = &event.value else {
        return Ok(()); // a tombstone: nothing to ship
    };
    let multiple = |n: Option<i64>| n.is_some_and(|n| n > 0 && order.amount_cents % n == 0);
    if multiple(faults.reject_every) {
        return Err(HandlerError::permanent(format!(
            "order {} of {}: undeliverable address",
            order.order_id, order.customer
        )));
    }
    if multiple(faults.flaky_every) && event.attempt == 1 {
        return Err(HandlerError::retryable("carrier API timed out"));
    }
    if !faults.delay.is_zero() {
        // The simulated carrier call.
        tokio::time::sleep(faults.delay).await;
    }
    let mut tx = ctx.transaction().await?;
    sqlx::query(
        "INSERT INTO shipments (event_id, order_id, customer, topic, \"partition\", \"offset\", attempt)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event.id().map(str::to_owned))
    .bind(order.order_id.into_uuid())
    .bind(order.customer.clone())
    .bind(event.topic.clone())
    .bind(event.partition)
    .bind(event.offset)
    .bind(i32::try_from(event.attempt).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    // Replicas start together: concurrent CREATE TABLE IF NOT EXISTS races in PostgreSQL, so
    // they take turns under an advisory lock.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('shipping-service migrate'))")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS shipments (
             id          BIGSERIAL PRIMARY KEY,
             event_id    TEXT,
             order_id    UUID NOT NULL,
             customer    TEXT NOT NULL,
             topic       TEXT NOT NULL,
             \"partition\" INTEGER NOT NULL,
             \"offset\"    BIGINT NOT NULL,
             attempt     INTEGER NOT NULL,
             shipped_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

fn print_stats(stats: ConsumerStats) {
    println!(
        "shipping: handled={} duplicates={} retried={} dead_lettered={} failed_attempts={}",
        stats.handled, stats.duplicates, stats.retried, stats.dead_lettered, stats.failed_attempts
    );
}

async fn run(env: Env) -> anyhow::Result<()> {
    let config = ConsumerConfig::from_env(&env)?;
    let database_url = config
        .database_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("DATABASE_URL is required (shipments live there)"))?;
    let pool = PgPool::connect(database_url.expose()).await?;
    migrate(&pool).await?;
    let topic = env.get("SHIPPING_TOPIC").unwrap_or("orders").to_owned();
    let every = |var: &str| -> anyhow::Result<Option<i64>> {
        env.get(var)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{var} is invalid: {e}"))
            })
            .transpose()
    };
    let faults = Faults {
        flaky_every: every("SHIPPING_FLAKY_EVERY")?,
        reject_every: every("SHIPPING_REJECT_EVERY")?,
        delay: env.millis_or("SHIPPING_DELAY_MS", Duration::ZERO)?,
    };
    let interval = env.millis_or("SHIPPING_STATS_INTERVAL_MS", Duration::from_secs(1))?;
    let options = RouteOptions {
        batch_size: env.parse_or("SHIPPING_BATCH_SIZE", 32)?,
        ..RouteOptions::default()
    };
    let consumer = Consumer::builder(config)
        .pool(pool)
        .route_with(
            &topic,
            Avro::<OrderPlaced>::new(gregor::avro::RegistryClient::from_env(&env)?, READER_SCHEMA)?,
            move |ctx, event| ship(faults, ctx, event),
            options,
        )
        .build()
        .await?;
    let metrics = consumer.metrics();
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signals.cancel();
    });
    let reporter = {
        let (metrics, token) = (metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = tick.tick() => print_stats(metrics.stats()),
                }
            }
        })
    };
    println!("shipping: consuming {topic}");
    consumer.run(shutdown).await?;
    let _ = reporter.await;
    print_stats(metrics.stats());
    println!("shipping: stopped");
    Ok(())
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn main() -> ExitCode {
    let env = Env::from_process();
    let telemetry = match telemetry(&env) {
        Ok(telemetry) => telemetry,
        Err(e) => return fail(&e),
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(env)));
    // Export buffered spans after the runtime is gone (the exporter blocks).
    drop(telemetry);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn telemetry(env: &Env) -> anyhow::Result<gregor_telemetry::Telemetry> {
    let mut config = gregor_telemetry::TelemetryConfig::from_env("shipping-service", env)?;
    if env.get("RUST_LOG").is_none() {
        config.log_filter = "warn,gregor_consumer=info".to_owned();
    }
    Ok(gregor_telemetry::init(&config)?)
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("shipping-service: {e:#}");
    ExitCode::from(2)
}
