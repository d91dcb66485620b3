//! The dedupe inbox's retention cleanup removes only expired rows of its own group.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gregor_consumer::{cleanup_dedupe, migrate_dedupe};
use gregor_testkit::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_expired_rows_of_its_group_only() -> anyhow::Result<()> {
    let db = TestDb::create("inbox").await?;
    migrate_dedupe(&db.pool).await?;
    migrate_dedupe(&db.pool).await?; // idempotent
    for (group, key, age_hours) in [
        ("g1", "old-1", 200),
        ("g1", "old-2", 169),
        ("g1", "fresh", 1),
        ("g2", "old-other-group", 500),
    ] {
        sqlx::query(
            "INSERT INTO gregor_inbox (consumer_group, dedupe_key, topic, \"partition\", \"offset\", processed_at)
             VALUES ($1, $2, 't', 0, 0, now() - make_interval(hours => $3))",
        )
        .bind(group)
        .bind(key)
        .bind(age_hours)
        .execute(&db.pool)
        .await?;
    }
    let deleted = cleanup_dedupe(&db.pool, "g1", Duration::from_secs(168 * 3600)).await?;
    assert_eq!(deleted, 2);
    let mut left: Vec<String> =
        sqlx::query_scalar("SELECT dedupe_key FROM gregor_inbox ORDER BY dedupe_key")
            .fetch_all(&db.pool)
            .await?;
    left.sort();
    assert_eq!(left, ["fresh", "old-other-group"]);
    Ok(())
}
