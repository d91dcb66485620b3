//! A parked row blocks only its own key, whatever the number of rows queued behind it, and a
//! requeued row goes out before every later row of its key — even when the requeue lands in
//! the middle of a scan pass or while the relay is idle; deleting a parked row releases the
//! rows it held (issue 13, defects 1 and 2, and the review of their fix).

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::Duration;

use gregor_integration_tests::InProcessRelay;
use gregor_outbox::{OutboxMessage, Requeue, enqueue_batch};
use gregor_testkit::{TestDb, kafka, kafka_bootstrap, unique_name, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// Inserts a row for an invalid topic, as a hand-written INSERT by another writer could: the
/// relay parks it at the first attempt (with `GREGOR_RELAY_MAX_ATTEMPTS=1`).
async fn insert_poison(db: &TestDb, key: &str) -> anyhow::Result<i64> {
    let shard = gregor_outbox::shard_of(Some(key.as_bytes()), uuid::Uuid::nil());
    Ok(sqlx::query_scalar(
        "INSERT INTO gregor_outbox (shard, event_id, topic, key, payload, event_type, event_source)
         VALUES ($1, gen_random_uuid(), 'no such/topic', $2, 'poison', 'poison', '/t')
         RETURNING id",
    )
    .bind(shard)
    .bind(key.as_bytes())
    .fetch_one(&db.pool)
    .await?)
}

async fn enqueue_key(
    db: &TestDb,
    topic: &str,
    key: &str,
    event_type: &str,
    n: usize,
) -> anyhow::Result<()> {
    let mut tx = db.pool.begin().await?;
    let msgs = (0..n).map(|i| {
        OutboxMessage::new(topic, event_type, "/t")
            .key(key)
            .payload(i.to_string().into_bytes())
    });
    enqueue_batch(&mut tx, msgs).await?;
    tx.commit().await?;
    Ok(())
}

async fn wait_parked(db: &TestDb, n: i64) -> anyhow::Result<()> {
    wait_until(WAIT, &format!("{n} parked row(s)"), || async {
        Ok((gregor_outbox::status(&db.pool).await?.parked == n).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_key_with_more_rows_than_a_batch_does_not_stall_other_keys() -> anyhow::Result<()>
{
    let db = TestDb::create("parkedstall").await?;
    let topic = unique_name("parkedstall");
    kafka::create_topic(&topic, 3).await?;

    // The oldest rows: a poison row, then five batches' worth of its key's later rows, then
    // the rows of healthy keys.
    insert_poison(&db, "stuck").await?;
    enqueue_key(&db, &topic, "stuck", "behind-poison", 50).await?;
    for k in 0..5 {
        enqueue_key(&db, &topic, &format!("healthy-{k}"), "healthy", 4).await?;
    }
    let relay = InProcessRelay::start(
        &db.url,
        &kafka_bootstrap()?,
        &[
            ("GREGOR_RELAY_BATCH_SIZE", "10"),
            ("GREGOR_RELAY_MAX_ATTEMPTS", "1"),
        ],
    )?;

    let got = kafka::read_topic(&topic, 20, WAIT).await?;
    assert!(
        got.iter()
            .all(|m| m.header("ce_type").as_deref() == Some("healthy")),
        "only the healthy keys go out while the poison row is parked"
    );
    wait_parked(&db, 1).await?;
    // Rows written later, on both sides, keep flowing for the healthy keys.
    enqueue_key(&db, &topic, "stuck", "behind-poison", 30).await?;
    enqueue_key(&db, &topic, "late-healthy", "healthy", 5).await?;
    let got = kafka::read_topic(&topic, 25, WAIT).await?;
    assert_eq!(
        got.iter()
            .filter(|m| m.header("ce_type").as_deref() == Some("healthy"))
            .count(),
        25
    );
    let backlog = gregor_outbox::status(&db.pool).await?;
    assert_eq!(backlog.parked, 1);
    assert_eq!(
        backlog.backlog, 80,
        "the parked key's rows wait in the outbox"
    );
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_requeued_mid_pass_goes_out_before_later_rows_of_its_key() -> anyhow::Result<()> {
    let db = TestDb::create("requeuemid").await?;
    let topic = unique_name("requeuemid");
    kafka::create_topic(&topic, 3).await?;
    // A row parked by an earlier run of the relay, and its key's next row behind it.
    let poison = insert_poison(&db, "order-7").await?;
    sqlx::query("UPDATE gregor_outbox SET parked_at = now(), attempts = 1 WHERE id = $1")
        .bind(poison)
        .execute(&db.pool)
        .await?;
    enqueue_key(&db, &topic, "order-7", "second", 1).await?;
    // Passes of a few seconds: the requeue below lands in the middle of one.
    let relay = InProcessRelay::start(
        &db.url,
        &kafka_bootstrap()?,
        &[("GREGOR_RELAY_PASS_INTERVAL_MS", "3000")],
    )?;
    // Traffic of other keys moves the scan position past both rows of order-7.
    enqueue_key(&db, &topic, "other", "other", 3).await?;
    kafka::read_topic(&topic, 3, WAIT).await?;

    // The operator removes the cause and requeues; then the key writes again.
    sqlx::query("UPDATE gregor_outbox SET topic = $1, event_type = 'first' WHERE id = $2")
        .bind(&topic)
        .bind(poison)
        .execute(&db.pool)
        .await?;
    let requeued = gregor_outbox::requeue(&db.pool, &Requeue::Ids(vec![poison])).await?;
    assert_eq!(requeued, 1);
    enqueue_key(&db, &topic, "order-7", "third", 1).await?;

    let got = kafka::read_topic(&topic, 6, WAIT).await?;
    let mut order7: Vec<_> = got
        .iter()
        .filter(|m| m.key.as_deref() == Some(&b"order-7"[..]))
        .collect();
    order7.sort_by_key(|m| m.offset);
    let types: Vec<_> = order7.iter().filter_map(|m| m.header("ce_type")).collect();
    assert_eq!(
        types,
        ["first", "second", "third"],
        "the key's order survives"
    );
    relay.stop().await
}

/// Rows of `key` held behind a parked row.
async fn held(db: &TestDb, key: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM gregor_outbox WHERE key = $1 AND held_by IS NOT NULL",
    )
    .bind(key.as_bytes())
    .fetch_one(&db.pool)
    .await?)
}

/// A parked row and `behind` rows of its key queued after it, then a relay holding them.
async fn parked_key_with_held_rows(
    db: &TestDb,
    topic: &str,
    key: &str,
    behind: usize,
) -> anyhow::Result<(i64, InProcessRelay)> {
    let poison = insert_poison(db, key).await?;
    sqlx::query("UPDATE gregor_outbox SET parked_at = now(), attempts = 1 WHERE id = $1")
        .bind(poison)
        .execute(&db.pool)
        .await?;
    enqueue_key(db, topic, key, "behind", behind).await?;
    let relay = InProcessRelay::start(&db.url, &kafka_bootstrap()?, &[])?;
    let want = i64::try_from(behind)?;
    wait_until(
        WAIT,
        "the rows behind the parked row to be held",
        || async { Ok((held(db, key).await? == want).then_some(())) },
    )
    .await?;
    Ok((poison, relay))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_parked_row_as_the_runbook_says_releases_the_rows_it_held() -> anyhow::Result<()>
{
    let db = TestDb::create("parkeddelete").await?;
    let topic = unique_name("parkeddelete");
    kafka::create_topic(&topic, 3).await?;
    let (poison, relay) = parked_key_with_held_rows(&db, &topic, "order-9", 5).await?;

    // docs/runbooks.md: an event that must never be published is deleted.
    sqlx::query("DELETE FROM gregor_outbox WHERE id = $1 AND parked_at IS NOT NULL")
        .bind(poison)
        .execute(&db.pool)
        .await?;
    let got = kafka::read_topic(&topic, 5, WAIT).await?;
    let mut sorted = got;
    sorted.sort_by_key(|m| m.offset);
    let payloads: Vec<_> = sorted
        .iter()
        .filter_map(|m| m.payload.clone())
        .map(String::from_utf8)
        .collect::<Result<_, _>>()?;
    assert_eq!(payloads, ["0", "1", "2", "3", "4"], "in their order");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeue_while_the_relay_is_idle_is_published_in_order() -> anyhow::Result<()> {
    let db = TestDb::create("requeueidle").await?;
    let topic = unique_name("requeueidle");
    kafka::create_topic(&topic, 3).await?;
    let (poison, relay) = parked_key_with_held_rows(&db, &topic, "order-3", 3).await?;

    // The cause is removed and the row requeued; nothing else is written afterwards.
    sqlx::query("UPDATE gregor_outbox SET topic = $1, event_type = 'first' WHERE id = $2")
        .bind(&topic)
        .bind(poison)
        .execute(&db.pool)
        .await?;
    gregor_outbox::requeue(&db.pool, &Requeue::Ids(vec![poison])).await?;
    let got = kafka::read_topic(&topic, 4, WAIT).await?;
    let mut sorted = got;
    sorted.sort_by_key(|m| m.offset);
    let types: Vec<_> = sorted.iter().filter_map(|m| m.header("ce_type")).collect();
    assert_eq!(types, ["first", "behind", "behind", "behind"]);
    relay.stop().await
}
