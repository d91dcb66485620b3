//! Shard leases: each shard (and so each key) has one relay owner at a time.
//!
//! Every `ttl / 3` a relay heartbeats its membership, renews the leases it holds, takes free
//! or expired leases up to its fair share (`ceil(SHARDS / live relays)`), and marks leases
//! above that share for release. Fencing:
//!
//! * **publish**: a shard is publishable only until `renew sent + ttl - margin` on the local
//!   monotonic clock, which is always earlier than the database's `expires_at`. A relay
//!   paused past its lease finds the deadline gone when it wakes and publishes nothing.
//! * **delete**: deletes and failure records join `gregor_relay_leases` and only touch rows of
//!   shards the relay still owns with an unexpired lease (see `store`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gregor_outbox::SHARDS;
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

/// A lease this relay holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: i64,
    /// Publishing on this shard must stop before this instant.
    deadline: Instant,
    /// Above the fair share: the claim loop releases it between batches.
    releasing: bool,
}

/// The leases this relay holds, shared by the lease manager and the claim loop.
#[derive(Debug)]
pub(crate) struct Leases {
    relay_id: Uuid,
    ttl: Duration,
    held: Mutex<BTreeMap<i16, Held>>,
    /// Signalled whenever the set of publishable shards changes.
    pub(crate) changed: Notify,
    /// Serialises lease statements so a renewal racing a release cannot resurrect a lease.
    ops: tokio::sync::Mutex<()>,
}

impl Leases {
    pub(crate) fn new(relay_id: Uuid, ttl: Duration) -> Self {
        Self {
            relay_id,
            ttl,
            held: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            ops: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn ttl_for_renewal(&self) -> Duration {
        self.ttl
    }

    pub(crate) fn relay_id(&self) -> Uuid {
        self.relay_id
    }

    /// Safety margin between the local deadline and the database expiry.
    fn margin(&self) -> Duration {
        (self.ttl / 5).max(Duration::from_millis(200))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i16, Held>> {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Shards the claim loop may publish now.
    pub(crate) fn publishable(&self) -> Vec<i16> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, h)| !h.releasing && h.deadline > now)
            .map(|(s, _)| *s)
            .collect()
    }

    /// Whether `shard` may still be published now.
    pub(crate) fn is_publishable(&self, shard: i16) -> bool {
        self.lock()
            .get(&shard)
            .is_some_and(|h| !h.releasing && h.deadline > Instant::now())
    }

    /// Number of leases held (for metrics).
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    fn bump(&self) {
        self.changed.notify_waiters();
    }

    /// Shards marked for release.
    pub(crate) fn releasing(&self) -> Vec<i16> {
        self.lock()
            .iter()
            .filter(|(_, h)| h.releasing)
            .map(|(s, _)| *s)
            .collect()
    }

    /// One heartbeat: membership, renewal, acquisition (unless `acquire` is false: a relay's
    /// first heartbeat only announces it, so replicas started together see each other before
    /// taking shards) and marking for release.
    pub(crate) async fn tick(
        &self,
        pool: &PgPool,
        name: &str,
        acquire: bool,
    ) -> Result<(), sqlx::Error> {
        let _serial = self.ops.lock().await;
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO gregor_relay_members (relay_id, name, heartbeat_at) VALUES ($1, $2, now())
             ON CONFLICT (relay_id) DO UPDATE SET heartbeat_at = now(), name = EXCLUDED.name",
        )
        .bind(self.relay_id)
        .bind(name)
        .execute(pool)
        .await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM gregor_relay_members
              WHERE heartbeat_at > now() - make_interval(secs => $1::float8 / 1000)",
        )
        .bind(ttl_ms)
        .fetch_one(pool)
        .await?;
        let live = usize::try_from(live.max(1)).unwrap_or(1);
        let shards = usize::try_from(SHARDS).unwrap_or(64);
        let fair_share = shards.div_ceil(live);

        let sent = Instant::now();
        let renewed: Vec<(i16, i64)> = sqlx::query_as(
            "UPDATE gregor_relay_leases
                SET expires_at = now() + make_interval(secs => $2::float8 / 1000)
              WHERE owner = $1 AND expires_at > now()
            RETURNING shard, epoch",
        )
        .bind(self.relay_id)
        .bind(ttl_ms)
        .fetch_all(pool)
        .await?;
        self.apply_renewal(sent, &renewed);

