//! The poll loop: receives messages, hands each partition's messages to its lanes, pauses a
//! partition whose lanes are full, commits watermarks, and stops cleanly.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientContext, Message, Offset, Statistics, TopicPartitionList};
use rustc_hash::FxHashMap as HashMap;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use gregor_telemetry::health::Check;

use crate::metrics::{ConsumerMetrics, InFlight};
use crate::observe;
use crate::offsets::{Offsets, PartKey, PartOffsets};
use crate::worker::{Worker, lane};

/// Rebalance hooks: on revoke, wait for running handlers and commit what they finished.
/// Also keeps the assignment metrics, the lag gauges and the `group` readiness check.
pub(crate) struct GroupContext {
    pub(crate) offsets: Arc<Offsets>,
    pub(crate) revoke_timeout: Duration,
    pub(crate) group: Arc<str>,
    pub(crate) metrics: ConsumerMetrics,
    /// Up once the group assigned this member its partitions (possibly none).
    pub(crate) member: Check,
    /// The partitions assigned now: the only ones with a lag series.
    pub(crate) assigned: Mutex<HashSet<PartKey>>,
}

impl GroupContext {
    fn assigned(&self) -> MutexGuard<'_, HashSet<PartKey>> {
        // A poisoned lock only means a panic between two plain updates of the set.
        self.assigned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the assignment after a rebalance: the assigned-partitions gauge, and no lag
    /// series for partitions that went away.
    fn track_assignment(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut assigned = self.assigned();
        let before = assigned.clone();
        match consumer.assignment() {
            Ok(tpl) => *assigned = keys_of(&tpl).into_iter().collect(),
            // Fall back to the change itself.
            Err(_) => match rebalance {
                Rebalance::Assign(tpl) => assigned.extend(keys_of(tpl)),
                Rebalance::Revoke(tpl) => {
                    for key in keys_of(tpl) {
                        assigned.remove(&key);
                    }
                }
                Rebalance::Error(_) => assigned.clear(),
            },
        }
        for (topic, partition) in before.difference(&assigned) {
            // Absent when no statistics arrived while it was assigned.
            let _ = self.metrics.lag.remove_label_values(&[
                &*self.group,
                topic.as_str(),
                &partition.to_string(),
            ]);
        }
        self.metrics
            .assigned_partitions
            .set(i64::try_from(assigned.len()).unwrap_or(i64::MAX));
    }
}

fn keys_of(tpl: &TopicPartitionList) -> Vec<PartKey> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for GroupContext {
    /// Every `statistics.interval.ms`, from inside the poll loop's `recv`: keep it cheap.
    fn stats(&self, statistics: Statistics) {
        let assigned = self.assigned();
        for ((topic, partition), lag) in observe::partition_lags(&statistics, &assigned) {
            self.metrics
                .lag
                .with_label_values(&[&*self.group, &topic, &partition.to_string()])
                .set(lag);
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let keys = keys_of(tpl);
        let marks = blocking(|| self.offsets.revoke(&keys, self.revoke_timeout));
        tracing::info!(partitions = keys.len(), "partitions revoked");
        if marks.is_empty() {
            return;
        }
        if let Err(e) = consumer.commit(&to_tpl(&marks), CommitMode::Sync) {
            tracing::warn!(error = %e, "commit on revoke failed; the new owner may redeliver");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // A partition paused by an earlier owner-ship of this process stays paused in
        // librdkafka across revoke and re-assignment: newly assigned partitions start fetching.
        if let Rebalance::Assign(tpl) = rebalance
            && let Err(e) = consumer.resume(tpl)
        {
            tracing::warn!(error = %e, "could not resume newly assigned partitions");
        }
        match rebalance {
            // Even an empty assignment makes this a member of the group.
            Rebalance::Assign(_) => self.member.set(true),
            // Revoked partitions were lost (session timed out, fenced), not handed over.
            Rebalance::Revoke(_) if consumer.assignment_lost() => self.member.set(false),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance failed; the consumer rejoins its group");
                self.member.set(false);
            }
        }
        self.track_assignment(consumer, rebalance);
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "offset commit failed; retrying on the next tick");
            let keys: Vec<PartKey> = offsets
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            self.offsets.commit_failed(&keys);
        }
    }
}

/// Runs a blocking wait without starving the runtime: on a multi-thread runtime the
/// worker's other tasks move elsewhere meanwhile.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

