//! The dedupe inbox (`gregor_inbox`): one row per (consumer group, dedupe key) whose
//! effects committed, written in the handler's own transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use sqlx::{PgPool, Postgres, Transaction};

use gregor_wire::headers;

/// The inbox's migrations (versions 1001–1999, [`gregor_pg::INBOX_VERSIONS`]).
const MIGRATIONS: &[gregor_pg::Migration] = &[
    (1001, "inbox", include_str!("../migrations/1001_inbox.sql")),
    (
        1002,
        "inbox by group and age",
        include_str!("../migrations/1002_inbox_group_age.sql"),
    ),
];

/// Rows deleted per statement by [`cleanup`].
const CLEANUP_BATCH: i64 = 10_000;

/// Creates or updates the inbox table (safe to run from many processes at once).
pub async fn migrate(pool: &PgPool) -> Result<(), gregor_pg::PgError> {
    gregor_pg::apply_migrations(pool, MIGRATIONS).await
}

/// The default dedupe key: the `ce_id` header, else the message's original coordinates
/// (`topic/partition/offset`): the `gregor-original-*` headers only on this group's own
/// retry/DLQ copies ([`crate::origin::trusted`]), else the message's own coordinates.
pub(crate) fn default_key(msg: &OwnedMessage, group: &str) -> String {
    if let Some(id) = headers::get_str(msg.headers(), headers::CE_ID) {
        return id.to_owned();
    }
    crate::origin::of(msg, group).key()
}

/// The dedupe key of `msg`: the route's extractor (a panicking extractor falls back to the
/// default rather than killing the lane), else [`default_key`].
pub(crate) fn key_of(
    custom: Option<&crate::DedupeKeyFn>,
    msg: &OwnedMessage,
    group: &str,
) -> String {
    custom
        .and_then(|f| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(msg))).unwrap_or_else(|_| {
                tracing::error!("the dedupe key extractor panicked; using the default key");
                None
            })
        })
        .unwrap_or_else(|| default_key(msg, group))
}

/// Commits the handler's transaction, first checking it is still alive: PostgreSQL aborts a
/// transaction after any failed statement and then answers `COMMIT` with a rollback, which
/// sqlx reports as success. A handler that swallowed an SQL error must not count as handled.
pub(crate) async fn commit_checked(
    mut tx: Transaction<'static, Postgres>,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(&mut *tx).await?;
    tx.commit().await
}

/// Writes the dedupe row; false when it already exists (a duplicate).
pub(crate) async fn mark(
    tx: &mut Transaction<'static, Postgres>,
    group: &str,
    key: &str,
    msg: &OwnedMessage,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO gregor_inbox (consumer_group, dedupe_key, topic, \"partition\", \"offset\")
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(group)
    .bind(key)
    .bind(msg.topic())
    .bind(msg.partition())
    .bind(msg.offset())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes the dedupe rows of a batch in one statement; returns the keys that were new (a key
/// repeated inside the batch is returned once).
pub(crate) async fn mark_batch(
    tx: &mut Transaction<'static, Postgres>,
    group: &str,
    keys: &[String],
    msgs: &[OwnedMessage],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let topics: Vec<&str> = msgs.iter().map(|m| m.topic()).collect();
    let partitions: Vec<i32> = msgs.iter().map(|m| m.partition()).collect();
    let offsets: Vec<i64> = msgs.iter().map(|m| m.offset()).collect();
    let new: Vec<String> = sqlx::query_scalar(
        "INSERT INTO gregor_inbox (consumer_group, dedupe_key, topic, \"partition\", \"offset\")
         SELECT $1, k, t, p, o FROM unnest($2::text[], $3::text[], $4::int[], $5::bigint[]) AS u(k, t, p, o)
         ON CONFLICT DO NOTHING RETURNING dedupe_key",
    )
    .bind(group)
    .bind(keys)
    .bind(&topics)
    .bind(&partitions)
    .bind(&offsets)
    .fetch_all(&mut **tx)
    .await?;
    Ok(new.into_iter().collect())
}

/// Deletes this group's dedupe rows older than `retention`, oldest first in batches of
/// 10 000; returns how many went. Each batch reads only this group's expired rows
/// (the `(consumer_group, processed_at)` index), whatever other groups keep.
pub async fn cleanup(pool: &PgPool, group: &str, retention: Duration) -> Result<u64, sqlx::Error> {
    // One cutoff for the whole pass, so that it ends even while new rows expire.
    let cutoff = chrono::Duration::from_std(retention)
        .ok()
        .and_then(|r| Utc::now().checked_sub_signed(r));
    let Some(cutoff) = cutoff.filter(|c| *c > DateTime::UNIX_EPOCH) else {
        return Ok(0); // a retention reaching back before 1970: nothing is that old
    };
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM gregor_inbox WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM gregor_inbox
                 WHERE consumer_group = $1 AND processed_at < $2
                 ORDER BY processed_at
                 LIMIT $3))",
        )
        .bind(group)
        .bind(cutoff)
        .bind(CLEANUP_BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < CLEANUP_BATCH.unsigned_abs() {
            return Ok(total);
        }
    }
}
