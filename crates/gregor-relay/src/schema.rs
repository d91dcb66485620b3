//! The relay's tables — shard leases and members — as migrations of its own (versions
//! 2001–2999, [`gregor_pg::RELAY_VERSIONS`]), applied after the outbox's by [`migrate`].

use gregor_pg::{Migration, PgError};
use sqlx::PgPool;

/// The relay's own migrations, in order. Each is idempotent: until ADR 0013 the outbox's
/// migration 1 created these tables, and on a database it ran on they must be no-ops.
pub const MIGRATIONS: &[Migration] = &[(
    2001,
    "relay leases",
    include_str!("../migrations/2001_relay_leases.sql"),
)];

/// Brings the schema the relay works on up to date: the outbox's migrations
/// ([`gregor_outbox::MIGRATIONS`]), then the relay's own ([`MIGRATIONS`]), in one
/// transaction under gregor's migration lock. The relay runs it at start, `gregor outbox
/// migrate` too; safe to call from many processes at once.
pub async fn migrate(pool: &PgPool) -> Result<(), PgError> {
    let all: Vec<Migration> = gregor_outbox::MIGRATIONS
        .iter()
        .chain(MIGRATIONS)
        .copied()
        .collect();
    gregor_pg::apply_migrations(pool, &all).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_stay_in_their_ranges() {
        for (version, ..) in MIGRATIONS {
            assert!(gregor_pg::RELAY_VERSIONS.contains(version), "{version}");
        }
        for (version, ..) in gregor_outbox::MIGRATIONS {
            assert!(gregor_pg::OUTBOX_VERSIONS.contains(version), "{version}");
        }
    }

    #[test]
    fn the_relay_tables_are_created_by_the_relay_alone() {
        let (_, _, relay) = MIGRATIONS[0];
        for table in ["gregor_relay_leases", "gregor_relay_members"] {
            assert!(
                relay.contains(&format!("CREATE TABLE IF NOT EXISTS {table} ")),
                "{table}"
            );
            for (version, _, sql) in gregor_outbox::MIGRATIONS {
                assert!(
                    !sql.contains(&format!("CREATE TABLE IF NOT EXISTS {table}")),
                    "{version}"
                );
            }
        }
        // Idempotent on a database the outbox's migration 1 created them in.
        assert!(relay.contains("ON CONFLICT (shard) DO NOTHING"));
        assert!(!relay.contains("CREATE TABLE gregor"));
    }
}
