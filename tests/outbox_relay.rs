//! P1 and the wire contract: committed events are published once with every header;
//! rolled-back events never are.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::Duration;

use gregor_integration_tests::InProcessRelay;
use gregor_outbox::{OutboxMessage, enqueue, enqueue_batch};
use gregor_testkit::{TestDb, kafka, kafka_bootstrap, unique_name};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_event_is_published_once_with_all_headers() -> anyhow::Result<()> {
    let db = TestDb::create("commit").await?;
    let topic = unique_name("orders");
    kafka::create_topic(&topic, 3).await?;
    let relay = InProcessRelay::start(&db.url, &kafka_bootstrap()?, &[])?;

    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut tx = db.pool.begin().await?;
    let event_id = enqueue(
        &mut tx,
        OutboxMessage::new(&topic, "order.placed", "/services/orders")
            .key("order-1")
            .payload(br#"{"id":1}"#.to_vec())
            .content_type("application/json")
            .header("tenant", vec![0xff, 0x00, 0x7f])
            .trace_context(traceparent, Some("vendor=1".into())),
    )
    .await?;
    tx.commit().await?;

    let got = kafka::read_topic(&topic, 1, WAIT).await?;
    let msg = &got[0];
    assert_eq!(msg.key.as_deref(), Some(&b"order-1"[..]));
    assert_eq!(msg.payload.as_deref(), Some(&br#"{"id":1}"#[..]));
    assert_eq!(msg.header("ce_specversion").as_deref(), Some("1.0"));
    assert_eq!(msg.header("ce_id"), Some(event_id.to_string()));
    assert_eq!(msg.header("ce_type").as_deref(), Some("order.placed"));
    assert_eq!(msg.header("ce_source").as_deref(), Some("/services/orders"));
    assert!(
        msg.header("ce_time")
            .is_some_and(|t| t.ends_with('Z') && t.contains('T'))
    );
    assert_eq!(
        msg.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(msg.header("traceparent").as_deref(), Some(traceparent));
    assert_eq!(msg.header("tracestate").as_deref(), Some("vendor=1"));
    let tenant = msg
        .headers
        .iter()
        .find(|(k, _)| k == "tenant")
        .and_then(|(_, v)| v.clone());
    assert_eq!(
        tenant,
        Some(vec![0xff, 0x00, 0x7f]),
        "binary header kept byte for byte"
    );

    // Published once: the row is gone once acknowledged, and no second copy follows it.
    gregor_testkit::wait_until(WAIT, "the outbox to drain", || async {
        Ok((gregor_outbox::status(&db.pool).await?.backlog == 0).then_some(()))
    })
    .await?;
    let sentinel = commit_one(&db, &topic, "order-1", "sentinel").await?;
    let all = kafka::read_topic(&topic, 2, WAIT).await?;
    assert_eq!(
        all.iter()
            .filter(|m| m.header("ce_id") == Some(event_id.to_string()))
            .count(),
        1
    );
    assert!(
        all.iter()
            .any(|m| m.header("ce_id") == Some(sentinel.to_string()))
    );
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_event_is_never_published() -> anyhow::Result<()> {
    let db = TestDb::create("rollback").await?;
    let topic = unique_name("orders");
    kafka::create_topic(&topic, 1).await?;
    let relay = InProcessRelay::start(&db.url, &kafka_bootstrap()?, &[])?;

    let mut tx = db.pool.begin().await?;
    enqueue(
        &mut tx,
        OutboxMessage::new(&topic, "order.placed", "/o")
            .key("k")
            .payload(b"ghost".to_vec()),
    )
    .await?;
    tx.rollback().await?;
    // A later event on the same key (same shard, later id): once it is published, the
    // rolled-back one would have been published before it.
    let sentinel = commit_one(&db, &topic, "k", "real").await?;

    let got = kafka::read_topic(&topic, 1, WAIT).await?;
    assert_eq!(got[0].header("ce_id"), Some(sentinel.to_string()));
    assert_eq!(got[0].payload.as_deref(), Some(&b"real"[..]));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM gregor_outbox")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(rows, 0);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_enqueue_keeps_per_key_order_and_tombstones_have_no_value() -> anyhow::Result<()> {
    let db = TestDb::create("batch").await?;
    let topic = unique_name("orders");
    kafka::create_topic(&topic, 4).await?;
    let relay = InProcessRelay::start(&db.url, &kafka_bootstrap()?, &[])?;

    let mut messages = Vec::new();
    for i in 0..500 {
        let key = format!("key-{}", i % 7);
        messages.push(
            OutboxMessage::new(&topic, "seq", "/t")
                .key(&key)
                .payload(i.to_string().into_bytes()),
        );
    }
    messages.push(
        OutboxMessage::new(&topic, "deleted", "/t")
            .key("key-0")
            .tombstone(),
    );
    let mut tx = db.pool.begin().await?;
    let ids = enqueue_batch(&mut tx, messages).await?;
    tx.commit().await?;
    assert_eq!(ids.len(), 501);

    let got = kafka::read_topic(&topic, 501, WAIT).await?;
    let mut by_key: std::collections::HashMap<Vec<u8>, Vec<Option<Vec<u8>>>> = Default::default();
    let mut sorted = got.clone();
    sorted.sort_by_key(|m| (m.partition, m.offset));
    for m in &sorted {
        by_key
            .entry(m.key.clone().unwrap_or_default())
            .or_default()
            .push(m.payload.clone());
    }
    for (key, payloads) in &by_key {
        let numbers: Vec<i64> = payloads
            .iter()
            .flatten()
            .map(|p| String::from_utf8_lossy(p).parse().unwrap_or(-1))
            .collect();
        let mut expected = numbers.clone();
        expected.sort_unstable();
        assert_eq!(
            numbers,
            expected,
            "order of key {}",
            String::from_utf8_lossy(key)
        );
    }
    let key0 = &by_key[&b"key-0".to_vec()];
    assert_eq!(
        key0.last(),
        Some(&None),
        "the tombstone comes last and has no value"
    );
    relay.stop().await
}

#[tokio::test]
async fn invalid_messages_are_refused_at_enqueue_and_nothing_is_written() -> anyhow::Result<()> {
    let db = TestDb::create("invalid").await?;
    let mut tx = db.pool.begin().await?;
    let err = enqueue_batch(
        &mut tx,
        vec![
            OutboxMessage::new("fine", "t", "/s").payload(b"x".to_vec()),
            OutboxMessage::new("bad topic!", "t", "/s"),
        ],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("bad topic!"), "{err}");
    assert!(!err.is_retryable());
    let err = enqueue(
        &mut tx,
        OutboxMessage::new("t", "t", "/s").header("ce_id", b"x".to_vec()),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    tx.commit().await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM gregor_outbox")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(rows, 0);
    Ok(())
}

async fn commit_one(
    db: &TestDb,
    topic: &str,
    key: &str,
    value: &str,
) -> anyhow::Result<uuid::Uuid> {
    let mut tx = db.pool.begin().await?;
    let id = enqueue(
        &mut tx,
        OutboxMessage::new(topic, "t", "/s")
            .key(key)
            .payload(value.as_bytes().to_vec()),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}
