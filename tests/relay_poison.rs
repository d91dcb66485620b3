//! Poison rows: an oversized row and a row for an invalid topic are parked after the
//! configured attempts, block only their own key, and are listed and requeued with the CLI.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::Duration;

use gregor_integration_tests::InProcessRelay;
use gregor_outbox::{OutboxMessage, enqueue_batch};
use gregor_testkit::{TestDb, kafka, kafka_bootstrap, process, unique_name, wait_until};

const WAIT: Duration = Duration::from_secs(60);

fn cli(db: &TestDb, args: &[&str]) -> anyhow::Result<String> {
    let out = process::run("gregor", args, &[("DATABASE_URL", &db.url)])?;
    anyhow::ensure!(
        out.status.success(),
        "gregor {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_row_is_parked_blocks_only_its_key_and_requeue_publishes_it() -> anyhow::Result<()>
{
    let db = TestDb::create("poison").await?;
    let topic = unique_name("poison");
    kafka::create_topic(&topic, 3).await?;
    let limits = [
        ("KAFKA_MESSAGE_MAX_BYTES", "20000"),
        ("GREGOR_RELAY_MAX_ATTEMPTS", "3"),
    ];
    let relay = InProcessRelay::start(&db.url, &kafka_bootstrap()?, &limits)?;

    let mut msgs = vec![
        OutboxMessage::new(&topic, "big", "/t")
            .key("poisoned")
            .payload(vec![b'x'; 50_000]),
        OutboxMessage::new(&topic, "after-big", "/t")
            .key("poisoned")
            .payload(b"second".to_vec()),
    ];
    for i in 0..100 {
        msgs.push(
            OutboxMessage::new(&topic, "ok", "/t")
                .key(format!("k{}", i % 10))
                .payload(i.to_string().into_bytes()),
        );
    }
    let mut tx = db.pool.begin().await?;
    enqueue_batch(&mut tx, msgs).await?;
    tx.commit().await?;

    // Other keys flow while the big row is retried and then parked.
    let healthy = kafka::read_topic(&topic, 100, WAIT).await?;
    assert!(
        healthy
            .iter()
            .all(|m| m.key.as_deref() != Some(&b"poisoned"[..]))
    );
    wait_until(WAIT, "the oversized row to be parked", || async {
        Ok((gregor_outbox::status(&db.pool).await?.parked == 1).then_some(()))
    })
    .await?;
    let status = cli(&db, &["outbox", "status"])?;
    assert!(
        status.contains("backlog: 1") && status.contains("parked: 1"),
        "{status}"
    );
    let parked = cli(&db, &["outbox", "parked"])?;
    assert!(
        parked.contains("key=poisoned") && parked.contains("attempts=3"),
        "{parked}"
    );
    assert!(
        parked.to_lowercase().contains("too large"),
        "the error says why: {parked}"
    );
    let id = parked
        .split_whitespace()
        .find_map(|w| w.strip_prefix("id="))
        .ok_or_else(|| anyhow::anyhow!("no id in {parked}"))?
        .to_owned();

    // Raise the limit, requeue: both rows of the key go out, in order.
    relay.stop().await?;
    let relay = InProcessRelay::start(
        &db.url,
        &kafka_bootstrap()?,
        &[("KAFKA_MESSAGE_MAX_BYTES", "200000")],
    )?;
    let requeued = cli(&db, &["outbox", "requeue", &id])?;
    assert!(requeued.contains("requeued 1 row"), "{requeued}");
    let all = kafka::read_topic(&topic, 102, WAIT).await?;
    let mut poisoned: Vec<_> = all
        .iter()
        .filter(|m| m.key.as_deref() == Some(&b"poisoned"[..]))
        .collect();
    poisoned.sort_by_key(|m| m.offset);
    let types: Vec<_> = poisoned
        .iter()
        .filter_map(|m| m.header("ce_type"))
        .collect();
    assert_eq!(types, ["big", "after-big"]);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_for_an_invalid_topic_is_parked_with_the_reason() -> anyhow::Result<()> {
    let db = TestDb::create("badtopic").await?;
    let topic = unique_name("good");
    kafka::create_topic(&topic, 1).await?;
    // Written around the library's validation, as a hand-written INSERT could.
    sqlx::query(
        "INSERT INTO gregor_outbox (shard, event_id, topic, key, payload, event_type, event_source)
         VALUES (0, gen_random_uuid(), 'no such/topic', 'k', 'x', 't', '/s')",
    )
    .execute(&db.pool)
    .await?;
    let relay = InProcessRelay::start(
        &db.url,
        &kafka_bootstrap()?,
        &[("GREGOR_RELAY_MAX_ATTEMPTS", "2")],
    )?;
    let cli_send = cli(
        &db,
        &[
            "outbox", "send", "--topic", &topic, "--key", "other", "--value", "v", "--header",
            "a=b",
        ],
    )?;
    assert!(cli_send.contains("enqueued event"), "{cli_send}");
    let got = kafka::read_topic(&topic, 1, WAIT).await?;
    assert_eq!(got[0].header("a").as_deref(), Some("b"));
    wait_until(WAIT, "the bad-topic row to be parked", || async {
        Ok((gregor_outbox::status(&db.pool).await?.parked == 1).then_some(()))
    })
    .await?;
    let parked = cli(&db, &["outbox", "parked"])?;
    assert!(
        parked.contains("no such/topic") && parked.contains("contains ' '"),
        "{parked}"
    );
    relay.stop().await
}
