//! Placing orders: the order row, the customer's order count and the event commit together.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use gregor::avro::AvroSerializer;
use gregor_telemetry::propagation;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tracing::Instrument as _;
use uuid::Uuid;
use uuid::fmt::Hyphenated;

/// The `order.placed` event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct OrderPlaced {
    /// Text in Avro (`"type": "string"`): apache-avro's serde is not human-readable, so a
    /// bare `Uuid` would expect 16 bytes; `Hyphenated` is always the 36-character text.
    pub(crate) order_id: Hyphenated,
    pub(crate) customer: String,
    /// The customer's n-th order: consumers can check per-customer order.
    pub(crate) customer_seq: i64,
    pub(crate) amount_cents: i64,
    /// ISO 4217 code.
    pub(crate) currency: String,
}

/// The schema order-service writes `order.placed` with (see `schemas/catalog.toml`).
pub(crate) const ORDER_PLACED_SCHEMA: &str =
    include_str!("../../../schemas/orders/order_placed.avsc");

pub(crate) async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    gregor::outbox::migrate(pool).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, orders BIGINT NOT NULL DEFAULT 0);
         CREATE TABLE IF NOT EXISTS orders (
             id UUID PRIMARY KEY, customer TEXT NOT NULL, customer_seq BIGINT NOT NULL,
             amount_cents BIGINT NOT NULL, placed_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Places one order and enqueues its event in the same transaction.
pub(crate) async fn place(
    pool: &PgPool,
    avro: &AvroSerializer,
    topic: &str,
    customer: &str,
    amount_cents: i64,
) -> anyhow::Result<OrderPlaced> {
    let mut tx = pool.begin().await?;
    // The customer row lock orders this customer's transactions: their events keep that order.
    let customer_seq: i64 = sqlx::query_scalar(
        "INSERT INTO customers (id, orders) VALUES ($1, 1)
         ON CONFLICT (id) DO UPDATE SET orders = customers.orders + 1 RETURNING orders",
    )
    .bind(customer)
    .fetch_one(&mut *tx)
    .await?;
    let event = OrderPlaced {
        order_id: Uuid::now_v7().hyphenated(),
        customer: customer.to_owned(),
        customer_seq,
        amount_cents,
        currency: "EUR".to_owned(),
    };
    // Registers the schema on first use, then framed Avro from the cache: no HTTP per event.
    let message = avro
        .message(topic, "order.placed", "/examples/order-service", &event)
        .await?
        .key(customer);
    sqlx::query(
        "INSERT INTO orders (id, customer, customer_seq, amount_cents) VALUES ($1, $2, $3, $4)",
    )
    .bind(event.order_id.into_uuid())
    .bind(customer)
    .bind(customer_seq)
    .bind(amount_cents)
    .execute(&mut *tx)
    .await?;
    gregor::enqueue(&mut tx, message).await?;
    tx.commit().await?;
    Ok(event)
}

#[derive(Debug, Deserialize)]
struct PlaceOrder {
    customer: String,
    amount_cents: i64,
}

#[derive(Clone)]
struct AppState {
    pool: PgPool,
    avro: std::sync::Arc<AvroSerializer>,
    topic: String,
}

pub(crate) async fn serve(
    pool: PgPool,
    avro: AvroSerializer,
    topic: String,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/orders", post(place_order))
        .with_state(AppState {
            pool,
            avro: std::sync::Arc::new(avro),
            topic,
        });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "order-service listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}

/// `POST /orders` in its server span: the trace starts here (or continues the caller's
/// `traceparent`), and the outbox row carries it on to the relay and the consumers.
async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<PlaceOrder>,
) -> Result<(StatusCode, Json<OrderPlaced>), (StatusCode, String)> {
    let span = tracing::info_span!(
        "POST /orders",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = "POST",
        http.route = "/orders",
        http.response.status_code = tracing::field::Empty,
        order.customer = %req.customer,
    );
    if let Some(parent) = headers
        .get(propagation::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
    {
        let state = headers
            .get(propagation::TRACESTATE)
            .and_then(|v| v.to_str().ok());
        propagation::set_remote_parent(&span, parent, state);
    }
    let result = place_order_in_span(state, req)
        .instrument(span.clone())
        .await;
    let status = match &result {
        Ok((status, _)) | Err((status, _)) => *status,
    };
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    result
}

async fn place_order_in_span(
    state: AppState,
    req: PlaceOrder,
) -> Result<(StatusCode, Json<OrderPlaced>), (StatusCode, String)> {
    if req.customer.trim().is_empty() || req.amount_cents <= 0 {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "customer and a positive amount_cents are required".into(),
        ));
    }
    place(
        &state.pool,
        &state.avro,
        &state.topic,
        &req.customer,
        req.amount_cents,
    )
    .await
    .map(|o| (StatusCode::CREATED, Json(o)))
    .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

pub(crate) async fn generate(
    pool: &PgPool,
    avro: &AvroSerializer,
    topic: &str,
    orders: u64,
    rate: u64,
    customers: u32,
) -> anyhow::Result<()> {
    let rate = rate.max(1);
    let started = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut last_report = Instant::now();
    for n in 1..=orders {
        pace.tick().await;
        let (customer, amount) = {
            let mut rng = rand::rng();
            (
                format!("customer-{:03}", rng.random_range(0..customers.max(1))),
                rng.random_range(100..100_000),
            )
        };
        place(pool, avro, topic, &customer, amount).await?;
        if last_report.elapsed() >= Duration::from_secs(1) || n == orders {
            last_report = Instant::now();
            println!(
                "order-service: placed {n}/{orders} orders ({:.0}/s)",
                n as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
