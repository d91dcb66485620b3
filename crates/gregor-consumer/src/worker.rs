//! The per-message pipeline: wait until a retry is due, decode and handle inside the dedupe
//! transaction, then carry out the [`router`]'s decision: back off in place, wait out an
//! outage, forward to the next retry tier or dead-letter.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use gregor_wire::{TopicKind, base_topic, dlq_topic, retry_topic};

use crate::Context;
use crate::dedupe;
use crate::dedupe_tx::{DedupeTx, DedupeTxError};
use crate::forward::{self, Failure, Stage};
use crate::forward_error::ForwardError;
use crate::forwarder::{Forwarder, Stop};
use crate::metrics::{ConsumerMetrics, TopicMetrics, outcome};
use crate::offsets::{Offsets, PartKey, PartOffsets};
use crate::outage;
use crate::retry_headers;
use crate::route::{Attempt, ErrorKind, EventMeta, RouteEntry};
use crate::router::{self, Decision, Tally};
use crate::runtime::{Room, Taken};
use crate::trace;

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Handled,
    Duplicate,
    Retried,
    DeadLettered,
    /// Stopped by revoke or shutdown before finishing: not committed, redelivered later.
    Abandoned,
}

/// Everything lanes share.
pub(crate) struct Worker {
    pub(crate) group: Arc<str>,
    pub(crate) routes: HashMap<String, Arc<RouteEntry>>,
    pub(crate) pool: Option<PgPool>,
    pub(crate) forwarder: Arc<Forwarder>,
    pub(crate) offsets: Arc<Offsets>,
    pub(crate) progress: Arc<Notify>,
    pub(crate) metrics: ConsumerMetrics,
    /// Cancelled when a copy can never be forwarded: the poll loop stops the consumer.
    pub(crate) halt: CancellationToken,
    /// Why it halted (the first such error).
    pub(crate) halted: std::sync::Mutex<Option<ForwardError>>,
    /// The per-message metric series of each routed topic, resolved once.
    pub(crate) hot: HashMap<String, TopicMetrics>,
}

/// One lane: handles its messages in order until its partition is revoked or the consumer
/// stops.
pub(crate) async fn lane(
    worker: Arc<Worker>,
    key: PartKey,
    part: Arc<PartOffsets>,
    room: Arc<Room>,
    mut rx: mpsc::Receiver<Taken>,
) {
    let token = part.token().clone();
    let batch_max = worker.batch_size(&key.0);
    let mut batch = Vec::with_capacity(batch_max);
    // The batch's in-flight counts: released once its messages are finished (or with the lane).
    let mut in_flight = Vec::with_capacity(batch_max);
    // Built once: a cancellation future per message registered a waiter under a lock.
    let revoked = token.cancelled();
    tokio::pin!(revoked);
    loop {
        let (msg, counted) = tokio::select! {
            biased;
            () = &mut revoked => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        batch.clear();
        batch.push(msg);
        in_flight.push(counted);
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok((m, counted)) => {
                    batch.push(m);
                    in_flight.push(counted);
                }
                Err(_) => break,
            }
        }
        // The queue has room now: messages waiting in the poll loop may move in.
        room.made();
        for begun in 0..batch.len() {
            if !worker.offsets.begin(&part) {
                // Revoked meanwhile: undo what was begun (nothing ran), then stop.
                for m in &batch[..begun] {
                    worker.offsets.finish(&part, m.offset(), false);
                }
                return;
            }
        }
        let outcomes = if batch.len() == 1 {
            vec![worker.process(&batch[0], &token).await]
        } else {
            worker.process_batch(&batch, &token).await
        };
        let mut abandoned = false;
        for (msg, outcome) in batch.iter().zip(outcomes) {
            let done = outcome != Outcome::Abandoned;
            abandoned |= !done;
            worker.offsets.finish(&part, msg.offset(), done);
        }
        in_flight.clear();
        if abandoned {
            return;
        }
    }
}

impl Worker {
    /// Messages of `topic` handled per dedupe transaction (1 unless the route opted in; retry
    /// topics always go one by one, since each waits for its own due time).
    fn batch_size(&self, topic: &str) -> usize {
        let (base, kind) = base_topic(topic);
        match self.routes.get(base) {
            Some(entry) if kind == TopicKind::Main && entry.dedupe && self.pool.is_some() => {
                entry.batch_size.max(1)
            }
            _ => 1,
        }
    }

