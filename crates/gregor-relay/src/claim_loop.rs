//! The claim loop: claim rows of owned shards → publish in order → delete what was acked.
//!
//! Rows are claimed by shard ownership (see `lease`), never by a persistent id cursor. Within
//! one scan pass, each batch starts after the last id the previous claim examined (a hint that
//! keeps batches off dead index entries). A row can still become visible *below* that position
//! when its transaction commits after a later one; every claim therefore also takes the rows
//! of the transactions that were in progress when the previous batch was read, ordered by id
//! with the rest, so a key's rows go out in commit order (ADR 0001).
//!
//! Every row a pass leaves behind — failed, skipped behind a failed row of its key, dropped
//! because its lease lapsed, published but not deleted — lowers the pass's `retry_from`. A
//! pass restarts from there every `pass_interval` (at once after a lapsed lease), never from
//! the head of the table unless its shards changed or an operator requeued parked rows (the
//! requeue generation each claim reads in its own snapshot). Rows whose key has an earlier
//! parked row are *held* (see `store::hold`), so they cost no claim after the first.

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

/// How long to wait for a nudged lease renewal before retrying rows the fence held back.
const FENCE_RETRY: Duration = Duration::from_millis(20);

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
#[derive(Debug)]
struct Pass {
    started: Instant,
    after_id: i64,
    /// Transactions in progress when the last batch was read: their rows may still appear
    /// below `after_id` and are claimed with the next batch, in id order.
    late: InProgress,
    /// Keys with a failed or skipped row in this pass: their later rows wait for the restart.
    blocked: HashSet<Vec<u8>>,
    /// The shards this pass claims. Any change (gained, lost, lapsed, released) starts a new
    /// pass: rows skipped while a shard was out of the set must not be overtaken by later
    /// rows of the same key.
    shards: Vec<i16>,
    /// The version of the leases this pass started under: any change starts a new pass.
    lease_version: u64,
    /// The requeue generation this pass started under (read by its first claim).
    generation: Option<i64>,
    /// The lowest id this pass left behind; the restart scans from just below it.
    retry_from: Option<i64>,
    /// Restart at the next iteration rather than after `pass_interval` (a lease lapsed with
    /// rows in hand: their keys' later rows must not go first).
    restart_now: bool,
    /// Rows were held back by the lease fence: give the renewal a moment before the restart.
    fenced: bool,
}

/// A published batch: the rows to delete and the failures to record.
struct Done {
    acked: Vec<i64>,
    failed: Vec<store::FailedRow>,
}

/// How a batch's delete ended.
#[derive(Debug)]
struct Finished {
    /// Acknowledged rows that may stay in the outbox (the delete was fenced, partly or wholly,
    /// or gave up): they will be published again, so nothing published after them may be
    /// deleted before they are. All of the batch's rows, even those a partial fence deleted:
    /// treating them as kept only costs a restart below them.
    kept: Vec<i64>,
}

/// A claim read ahead for the next iteration.
struct Prefetched {
    shards: Vec<i16>,
    after_id: i64,
    claimed: Result<store::Claimed, sqlx::Error>,
}

impl Pass {
    /// A pass from the head of the table.
    fn new(shards: Vec<i16>, lease_version: u64) -> Self {
        Self {
            lease_version,
            started: Instant::now(),
            after_id: 0,
            late: InProgress::none(),
            blocked: HashSet::new(),
            shards,
            generation: None,
            retry_from: None,
            restart_now: false,
            fenced: false,
        }
    }

    /// Remembers that row `id` stays in the outbox for this pass.
    fn leave_behind(&mut self, id: i64) {
        self.retry_from = Some(self.retry_from.map_or(id, |r| r.min(id)));
    }

    /// Acknowledged rows that stay in the outbox: the pass restarts below them at once, so
    /// their republication comes before any later row of their keys.
    fn keep(&mut self, acked: &[i64]) {
        if let Some(first) = acked.iter().min() {
            self.leave_behind(*first);
            self.restart_now = true;
        }
    }

