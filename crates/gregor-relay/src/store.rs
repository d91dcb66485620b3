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

/// A claimed batch plus what the claim's snapshot said about the table.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    /// Rows to publish, in id order.
    pub(crate) rows: Vec<OutboxRow>,
    /// Rows whose key has an earlier parked row, with that row's id: to be held, not published.
    pub(crate) blocked: Vec<(i64, i64)>,
    /// The highest id the claim examined (publishable or not): the next batch starts after it.
    pub(crate) last_id: Option<i64>,
    /// The claim snapshot's in-progress transactions; `None` when no row came back.
    pub(crate) in_progress: Option<InProgress>,
    /// The requeue generation: in the claim's snapshot, or read right after an empty claim.
    pub(crate) generation: Option<i64>,
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
    generation: i64,
    /// The earliest parked row of the same key below this one, if any.
    blocker: Option<i64>,
    /// Whether the row came from the ordered scan above the hint (not a late transaction).
    scanned: bool,
}

/// The columns every claim branch selects.
const COLUMNS: &str = "id, shard, event_id, topic, key, payload, header_names, header_values, \
                       event_type, event_source, content_type, traceparent, tracestate, \
                       created_at";

/// The claim statement for `shards`. With every shard owned, one ordered scan of the primary
/// key; otherwise a merge of one ordered scan of `gregor_outbox_claim` per shard, so rows of
/// shards owned by other replicas are never read. Shard numbers are formatted into the text
/// (they are small integers we own, never input); the statement is planned per execution.
pub(crate) fn claim_sql(shards: &[i16]) -> String {
    let owns_all = shards.len() >= usize::try_from(gregor_outbox::SHARDS).unwrap_or(64);
    let scan = if owns_all {
        format!(
            "(SELECT {COLUMNS} FROM gregor_outbox
               WHERE id > $2 AND parked_at IS NULL AND held_by IS NULL
               ORDER BY id LIMIT $4)"
        )
    } else {
        let branches: Vec<String> = shards
            .iter()
            .map(|shard| {
                format!(
                    "(SELECT {COLUMNS} FROM gregor_outbox
                       WHERE shard = {shard} AND id > $2 AND parked_at IS NULL AND held_by IS NULL
                       ORDER BY id LIMIT $4)"
                )
            })
            .collect();
        format!(
            "(SELECT * FROM ({}) AS per_shard ORDER BY id LIMIT $4)",
            branches.join(" UNION ALL ")
        )
    };
    format!(
        "WITH snap AS MATERIALIZED (
             SELECT coalesce((SELECT array_agg(x::text::bigint)
                                FROM pg_snapshot_xip(pg_current_snapshot()) AS x), '{{}}')
                        AS in_progress,
                    pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax,
                    (SELECT generation FROM gregor_outbox_requeues) AS generation),
         candidates AS (
             SELECT scan.*, true AS scanned FROM {scan} AS scan
             UNION ALL
             SELECT {COLUMNS}, false FROM gregor_outbox
              WHERE xid = ANY($3) AND id <= $2 AND shard = ANY($1)
                AND parked_at IS NULL AND held_by IS NULL
             UNION ALL
             SELECT {COLUMNS}, false FROM gregor_outbox
              WHERE xid >= $5 AND id <= $2 AND shard = ANY($1)
                AND parked_at IS NULL AND held_by IS NULL)
         SELECT o.*, snap.in_progress, snap.xmax, coalesce(snap.generation, 0) AS generation,
                CASE WHEN o.key IS NOT NULL THEN
                     (SELECT min(p.id) FROM gregor_outbox p
                       WHERE p.parked_at IS NOT NULL AND sha256(p.key) = sha256(o.key)
                         AND p.key = o.key AND p.id < o.id)
                END AS blocker
           FROM candidates o, snap
          ORDER BY o.id"
    )
}

/// Rows of `shards`, oldest first: up to `limit` after `after_id`, plus every row at or below
/// it written by `late` transactions — those in progress when the previous batch was read,
/// whose rows may have become visible *below* the scan position since. The limit applies to
/// the rows of the ordered scan before the parked-key check, so a key queued behind a parked
/// row is returned in `blocked` (to be held) and the scan moves past it: it never stalls.
///
/// `after_id` is a hint valid within one scan pass, never a persistent cursor.
pub(crate) async fn claim(
    pool: &PgPool,
    shards: &[i16],
    after_id: i64,
    late: &InProgress,
    limit: i64,
) -> Result<Claimed, sqlx::Error> {
    let sql = claim_sql(shards);
    // Not prepared: the plan must use the shard literals and this execution's `after_id`
    // (a generic plan falls back to walking the primary key through other shards' rows).
    let rows: Vec<ClaimedRow> = sqlx::query_as(&sql)
        .persistent(false)
        .bind(shards)
        .bind(after_id)
        .bind(&late.xids)
        .bind(limit)
        .bind(late.xmax)
        .fetch_all(pool)
        .await?;
    let mut claimed = Claimed {
        rows: Vec::with_capacity(rows.len()),
        ..Claimed::default()
    };
    for r in rows {
        if claimed.in_progress.is_none() {
            claimed.in_progress = Some(InProgress {
                xids: r.in_progress,
                xmax: r.xmax,
            });
            claimed.generation = Some(r.generation);
        }
        if r.scanned {
            claimed.last_id = Some(claimed.last_id.map_or(r.row.id, |l| l.max(r.row.id)));
        }
        match r.blocker {
            Some(parked) => claimed.blocked.push((r.row.id, parked)),
            None => claimed.rows.push(r.row),
        }
    }
    if claimed.generation.is_none() {
        // Nothing came back, so the snapshot's facts did not either: a requeue of rows below
        // the scan position must still be seen while the relay is otherwise idle.
        claimed.generation = Some(
            sqlx::query_scalar("SELECT generation FROM gregor_outbox_requeues")
                .fetch_optional(pool)
                .await?
                .unwrap_or(0),
        );
    }
    Ok(claimed)
}

