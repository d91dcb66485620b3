use sqlx::PgPool;

use crate::OutboxError;

/// The embedded schema migrations, in order. Applied ones are recorded in
/// `gregor_schema_migrations`, a table of our own, so a service's own sqlx migrations
/// (`_sqlx_migrations`) are never disturbed.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "outbox", include_str!("../migrations/0001_outbox.sql")),
    (
        2,
        "held rows",
        include_str!("../migrations/0002_held_rows.sql"),
    ),
];

/// Advisory lock key serialising concurrent migrators (several relays starting at once).
const LOCK_KEY: i64 = 0x6772_6567_6f72; // "gregor"

/// Brings the outbox schema up to date in one transaction. Safe to call from many
/// processes at once: a transaction-level advisory lock serialises them.
pub async fn migrate(pool: &PgPool) -> Result<(), OutboxError> {
    apply_migrations(pool, MIGRATIONS).await
}

/// Applies `(version, name, sql)` migrations not yet recorded in `gregor_schema_migrations`,
/// in one transaction under the same advisory lock. Other gregor crates (the consumer's
/// dedupe inbox) keep their own version ranges: outbox 1–999, inbox 1001–1999.
pub async fn apply_migrations(
    pool: &PgPool,
    migrations: &[(i32, &'static str, &'static str)],
) -> Result<(), OutboxError> {
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
        let fail = |source| OutboxError::Migration {
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
