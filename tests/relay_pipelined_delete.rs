//! The fenced delete of a drained batch overlaps the next publish (ADR 0001 §6): when that
//! delete fails for longer than the relay retries it, the batch stays in the outbox and will
//! be published again — so the batch after it must not be published and deleted first, or the
//! key's last record on the broker would be an old value (what a compacted topic keeps).
//! A trigger makes every delete of the first batch's rows fail until the relay has given up
//! on it; a sequence (not rolled back with the failing statement) counts the attempts.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::Duration;

use gregor_integration_tests::InProcessRelay;
use gregor_outbox::{OutboxMessage, enqueue_batch};
use gregor_testkit::{TestDb, kafka, kafka_bootstrap, unique_name, wait_until};

const BATCH: usize = 10;
const ROWS: usize = 15;
/// Failed deletes after which the relay has given up on the first batch: its retries back off
/// 50, 100, 200, 400, 800 and 1 600 ms, so the seventh failure comes after the 3 s lease ttl.
const GIVE_UP_AFTER: i64 = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_delete_failed_is_not_overtaken_by_the_next_one() -> anyhow::Result<()> {
    let db = TestDb::create("pipedelete").await?;
    gregor_outbox::migrate(&db.pool).await?;
    let topic = unique_name("pipedelete");
    kafka::create_topic(&topic, 1).await?;

    let mut tx = db.pool.begin().await?;
    let msgs = (0..ROWS).map(|i| {
        OutboxMessage::new(&topic, "pipedelete", "/t")
            .key("k")
            .payload(i.to_string().into_bytes())
    });
    enqueue_batch(&mut tx, msgs).await?;
    tx.commit().await?;
    let boundary: i64 =
        sqlx::query_scalar("SELECT id FROM gregor_outbox ORDER BY id OFFSET $1 LIMIT 1")
            .bind(i64::try_from(BATCH - 1)?)
            .fetch_one(&db.pool)
            .await?;
    sqlx::raw_sql(&format!(
        "CREATE TABLE fail_deletes (on_ boolean NOT NULL);
         INSERT INTO fail_deletes VALUES (true);
         CREATE SEQUENCE failed_deletes;
         CREATE FUNCTION fail_first_batch() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF (SELECT on_ FROM fail_deletes) THEN
                 PERFORM nextval('failed_deletes');
                 RAISE EXCEPTION 'test: deletes of the first batch fail';
             END IF;
             RETURN OLD;
         END $$;
         CREATE TRIGGER fail_first_batch BEFORE DELETE ON gregor_outbox
             FOR EACH ROW WHEN (OLD.id <= {boundary}) EXECUTE FUNCTION fail_first_batch();"
    ))
    .execute(&db.pool)
    .await?;

    let relay = InProcessRelay::start(
        &db.url,
        &kafka_bootstrap()?,
        &[("GREGOR_RELAY_BATCH_SIZE", &BATCH.to_string())],
    )?;
    wait_until(
        Duration::from_secs(30),
        "the relay to give up deleting the first batch",
        || async {
            let failed: i64 =
                sqlx::query_scalar("SELECT last_value FROM failed_deletes WHERE is_called")
                    .fetch_optional(&db.pool)
                    .await?
                    .unwrap_or(0);
            Ok((failed >= GIVE_UP_AFTER).then_some(()))
        },
    )
    .await?;
    sqlx::query("UPDATE fail_deletes SET on_ = false")
        .execute(&db.pool)
        .await?;
    wait_until(Duration::from_secs(30), "the outbox to drain", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM gregor_outbox")
            .fetch_one(&db.pool)
            .await?;
        Ok((left == 0).then_some(()))
    })
    .await?;
    relay.stop().await?;

    // Every record the broker holds, in offset order: the outbox is empty, so each row was
    // published at least once.
    let records = kafka::read_to_end(&topic, Duration::from_secs(30)).await?;
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned())
        .collect();
    eprintln!("records of the key, in offset order: {values:?}");
    assert_eq!(
        values.last().map(String::as_str),
        Some((ROWS - 1).to_string().as_str()),
        "the key's last record is not its last value: a batch was published again after the \
         batch behind it"
    );
    Ok(())
}
