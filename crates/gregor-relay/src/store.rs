//! The relay's SQL: claim rows of owned shards, delete what the broker acknowledged, record
//! failures. Deletes and failure records are fenced by the shard lease.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// One outbox row on its way to the broker.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct OutboxRow {
    pub(crate) id: i64,
    pub(crate) shard: i16,
    pub(crate) event_id: Uuid,
    pub(crate) topic: String,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) header_names: Vec<String>,
    pub(crate) header_values: Vec<Vec<u8>>,
    pub(crate) event_type: String,
    pub(crate) event_source: String,
    pub(crate) content_type: Option<String>,
    pub(crate) traceparent: Option<String>,
    pub(crate) tracestate: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
}

/// A claimed batch plus the transactions that were still in progress when it was read.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    pub(crate) rows: Vec<OutboxRow>,
    /// The claim snapshot's in-progress transactions; `None` when no row came back.
    pub(crate) in_progress: Option<InProgress>,
}

/// Transactions not visible to a snapshot: those listed in `pg_snapshot_xip`, and every
/// transaction id from `pg_snapshot_xmax` up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InProgress {
    pub(crate) xids: Vec<i64>,
    pub(crate) xmax: i64,
}

impl InProgress {
    /// Nothing in progress yet (the start of a pass, where every row is above the hint).
    pub(crate) fn none() -> Self {
        Self {
            xids: Vec::new(),
            xmax: i64::MAX,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    #[sqlx(flatten)]
    row: OutboxRow,
    in_progress: Vec<i64>,
    xmax: i64,
}

/// Rows of `shards`, oldest first: those after `after_id`, plus those at or below it written
/// by `late` transactions — those in progress when the previous batch was read,
/// whose rows may have become visible *below* the scan position since. Rows whose key has an
/// earlier parked row are skipped (a parked row blocks only its own key).
///
/// `after_id` is a hint valid within one scan pass, never a persistent cursor.
pub(crate) async fn claim(
    pool: &PgPool,
    shards: &[i16],
    after_id: i64,
    late: &InProgress,
    limit: i64,
) -> Result<Claimed, sqlx::Error> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "WITH snap AS MATERIALIZED (
             SELECT coalesce((SELECT array_agg(x::text::bigint)
                                FROM pg_snapshot_xip(pg_current_snapshot()) AS x), '{}')
                        AS in_progress,
                    pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax),
         candidates AS (
             (SELECT * FROM gregor_outbox
               WHERE id > $2 AND shard = ANY($1) AND parked_at IS NULL
               ORDER BY id LIMIT $4)
             UNION ALL
             (SELECT * FROM gregor_outbox
               WHERE xid = ANY($3) AND id <= $2 AND shard = ANY($1) AND parked_at IS NULL)
             UNION ALL
             (SELECT * FROM gregor_outbox
               WHERE xid >= $5 AND id <= $2 AND shard = ANY($1) AND parked_at IS NULL))
         SELECT o.id, o.shard, o.event_id, o.topic, o.key, o.payload, o.header_names,
                o.header_values, o.event_type, o.event_source, o.content_type, o.traceparent,
                o.tracestate, o.created_at, snap.in_progress, snap.xmax
           FROM candidates o, snap
          WHERE o.key IS NULL OR NOT EXISTS (
                  SELECT 1 FROM gregor_outbox p
                   WHERE p.parked_at IS NOT NULL AND p.key = o.key AND p.id < o.id)
          ORDER BY o.id
          LIMIT $4",
    )
    .bind(shards)
    .bind(after_id)
    .bind(&late.xids)
    .bind(limit)
    .bind(late.xmax)
    .fetch_all(pool)
    .await?;
    let mut claimed = Claimed {
        rows: Vec::with_capacity(rows.len()),
        in_progress: None,
    };
    for r in rows {
        if claimed.in_progress.is_none() {
            claimed.in_progress = Some(InProgress {
                xids: r.in_progress,
                xmax: r.xmax,
            });
        }
        claimed.rows.push(r.row);
    }
    Ok(claimed)
}

/// Deletes published rows, but only those of shards this relay still holds an unexpired
/// lease on. Returns how many rows were deleted.
pub(crate) async fn delete_published(
    pool: &PgPool,
    relay_id: Uuid,
    ids: &[i64],
) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "DELETE FROM gregor_outbox o
          USING gregor_relay_leases l
          WHERE o.id = ANY($1)
            AND l.shard = o.shard AND l.owner = $2 AND l.expires_at > now()",
    )
    .bind(ids)
    .bind(relay_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// A failed publish attempt of one row.
#[derive(Debug, Clone)]
pub(crate) struct FailedRow {
    pub(crate) id: i64,
    pub(crate) error: String,
    /// Permanent failures count toward parking; transient ones (broker down) do not.
    pub(crate) counts: bool,
}

/// Records failures; rows reaching `max_attempts` counted failures are parked. Returns the
/// ids that were parked now. Fenced by the lease like deletes.
pub(crate) async fn record_failures(
    pool: &PgPool,
    relay_id: Uuid,
    failures: &[FailedRow],
    max_attempts: i32,
) -> Result<Vec<i64>, sqlx::Error> {
    if failures.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = failures.iter().map(|f| f.id).collect();
    let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
    let counts: Vec<bool> = failures.iter().map(|f| f.counts).collect();
    let rows: Vec<(i64, bool)> = sqlx::query_as(
        "UPDATE gregor_outbox o
            SET attempts = o.attempts + CASE WHEN f.counts THEN 1 ELSE 0 END,
                last_error = f.error,
                parked_at = CASE WHEN f.counts AND o.attempts + 1 >= $4
                                 THEN clock_timestamp() END
           FROM unnest($1::bigint[], $2::text[], $3::bool[]) AS f(id, error, counts),
                gregor_relay_leases l
          WHERE o.id = f.id
            AND l.shard = o.shard AND l.owner = $5 AND l.expires_at > now()
        RETURNING o.id, o.parked_at IS NOT NULL",
    )
    .bind(&ids)
    .bind(&errors)
    .bind(&counts)
    .bind(max_attempts)
    .bind(relay_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, parked)| *parked)
        .map(|(id, _)| id)
        .collect())
}