pub(crate) fn to_tpl(marks: &[(PartKey, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in marks {
        // Offsets come from the broker, so they are valid for the list.
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    tpl
}

/// A message on its way to a lane, counted in the in-flight gauge until dropped.
pub(crate) type Taken = (OwnedMessage, InFlight);

/// Set by the poll loop while a partition has messages waiting for room in its lanes; the
/// lane that makes room then wakes the poll loop. Lanes of a partition with nothing waiting
/// never wake it.
pub(crate) struct Room {
    wanted: AtomicBool,
    progress: Arc<Notify>,
}

impl Room {
    fn new(progress: Arc<Notify>) -> Self {
        Self {
            wanted: AtomicBool::new(false),
            progress,
        }
    }

    /// The poll loop has messages waiting: the next lane to make room wakes it.
    fn want(&self) {
        self.wanted.store(true, Ordering::SeqCst);
    }

    /// A lane took messages from its queue.
    pub(crate) fn made(&self) {
        if self.wanted.swap(false, Ordering::SeqCst) {
            self.progress.notify_one();
        }
    }
}

/// A partition's lanes and the messages waiting for room in them.
struct Partition {
    offsets: Arc<PartOffsets>,
    room: Arc<Room>,
    lanes: Vec<mpsc::Sender<Taken>>,
    waiting: VecDeque<Taken>,
    paused: bool,
}

pub(crate) struct PollLoop {
    pub(crate) consumer: StreamConsumer<GroupContext>,
    pub(crate) worker: Arc<Worker>,
    pub(crate) key_concurrency: usize,
    pub(crate) lane_capacity: usize,
    /// Messages waiting (beyond the lanes) at which a partition is paused.
    pub(crate) pause_at: usize,
    pub(crate) commit_interval: Duration,
    pub(crate) shutdown_timeout: Duration,
}

impl PollLoop {
    /// Consumes until `shutdown`, or until a lane halts the consumer because a copy cannot
    /// be forwarded (then returns why).
    pub(crate) async fn run(
        self,
        shutdown: CancellationToken,
    ) -> Option<crate::forward_error::ForwardError> {
        let offsets = self.worker.offsets.clone();
        let progress = self.worker.progress.clone();
        // Lanes stop on this token (a child, so revokes can stop some of them).
        let lanes_token = shutdown.child_token();
        let mut partitions: HashMap<PartKey, Partition> = HashMap::default();
        // `gregor_consumer_consumed_total` per topic, resolved once per topic.
        let mut consumed: HashMap<String, prometheus::IntCounter> = HashMap::default();
        let mut commit_tick = tokio::time::interval(self.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The wake-up futures live across iterations: building and dropping them for every
        // message registered and unregistered a waiter under a lock each time.
        let stopped = shutdown.cancelled();
        let halted = self.worker.halt.cancelled();
        let room = progress.notified();
        tokio::pin!(stopped, halted, room);
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => break,
                () = &mut halted => break,
                () = &mut room => {
                    room.set(progress.notified());
                    self.refill(&mut partitions);
                }
                _ = commit_tick.tick() => {
                    partitions.retain(|_, p| p.offsets.is_live());
                    self.count_paused(&partitions);
                    self.commit(CommitMode::Async);
                }
                received = self.consumer.recv() => match received {
                    Ok(m) => {
                        // Counted on the detached copy: the borrowed message re-validates its
                        // topic name as UTF-8 on every `topic()` call.
                        let msg = m.detach();
                        match consumed.get(msg.topic()) {
                            Some(counter) => counter.inc(),
                            None => {
                                let counter =
                                    self.worker.metrics.consumed.with_label_values(&[msg.topic()]);
                                counter.inc();
                                consumed.insert(msg.topic().to_owned(), counter);
                            }
                        }
                        self.dispatch(&mut partitions, msg, &lanes_token);
                    }
                    Err(e) => tracing::warn!(error = %e, "consumer error; librdkafka retries"),
                },
            }
        }
        // Stop fetching, let running handlers finish (bounded), commit, leave the group.
        lanes_token.cancel();
        drop(partitions);
        self.worker.metrics.paused_partitions.set(0);
        let timeout = self.shutdown_timeout;
        let marks = {
            let offsets = offsets.clone();
            tokio::task::spawn_blocking(move || offsets.drain(timeout))
                .await
                .unwrap_or_default()
        };
        if !marks.is_empty()
            && let Err(e) = self.consumer.commit(&to_tpl(&marks), CommitMode::Sync)
        {
            tracing::warn!(error = %e, "final commit failed; the next owner may redeliver");
        }
        tracing::info!(running = offsets.executing(), "consumer stopped");
        self.consumer.unsubscribe();
        drop(self.consumer);
        self.worker
            .halted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn commit(&self, mode: CommitMode) {
        let marks = self.worker.offsets.committable();
        if marks.is_empty() {
            return;
        }
        if let Err(e) = self.consumer.commit(&to_tpl(&marks), mode) {
            tracing::warn!(error = %e, "offset commit failed; retrying on the next tick");
            let keys: Vec<PartKey> = marks.into_iter().map(|(k, _)| k).collect();
            self.worker.offsets.commit_failed(&keys);
        }
    }

    fn dispatch(
        &self,
        partitions: &mut HashMap<PartKey, Partition>,
        msg: OwnedMessage,
        lanes_token: &CancellationToken,
    ) {
        let key: PartKey = (msg.topic().to_owned(), msg.partition());
        // The partition's offsets are cached with its lanes; a revoke cancels them, and the
        // next message of the partition starts a new generation with new lanes.
        let live = partitions.get(&key).is_some_and(|p| p.offsets.is_live());
        if !live {
            let part = self.worker.offsets.partition(&key, lanes_token);
            let room = Arc::new(Room::new(self.worker.progress.clone()));
            let lanes = (0..self.key_concurrency)
                .map(|_| {
                    let (tx, rx) = mpsc::channel(self.lane_capacity);
                    tokio::spawn(lane(
                        self.worker.clone(),
                        key.clone(),
                        part.clone(),
                        room.clone(),
                        rx,
                    ));
                    tx
                })
                .collect();
            partitions.insert(
                key.clone(),
                Partition {
                    offsets: part,
                    room,
                    lanes,
                    waiting: VecDeque::new(),
                    paused: false,
                },
            );
        }
        let Some(p) = partitions.get_mut(&key) else {
            return;
        };
        p.offsets.track(msg.offset());
        p.waiting
            .push_back((msg, InFlight::new(&self.worker.metrics.in_flight)));
        if self.feed(&key, p) {
            self.count_paused(partitions);
        }
    }

    fn refill(&self, partitions: &mut HashMap<PartKey, Partition>) {
        let mut flipped = false;
        for (key, p) in partitions.iter_mut() {
            if !p.waiting.is_empty() || p.paused {
                flipped |= self.feed(key, p);
            }
        }
        if flipped {
            self.count_paused(partitions);
        }
    }

    fn count_paused(&self, partitions: &HashMap<PartKey, Partition>) {
        let paused = partitions.values().filter(|p| p.paused).count();
        self.worker
            .metrics
            .paused_partitions
            .set(i64::try_from(paused).unwrap_or(i64::MAX));
    }

    /// Moves waiting messages into their lanes in order; pauses the partition when a queue's
    /// worth of messages waits, resumes it at half. Memory stays bounded by twice the queue
    /// capacity plus what librdkafka had prefetched. Returns whether the partition was paused
    /// or resumed.
    fn feed(&self, key: &PartKey, p: &mut Partition) -> bool {
        let mut asked = false;
        while let Some(msg) = p.waiting.pop_front() {
            let lane = lane_of(msg.0.key(), p.lanes.len());
            match p.lanes[lane].try_send(msg) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(msg)) => {
                    p.waiting.push_front(msg);
                    if asked {
                        break;
                    }
                    // Ask the lanes to wake this loop when they make room, then look once
                    // more: a lane that made room before the ask saw no reason to wake it.
                    p.room.want();
                    asked = true;
                }
                // The lane ended (revoked or shut down): nothing more to do here. The offsets
                // stay tracked, so nothing is committed past them.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    if p.offsets.is_live() {
                        tracing::error!(topic = %key.0, partition = key.1,
                            "a handler lane stopped unexpectedly; the partition waits for a rebalance");
                    }
                    p.waiting.clear();
                    break;
                }
            }
        }
        // Hysteresis: pausing makes librdkafka drop its prefetch for the partition and fetch
        // again on resume, so pause only when a full queue's worth waits, resume at half.
        let want_pause = if p.paused {
            p.waiting.len() > self.pause_at / 2
        } else {
            p.waiting.len() >= self.pause_at
        };
        if want_pause != p.paused {
            let mut one = TopicPartitionList::new();
            one.add_partition(&key.0, key.1);
            let result = if want_pause {
                self.consumer.pause(&one)
            } else {
                self.consumer.resume(&one)
            };
            match result {
                Ok(()) => {
                    p.paused = want_pause;
                    return true;
                }
                Err(e) => tracing::debug!(error = %e, "pause/resume of a revoked partition"),
            }
        }
        false
    }
}

/// The lane of a key: FNV-1a of the key bytes (keyless messages share lane 0).
fn lane_of(key: Option<&[u8]>, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let Some(key) = key else { return 0 };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(hash % lanes as u64).unwrap_or(0)
}
