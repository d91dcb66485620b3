use gregor_pg::Migration;
use sqlx::PgPool;

use crate::OutboxError;

/// The outbox's embedded schema migrations, in order (versions 1–999,
/// [`gregor_pg::OUTBOX_VERSIONS`]). Applied ones are recorded in `gregor_schema_migrations`,
/// a table of our own, so a service's own sqlx migrations (`_sqlx_migrations`) are never
/// disturbed.
pub const MIGRATIONS: &[Migration] = &[
    (1, "outbox", include_str!("../migrations/0001_outbox.sql")),
    (
        2,
        "held rows",
        include_str!("../migrations/0002_held_rows.sql"),
    ),
];

/// Brings the outbox schema up to date in one transaction. Safe to call from many
/// processes at once: a transaction-level advisory lock serialises them.
pub async fn migrate(pool: &PgPool) -> Result<(), OutboxError> {
    apply_migrations(pool, MIGRATIONS).await
}

/// Applies `(version, name, sql)` migrations not yet recorded in `gregor_schema_migrations`,
/// in one transaction under the same advisory lock: [`gregor_pg::apply_migrations`], with the
/// outbox's error type. Each gregor crate keeps its own version range: outbox 1–999, inbox
/// 1001–1999, relay 2001–2999.
pub async fn apply_migrations(pool: &PgPool, migrations: &[Migration]) -> Result<(), OutboxError> {
    Ok(gregor_pg::apply_migrations(pool, migrations).await?)
}
