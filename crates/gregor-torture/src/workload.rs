//! The seeded workload: writer tasks enqueueing through `gregor_outbox` in their own
//! transactions (hot and cold keys, batches, tombstones, transactions held open, rollbacks),
//! sessions holding an old snapshot, and a few poison rows.
//!
//! Writers of one key take its row lock in `torture_keys` before enqueueing (the README's
//! rule), so a key's sequence numbers are its commit order; every committed event also has a
//! row in `torture_ledger`, written in the same transaction, which resolves commits whose
//! outcome the writer could not see.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gregor_outbox::{OutboxMessage, enqueue, enqueue_batch};
use rand::Rng;
use rand::rngs::StdRng;
use sqlx::PgPool;

use crate::history::{Enqueue, Outcome, Poison};
use crate::plan::writer_rng;

/// Hot keys (most writes) and cold keys.
pub const HOT_KEYS: usize = 4;
/// Cold keys.
pub const COLD_KEYS: usize = 40;
/// The header carrying the key's sequence number.
pub const SEQ_HEADER: &str = "torture-seq";
/// Bytes of an oversized payload: over librdkafka's default `message.max.bytes` (1 000 000).
const OVERSIZED: usize = 1_100_000;

/// The schema of the workload's own tables.
pub const SCHEMA: &str = "
CREATE TABLE torture_keys (key TEXT PRIMARY KEY, seq BIGINT NOT NULL DEFAULT 0);
CREATE TABLE torture_ledger (event_id UUID PRIMARY KEY, key TEXT NOT NULL, seq BIGINT NOT NULL);
CREATE TABLE torture_applied (key TEXT PRIMARY KEY, seq BIGINT NOT NULL DEFAULT 0);
CREATE TABLE torture_effects (n BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL, key TEXT NOT NULL,
                              seq BIGINT NOT NULL, prev_seq BIGINT, part INTEGER NOT NULL,
                              off BIGINT NOT NULL);
";

/// Every key a run writes.
pub fn keys() -> Vec<String> {
    let hot = (0..HOT_KEYS).map(|i| format!("hot-{i}"));
    let cold = (0..COLD_KEYS).map(|i| format!("cold-{i:02}"));
    hot.chain(cold)
        .chain(["big-0".to_owned(), "late-0".to_owned()])
        .collect()
}

/// Shared by the writer tasks.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The private database.
    pub pool: PgPool,
    /// The consumed topic.
    pub topic: String,
    /// The topic that does not exist yet.
    pub late_topic: String,
    /// Start of the run.
    pub started: Instant,
    /// When writers stop.
    pub until: Instant,
    /// Every enqueue attempt.
    pub log: Arc<Mutex<Vec<Enqueue>>>,
    /// The run's seed.
    pub seed: u64,
}

/// One transaction's plan.
#[derive(Debug, Clone)]
struct Tx {
    key: String,
    topic: String,
    events: Vec<(bool, Option<Poison>)>,
    batch: bool,
    hold: Option<Duration>,
    rollback: bool,
}