    /// Applies how a batch's delete ended; `false` when rows were kept.
    fn apply(&mut self, finished: Finished) -> bool {
        self.keep(&finished.kept);
        finished.kept.is_empty()
    }

    /// Starts the scan again just below the lowest row left behind. The late transactions
    /// and the requeue generation carry over: everything below the new position was either
    /// published or is a late row still tracked by `late`.
    fn restart_from_retry(&mut self) {
        if let Some(from) = self.retry_from.take() {
            self.after_id = self.after_id.min(from - 1);
        }
        self.blocked.clear();
        self.restart_now = false;
        self.started = Instant::now();
    }

    /// Decides, before a claim, whether this pass goes on, restarts from its retry point, or
    /// gives way to a new pass from the head (shards changed).
    fn before_claim(&mut self, shards: &[i16], lease_version: u64, interval: Duration) {
        if shards != self.shards.as_slice() || lease_version != self.lease_version {
            *self = Self::new(shards.to_vec(), lease_version);
        } else if self.restart_now || self.started.elapsed() >= interval {
            self.restart_from_retry();
        }
    }

    /// Accepts a claim's snapshot facts; `false` when the claim must be dropped and the pass
    /// started again from the head (parked rows were requeued since the pass began).
    fn accept(&mut self, claimed: &store::Claimed) -> bool {
        if let (Some(seen), Some(now)) = (self.generation, claimed.generation)
            && seen != now
        {
            *self = Self::new(std::mem::take(&mut self.shards), self.lease_version);
            return false;
        }
        if self.generation.is_none() && self.after_id == 0 {
            self.generation = claimed.generation;
        }
        if let Some(in_progress) = &claimed.in_progress {
            self.late = in_progress.clone();
        }
        if let Some(last) = claimed.last_id {
            self.after_id = self.after_id.max(last);
        }
        true
    }
}

