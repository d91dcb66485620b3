//! The migration runner: `(version, name, sql)` applied once each, recorded in
//! `gregor_schema_migrations`.

use std::ops::RangeInclusive;

use sqlx::PgPool;

use crate::PgError;

/// One migration: `(version, name, sql)`. The SQL may hold several statements; it runs in
/// the runner's transaction, so it must not use statements that refuse one
/// (`CREATE INDEX CONCURRENTLY`).
pub type Migration = (i32, &'static str, &'static str);

/// Versions of the outbox's migrations (`gregor-outbox`).
pub const OUTBOX_VERSIONS: RangeInclusive<i32> = 1..=999;
/// Versions of the consumer's dedupe inbox (`gregor-consumer`).
pub const INBOX_VERSIONS: RangeInclusive<i32> = 1001..=1999;
/// Versions of the relay's own tables: shard leases and members (`gregor-relay`).
pub const RELAY_VERSIONS: RangeInclusive<i32> = 2001..=2999;

/// Advisory lock key serialising concurrent migrators (several relays starting at once).
/// Every crate's migrations take the same lock.
const LOCK_KEY: i64 = 0x6772_6567_6f72; // "gregor"

/// Applies the `migrations` not yet recorded in `gregor_schema_migrations`, in the order
/// given, in one transaction under a transaction-level advisory lock: safe to call from many
/// processes at once, and all or nothing. A recorded version is never run again, whatever its
/// SQL says now; versions of other crates in the table are left alone.
pub async fn apply_migrations(pool: &PgPool, migrations: &[Migration]) -> Result<(), PgError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS gregor_schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await?;
    let applied: Vec<i32> = sqlx::query_scalar("SELECT version FROM gregor_schema_migrations")
        .fetch_all(&mut *tx)
        .await?;
    for &(version, name, sql) in migrations {
        if applied.contains(&version) {
            continue;
        }
        let fail = |source| PgError::Migration {
            version,
            name,
            source,
        };
        sqlx::Executor::execute(&mut *tx, sql).await.map_err(fail)?;
        sqlx::query("INSERT INTO gregor_schema_migrations (version, name) VALUES ($1, $2)")
            .bind(version)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        tracing::info!(version, name, "applied gregor migration");
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ranges_do_not_overlap() {
        let ranges = [OUTBOX_VERSIONS, INBOX_VERSIONS, RELAY_VERSIONS];
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                assert!(a.end() < b.start() || b.end() < a.start(), "{a:?} {b:?}");
            }
        }
    }
}
