//! Free shards are taken at once: a starting relay takes them on its first heartbeat,
//! replicas started together converge on a fair share promptly, and the shards a stopping
//! replica releases are taken by the others without waiting for their next heartbeat (issue
//! 13, defect 7). The lease ttl here is 100 s, so a heartbeat comes every 20 s: every wait
//! below is far shorter than that.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::Duration;

use gregor_integration_tests::InProcessRelay;
use gregor_outbox::{OutboxMessage, enqueue_batch};
use gregor_testkit::{TestDb, kafka, kafka_bootstrap, unique_name, wait_until};

/// Well below the 20 s between two heartbeats at a 100 s lease ttl.
const WAIT: Duration = Duration::from_secs(10);
const SLOW_HEARTBEAT: [(&str, &str); 1] = [("GREGOR_RELAY_LEASE_TTL_MS", "100000")];

async fn enqueue_keys(db: &TestDb, topic: &str, tag: &str, n: usize) -> anyhow::Result<()> {
    let mut tx = db.pool.begin().await?;
    let msgs = (0..n).map(|i| {
        OutboxMessage::new(topic, "start", "/t")
            .key(format!("{tag}-{i}"))
            .payload(b"x".to_vec())
    });
    enqueue_batch(&mut tx, msgs).await?;
    tx.commit().await?;
    Ok(())
}

/// A database with the relay's tables too, so that `shares` can be asked before a relay
/// started has migrated it.
async fn relay_db(name: &str) -> anyhow::Result<TestDb> {
    let db = TestDb::create(name).await?;
    gregor_relay::migrate(&db.pool).await?;
    Ok(db)
}

/// Live leases per owner, largest first.
async fn shares(db: &TestDb) -> anyhow::Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM gregor_relay_leases
          WHERE owner IS NOT NULL AND expires_at > now()
          GROUP BY owner ORDER BY count(*) DESC",
    )
    .fetch_all(&db.pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_relay_publishes_before_its_second_heartbeat() -> anyhow::Result<()> {
    let db = relay_db("firstbeat").await?;
    let topic = unique_name("firstbeat");
    kafka::create_topic(&topic, 3).await?;
    // Rows on many shards are waiting before the relay starts.
    enqueue_keys(&db, &topic, "k", 200).await?;
    let relay = InProcessRelay::start(&db.url, &kafka_bootstrap()?, &SLOW_HEARTBEAT)?;
    kafka::read_topic(&topic, 200, WAIT).await?;
    assert_eq!(shares(&db).await?, [64], "one relay holds every shard");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_promptly_and_take_released_shards_at_once() -> anyhow::Result<()> {
    let db = relay_db("handover").await?;
    let topic = unique_name("handover");
    kafka::create_topic(&topic, 3).await?;
    let bootstrap = kafka_bootstrap()?;
    let first = InProcessRelay::start(&db.url, &bootstrap, &SLOW_HEARTBEAT)?;
    wait_until(WAIT, "the first relay to take every shard", || async {
        Ok((shares(&db).await? == [64]).then_some(()))
    })
    .await?;
    let second = InProcessRelay::start(&db.url, &bootstrap, &SLOW_HEARTBEAT)?;
    wait_until(WAIT, "the two relays to share the shards", || async {
        Ok((shares(&db).await? == [32, 32]).then_some(()))
    })
    .await?;
    enqueue_keys(&db, &topic, "before", 100).await?;
    kafka::read_topic(&topic, 100, WAIT).await?;

    // A rolling restart: the first relay stops and releases its shards; the second takes
    // them at once and publishes rows of every shard.
    first.stop().await?;
    wait_until(WAIT, "the released shards to be taken", || async {
        Ok((shares(&db).await? == [64]).then_some(()))
    })
    .await?;
    enqueue_keys(&db, &topic, "after", 100).await?;
    kafka::read_topic(&topic, 200, WAIT).await?;
    second.stop().await
}
