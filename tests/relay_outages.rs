//! P2 under outages: the broker hung (SIGSTOP) for 10 s then resumed, and
//! PostgreSQL restarted, both mid-run. The relay recovers by itself; nothing is lost and
//! every key stays in commit order. Each test runs its own broker or database server so that
//! stopping it disturbs no other test.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gregor_integration_tests::InProcessRelay;
use gregor_outbox::{OutboxMessage, enqueue};
use gregor_testkit::{
    PrivateBroker, PrivatePostgres, TestDb, kafka, kafka_bootstrap, unique_name, wait_until,
};
use sqlx::PgPool;

const KEYS: i64 = 20;

async fn setup_aggregate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CREATE TABLE aggregate (key TEXT PRIMARY KEY, seq BIGINT NOT NULL DEFAULT 0)")
        .execute(pool)
        .await?;
    sqlx::query("INSERT INTO aggregate (key) SELECT 'key-' || i FROM generate_series(0, $1 - 1) i")
        .bind(KEYS)
        .execute(pool)
        .await?;
    Ok(())
}

/// Enqueues one event per transaction, round-robin over the keys, until `stop`; errors
/// (database down) are retried. The aggregate's seq is the truth of what committed.
async fn produce(pool: PgPool, topic: String, stop: Arc<AtomicBool>, attempts: Arc<AtomicU64>) {
    let mut i: i64 = 0;
    let mut pace = tokio::time::interval(Duration::from_millis(2));
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let key = format!("key-{}", i % KEYS);
        let step = async {
            let mut tx = pool.begin().await?;
            let seq: i64 = sqlx::query_scalar(
                "UPDATE aggregate SET seq = seq + 1 WHERE key = $1 RETURNING seq",
            )
            .bind(&key)
            .fetch_one(&mut *tx)
            .await?;
            enqueue(
                &mut tx,
                OutboxMessage::new(&topic, "step", "/outage")
                    .key(&key)
                    .payload(seq.to_string().into_bytes()),
            )
            .await?;
            tx.commit().await?;
            anyhow::Ok(())
        };
        if step.await.is_ok() {
            i += 1;
        }
        attempts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every committed seq of every key arrives, first occurrences in commit order.
async fn verify(pool: &PgPool, bootstrap: &str, topic: &str) -> anyhow::Result<u64> {
    let messages = kafka::read_to_end_on(bootstrap, topic, Duration::from_secs(60)).await?;
    let mut sorted = messages;
    sorted.sort_by_key(|m| (m.partition, m.offset));
    let mut firsts: HashMap<String, Vec<i64>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for m in &sorted {
        let key = String::from_utf8(m.key.clone().unwrap_or_default())?;
        let seq: i64 = String::from_utf8(m.payload.clone().unwrap_or_default())?.parse()?;
        if seen.insert((key.clone(), seq)) {
            firsts.entry(key).or_default().push(seq);
        }
    }
    let mut total = 0;
    for (key, n) in sqlx::query_as::<_, (String, i64)>("SELECT key, seq FROM aggregate")
        .fetch_all(pool)
        .await?
    {
        let want: Vec<i64> = (1..=n).collect();
        assert_eq!(
            firsts.get(&key).cloned().unwrap_or_default(),
            want,
            "key {key}"
        );
        total += u64::try_from(n)?;
    }
    Ok(total)
}

async fn drained(pool: &PgPool) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(120), "the outbox to drain", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM gregor_outbox")
            .fetch_one(pool)
            .await?;
        Ok((left == 0).then_some(()))
    })
    .await
}

/// Waits until `n` events were published. Recovery after an outage can take the producer's
/// `message.timeout.ms` (30 s) plus reconnect backoff before queued sends are retried, hence
/// the generous bound.
async fn published_at_least(pool: &PgPool, n: i64) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(120), &format!("{n} events published"), || async {
        let (committed, left): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT coalesce(sum(seq), 0)::bigint FROM aggregate), (SELECT count(*) FROM gregor_outbox)",
        )
        .fetch_one(pool)
        .await?;
        Ok((committed - left >= n).then_some(()))
    })
    .await
}

/// The relay plus a steady stream of enqueued events, running until [`Load::finish`].
struct Load {
    relay: InProcessRelay,
    stop: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
    producer: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Creates the aggregate table and `topic`, starts the relay and the producers, and waits
    /// until the first 300 events went out.
    async fn start(db: &TestDb, bootstrap: &str, topic: &str) -> anyhow::Result<Self> {
        setup_aggregate(&db.pool).await?;
        kafka::create_topic_on(bootstrap, topic, 3).await?;
        let relay = InProcessRelay::start(&db.url, bootstrap, &[])?;
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicU64::new(0));
        let producer = tokio::spawn(produce(
            db.pool.clone(),
            topic.to_owned(),
            stop.clone(),
            attempts.clone(),
        ));
        published_at_least(&db.pool, 300).await?;
        Ok(Self {
            relay,
            stop,
            attempts,
            producer,
        })
    }

    /// Stops enqueueing, waits for the outbox to drain and stops the relay.
    async fn finish(self, pool: &PgPool) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.producer.await?;
        drained(pool).await?;
        self.relay.stop().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_for_ten_seconds_loses_nothing() -> anyhow::Result<()> {
    let broker = PrivateBroker::start().await?;
    let db = TestDb::create("brokerdown").await?;
    let topic = unique_name("outage");
    let load = Load::start(&db, &broker.bootstrap(), &topic).await?;
    // The broker hangs (SIGSTOP): every request in flight and every new one goes unanswered.
    // A SIGKILL and restart on sqlite storage was the earlier form of this test; nisshi
    // 0.7.0-pre.2 then sometimes never serves fetches of the restarted partitions (reads from
    // offset 0 hang, seen 2026-11-23), which made the test fail for the broker's reasons.
    broker.freeze()?;
    // The outage itself lasts 10 s by specification; events keep being enqueued meanwhile.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let backlog = gregor_outbox::status(&db.pool).await?.backlog;
    assert!(
        backlog > 0,
        "events were enqueued while the broker was down"
    );
    broker.thaw()?;
    let committed_now: i64 = sqlx::query_scalar("SELECT sum(seq)::bigint FROM aggregate")
        .fetch_one(&db.pool)
        .await?;
    published_at_least(&db.pool, committed_now).await?;
    load.finish(&db.pool).await?;
    let total = verify(&db.pool, &broker.bootstrap(), &topic).await?;
    eprintln!("broker outage: {total} events verified, {backlog} were waiting during the outage");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_loses_nothing() -> anyhow::Result<()> {
    let pg = PrivatePostgres::start().await?;
    let db = TestDb::create_on(&pg.url(), "pgrestart").await?;
    let topic = unique_name("pgrestart");
    let bootstrap = kafka_bootstrap()?;
    let load = Load::start(&db, &bootstrap, &topic).await?;
    pg.stop()?;
    let attempts = load.attempts.clone();
    let before = attempts.load(Ordering::Relaxed);
    wait_until(
        Duration::from_secs(60),
        "producers to hit the outage",
        || async { Ok((attempts.load(Ordering::Relaxed) > before + 2).then_some(())) },
    )
    .await?;
    pg.resume().await?;
    let committed_now: i64 = sqlx::query_scalar("SELECT sum(seq)::bigint FROM aggregate")
        .fetch_one(&db.pool)
        .await?;
    published_at_least(&db.pool, committed_now + 200).await?;
    load.finish(&db.pool).await?;
    let total = verify(&db.pool, &bootstrap, &topic).await?;
    eprintln!("postgres restart: {total} events verified");
    Ok(())
}
