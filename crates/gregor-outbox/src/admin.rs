//! Operator queries: backlog, parked rows, requeue. Used by the relay's metrics and the CLI.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::OutboxError;

/// A snapshot of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OutboxStatus {
    /// Rows waiting to be published (not parked).
    pub backlog: i64,
    /// Rows parked after repeated failures.
    pub parked: i64,
    /// Age in seconds of the oldest row waiting to be published (0 when none).
    pub oldest_age_seconds: f64,
}

/// Counts backlog and parked rows and the age of the oldest unpublished row.
pub async fn status(pool: &PgPool) -> Result<OutboxStatus, OutboxError> {
    let (backlog, parked, oldest): (i64, i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE parked_at IS NULL),
                count(*) FILTER (WHERE parked_at IS NOT NULL),
                extract(epoch FROM clock_timestamp()
                        - min(created_at) FILTER (WHERE parked_at IS NULL))::float8
           FROM gregor_outbox",
    )
    .fetch_one(pool)
    .await?;
    Ok(OutboxStatus {
        backlog,
        parked,
        oldest_age_seconds: oldest.unwrap_or(0.0),
    })
}

/// A parked row, as shown by `gregor outbox parked`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ParkedRow {
    /// Outbox row id (what `requeue` takes).
    pub id: i64,
    /// The event id (`ce_id`).
    pub event_id: Uuid,
    /// Destination topic.
    pub topic: String,
    /// Partition key bytes.
    pub key: Option<Vec<u8>>,
    /// Payload size in bytes (`None` for a tombstone).
    pub payload_bytes: Option<i32>,
    /// Failed attempts.
    pub attempts: i32,
    /// The last error.
    pub last_error: Option<String>,
    /// When the row was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
}

/// Parked rows, oldest first.
pub async fn parked(pool: &PgPool, limit: i64) -> Result<Vec<ParkedRow>, OutboxError> {
    Ok(sqlx::query_as(
        "SELECT id, event_id, topic, key, octet_length(payload) AS payload_bytes, attempts,
                last_error, created_at, parked_at
           FROM gregor_outbox WHERE parked_at IS NOT NULL ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Which parked rows to requeue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// These row ids.
    Ids(Vec<i64>),
    /// Every parked row.
    All,
}

/// Un-parks rows (attempts reset) so the relay publishes them again, in id order with the
/// rest of their key: the rows their key queued behind them are released too, and running
/// relays restart their scan from the oldest row (see ADR 0003; the release and the restart
/// signal are done by a trigger, so an operator's own `UPDATE` or `DELETE` of a parked row
/// releases its held rows as well). Returns how many parked rows were requeued.
pub async fn requeue(pool: &PgPool, which: &Requeue) -> Result<u64, OutboxError> {
    let (ids, all) = match which {
        Requeue::Ids(ids) => (ids.clone(), false),
        Requeue::All => (Vec::new(), true),
    };
    let mut tx = pool.begin().await?;
    // The trigger `gregor_outbox_unparked` (migration 2) runs inside this statement for each
    // row: it releases the rows the parked row holds and bumps the requeue generation. Its
    // statements must see what committed before they run (a relay holding rows behind one of
    // these parked rows): read committed, whatever the session default.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut *tx)
        .await?;
    // Un-parking takes the parked rows' locks: a relay holding rows behind one of them holds
    // a share lock on it until it commits, so every hold is either committed before the
    // trigger runs (and released by it) or sees the row un-parked and holds nothing.
    let requeued: Vec<i64> = sqlx::query_scalar(
        "UPDATE gregor_outbox SET parked_at = NULL, attempts = 0
          WHERE parked_at IS NOT NULL AND ($2 OR id = ANY($1))
        RETURNING id",
    )
    .bind(ids)
    .bind(all)
    .fetch_all(&mut *tx)
    .await?;
    if requeued.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(crate::NOTIFY_CHANNEL)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(u64::try_from(requeued.len()).unwrap_or(u64::MAX))
}
