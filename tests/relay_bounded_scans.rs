//! Issue 13, defect 6: the relay's periodic queries are bounded by an index, never by the
//! size of the table. Another replica owns half the shards and has a backlog of 100 000 rows
//! there; a relay owning the other half publishes a trickle on its own shards. Whatever it
//! reads of the outbox over twenty wake-ups (claims, pass restarts, status queries) stays
//! below one walk over that backlog — the old relay walked the primary key through the other
//! replica's rows on every claim and counted the whole table every two seconds.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::Duration;

use gregor_integration_tests::InProcessRelay;
use gregor_outbox::{OutboxMessage, enqueue};
use gregor_testkit::{TestDb, kafka, kafka_bootstrap, unique_name, wait_until};
use uuid::Uuid;

/// Rows of the other replica's shards; a relay reading them once reads this many.
const FOREIGN_ROWS: i64 = 100_000;
const ROUNDS: usize = 20;

/// Rows of `gregor_outbox` read so far by sequential scans plus index entries returned by
/// index scans, as PostgreSQL's cumulative statistics count them.
async fn rows_read(db: &TestDb) -> anyhow::Result<i64> {
    let mut conn = db.pool.acquire().await?;
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await?;
    let read: i64 = sqlx::query_scalar(
        "SELECT (SELECT coalesce(seq_tup_read, 0) FROM pg_stat_user_tables
                  WHERE relid = 'gregor_outbox'::regclass)
              + (SELECT coalesce(sum(idx_tup_read), 0)::bigint FROM pg_stat_user_indexes
                  WHERE relid = 'gregor_outbox'::regclass)",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_replica_never_reads_another_replicas_backlog() -> anyhow::Result<()> {
    let db = TestDb::create("bounded").await?;
    // The relay's lease and member tables too: they are written before any relay runs.
    gregor_relay::migrate(&db.pool).await?;
    let topic = unique_name("bounded");
    kafka::create_topic(&topic, 3).await?;

    // Another replica, alive for the whole test, holds shards 0–31.
    let other = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO gregor_relay_members (relay_id, name, heartbeat_at)
         VALUES ($1, 'other', now() + interval '1 hour')",
    )
    .bind(other)
    .execute(&db.pool)
    .await?;
    sqlx::query(
        "UPDATE gregor_relay_leases SET owner = $1, epoch = epoch + 1,
                expires_at = now() + interval '1 hour'
          WHERE shard < 32",
    )
    .bind(other)
    .execute(&db.pool)
    .await?;
    sqlx::query(
        "INSERT INTO gregor_outbox (shard, event_id, topic, key, payload, event_type, event_source)
         SELECT (i % 32)::smallint, gen_random_uuid(), $1, convert_to('other-' || i, 'UTF8'),
                convert_to(repeat('x', 100), 'UTF8'), 'bounded', '/t'
           FROM generate_series(1, $2) AS i",
    )
    .bind(&topic)
    .bind(FOREIGN_ROWS)
    .execute(&db.pool)
    .await?;
    sqlx::query("ANALYZE gregor_outbox")
        .execute(&db.pool)
        .await?;

    // Keys of the relay's own shards (32–63).
    let own_keys: Vec<String> = (0..)
        .map(|i| format!("own-{i}"))
        .filter(|k| gregor_outbox::shard_of(Some(k.as_bytes()), Uuid::nil()) >= 32)
        .take(ROUNDS)
        .collect();

    let relay = InProcessRelay::start(&db.url, &kafka_bootstrap()?, &[])?;
    wait_until(
        Duration::from_secs(20),
        "the relay to take the free shards",
        || async {
            let free: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM gregor_relay_leases
                  WHERE shard >= 32 AND (owner IS NULL OR expires_at <= now())",
            )
            .fetch_one(&db.pool)
            .await?;
            Ok((free == 0).then_some(()))
        },
    )
    .await?;
    let before = rows_read(&db).await?;
    // Twenty wake-ups, each waited for on the broker; with a 300 ms pass interval and the
    // status task's 2 s period, they span several pass restarts and status queries.
    for (i, key) in own_keys.iter().enumerate() {
        let mut tx = db.pool.begin().await?;
        enqueue(
            &mut tx,
            OutboxMessage::new(&topic, "bounded", "/t")
                .key(key.clone())
                .payload(b"own".to_vec()),
        )
        .await?;
        tx.commit().await?;
        kafka::read_topic(&topic, i + 1, Duration::from_secs(20)).await?;
    }
    relay.stop().await?;
    // The relay's connections are closed: their statistics have been flushed.
    let read = rows_read(&db).await? - before;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM gregor_outbox WHERE shard >= 32")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(left, 0, "every row of the relay's own shards was published");
    eprintln!("rows of gregor_outbox read during {ROUNDS} wake-ups: {read}");
    assert!(
        read < FOREIGN_ROWS,
        "the relay read {read} outbox rows during {ROUNDS} wake-ups: its queries walk the \
         other replica's {FOREIGN_ROWS}-row backlog"
    );
    Ok(())
}