/// Holds rows behind the parked rows of their keys (`(row id, parked id)` pairs): they leave
/// the claim index until `gregor outbox requeue` releases them. A row is held only if its
/// parked row is still parked when this runs: the share lock taken on it orders this against
/// a concurrent requeue (which un-parks first, then releases what is held). Returns the ids
/// held.
pub(crate) async fn hold(pool: &PgPool, blocked: &[(i64, i64)]) -> Result<Vec<i64>, sqlx::Error> {
    if blocked.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = blocked.iter().map(|b| b.0).collect();
    let parked: Vec<i64> = blocked.iter().map(|b| b.1).collect();
    sqlx::query_scalar(
        "WITH still_parked AS (
             SELECT id FROM gregor_outbox
              WHERE id = ANY($2) AND parked_at IS NOT NULL
                FOR SHARE)
         UPDATE gregor_outbox o SET held_by = h.parked
           FROM unnest($1::bigint[], $2::bigint[]) AS h(id, parked)
          WHERE o.id = h.id AND o.held_by IS NULL AND o.parked_at IS NULL
            AND h.parked IN (SELECT id FROM still_parked)
        RETURNING o.id",
    )
    .bind(&ids)
    .bind(&parked)
    .fetch_all(pool)
    .await
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
            AND l.shard = o.shard AND l.owner = $2 AND l.expires_at > clock_timestamp()",
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
            AND l.shard = o.shard AND l.owner = $5 AND l.expires_at > clock_timestamp()
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

/// Above this many unpublished rows the backlog gauge reports PostgreSQL's live-row estimate
/// instead of counting.
const BACKLOG_COUNT_CAP: i64 = 10_000;

/// The relay's periodic view of the outbox, with every query bounded: the backlog is counted
/// up to [`BACKLOG_COUNT_CAP`] rows while the table statistics estimate fewer live rows than
/// that, and taken from the estimate otherwise (so a large outbox is not walked every two
/// seconds by every replica), parked rows
/// through their partial index, and the oldest unpublished row is found by walking the primary
/// key from `oldest_hint` (the oldest id found last time), never from the head of the table.
/// A row of a transaction that commits long after it was written can sit below the hint until
/// it is published: the age is then understated for that while.
pub(crate) async fn status(
    pool: &PgPool,
    oldest_hint: &mut i64,
) -> Result<gregor_outbox::OutboxStatus, sqlx::Error> {
    let (counted, estimate, parked, oldest_id, oldest_age): (
        i64,
        Option<i64>,
        i64,
        Option<i64>,
        Option<f64>,
    ) = sqlx::query_as(
        "SELECT CASE WHEN coalesce(stats.live, 0) < $2 THEN
                     (SELECT count(*) FROM (SELECT 1 FROM gregor_outbox
                                             WHERE parked_at IS NULL LIMIT $2) AS capped)
                     ELSE $2 END,
                stats.live,
                (SELECT count(*) FROM gregor_outbox WHERE parked_at IS NOT NULL),
                oldest.id,
                extract(epoch FROM clock_timestamp() - oldest.created_at)::float8
           FROM (SELECT (SELECT n_live_tup FROM pg_stat_user_tables
                          WHERE relid = 'gregor_outbox'::regclass) AS live) AS stats
           LEFT JOIN LATERAL (
                SELECT id, created_at FROM gregor_outbox
                 WHERE id >= $1 AND parked_at IS NULL
                 ORDER BY id LIMIT 1) AS oldest ON true",
    )
    .bind(*oldest_hint)
    .bind(BACKLOG_COUNT_CAP)
    .fetch_one(pool)
    .await?;
    if let Some(id) = oldest_id {
        *oldest_hint = id;
    }
    let backlog = if counted >= BACKLOG_COUNT_CAP {
        counted.max(estimate.unwrap_or(0) - parked)
    } else {
        counted
    };
    Ok(gregor_outbox::OutboxStatus {
        backlog,
        parked,
        oldest_age_seconds: oldest_age.unwrap_or(0.0).max(0.0),
    })
}