        let held = renewed.len();
        if acquire && held < fair_share {
            let sent = Instant::now();
            let acquired: Vec<(i16, i64)> = sqlx::query_as(
                "WITH free AS (
                     SELECT shard FROM gregor_relay_leases
                      WHERE owner IS NULL OR expires_at <= now()
                      ORDER BY random()
                      LIMIT $3
                        FOR UPDATE SKIP LOCKED)
                 UPDATE gregor_relay_leases l
                    SET owner = $1, epoch = l.epoch + 1,
                        expires_at = now() + make_interval(secs => $2::float8 / 1000)
                   FROM free WHERE l.shard = free.shard
                 RETURNING l.shard, l.epoch",
            )
            .bind(self.relay_id)
            .bind(ttl_ms)
            .bind(i64::try_from(fair_share - held).unwrap_or(0))
            .fetch_all(pool)
            .await?;
            if !acquired.is_empty() {
                tracing::info!(shards = ?acquired.iter().map(|a| a.0).collect::<Vec<_>>(), "acquired shard leases");
                let deadline = sent + self.ttl - self.margin();
                let mut map = self.lock();
                for (shard, epoch) in acquired {
                    map.insert(
                        shard,
                        Held {
                            epoch,
                            deadline,
                            releasing: false,
                        },
                    );
                }
                drop(map);
                self.bump();
            }
        } else if held > fair_share {
            let mut map = self.lock();
            let extra = held - fair_share;
            let already = map.values().filter(|h| h.releasing).count();
            for held in map
                .values_mut()
                .rev()
                .filter(|h| !h.releasing)
                .take(extra.saturating_sub(already))
            {
                held.releasing = true;
            }
            drop(map);
            self.bump();
        }
        sqlx::query(
            "DELETE FROM gregor_relay_members WHERE heartbeat_at < now() - interval '1 hour'",
        )
        .execute(pool)
        .await?;
        Ok(())
    }

    fn apply_renewal(&self, sent: Instant, renewed: &[(i16, i64)]) {
        let deadline = sent + self.ttl - self.margin();
        let mut map = self.lock();
        let before = map.len();
        let mut next = BTreeMap::new();
        for &(shard, epoch) in renewed {
            let releasing = map
                .get(&shard)
                .is_some_and(|h| h.epoch == epoch && h.releasing);
            next.insert(
                shard,
                Held {
                    epoch,
                    deadline,
                    releasing,
                },
            );
        }
        let lost: Vec<i16> = map
            .keys()
            .filter(|s| !next.contains_key(s))
            .copied()
            .collect();
        *map = next;
        let changed = !lost.is_empty() || before != map.len();
        drop(map);
        if !lost.is_empty() {
            tracing::warn!(shards = ?lost, "shard leases lost (expired or taken over)");
        }
        if changed {
            self.bump();
        }
    }

    /// Gives up `shards` (called by the claim loop between batches, or at shutdown).
    pub(crate) async fn release(&self, pool: &PgPool, shards: &[i16]) -> Result<(), sqlx::Error> {
        if shards.is_empty() {
            return Ok(());
        }
        let _serial = self.ops.lock().await;
        sqlx::query(
            "UPDATE gregor_relay_leases SET owner = NULL, expires_at = '-infinity'
              WHERE owner = $1 AND shard = ANY($2)",
        )
        .bind(self.relay_id)
        .bind(shards)
        .execute(pool)
        .await?;
        let mut map = self.lock();
        for s in shards {
            map.remove(s);
        }
        drop(map);
        tracing::info!(?shards, "released shard leases");
        self.bump();
        Ok(())
    }

    /// Releases everything and leaves the membership table (clean shutdown).
    pub(crate) async fn leave(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let all: Vec<i16> = self.lock().keys().copied().collect();
        self.release(pool, &all).await?;
        sqlx::query("DELETE FROM gregor_relay_members WHERE relay_id = $1")
            .bind(self.relay_id)
            .execute(pool)
            .await?;
        Ok(())
    }
}
