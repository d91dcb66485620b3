//! The transactional outbox: write events into PostgreSQL in the same transaction as the
//! state change they describe; the `gregor-relay` publishes them to Kafka afterwards.
//!
//! An event is published if and only if the transaction that enqueued it commits.
//!
//! ```no_run
//! use gregor_outbox::{OutboxMessage, enqueue, migrate};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::PgPool::connect("postgres://127.0.0.1/orders").await?;
//! migrate(&pool).await?;
//!
//! let mut tx = pool.begin().await?;
//! sqlx::query("UPDATE orders SET state = 'placed' WHERE id = 42").execute(&mut *tx).await?;
//! let event_id = enqueue(
//!     &mut tx,
//!     OutboxMessage::json("orders", "order.placed", "/orders", &serde_json::json!({"id": 42}))?
//!         .key("42"),
//! )
//! .await?;
//! tx.commit().await?; // only now can the relay see (and publish) the event
//! # let _ = event_id;
//! # Ok(()) }
//! ```
//!
//! Rows live in `gregor_outbox`; each key maps to one of [`SHARDS`] shards so that several
//! relay replicas can share the work while every key keeps a single publisher.

mod admin;
mod enqueue;
mod error;
mod message;
mod migrate;
mod shard;
mod trace;

pub use admin::{OutboxStatus, ParkedRow, Requeue, parked, requeue, status};
pub use enqueue::{enqueue, enqueue_batch};
pub use error::OutboxError;
pub use gregor_pg::{is_retryable_sqlx, is_tls_failure};
pub use message::{OutboxMessage, RESERVED_HEADERS, RESERVED_PREFIX, validate_topic};
pub use migrate::{MIGRATIONS, apply_migrations, migrate};
pub use shard::{SHARDS, shard_of};
pub use trace::current_trace_context;

/// The notification channel the outbox trigger signals at commit.
pub const NOTIFY_CHANNEL: &str = "gregor_outbox";
