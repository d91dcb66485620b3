//! Shard leases: each shard (and so each key) has one relay owner at a time.
//!
//! Every `ttl / 5` a relay heartbeats its membership, renews the leases it holds, takes free
//! or expired leases up to its fair share (`ceil(SHARDS / live relays)`), and marks leases
//! above that share for release. Its first heartbeat takes free shards at once; a joining
//! relay and a relay releasing shards `NOTIFY gregor_relay_leases`, which makes the others
//! heartbeat at once, so shards move in milliseconds on a deploy, not at the next heartbeat.
//! Fencing:
//!
//! * **publish**: a shard is publishable only until `renew sent + ttl - margin` on the local
//!   monotonic clock, which is always earlier than the database's `expires_at`. A record is
//!   handed to the producer only while that deadline is further away than the producer's
//!   delivery bound (`message.timeout.ms` = `request.timeout.ms`, at most 40 % of the ttl), so
//!   nothing handed over by an owner can be delivered after its lease ends. A relay paused past
//!   its lease finds the deadline gone when it wakes and hands nothing over.
//! * **delete**: deletes and failure records join `gregor_relay_leases` and only touch rows of
//!   shards the relay still owns with a lease unexpired at the moment the row is checked
//!   (`clock_timestamp()`, not the statement's start: a statement that waited on a lock must
//!   not act on a lease that expired meanwhile).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gregor_outbox::SHARDS;
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

/// How long after its `message.timeout.ms` librdkafka may still send a record: its timeout
/// scan runs once a second, and a batch may take a record up to 100 ms past its timeout.
const TIMEOUT_SCAN_SLACK: Duration = Duration::from_millis(1200);

/// The channel on which relays announce released shards and new members.
pub(crate) const LEASES_CHANNEL: &str = "gregor_relay_leases";

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
    /// Signalled whenever the set of publishable shards changes. The claim loop is its only
    /// waiter; a change while the loop is busy (a pending delete, a publish) leaves a permit,
    /// so its next wait returns at once instead of sleeping a poll interval.
    pub(crate) changed: Notify,
    /// Bumped with every change of the leases held (acquired, lost, marked, released): a scan
    /// pass that saw another version starts again from the head.
    version: AtomicU64,
    /// Signalled when another replica released shards or joined: heartbeat now.
    pub(crate) nudge: Notify,
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
            version: AtomicU64::new(0),
            nudge: Notify::new(),
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

    /// Whether a record of `shard` handed to the producer now is certain to be delivered or
    /// failed before the lease deadline, given that the producer gives up on a record after
    /// `delivery_bound`: the per-record fence against a paused old owner.
    pub(crate) fn may_hand_over(&self, shard: i16, delivery_bound: Duration) -> bool {
        // The lease can pass to another relay only once the database's `expires_at` is past,
        // which is at least `margin` after the local deadline. librdkafka scans for timed-out
        // records once a second and may still send one up to 100 ms past its timeout.
        let last_send = Instant::now() + delivery_bound + TIMEOUT_SCAN_SLACK;
        let margin = self.margin();
        self.lock()
            .get(&shard)
            .is_some_and(|h| !h.releasing && h.deadline + margin > last_send)
    }

    /// Number of leases held (for metrics).
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// The version of the leases held (see `version`).
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Shards marked for release.
    pub(crate) fn releasing(&self) -> Vec<i16> {
        self.lock()
            .iter()
            .filter(|(_, h)| h.releasing)
            .map(|(s, _)| *s)
            .collect()
    }

    /// One heartbeat: membership, renewal, acquisition of free shards up to the fair share, and
    /// marking what is above it for release. A relay's first heartbeat (`joining`) takes free
    /// shards at once and wakes the other replicas, so they hand over their surplus now rather
    /// than at their next heartbeat.
    pub(crate) async fn tick(
        &self,
        pool: &PgPool,
        name: &str,
        joining: bool,
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
        if joining {
            sqlx::query("SELECT pg_notify($1, 'joined')")
                .bind(LEASES_CHANNEL)
                .execute(pool)
                .await?;
        }
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
              WHERE owner = $1 AND expires_at > clock_timestamp()
            RETURNING shard, epoch",
        )
        .bind(self.relay_id)
        .bind(ttl_ms)
        .fetch_all(pool)
        .await?;
        self.apply_renewal(sent, &renewed);

        let held = renewed.len();
        if held < fair_share {
            let sent = Instant::now();
            let acquired: Vec<(i16, i64)> = sqlx::query_as(
                "WITH free AS (
                     SELECT shard FROM gregor_relay_leases
                      WHERE owner IS NULL OR expires_at <= clock_timestamp()
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
        // The notification wakes the other replicas to take the shards now.
        sqlx::query(
            "WITH released AS (
                 UPDATE gregor_relay_leases SET owner = NULL, expires_at = '-infinity'
                  WHERE owner = $1 AND shard = ANY($2)
                 RETURNING shard)
             SELECT pg_notify($3, 'released') FROM (SELECT count(*) FROM released) AS r",
        )
        .bind(self.relay_id)
        .bind(shards)
        .bind(LEASES_CHANNEL)
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

    /// Leaves the membership table but keeps the leases until they expire: for a shutdown
    /// with records still in the producer, which could otherwise reach the broker after a new
    /// owner's.
    pub(crate) async fn leave_without_release(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM gregor_relay_members WHERE relay_id = $1")
            .bind(self.relay_id)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Leaves the membership table, then releases everything (clean shutdown): the replicas
    /// woken by the release count one member less and take the shards at once.
    pub(crate) async fn leave(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM gregor_relay_members WHERE relay_id = $1")
            .bind(self.relay_id)
            .execute(pool)
            .await?;
        let all: Vec<i16> = self.lock().keys().copied().collect();
        self.release(pool, &all).await
    }
}