    /// Several messages of one lane in one dedupe transaction. Any failure rolls the whole
    /// batch back and handles its messages one by one with the full failure routing.
    async fn process_batch(
        &self,
        msgs: &[OwnedMessage],
        token: &CancellationToken,
    ) -> Vec<Outcome> {
        let started = Instant::now();
        let (base, _) = base_topic(msgs[0].topic());
        if let Some(entry) = self.routes.get(base)
            && let Some(pool) = &self.pool
        {
            match self.try_batch(entry, pool, msgs, base).await {
                Ok(outcomes) => {
                    for o in &outcomes {
                        let label = if *o == Outcome::Duplicate {
                            outcome::DUPLICATE
                        } else {
                            outcome::HANDLED
                        };
                        self.count(base, label, started);
                    }
                    return outcomes;
                }
                Err(reason) => {
                    tracing::debug!(%reason, size = msgs.len(), "batch rolled back; one by one");
                }
            }
        }
        let mut outcomes = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let o = self.process(msg, token).await;
            outcomes.push(o);
            if o == Outcome::Abandoned {
                outcomes.resize(msgs.len(), Outcome::Abandoned);
                break;
            }
        }
        outcomes
    }

    async fn try_batch(
        &self,
        entry: &RouteEntry,
        pool: &PgPool,
        msgs: &[OwnedMessage],
        base: &str,
    ) -> Result<Vec<Outcome>, BatchFailure> {
        let keys: Vec<String> = msgs
            .iter()
            .map(|m| dedupe::key_of(entry.dedupe_key.as_ref(), m, &self.group))
            .collect();
        let mut tx = DedupeTx::begin(pool, &self.group, &keys, msgs).await?;
        let ctx = tx.context(self.group.clone(), pool);
        let mut outcomes = Vec::with_capacity(msgs.len());
        for (msg, key) in msgs.iter().zip(&keys) {
            if !tx.claim(key) {
                outcomes.push(Outcome::Duplicate);
                continue;
            }
            let prior = retry_headers::prior_attempts(msg.headers());
            let meta = EventMeta {
                topic: base.to_owned(),
                attempt: retry_headers::attempt_number(prior, 0),
            };
            if let Attempt::Failed { message, .. } = entry.route.run(msg, meta, ctx.clone()).await {
                tx.rollback().await;
                return Err(BatchFailure::Handler(message));
            }
            outcomes.push(Outcome::Handled);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Handles one message inside its `process` span (see [`trace`]).
    async fn process(&self, msg: &OwnedMessage, token: &CancellationToken) -> Outcome {
        let (base, kind) = base_topic(msg.topic());
        // A retry copy waits for its due time (it travels in a header, bounded by the tier's
        // delay: see `retry_headers`) outside the span.
        if let TopicKind::Retry(tier) = kind
            && let Some(due) = self.retry_due(msg, base, tier)
            && !wait_until(due, token).await
        {
            return Outcome::Abandoned;
        }
        let span = trace::process_span(msg, &self.group, kind == TopicKind::Main);
        let (outcome, failure) = self
            .process_in_span(msg, token)
            .instrument(span.clone())
            .await;
        trace::record_outcome(&span, outcome, failure);
        outcome
    }

    async fn process_in_span(
        &self,
        msg: &OwnedMessage,
        token: &CancellationToken,
    ) -> (Outcome, Option<ErrorKind>) {
        let started = Instant::now();
        let (base, kind) = base_topic(msg.topic());
        let prior = retry_headers::prior_attempts(msg.headers());
        let Some(entry) = self
            .routes
            .get(base)
            .or_else(|| self.routes.get(msg.topic()))
        else {
            // Only routed topics are subscribed, so this is a bug or a misconfiguration: the
            // message is dead-lettered as permanent (to its base topic's DLQ), not dropped, and
            // its partition moves on.
            tracing::error!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                "message from a topic without a route; dead-lettered"
            );
            let message = format!(
                "no route for topic {} in consumer group {}",
                msg.topic(),
                self.group
            );
            let failure = Failure {
                kind: ErrorKind::Permanent,
                message: &message,
                attempts: prior,
                not_before: None,
            };
            return self
                .forward_failure(msg, base, None, failure, started, token)
                .await;
        };
        let policy = &entry.policy;
        let mut tally = Tally::default();
        loop {
            let attempt = retry_headers::attempt_number(prior, tally.failed);
            let (failed, message) = match self.attempt(entry, msg, base, attempt).await {
                AttemptResult::Handled => {
                    self.count(base, outcome::HANDLED, started);
                    return (Outcome::Handled, None);
                }
                AttemptResult::Duplicate => {
                    self.count(base, outcome::DUPLICATE, started);
                    return (Outcome::Duplicate, None);
                }
                AttemptResult::Failed(failed, message) => (failed, message),
            };
            self.metrics
                .failures
                .with_label_values(&[base, failed.as_str()])
                .inc();
            tally.record(failed);
            if failed != ErrorKind::Unavailable {
                tracing::warn!(topic = msg.topic(), partition = msg.partition(),
                    offset = msg.offset(), attempt, kind = failed.as_str(), error = %message,
                    "handling failed");
            } else if tally.outages % 30 == 1 {
                // Not the message's fault; said once at the start and then now and then.
                tracing::warn!(topic = msg.topic(), partition = msg.partition(),
                    offset = msg.offset(), waits = tally.outages, error = %message,
                    "a dependency cannot be reached; the partition waits");
            }
            let retry = match router::decide(failed, tally, kind, policy) {
                Decision::RetryInPlace(backoff) | Decision::WaitForOutage(backoff) => {
                    // Every partition of every replica meets the same outage: spread their
                    // retries so a recovering database is not hit by all of them at once.
                    let backoff = if failed == ErrorKind::Unavailable {
                        outage::jittered(backoff)
                    } else {
                        backoff
                    };
                    if !sleep(backoff, token).await {
                        return (Outcome::Abandoned, None);
                    }
                    continue;
                }
                Decision::Forward { tier, delay } => Some((tier, delay)),
                Decision::DeadLetter => None,
            };
            let failure = Failure {
                kind: failed,
                message: &message,
                attempts: attempt,
                not_before: None,
            };
            return self
                .forward_failure(msg, base, retry, failure, started, token)
                .await;
        }
    }

    /// Copies `msg` to retry tier `retry.0` due after `retry.1`, or without `retry` to the
    /// dead-letter topic of `base`, and counts the outcome. A retry copy too large to carry
    /// its payload is dead-lettered instead; a copy that cannot be forwarded at all halts the
    /// consumer (the message stays uncommitted).
    async fn forward_failure(
        &self,
        msg: &OwnedMessage,
        base: &str,
        mut retry: Option<(usize, std::time::Duration)>,
        mut failure: Failure<'_>,
        started: Instant,
        token: &CancellationToken,
    ) -> (Outcome, Option<ErrorKind>) {
        let kind = failure.kind;
        loop {
            let (target, smallest);
            (target, failure.not_before, smallest) = match retry {
                Some((tier, delay)) => (
                    retry_topic(base, tier),
                    chrono::Duration::from_std(delay)
                        .ok()
                        .and_then(|d| Utc::now().checked_add_signed(d)),
                    // A retry copy must carry its payload to the handler.
                    Stage::BriefDiagnostics,
                ),
                None => (dlq_topic(base), None, Stage::PayloadOmitted),
            };
            let (publish, trace_headers) = trace::forward_span(&target);
            let build = |stage| {
                let headers = forward::copy_headers(
                    msg,
                    &self.group,
                    &failure,
                    trace_headers.as_ref(),
                    stage,
                );
                let value = forward::copy_value(msg, &headers, stage);
                (headers, value)
            };
            let sent = self
                .forwarder
                .send(msg, &target, build, smallest, token)
                .instrument(publish)
                .await;
            let error = match sent {
                Ok(stage) => {
                    if stage == Stage::PayloadOmitted {
                        tracing::warn!(topic = msg.topic(), partition = msg.partition(),
                            offset = msg.offset(), dlq = %target,
                            "dead-lettered without its payload (too large); the copy refers to \
                             the original's coordinates");
                    }
                    break;
                }
                Err(Stop::Cancelled) => return (Outcome::Abandoned, Some(kind)),
                Err(Stop::TooLarge(e)) if retry.is_some() => {
                    tracing::warn!(topic = msg.topic(), partition = msg.partition(),
                        offset = msg.offset(), retry = %target, error = %e,
                        "the retry copy is too large even with brief diagnostics; dead-lettering");
                    retry = None;
                    continue;
                }
                Err(Stop::TooLarge(e) | Stop::Unwritable(e)) => e,
            };
            let error = ForwardError {
                topic: target,
                origin: format!("{}/{}@{}", msg.topic(), msg.partition(), msg.offset()),
                cause: error,
            };
            tracing::error!(error = %error, "a copy cannot be forwarded; stopping the consumer");
            self.halt_with(error);
            return (Outcome::Abandoned, Some(kind));
        }
        let label = if retry.is_some() {
            outcome::RETRIED
        } else {
            outcome::DEAD_LETTERED
        };
        self.count(base, label, started);
        if label == outcome::DEAD_LETTERED {
            self.metrics
                .dead_lettered
                .with_label_values(&[base, kind.as_str()])
                .inc();
            (Outcome::DeadLettered, Some(kind))
        } else {
            (Outcome::Retried, Some(kind))
        }
    }

    /// Records why the consumer must stop (the first reason wins) and tells the poll loop.
    fn halt_with(&self, error: ForwardError) {
        let mut halted = self
            .halted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if halted.is_none() {
            *halted = Some(error);
        }
        self.halt.cancel();
    }

    fn count(&self, topic: &str, outcome: &str, started: Instant) {
        if let Some(hot) = self.hot.get(topic) {
            let counter = match outcome {
                outcome::HANDLED => Some(&hot.handled),
                outcome::DUPLICATE => Some(&hot.duplicate),
                _ => None,
            };
            if let Some(counter) = counter {
                counter.inc();
                hot.handle_seconds.observe(started.elapsed().as_secs_f64());
                return;
            }
        }
        self.metrics
            .messages
            .with_label_values(&[topic, outcome])
            .inc();
        self.metrics
            .handle_seconds
            .with_label_values(&[topic])
            .observe(started.elapsed().as_secs_f64());
    }

    /// One attempt, inside the dedupe transaction when the route has one.
    async fn attempt(
        &self,
        entry: &RouteEntry,
        msg: &OwnedMessage,
        base: &str,
        attempt: u32,
    ) -> AttemptResult {
        let meta = EventMeta {
            topic: base.to_owned(),
            attempt,
        };
        let pool = match &self.pool {
            Some(pool) if entry.dedupe => pool,
            _ => {
                let ctx = Context::new(self.group.clone(), self.pool.clone(), None);
                return entry.route.run(msg, meta, ctx).await.into();
            }
        };
        let key = dedupe::key_of(entry.dedupe_key.as_ref(), msg, &self.group);
        let mut tx = match DedupeTx::begin(
            pool,
            &self.group,
            std::slice::from_ref(&key),
            std::slice::from_ref(msg),
        )
        .await
        {
            Ok(tx) => tx,
            Err(e) => return e.into(),
        };
        if !tx.claim(&key) {
            tx.rollback().await;
            return AttemptResult::Duplicate;
        }
        let ctx = tx.context(self.group.clone(), pool);
        match entry.route.run(msg, meta, ctx).await {
            Attempt::Ok => match tx.commit().await {
                Ok(()) => AttemptResult::Handled,
                Err(e) => e.into(),
            },
            failed => {
                tx.rollback().await;
                failed.into()
            }
        }
    }
}