impl Workload {
    fn ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Writer `w` until the deadline.
    pub async fn writer(self, w: usize) {
        let mut rng = writer_rng(self.seed, w);
        while Instant::now() < self.until {
            let tx = self.plan(&mut rng);
            if !self.run(w, tx).await {
                // The database is away: back off a little instead of spinning.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(2..25))).await;
        }
    }

    fn plan(&self, rng: &mut StdRng) -> Tx {
        let key = if rng.random_bool(0.7) {
            format!("hot-{}", rng.random_range(0..HOT_KEYS))
        } else {
            format!("cold-{:02}", rng.random_range(0..COLD_KEYS))
        };
        let n = rng.random_range(1..=4);
        Tx {
            key,
            topic: self.topic.clone(),
            events: (0..n).map(|_| (rng.random_bool(0.05), None)).collect(),
            batch: n > 1 || rng.random_bool(0.5),
            hold: rng
                .random_bool(0.1)
                .then(|| Duration::from_millis(rng.random_range(50..600))),
            rollback: rng.random_bool(0.08),
        }
    }

    /// The poison rows: an oversized row on `big-0` with a healthy row queued behind it, and
    /// two rows of `late-0` for the topic that does not exist yet.
    pub async fn poison(self, at: Duration) {
        tokio::time::sleep(at).await;
        let oversized = Tx {
            key: "big-0".into(),
            topic: self.topic.clone(),
            events: vec![(false, Some(Poison::Oversized)), (false, None)],
            batch: false,
            hold: None,
            rollback: false,
        };
        self.retrying(0, oversized).await;
        for _ in 0..2 {
            let late = Tx {
                key: "late-0".into(),
                topic: self.late_topic.clone(),
                events: vec![(false, Some(Poison::MissingTopic))],
                batch: false,
                hold: None,
                rollback: false,
            };
            self.retrying(0, late).await;
        }
    }

    async fn retrying(&self, w: usize, tx: Tx) {
        // Give up well after the writers stopped: a database that never came back is the
        // harness's failure, reported by the fault task.
        let give_up = self.until + Duration::from_secs(30);
        while Instant::now() < give_up {
            if self.run(w, tx.clone()).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs one transaction; false when the database could not be used (nothing committed).
    async fn run(&self, w: usize, tx: Tx) -> bool {
        let mut db = match self.pool.begin().await {
            Ok(db) => db,
            Err(_) => return false,
        };
        let n = i64::try_from(tx.events.len()).unwrap_or(1);
        let base: i64 = match sqlx::query_scalar(
            "UPDATE torture_keys SET seq = seq + $2 WHERE key = $1 RETURNING seq - $2",
        )
        .bind(&tx.key)
        .bind(n)
        .fetch_one(&mut *db)
        .await
        {
            Ok(base) => base,
            Err(_) => return false,
        };
        let mut planned = Vec::new();
        let mut messages = Vec::new();
        for (i, (tombstone, poison)) in tx.events.iter().enumerate() {
            let seq = base + 1 + i64::try_from(i).unwrap_or(0);
            let mut m = OutboxMessage::new(&tx.topic, "torture.step", "/torture")
                .key(&tx.key)
                .header(SEQ_HEADER, seq.to_string());
            m = if *tombstone {
                m.tombstone()
            } else if *poison == Some(Poison::Oversized) {
                m.payload(vec![b'x'; OVERSIZED])
            } else {
                m.payload(format!(
                    "{{\"key\":\"{}\",\"seq\":{seq},\"writer\":{w}}}",
                    tx.key
                ))
            };
            planned.push((seq, *tombstone, *poison));
            messages.push(m);
        }
        let ids = if tx.batch {
            enqueue_batch(&mut db, messages).await
        } else {
            let mut ids = Vec::new();
            let mut failed = None;
            for m in messages {
                match enqueue(&mut db, m).await {
                    Ok(id) => ids.push(id),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            failed.map_or(Ok(ids), Err)
        };
        let Ok(ids) = ids else { return false };
        let seqs: Vec<i64> = planned.iter().map(|p| p.0).collect();
        if sqlx::query(
            "INSERT INTO torture_ledger (event_id, key, seq)
             SELECT id, $2, seq FROM unnest($1::uuid[], $3::bigint[]) AS t(id, seq)",
        )
        .bind(&ids)
        .bind(&tx.key)
        .bind(&seqs)
        .execute(&mut *db)
        .await
        .is_err()
        {
            return false;
        }
        if let Some(hold) = tx.hold {
            tokio::time::sleep(hold).await;
        }
        let outcome = if tx.rollback {
            let _ = db.rollback().await;
            Outcome::RolledBack
        } else {
            match db.commit().await {
                Ok(()) => Outcome::Committed,
                Err(_) => Outcome::Unknown,
            }
        };
        let at_ms = self.ms();
        let entries = ids
            .iter()
            .zip(planned)
            .map(|(id, (seq, tombstone, poison))| Enqueue {
                event_id: *id,
                writer: w,
                key: tx.key.clone(),
                seq,
                topic: tx.topic.clone(),
                tombstone,
                poison,
                outcome,
                at_ms,
            });
        if let Ok(mut log) = self.log.lock() {
            log.extend(entries);
        }
        true
    }

    /// A session that keeps taking an old snapshot: REPEATABLE READ transactions held 1–4 s.
    pub async fn old_snapshots(self) {
        let mut rng = writer_rng(self.seed, 1_000);
        while Instant::now() < self.until {
            if let Ok(mut tx) = self.pool.begin().await {
                let _ = sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .execute(&mut *tx)
                    .await;
                let _ = sqlx::query("SELECT count(*) FROM torture_ledger")
                    .execute(&mut *tx)
                    .await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..4_000))).await;
                let _ = tx.commit().await;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
        }
    }
}