impl ClaimLoop {
    /// Runs until `cancel`; the batch in flight then gets `shutdown_timeout` to finish.
    /// Returns `false` when it stopped with records still in the producer.
    pub(crate) async fn run(&self, cancel: &CancellationToken) -> bool {
        let mut pass = Pass::new(Vec::new(), self.leases.version());
        let mut backoff = Backoff::default();
        let batch = i64::from(self.config.batch_size);
        // The next batch, read while the previous one was being published (a claim is a pure
        // read). Used only if the pass and its shards are unchanged since it was read.
        let mut prefetched: Option<Prefetched> = None;
        // A published batch whose delete runs while the next batch publishes.
        let mut pending: Option<Done> = None;
        while !cancel.is_cancelled() {
            // No publish is in flight here: the safe point to hand shards back, once the
            // pending delete is done (after the release it would be fenced, and the new owner
            // would publish the whole batch again).
            let releasing = self.leases.releasing();
            if !releasing.is_empty() {
                self.settle_pending(&mut pending, &mut pass, cancel).await;
            }
            if let Err(e) = self.leases.release(&self.pool, &releasing).await {
                tracing::warn!(error = %e, "could not release shard leases; will retry");
            }
            // Read the version first: a change after it shows up as a new version next time.
            if std::mem::take(&mut pass.fenced) {
                // The nudged renewal takes a round trip; waking on it is not possible (a
                // renewal that keeps the same shards changes nothing observable), so wait
                // briefly instead of spinning on a fence that still holds.
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = tokio::time::sleep(FENCE_RETRY) => {}
                }
            }
            let lease_version = self.leases.version();
            let shards = self.leases.publishable();
            pass.before_claim(&shards, lease_version, self.config.pass_interval);
            if shards.is_empty() {
                prefetched = None;
                self.settle_pending(&mut pending, &mut pass, cancel).await;
                self.wait_for_work(cancel).await;
                continue;
            }
            let claimed = match prefetched.take() {
                Some(p) if p.shards == shards && p.after_id == pass.after_id => p.claimed,
                _ => {
                    // A claim that is not the read-ahead may re-read rows of the batch whose
                    // delete is still pending: settle it first, so no row is published again
                    // after a later row of its key. If that batch stays in the outbox, the
                    // pass must restart below it before claiming anything.
                    if !self.settle_pending(&mut pending, &mut pass, cancel).await {
                        continue;
                    }
                    store::claim(&self.pool, &shards, pass.after_id, &pass.late, batch).await
                }
            };
            let claimed = match claimed {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming outbox rows failed; retrying");
                    backoff.wait(cancel).await;
                    continue;
                }
            };
            backoff.reset();
            if !pass.accept(&claimed) {
                tracing::info!(
                    "parked rows were requeued: restarting the scan from the oldest row"
                );
                continue;
            }
            // A full scan means a backlog: read the next batch while publishing this one.
            // Otherwise claim afresh after publishing, which keeps the latency low.
            let scanned_full = claimed.rows.len() + claimed.blocked.len()
                >= usize::try_from(batch).unwrap_or(usize::MAX);
            let store::Claimed {
                mut rows, blocked, ..
            } = claimed;
            self.hold(&mut pass, &blocked).await;
            if rows.is_empty() {
                if blocked.is_empty() {
                    self.settle_pending(&mut pending, &mut pass, cancel).await;
                    self.wait_for_work(cancel).await;
                }
                continue;
            }
            // A lease may have lapsed during the claim: never publish past the deadline. The
            // dropped rows stay behind and the pass restarts at once (even if a renewal lands
            // first), so no later row of their keys goes out before them.
            rows.retain(|row| {
                let keep = self.leases.is_publishable(row.shard);
                if !keep {
                    pass.leave_behind(row.id);
                    pass.restart_now = true;
                    // A renewal may land before the next row of this key is checked.
                    if let Some(key) = &row.key {
                        pass.blocked.insert(key.clone());
                    }
                }
                keep
            });
            if rows.is_empty() {
                continue;
            }
            let pipelined = scanned_full && !pass.restart_now;
            if !pipelined && !self.settle_pending(&mut pending, &mut pass, cancel).await {
                // The previous batch stays in the outbox: publishing these rows now would put
                // them ahead of its republication. They wait for the restart below it.
                if let Some(first) = rows.iter().map(|row| row.id).min() {
                    pass.leave_behind(first);
                }
                continue;
            }
            // With a backlog, three things overlap: the publish of this batch, the read of the
            // next one and the delete of the previous one.
            let previous = pending.take();
            let (after_id, late) = (pass.after_id, &pass.late);
            let next = async {
                if pipelined {
                    Some(store::claim(&self.pool, &shards, after_id, late, batch).await)
                } else {
                    None
                }
            };
            let finish_previous = async {
                match previous {
                    Some(done) => Some(self.finish(done, cancel).await),
                    None => None,
                }
            };
            let (published, next, finished) = tokio::join!(
                self.publish(rows, &mut pass.blocked, cancel),
                next,
                finish_previous
            );
            let previous_settled = finished.is_none_or(|f| pass.apply(f));
            if let Some(next) = next {
                prefetched = Some(Prefetched {
                    shards,
                    after_id,
                    claimed: next,
                });
            }
            let Some(outcome) = published else {
                tracing::warn!(
                    "shutdown timeout reached with publishes in flight; rows stay in the outbox"
                );
                return false;
            };
            let done = self.note(outcome, &mut pass);
            if !previous_settled {
                // The previous batch stays in the outbox and will be published again: this
                // batch must stay too, or its rows would be overtaken by older rows of their
                // keys on the broker.
                pass.keep(&done.acked);
                self.record_failures(&done.failed).await;
            } else if pipelined {
                pending = Some(done);
            } else {
                let finished = self.finish(done, cancel).await;
                pass.apply(finished);
            }
        }
        self.settle_pending(&mut pending, &mut pass, cancel).await;
        true
    }

    /// Deletes the batch whose delete was left to overlap the next publish, if any. Returns
    /// `false` when rows of it stay in the outbox: the pass then restarts below them, and
    /// nothing may be published before that restart.
    async fn settle_pending(
        &self,
        pending: &mut Option<Done>,
        pass: &mut Pass,
        cancel: &CancellationToken,
    ) -> bool {
        match pending.take() {
            Some(done) => {
                let finished = self.finish(done, cancel).await;
                pass.apply(finished)
            }
            None => true,
        }
    }

    /// Holds the rows queued behind parked rows; any it could not hold stay behind.
    async fn hold(&self, pass: &mut Pass, blocked: &[(i64, i64)]) {
        if blocked.is_empty() {
            return;
        }
        match store::hold(&self.pool, blocked).await {
            Ok(held) => {
                let held: HashSet<i64> = held.into_iter().collect();
                for (id, _) in blocked {
                    if !held.contains(id) {
                        pass.leave_behind(*id);
                    }
                }
                tracing::debug!(held = held.len(), "rows held behind parked rows");
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not hold rows behind parked rows; retrying in the next pass");
                for (id, _) in blocked {
                    pass.leave_behind(*id);
                }
            }
        }
    }

    async fn publish(
        &self,
        rows: Vec<OutboxRow>,
        blocked: &mut HashSet<Vec<u8>>,
        cancel: &CancellationToken,
    ) -> Option<BatchOutcome> {
        let grace = self.config.shutdown_timeout;
        let bound = self.config.delivery_bound();
        let leases = &self.leases;
        let may_hand_over = move |shard: i16| leases.may_hand_over(shard, bound);
        tokio::select! {
            outcome = self.publisher.publish(rows, blocked, &may_hand_over) => Some(outcome),
            () = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => None,
        }
    }

    /// Takes in what a publish left behind (failed, skipped and fenced rows) and returns
    /// what is left to write to the database.
    fn note(&self, outcome: BatchOutcome, pass: &mut Pass) -> Done {
        for (_, latency) in &outcome.acked {
            self.metrics.latency.observe(*latency);
        }
        for id in &outcome.skipped {
            pass.leave_behind(*id);
        }
        if outcome.fenced {
            // The lease deadline came too close for the producer's delivery bound: renew now
            // and retry these rows as soon as it is renewed, not after the pass interval.
            self.leases.nudge.notify_one();
            pass.restart_now = true;
            pass.fenced = true;
        }
        for failure in &outcome.failed {
            pass.leave_behind(failure.id);
        }
        Done {
            acked: outcome.acked.iter().map(|(id, _)| *id).collect(),
            failed: outcome.failed,
        }
    }

    /// Deletes acknowledged rows (fenced by the lease) and records failures, retrying through
    /// database outages for up to a lease ttl.
    async fn finish(&self, done: Done, cancel: &CancellationToken) -> Finished {
        let mut backoff = Backoff::default();
        let give_up = Instant::now() + self.config.lease_ttl;
        let mut finished = Finished { kept: Vec::new() };
        loop {
            match store::delete_published(&self.pool, self.leases.relay_id(), &done.acked).await {
                Ok(deleted) => {
                    self.metrics.published.inc_by(deleted);
                    let fenced = done
                        .acked
                        .len()
                        .saturating_sub(usize::try_from(deleted).unwrap_or(0));
                    if fenced > 0 {
                        tracing::warn!(
                            fenced,
                            "published rows not deleted: their shard lease was lost; the new owner republishes them"
                        );
                        finished.kept = done.acked;
                    }
                    break;
                }
                Err(e) => {
                    // Past the lease ttl the delete would be fenced anyway.
                    if Instant::now() > give_up || cancel.is_cancelled() {
                        tracing::warn!(error = %e, rows = done.acked.len(), "giving up deleting published rows; they will be published again");
                        finished.kept = done.acked;
                        break;
                    }
                    tracing::warn!(error = %e, "deleting published rows failed; retrying");
                    backoff.wait(cancel).await;
                }
            }
        }
        self.record_failures(&done.failed).await;
        finished
    }

    /// Counts and logs publish failures and records them (parking rows past `max_attempts`).
    async fn record_failures(&self, failed: &[store::FailedRow]) {
        let Some(first) = failed.first() else {
            return;
        };
        for failure in failed {
            let kind = if failure.counts {
                "permanent"
            } else {
                "transient"
            };
            self.metrics.failures.with_label_values(&[kind]).inc();
        }
        tracing::warn!(
            failed = failed.len(),
            first_id = first.id,
            first_error = %first.error,
            "publish failures; their keys wait for the next pass"
        );
        match store::record_failures(
            &self.pool,
            self.leases.relay_id(),
            failed,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(ids: &[i64], generation: i64) -> store::Claimed {
        store::Claimed {
            last_id: ids.iter().max().copied(),
            in_progress: Some(InProgress {
                xids: Vec::new(),
                xmax: 100,
            }),
            generation: Some(generation),
            ..store::Claimed::default()
        }
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[test]
    fn a_dropped_row_restarts_the_pass_below_it_even_with_unchanged_leases() {
        let mut pass = Pass::new(vec![1, 2], 7);
        assert!(pass.accept(&claimed(&[10, 11, 12], 0)));
        // Row 11's lease lapsed during the claim and was dropped; a renewal then restored the
        // same shards at the same lease version.
        pass.leave_behind(11);
        pass.restart_now = true;
        pass.before_claim(&[1, 2], 7, LONG);
        assert_eq!(
            pass.after_id, 10,
            "the next claim starts just below the dropped row"
        );
        assert!(!pass.restart_now);
    }

    #[test]
    fn failed_rows_are_retried_after_the_interval_not_before() {
        let mut pass = Pass::new(vec![1], 0);
        assert!(pass.accept(&claimed(&[5, 6, 7], 0)));
        pass.leave_behind(6);
        pass.blocked.insert(b"k".to_vec());
        pass.before_claim(&[1], 0, LONG);
        assert_eq!(pass.after_id, 7, "the pass goes on");
        pass.before_claim(&[1], 0, Duration::ZERO);
        assert_eq!(pass.after_id, 5);
        assert!(pass.blocked.is_empty(), "a restart clears the blocked keys");
    }

    #[test]
    fn nothing_left_behind_means_no_rescan_from_the_head() {
        let mut pass = Pass::new(vec![1], 0);
        assert!(pass.accept(&claimed(&[5, 6, 7], 0)));
        pass.before_claim(&[1], 0, Duration::ZERO);
        assert_eq!(pass.after_id, 7);
    }

    #[test]
    fn a_requeue_restarts_from_the_head_and_a_lease_change_too() {
        let mut pass = Pass::new(vec![1], 0);
        assert!(pass.accept(&claimed(&[5, 6, 7], 3)));
        assert!(
            !pass.accept(&claimed(&[9], 4)),
            "a new generation drops the claim"
        );
        assert_eq!(pass.after_id, 0);
        assert!(pass.accept(&claimed(&[2, 9], 4)));
        assert_eq!(pass.generation, Some(4));
        pass.before_claim(&[1], 1, LONG);
        assert_eq!(pass.after_id, 0, "another lease version starts a new pass");
    }

    #[test]
    fn rows_kept_after_their_publish_restart_the_pass_below_them_at_once() {
        let mut pass = Pass::new(vec![1], 0);
        assert!(pass.accept(&claimed(&[5, 6, 7, 8], 0)));
        assert!(pass.apply(Finished { kept: Vec::new() }), "all deleted");
        assert!(!pass.apply(Finished { kept: vec![7, 6] }));
        pass.before_claim(&[1], 0, LONG);
        assert_eq!(
            pass.after_id, 5,
            "the next claim republishes from the lowest kept row"
        );
    }

    #[test]
    fn late_rows_never_move_the_scan_position_back() {
        let mut pass = Pass::new(vec![1], 0);
        assert!(pass.accept(&claimed(&[50], 0)));
        let mut late_only = claimed(&[], 0);
        late_only.last_id = None;
        assert!(pass.accept(&late_only));
        assert_eq!(pass.after_id, 50);
    }
}
