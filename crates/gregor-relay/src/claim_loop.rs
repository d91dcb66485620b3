//! The claim loop: claim rows of owned shards → publish in order → delete what was acked.
//!
//! Rows are claimed by shard ownership (see `lease`), never by a persistent id cursor. Within
//! one scan pass, each batch starts after the last id of the previous one (a hint that keeps
//! batches off dead index entries). A row can still become visible *below* that position when
//! its transaction commits after a later one; every claim therefore also takes the rows of
//! the transactions that were in progress when the previous batch was read, ordered by id with
//! the rest, so a key's rows go out in commit order. A pass restarts from the oldest row every
//! `pass_interval` and whenever the set of publishable shards changes, which retries failed
//! rows and picks up shards gained mid-pass.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::lease::Leases;
use crate::publish::{BatchOutcome, Publisher};
use crate::store::{self, InProgress, OutboxRow};
use crate::{RelayConfig, RelayMetrics};

/// Everything the loop needs.
pub(crate) struct ClaimLoop {
    pub(crate) pool: PgPool,
    pub(crate) config: RelayConfig,
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) leases: Arc<Leases>,
    pub(crate) metrics: RelayMetrics,
    /// Signalled by the LISTEN task when rows were committed.
    pub(crate) wake: Arc<Notify>,
}

/// State of one scan pass.
struct Pass {
    started: Instant,
    after_id: i64,
    /// Transactions in progress when the last batch was read: their rows may still appear
    /// below `after_id` and are claimed with the next batch, in id order.
    late: InProgress,
    /// Keys with a failed row in this pass: their later rows wait for the next pass.
    blocked: HashSet<Vec<u8>>,
    /// The shards this pass claims. Any change (gained, lost, lapsed, released) starts a new
    /// pass: rows skipped while a shard was out of the set must not be overtaken by later
    /// rows of the same key.
    shards: Vec<i16>,
}

/// A claim read ahead for the next iteration.
struct Prefetched {
    shards: Vec<i16>,
    after_id: i64,
    claimed: Result<store::Claimed, sqlx::Error>,
}

impl Pass {
    fn new(shards: Vec<i16>) -> Self {
        Self {
            started: Instant::now(),
            after_id: 0,
            late: InProgress::none(),
            blocked: HashSet::new(),
            shards,
        }
    }
}

impl ClaimLoop {
    /// Runs until `cancel`; the batch in flight then gets `shutdown_timeout` to finish.
    pub(crate) async fn run(&self, cancel: &CancellationToken) {
        let mut pass = Pass::new(Vec::new());
        let mut backoff = Backoff::default();
        let batch = i64::from(self.config.batch_size);
        // The next batch, read while the previous one was being published (a claim is a pure
        // read). Used only if the pass and its shards are unchanged since it was read.
        let mut prefetched: Option<Prefetched> = None;
        while !cancel.is_cancelled() {
            // No batch is in flight here: the safe point to hand shards back.
            let releasing = self.leases.releasing();
            if let Err(e) = self.leases.release(&self.pool, &releasing).await {
                tracing::warn!(error = %e, "could not release shard leases; will retry");
            }
            let shards = self.leases.publishable();
            if shards != pass.shards || pass.started.elapsed() >= self.config.pass_interval {
                pass = Pass::new(shards.clone());
            }
            if shards.is_empty() {
                self.wait_for_work(cancel).await;
                continue;
            }
            let claimed = match prefetched.take() {
                Some(p) if p.shards == shards && p.after_id == pass.after_id => p.claimed,
                _ => store::claim(&self.pool, &shards, pass.after_id, &pass.late, batch).await,
            };
            let mut rows = match claimed {
                Ok(claimed) => {
                    if let Some(in_progress) = claimed.in_progress {
                        pass.late = in_progress;
                    }
                    claimed.rows
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming outbox rows failed; retrying");
                    backoff.wait(cancel).await;
                    continue;
                }
            };
            backoff.reset();
            // A full batch means a backlog: read the next batch while publishing this one.
            // Otherwise claim afresh after publishing, which keeps the latency low.
            let read_ahead = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= batch;
            let Some(last) = rows.last() else {
                self.wait_for_work(cancel).await;
                continue;
            };
            pass.after_id = last.id;
            // A lease may have lapsed during the claim: never publish past the deadline. The
            // dropped rows' shard leaves the set, so the next iteration starts a new pass.
            rows.retain(|row| self.leases.is_publishable(row.shard));
            if rows.is_empty() {
                continue;
            }
            let published = if read_ahead {
                let next = store::claim(&self.pool, &shards, pass.after_id, &pass.late, batch);
                let (published, next) =
                    tokio::join!(self.publish(rows, &mut pass.blocked, cancel), next);
                prefetched = Some(Prefetched {
                    shards,
                    after_id: pass.after_id,
                    claimed: next,
                });
                published
            } else {
                self.publish(rows, &mut pass.blocked, cancel).await
            };
            let Some(outcome) = published else {
                tracing::warn!(
                    "shutdown timeout reached with publishes in flight; rows stay in the outbox"
                );
                return;
            };
            self.settle(outcome, cancel).await;
        }
    }