/// Why a batch was rolled back (its messages are then handled one by one).
#[derive(Debug, thiserror::Error)]
enum BatchFailure {
    /// The dedupe transaction failed.
    #[error(transparent)]
    Dedupe(#[from] DedupeTxError),
    /// A handler failed on one of the batch's messages.
    #[error("a handler failed: {0}")]
    Handler(String),
}

enum AttemptResult {
    Handled,
    Duplicate,
    Failed(ErrorKind, String),
}

impl From<DedupeTxError> for AttemptResult {
    fn from(e: DedupeTxError) -> Self {
        Self::Failed(e.kind(), e.message())
    }
}

impl From<Attempt> for AttemptResult {
    fn from(a: Attempt) -> Self {
        match a {
            Attempt::Ok => Self::Handled,
            Attempt::Failed { kind, message } => Self::Failed(kind, message),
        }
    }
}

/// Sleeps unless cancelled first; false when cancelled.
async fn sleep(duration: std::time::Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        () = token.cancelled() => false,
    }
}

/// Waits for a wall-clock due time (it travels in a header, so it survives restarts).
async fn wait_until(due: chrono::DateTime<Utc>, token: &CancellationToken) -> bool {
    loop {
        let left = due - Utc::now();
        let Ok(left) = left.to_std() else {
            return true; // due already
        };
        if left.is_zero() {
            return true;
        }
        // Round up to whole milliseconds so a retry never runs early.
        let left = left + std::time::Duration::from_millis(1);
        if !sleep(left, token).await {
            return false;
        }
    }
}

#[cfg(test)]
mod tests;
