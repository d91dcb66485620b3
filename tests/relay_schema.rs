//! The relay's tables moved from the outbox's migration 1 to the relay's migration 2001
//! (ADR 0013): a fresh outbox-only database has none of them, the relay creates them, and a
//! database the old migration 1 created keeps its leases untouched.

use gregor_testkit::TestDb;
use sqlx::PgPool;
use uuid::Uuid;

/// The outbox's migration 1 as shipped before ADR 0013.
const OLD_OUTBOX_0001: &str = include_str!("fixtures/outbox_0001_before_adr13.sql");

async fn exists(pool: &PgPool, table: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(pool)
        .await?)
}

async fn versions(pool: &PgPool) -> anyhow::Result<Vec<i32>> {
    Ok(
        sqlx::query_scalar("SELECT version FROM gregor_schema_migrations ORDER BY version")
            .fetch_all(pool)
            .await?,
    )
}

async fn lease_rows(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM gregor_relay_leases")
            .fetch_one(pool)
            .await?,
    )
}

/// Empties the test database of everything gregor created in it.
async fn drop_gregor(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS gregor_outbox, gregor_outbox_requeues, gregor_schema_migrations,
                              gregor_relay_leases, gregor_relay_members CASCADE;
         DROP FUNCTION IF EXISTS gregor_outbox_notify(), gregor_outbox_release_held();",
    )
    .execute(pool)
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_outbox_has_no_relay_tables_until_the_relay_migrates() -> anyhow::Result<()> {
    let db = TestDb::create("schema_fresh").await?; // gregor_outbox::migrate
    assert_eq!(versions(&db.pool).await?, [1, 2]);
    assert!(exists(&db.pool, "gregor_outbox").await?);
    assert!(!exists(&db.pool, "gregor_relay_leases").await?);
    assert!(!exists(&db.pool, "gregor_relay_members").await?);

    gregor_relay::migrate(&db.pool).await?;
    gregor_relay::migrate(&db.pool).await?; // idempotent
    assert_eq!(versions(&db.pool).await?, [1, 2, 2001]);
    assert_eq!(lease_rows(&db.pool).await?, 64);
    assert!(exists(&db.pool, "gregor_relay_members").await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_the_old_migration_created_keeps_its_leases() -> anyhow::Result<()> {
    let db = TestDb::create("schema_old").await?;
    drop_gregor(&db.pool).await?;
    // What the outbox's migrate did before ADR 0013: versions 1 (with the relay's tables) and 2.
    let (_, _, held_rows) = gregor_outbox::MIGRATIONS[1];
    gregor_pg::apply_migrations(
        &db.pool,
        &[(1, "outbox", OLD_OUTBOX_0001), (2, "held rows", held_rows)],
    )
    .await?;
    assert_eq!(lease_rows(&db.pool).await?, 64);
    // A relay at work: an owned lease with a raised epoch, a registered member.
    let owner = Uuid::now_v7();
    sqlx::query(
        "UPDATE gregor_relay_leases SET owner = $1, epoch = 7, expires_at = now() + interval '1 hour'
          WHERE shard = 3",
    )
    .bind(owner)
    .execute(&db.pool)
    .await?;
    sqlx::query(
        "INSERT INTO gregor_relay_members (relay_id, name, heartbeat_at) VALUES ($1, 'old', now())",
    )
    .bind(owner)
    .execute(&db.pool)
    .await?;

    // The new binaries: outbox 1 and 2 are recorded and not re-run; relay 2001 is a no-op.
    gregor_outbox::migrate(&db.pool).await?;
    gregor_relay::migrate(&db.pool).await?;
    assert_eq!(versions(&db.pool).await?, [1, 2, 2001]);
    assert_eq!(lease_rows(&db.pool).await?, 64);
    let (kept_owner, epoch): (Option<Uuid>, i64) =
        sqlx::query_as("SELECT owner, epoch FROM gregor_relay_leases WHERE shard = 3")
            .fetch_one(&db.pool)
            .await?;
    assert_eq!((kept_owner, epoch), (Some(owner), 7));
    let members: i64 = sqlx::query_scalar("SELECT count(*) FROM gregor_relay_members")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(members, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_tables_do_not_depend_on_the_outbox_tables() -> anyhow::Result<()> {
    let db = TestDb::create("schema_order").await?;
    drop_gregor(&db.pool).await?;
    // The relay's migrations alone, on an empty database, then the outbox's.
    gregor_pg::apply_migrations(&db.pool, gregor_relay::MIGRATIONS).await?;
    assert_eq!(lease_rows(&db.pool).await?, 64);
    gregor_outbox::migrate(&db.pool).await?;
    assert_eq!(versions(&db.pool).await?, [1, 2, 2001]);
    Ok(())
}