    async fn publish(
        &self,
        rows: Vec<OutboxRow>,
        blocked: &mut HashSet<Vec<u8>>,
        cancel: &CancellationToken,
    ) -> Option<BatchOutcome> {
        let grace = self.config.shutdown_timeout;
        tokio::select! {
            outcome = self.publisher.publish(rows, blocked) => Some(outcome),
            () = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => None,
        }
    }

    /// Deletes acknowledged rows and records failures, retrying through database outages.
    async fn settle(&self, outcome: BatchOutcome, cancel: &CancellationToken) {
        let acked: Vec<i64> = outcome.acked.iter().map(|(id, _)| *id).collect();
        for (_, latency) in &outcome.acked {
            self.metrics.latency.observe(*latency);
        }
        let mut backoff = Backoff::default();
        let give_up = Instant::now() + self.config.lease_ttl;
        loop {
            match store::delete_published(&self.pool, self.leases.relay_id(), &acked).await {
                Ok(deleted) => {
                    self.metrics.published.inc_by(deleted);
                    let fenced = acked
                        .len()
                        .saturating_sub(usize::try_from(deleted).unwrap_or(0));
                    if fenced > 0 {
                        tracing::warn!(
                            fenced,
                            "published rows not deleted: their shard lease was lost; the new owner republishes them"
                        );
                    }
                    break;
                }
                Err(e) => {
                    // Past the lease ttl the delete would be fenced anyway.
                    if Instant::now() > give_up || cancel.is_cancelled() {
                        tracing::warn!(error = %e, rows = acked.len(), "giving up deleting published rows; they will be published again");
                        break;
                    }
                    tracing::warn!(error = %e, "deleting published rows failed; retrying");
                    backoff.wait(cancel).await;
                }
            }
        }
        if outcome.failed.is_empty() {
            return;
        }
        for failure in &outcome.failed {
            let kind = if failure.counts {
                "permanent"
            } else {
                "transient"
            };
            self.metrics.failures.with_label_values(&[kind]).inc();
        }
        let first = &outcome.failed[0];
        tracing::warn!(
            failed = outcome.failed.len(),
            skipped = outcome.skipped,
            first_id = first.id,
            first_error = %first.error,
            "publish failures; their keys wait for the next pass"
        );
        match store::record_failures(
            &self.pool,
            self.leases.relay_id(),
            &outcome.failed,
            self.config.max_attempts,
        )
        .await
        {
            Ok(parked) => {
                for id in &parked {
                    tracing::error!(
                        id,
                        "outbox row parked after repeated failures; see `gregor outbox parked`"
                    );
                }
                self.metrics
                    .parked_now
                    .inc_by(u64::try_from(parked.len()).unwrap_or(0));
            }
            Err(e) => tracing::warn!(error = %e, "could not record publish failures"),
        }
    }

    async fn wait_for_work(&self, cancel: &CancellationToken) {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = self.wake.notified() => {}
            () = self.leases.changed.notified() => {}
            () = tokio::time::sleep(self.config.poll_interval) => {}
        }
    }
}

/// Exponential backoff from 50 ms to 5 s that wakes early on cancellation.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    pub(crate) async fn wait(&mut self, cancel: &CancellationToken) {
        let delay =
            Duration::from_millis(50u64 << self.failures.min(7)).min(Duration::from_secs(5));
        self.failures = self.failures.saturating_add(1);
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
}
