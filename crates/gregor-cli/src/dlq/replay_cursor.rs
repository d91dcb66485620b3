//! Reading a dead-letter topic for replay: one message at a time (bounded memory) from the
//! replay group's committed position, or from the beginning, and remembering progress.
//!
//! Progress is stored as ordinary committed offsets of the consumer group
//! `gregor-replay.<dlq>` (docs/adr/0011-idempotent-replay.md). The group never subscribes:
//! partitions are assigned, so no rebalance can move them while a replay runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Context, bail};
use gregor_config::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{STALL_TIMEOUT, fatal_for_read};
use crate::topics;

/// The consumer group whose committed offsets remember how far `dlq` was replayed.
pub(super) fn replay_group(dlq: &str) -> String {
    format!("gregor-replay.{dlq}")
}

/// The replay group's consumer on `topic`'s partitions.
pub(super) struct Cursor {
    consumer: BaseConsumer,
    topic: String,
    /// Where each partition starts: the committed offset, else its beginning.
    pub(super) start: BTreeMap<i32, Offset>,
}

impl Cursor {
    /// Opens the replay group's consumer; each partition starts at the group's committed
    /// offset, or at its beginning when there is none or `from_beginning`.
    pub(super) fn open(
        kafka: &KafkaSettings,
        topic: &str,
        from_beginning: bool,
    ) -> anyhow::Result<Self> {
        let metadata = topics::metadata_client(kafka)?;
        let partitions = topics::existing_partitions(&metadata, kafka, topic)?;
        let partitions = i32::try_from(partitions).context("too many partitions")?;
        drop(metadata);
        let group = replay_group(topic);
        let consumer: BaseConsumer = kafka
            .client_config(&[
                ("client.id", "gregor-cli"),
                ("group.id", &group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("allow.auto.create.topics", "false"),
                // Bounded prefetch: replay holds one message at a time.
                ("queued.max.messages.kbytes", "8192"),
            ])
            .set("enable.partition.eof", "true")
            .create()
            .context("cannot create a Kafka consumer")?;
        let mut all = TopicPartitionList::new();
        for p in 0..partitions {
            all.add_partition(topic, p);
        }
        let committed = if from_beginning {
            BTreeMap::new()
        } else {
            consumer
                .committed_offsets(all, topics::REQUEST_TIMEOUT)
                .with_context(|| format!("cannot read the replay position of {topic} ({group})"))?
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(n) if n >= 0 => Some((e.partition(), n)),
                    _ => None,
                })
                .collect()
        };
        let start = (0..partitions)
            .map(|p| {
                let at = committed
                    .get(&p)
                    .map_or(Offset::Beginning, |n| Offset::Offset(*n));
                (p, at)
            })
            .collect();
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            start,
        })
    }

    /// Reads every partition from its start, handing each message to `visit`, until each
    /// partition reaches `until` (the last offset to read, inclusive; partitions not in it are
    /// skipped) or, without `until`, its end-of-partition event. Returns the last offset read
    /// per partition.
    pub(super) fn scan(
        &self,
        until: Option<&BTreeMap<i32, i64>>,
        mut visit: impl FnMut(OwnedMessage) -> anyhow::Result<()>,
    ) -> anyhow::Result<BTreeMap<i32, i64>> {
        let topic = &self.topic;
        let mut assignment = TopicPartitionList::new();
        let mut open = BTreeSet::new();
        for (p, at) in &self.start {
            if until.is_some_and(|u| !u.contains_key(p)) {
                continue;
            }
            assignment.add_partition_offset(topic, *p, *at)?;
            open.insert(*p);
        }
        let mut last = BTreeMap::new();
        if open.is_empty() {
            return Ok(last);
        }
        self.consumer
            .assign(&assignment)
            .with_context(|| format!("cannot assign the partitions of {topic}"))?;
        let mut last_progress = Instant::now();
        let mut last_error: Option<KafkaError> = None;
        while !open.is_empty() {
            if last_progress.elapsed() > STALL_TIMEOUT {
                let cause = last_error.map_or_else(String::new, |e| format!("; last error: {e}"));
                let open: Vec<String> = open.iter().map(ToString::to_string).collect();
                bail!(
                    "partitions {} of {topic} did not reach their end within {STALL_TIMEOUT:?}{cause}",
                    open.join(", ")
                );
            }
            match self.consumer.poll(std::time::Duration::from_millis(200)) {
                None => {}
                Some(Ok(msg)) => {
                    last_progress = Instant::now();
                    let (p, offset) = (msg.partition(), msg.offset());
                    if !open.contains(&p) {
                        continue;
                    }
                    let stop = until.and_then(|u| u.get(&p)).copied();
                    if stop.is_some_and(|s| offset > s) {
                        open.remove(&p);
                        continue;
                    }
                    last.insert(p, offset);
                    visit(msg.detach())?;
                    if stop == Some(offset) {
                        open.remove(&p);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    last_progress = Instant::now();
                    open.remove(&p);
                }
                Some(Err(KafkaError::MessageConsumption(code))) if fatal_for_read(code) => {
                    bail!("cannot read {topic}: {code}");
                }
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                    bail!("cannot read {topic}: {e}");
                }
                Some(Err(e)) => last_error = Some(e),
            }
        }
        self.consumer.unassign()?;
        Ok(last)
    }

    /// Remembers that every message up to `done` (the last replayed offset per partition)
    /// was replayed: commits `offset + 1` for the replay group, synchronously.
    pub(super) fn remember(&self, done: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, offset) in done {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(offset + 1))?;
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .with_context(|| {
                format!(
                    "cannot store the replay position of {} ({})",
                    self.topic,
                    replay_group(&self.topic)
                )
            })
    }
}
