//! The relay scenarios of issue 13 beside `relay.rs`: CPU per event of the relay and of the
//! services it drives (PostgreSQL and the broker share the box), a hand-rolled single-statement
//! drain as a third baseline, a drain while another session holds an old snapshot, and the
//! time from a relay's start to its first publish.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gregor_testkit::TestDb;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;

/// User plus system CPU seconds of every process whose command name is one of `names`.
pub(crate) fn cpu_of_processes(names: &[&str]) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| names.contains(&c.trim()))
        })
        .map(super::relay::cpu_seconds)
        .sum()
}

/// CPU seconds of this process.
pub(crate) fn own_cpu() -> f64 {
    super::relay::cpu_seconds(std::process::id())
}

/// The services a drain drives: PostgreSQL's backends and the broker.
pub(crate) const SERVICES: &[&str] = &["postgres", "nisshi"];

/// (c) A team's weekend relay, in Rust: `DELETE … ORDER BY id LIMIT 1000 FOR UPDATE SKIP
/// LOCKED RETURNING` in a transaction, produce every row with the relay's producer settings,
/// wait for the acknowledgements, commit. Returns events/s and CPU µs per event (this process
/// plus PostgreSQL and the broker).
pub(crate) async fn hand_rolled_drain(
    pool: &PgPool,
    producer: &FutureProducer,
    topic: &str,
    events: u64,
) -> anyhow::Result<(f64, f64)> {
    let cpu_before = own_cpu() + cpu_of_processes(SERVICES);
    let started = Instant::now();
    let mut drained = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<super::relay::DrainedRow> = sqlx::query_as(
            "DELETE FROM gregor_outbox WHERE id IN (
                 SELECT id FROM gregor_outbox ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED)
             RETURNING id, key, payload",
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            break;
        }
        let mut pending = Vec::with_capacity(rows.len());
        for (_, key, payload) in &rows {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic);
            if let Some(k) = key {
                record = record.key(k.as_slice());
            }
            if let Some(p) = payload {
                record = record.payload(p.as_slice());
            }
            // Hand over at once (as the relay does); wait for queue space when it is full.
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((_, back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
        for p in pending {
            p.await?.map_err(|(e, _)| e)?;
        }
        tx.commit().await?;
        drained += rows.len() as u64;
    }
    anyhow::ensure!(
        drained == events,
        "the hand-rolled drain moved {drained} rows, expected {events}"
    );
    let secs = started.elapsed().as_secs_f64();
    let cpu = own_cpu() + cpu_of_processes(SERVICES) - cpu_before;
    Ok((events as f64 / secs, cpu * 1e6 / events as f64))
}

/// Holds a REPEATABLE READ snapshot open on its own connection until dropped: vacuum cannot
/// remove what the relay deletes meanwhile, so every scan meets the dead index entries.
pub(crate) struct HeldSnapshot {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
}

impl HeldSnapshot {
    pub(crate) async fn take(pool: &PgPool) -> anyhow::Result<Self> {
        let mut conn = pool.acquire().await?;
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *conn)
            .await?;
        sqlx::query("SELECT count(*) FROM gregor_outbox")
            .execute(&mut *conn)
            .await?;
        Ok(Self { conn })
    }

    pub(crate) async fn release(mut self) -> anyhow::Result<()> {
        sqlx::query("ROLLBACK").execute(&mut *self.conn).await?;
        Ok(())
    }
}

/// Seconds from spawning one relay to the first row of a waiting backlog being published
/// (deleted after its acknowledgement).
pub(crate) async fn first_publish(
    db: &TestDb,
    bootstrap: &str,
    bin: &PathBuf,
    backlog: i64,
) -> anyhow::Result<f64> {
    super::relay::reset_leases(&db.pool).await?;
    let spawned = Instant::now();
    let relay = super::relay::spawn_relay(bin, db, bootstrap, "bench-first", &[])?;
    let pool = &db.pool;
    let first = super::relay::poll(Duration::from_secs(60), "the first publish", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM gregor_outbox")
            .fetch_one(pool)
            .await?;
        Ok(left < backlog)
    })
    .await?;
    relay.stop();
    Ok((first - spawned).as_secs_f64())
}
