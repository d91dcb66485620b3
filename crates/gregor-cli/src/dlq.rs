//! `gregor dlq …`: inspect and replay dead-letter topics.
//!
//! Both commands read a snapshot of the topic: every partition from its beginning until the
//! consumer reports end-of-partition (`enable.partition.eof`). High watermarks are fetched
//! too, but only as a hint: nisshi's ListOffsets can report a wrong one (DESIGN §5), so the
//! end-of-partition event is what ends a partition.

mod inspect;
mod replay;
mod replay_cursor;
mod replay_id;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use gregor_config::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::topics;

/// Fail a read that makes no progress (no message, no end-of-partition) for this long.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List the messages of a dead-letter topic with their diagnostics.
    ///
    /// Reads every partition from the beginning to its end (nothing is committed). For each
    /// message: partition/offset, key, error kind and message, original topic/partition/offset,
    /// attempt, ce_id and age (since the first failure, or since the message's timestamp).
    Inspect {
        /// The dead-letter topic, e.g. `orders.dlq`.
        topic: String,
        /// Show at most this many messages (in partition, offset order).
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Republish dead-lettered messages to the topic their DLQ belongs to (or `--to`).
    ///
    /// `orders.dlq` is replayed to `orders`; a message whose `gregor-original-topic` names
    /// another topic (or none) is refused unless `--to` is given, and nothing is published.
    /// Each message keeps its key, value and headers, including `ce_id`; a message without
    /// `ce_id` gets one derived from its original coordinates (UUIDv5), the same on every run.
    /// The diagnostic headers the consumer added (`gregor-original-*`, `gregor-attempt`,
    /// `gregor-error-*`, …) are removed and `gregor-replayed-at` is added. The dead-letter
    /// topic itself is left unchanged.
    ///
    /// Running replay twice is harmless: the position is remembered (consumer group
    /// `gregor-replay.<dlq>`), so a second run replays only newer dead letters, and a copy
    /// replayed again (`--from-beginning`) is skipped by the consumer's dedupe inbox by its
    /// `ce_id`. Runs with `--key` or `--since` do not move the remembered position. Messages
    /// stream through bounded memory; progress goes to stderr. Every delivery is awaited
    /// with an idempotent producer (acks=all); if one fails, the command exits 1 saying how
    /// many messages were republished.
    Replay {
        /// The dead-letter topic, e.g. `orders.dlq`.
        topic: String,
        /// Republish here instead of each message's `gregor-original-topic`.
        #[arg(long, value_name = "TOPIC")]
        to: Option<String>,
        /// Only messages with this key.
        #[arg(long)]
        key: Option<String>,
        /// Only messages that first failed at or after this time (RFC 3339, e.g.
        /// 2025-01-31T12:00:00Z); uses `gregor-first-failure-at`, else the message timestamp.
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// List what would be replayed; publish nothing and remember nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay from the beginning of every partition, ignoring the position remembered
        /// by earlier runs (the consumers' dedupe still applies each event once).
        #[arg(long)]
        from_beginning: bool,
    },
}

fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{raw:?} is not an RFC 3339 time such as 2025-01-31T12:00:00Z: {e}"))
}

pub(crate) async fn run(cmd: DlqCommand) -> anyhow::Result<()> {
    match cmd {
        DlqCommand::Inspect { topic, limit, json } => inspect::run(&topic, limit, json).await,
        DlqCommand::Replay {
            topic,
            to,
            key,
            since,
            dry_run,
            from_beginning,
        } => {
            replay::run(replay::Request {
                topic,
                to,
                filter: replay::Filter { key, since },
                dry_run,
                from_beginning,
            })
            .await
        }
    }
}

/// Reads `topic` from the beginning of every partition to its end, mapping each message with
/// `map`; the result is in (partition, offset) order.
pub(crate) async fn read_to_end<T, F>(
    kafka: &KafkaSettings,
    topic: &str,
    map: F,
) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: FnMut(&BorrowedMessage<'_>) -> T + Send + 'static,
{
    let kafka = kafka.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_blocking(&kafka, &topic, map))
        .await
        .context("the reader thread failed")?
}

fn read_blocking<T, F>(kafka: &KafkaSettings, topic: &str, mut map: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(&BorrowedMessage<'_>) -> T,
{
    let metadata = topics::metadata_client(kafka)?;
    let partitions = topics::existing_partitions(&metadata, kafka, topic)?;
    let partitions = i32::try_from(partitions).context("too many partitions")?;
    drop(metadata);

    let consumer: BaseConsumer = kafka
        .client_config(&[
            ("client.id", "gregor-cli"),
            ("group.id", &throwaway_group()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("allow.auto.create.topics", "false"),
        ])
        // Forced: the end-of-partition event is how the read ends.
        .set("enable.partition.eof", "true")
        .create()
        .context("cannot create a Kafka consumer")?;

    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("cannot assign the partitions of {topic}"))?;

    // Hints only (see the module docs); a partition whose low and high marks are both
    // unknown still ends at its end-of-partition event.
    let mut watermarks = BTreeMap::new();
    for p in 0..partitions {
        let marks = consumer
            .fetch_watermarks(topic, p, topics::REQUEST_TIMEOUT)
            .with_context(|| format!("cannot read the offsets of {topic}/{p}"))?;
        watermarks.insert(p, marks);
    }

    let mut open: BTreeSet<i32> = (0..partitions).collect();
    let mut out: Vec<(i32, i64, T)> = Vec::new();
    let mut last_progress = Instant::now();
    let mut last_error: Option<KafkaError> = None;
    while !open.is_empty() {
        if last_progress.elapsed() > STALL_TIMEOUT {
            let hint = open
                .iter()
                .map(|p| {
                    let (low, high) = watermarks.get(p).copied().unwrap_or((-1, -1));
                    format!("{p} (offsets {low}..{high})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            let cause = last_error.map_or_else(String::new, |e| format!("; last error: {e}"));
            bail!(
                "partitions {hint} of {topic} did not reach their end within {STALL_TIMEOUT:?}{cause}"
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(msg)) => {
                last_progress = Instant::now();
                // Written after this partition's end was reached: not part of the snapshot.
                if open.contains(&msg.partition()) {
                    out.push((msg.partition(), msg.offset(), map(&msg)));
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
            // Transport errors and the like: librdkafka retries; the stall timeout bounds it.
            Some(Err(e)) => last_error = Some(e),
        }
    }
    out.sort_by_key(|(p, o, _)| (*p, *o));
    Ok(out.into_iter().map(|(_, _, t)| t).collect())
}

pub(crate) fn fatal_for_read(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::UnknownTopicOrPartition
            | C::UnknownTopic
            | C::UnknownPartition
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::Authentication
            | C::SaslAuthenticationFailed
    )
}

/// A consumer group id nobody else uses; nothing is ever committed under it.
fn throwaway_group() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("gregor-cli-dlq-{}-{nanos}", std::process::id())
}

/// The key as text (`<none>` when absent).
pub(crate) fn show_key(key: Option<&[u8]>) -> String {
    key.map_or_else(
        || "<none>".to_owned(),
        |k| String::from_utf8_lossy(k).into_owned(),
    )
}

/// A message's timestamp, if it has one.
pub(crate) fn timestamp(msg: &impl Message) -> Option<DateTime<Utc>> {
    msg.timestamp()
        .to_millis()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
}
