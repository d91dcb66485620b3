//! The dedupe inbox per consumer group: the `(consumer_group, processed_at)` index, cleanup
//! that touches only its own group, and `gregor inbox groups` / `gregor inbox purge`.
//! Build the CLI first: `cargo build -p gregor-cli`.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::process::Output;
use std::time::Duration;

use gregor_testkit::{TestDb, process};

/// Inserts `n` rows of `group`, processed `hours_ago` hours ago.
async fn rows(db: &TestDb, group: &str, n: i64, hours_ago: f64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO gregor_inbox (consumer_group, dedupe_key, topic, \"partition\", \"offset\",
                                   processed_at)
         SELECT $1, $1 || '/' || $3::text || '/' || i, 't', 0, i,
                now() - make_interval(secs => $3 * 3600)
         FROM generate_series(1, $2) AS i",
    )
    .bind(group)
    .bind(n)
    .bind(hours_ago)
    .execute(&db.pool)
    .await?;
    Ok(())
}

async fn count(db: &TestDb, group: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM gregor_inbox WHERE consumer_group = $1")
            .bind(group)
            .fetch_one(&db.pool)
            .await?,
    )
}

fn gregor(db: &TestDb, args: &[&str]) -> anyhow::Result<Output> {
    process::run("gregor", args, &[("DATABASE_URL", db.url.as_str())])
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn cleanup_reads_only_its_own_groups_rows_through_the_group_index() -> anyhow::Result<()> {
    let db = TestDb::create("inbox_index").await?;
    gregor_consumer::migrate_dedupe(&db.pool).await?;
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT indexdef FROM pg_indexes WHERE tablename = 'gregor_inbox'")
            .fetch_all(&db.pool)
            .await?;
    assert!(
        indexes
            .iter()
            .any(|d| d.contains("(consumer_group, processed_at)")),
        "{indexes:?}"
    );
    assert!(
        !indexes.iter().any(|d| d.contains("(processed_at)")),
        "the index on age alone is gone: {indexes:?}"
    );
    // Expired rows of a group with a short retention, older rows of another group.
    rows(&db, "short", 3, 3.0).await?;
    rows(&db, "short", 2, 0.0).await?;
    rows(&db, "long", 4, 48.0).await?;
    let deleted =
        gregor_consumer::cleanup_dedupe(&db.pool, "short", Duration::from_secs(3600)).await?;
    assert_eq!(deleted, 3);
    assert_eq!(count(&db, "short").await?, 2);
    assert_eq!(
        count(&db, "long").await?,
        4,
        "another group's rows are its own business"
    );

    // The plan of a cleanup batch walks the group index (sequential scans ruled out so
    // that the tiny table does not hide the choice).
    let mut tx = db.pool.begin().await?;
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await?;
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT ctid FROM gregor_inbox
         WHERE consumer_group = 'short' AND processed_at < now() ORDER BY processed_at LIMIT 10000",
    )
    .fetch_all(&mut *tx)
    .await?;
    let plan = plan.join("\n");
    assert!(plan.contains("gregor_inbox_group_processed_at"), "{plan}");
    Ok(())
}

#[tokio::test]
async fn gregor_inbox_lists_groups_and_purges_one() -> anyhow::Result<()> {
    let db = TestDb::create("inbox_cli").await?;

    // Before any consumer ran: no table, said plainly.
    let out = gregor(&db, &["inbox", "groups"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no inbox table"), "{}", text(&out));

    gregor_consumer::migrate_dedupe(&db.pool).await?;
    rows(&db, "orders-svc", 3, 30.0).await?;
    rows(&db, "orders-svc", 1, 2.0).await?;
    rows(&db, "gone-svc", 5, 200.0).await?;
    rows(&db, "live-svc", 2, 0.0).await?;
    rows(&db, "odd\u{1b}[2Jname", 1, 5.0).await?;

    let out = gregor(&db, &["inbox", "groups"])?;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}");
    let line = |group: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("group={group} ")))
            .unwrap_or_else(|| panic!("no line for {group}:\n{stdout}"))
            .to_owned()
    };
    assert!(line("orders-svc").contains(" rows=4 "), "{stdout}");
    assert!(line("gone-svc").contains(" rows=5 "), "{stdout}");
    assert!(line("live-svc").contains(" rows=2 "), "{stdout}");
    let orders = line("orders-svc");
    assert!(
        orders.contains(" oldest=") && orders.contains(" newest="),
        "{orders}"
    );
    assert!(
        !stdout.contains('\u{1b}'),
        "control characters are escaped: {stdout:?}"
    );
    assert!(stdout.contains("odd\\u{1b}[2Jname"), "{stdout}");

    // A group that no longer runs is purged, the others keep every row.
    let out = gregor(&db, &["inbox", "purge", "--group", "gone-svc"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("purged 5 row(s)"), "{}", text(&out));
    assert_eq!(count(&db, "gone-svc").await?, 0);
    assert_eq!(count(&db, "orders-svc").await?, 4);
    assert_eq!(count(&db, "live-svc").await?, 2);

    // A group that handled a message within the hour may still run: refused (usage, exit 2)
    // unless forced.
    let out = gregor(&db, &["inbox", "purge", "--group", "live-svc"])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--force"), "{}", text(&out));
    assert_eq!(count(&db, "live-svc").await?, 2);
    let out = gregor(&db, &["inbox", "purge", "--group", "live-svc", "--force"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(count(&db, "live-svc").await?, 0);

    // An unknown group: nothing to do, and it says so.
    let out = gregor(&db, &["inbox", "purge", "--group", "never-ran"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("purged 0 row(s)"), "{}", text(&out));

    // No group: a usage error.
    let out = gregor(&db, &["inbox", "purge"])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    Ok(())
}
