//! Group behaviour: a partition revoked while a slow handler runs, and key-ordered
//! concurrency inside a partition.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gregor_consumer::{Consumer, Context, Event, HandlerError, Raw};
use gregor_integration_tests::{InProcessConsumer, consumer_config};
use gregor_testkit::kafka::{self, Record};
use gregor_testkit::{TestDb, unique_name, wait_until};
use gregor_wire::headers as h;
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_revoked_during_a_slow_handler_loses_nothing_and_duplicates_no_effect()
-> anyhow::Result<()> {
    let db = TestDb::create("revoke").await?;
    sqlx::query("CREATE TABLE effects (event_id TEXT NOT NULL, handled_by TEXT NOT NULL)")
        .execute(&db.pool)
        .await?;
    let topic = unique_name("revoke");
    kafka::create_topic_family(&topic, 4, 3).await?;
    let group = unique_name("g");
    let n = 80;
    kafka::produce(
        &topic,
        (0..n)
            .map(|i| Record::new(format!("key-{i}"), "x").header(h::CE_ID, format!("id-{i}")))
            .collect(),
    )
    .await?;

    // A handler slow enough that a rebalance lands while it runs.
    let running = Arc::new(Notify::new());
    let handler = |name: &'static str, running: Arc<Notify>| {
        move |ctx: Context, event: Event<Vec<u8>>| {
            let running = running.clone();
            async move {
                let mut tx = ctx.transaction().await?;
                sqlx::query("INSERT INTO effects (event_id, handled_by) VALUES ($1, $2)")
                    .bind(event.id().map(str::to_owned))
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                drop(tx);
                running.notify_one();
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok::<(), HandlerError>(())
            }
        }
    };
    let config = || consumer_config(&group, Some(&db.url), &[]);
    let first = InProcessConsumer::start(Consumer::builder(config()?).route(
        &topic,
        Raw,
        handler("first", running.clone()),
    ))
    .await?;
    tokio::time::timeout(WAIT, running.notified()).await?;
    // Joining the group revokes some of the first consumer's partitions mid-handler.
    let second = InProcessConsumer::start(Consumer::builder(config()?).route(
        &topic,
        Raw,
        handler("second", Arc::new(Notify::new())),
    ))
    .await?;
    wait_until(WAIT, "every event's effect", || async {
        let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT event_id) FROM effects")
            .fetch_one(&db.pool)
            .await?;
        Ok((distinct == n).then_some(()))
    })
    .await?;
    first.stop().await?;
    second.stop().await?;
    let (total, by_second): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE handled_by = 'second') FROM effects",
    )
    .fetch_one(&db.pool)
    .await?;
    eprintln!("effects: {total}, by the second consumer: {by_second}");
    assert_eq!(total, n, "no duplicate effect");
    assert!(
        by_second > 0,
        "the rebalance moved partitions to the second consumer"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ordered_concurrency_keeps_each_keys_order_and_commits_the_watermark()
-> anyhow::Result<()> {
    let topic = unique_name("lanes");
    kafka::create_topic_family(&topic, 1, 3).await?;
    let group = unique_name("g");
    let keys = 8;
    let per_key = 50;
    let mut records = Vec::new();
    for seq in 0..per_key {
        for k in 0..keys {
            records.push(Record::new(format!("k{k}"), format!("{seq}")));
        }
    }
    kafka::produce(&topic, records).await?;
    let seen: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let busy = Arc::new(AtomicUsize::new(0));
    let max_busy = Arc::new(AtomicUsize::new(0));
    let (log, b, m) = (seen.clone(), busy.clone(), max_busy.clone());
    let config = consumer_config(&group, None, &[("GREGOR_CONSUMER_KEY_CONCURRENCY", "4")])?;
    let consumer = InProcessConsumer::start(Consumer::builder(config).route(
        &topic,
        Raw,
        move |_ctx: Context, event: Event<Vec<u8>>| {
            let (log, b, m) = (log.clone(), b.clone(), m.clone());
            async move {
                let now = b.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                let seq: u32 = String::from_utf8(event.value.clone().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                log.lock()
                    .unwrap()
                    .entry(event.key_str().unwrap().to_owned())
                    .or_default()
                    .push(seq);
                b.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        },
    ))
    .await?;
    let total = u64::try_from(keys * per_key).unwrap();
    wait_until(WAIT, "every message handled", || async {
        Ok((consumer.metrics.stats().handled == total).then_some(()))
    })
    .await?;
    consumer.stop().await?;
    let seen = seen.lock().unwrap().clone();
    for (key, seqs) in &seen {
        let expected: Vec<u32> = (0..u32::try_from(per_key).unwrap()).collect();
        assert_eq!(seqs, &expected, "key {key} out of order");
    }
    assert!(
        max_busy.load(Ordering::SeqCst) > 1,
        "lanes ran concurrently"
    );
    let committed = kafka::committed_offsets(&group, &topic)?;
    assert_eq!(
        committed.get(&0).copied(),
        Some(i64::try_from(total).unwrap())
    );
    Ok(())
}
