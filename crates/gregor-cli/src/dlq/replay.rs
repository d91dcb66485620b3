//! `gregor dlq replay`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use gregor_config::{ConfigError, KafkaSettings};
use gregor_wire::headers as h;
use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::replay_cursor::{Cursor, replay_group};
use super::replay_id::replay_id;
use super::{show_key, timestamp};
use crate::UsageError;
use crate::escape::shown;
use crate::topics::{self, kafka_settings};

/// Producer settings; `KAFKA_*` variables may override them, except idempotence and acks.
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("client.id", "gregor-cli"),
    ("enable.idempotence", "true"),
    ("acks", "all"),
    // The relay's partitioner: a replayed key lands where the key's other events are.
    ("partitioner", "murmur2_random"),
    ("linger.ms", "5"),
    ("message.timeout.ms", "30000"),
];

/// Which dead-lettered messages to replay.
#[derive(Debug, Default)]
pub(super) struct Filter {
    /// Key equal to this.
    pub(super) key: Option<String>,
    /// First failure (or timestamp) at or after this.
    pub(super) since: Option<DateTime<Utc>>,
}

impl Filter {
    fn matches(&self, msg: &OwnedMessage) -> bool {
        if let Some(key) = &self.key
            && msg.key() != Some(key.as_bytes())
        {
            return false;
        }
        if let Some(since) = self.since {
            let failed_at =
                h::get_time(msg.headers(), h::FIRST_FAILURE_AT).or_else(|| timestamp(msg));
            if failed_at.is_none_or(|t| t < since) {
                return false;
            }
        }
        true
    }
}

/// What `gregor dlq replay` was asked to do.
#[derive(Debug)]
pub(super) struct Request {
    /// The dead-letter topic.
    pub(super) topic: String,
    /// Republish here instead of the topic the dead-letter topic belongs to.
    pub(super) to: Option<String>,
    /// Which messages.
    pub(super) filter: Filter,
    /// Publish nothing, remember nothing.
    pub(super) dry_run: bool,
    /// Ignore the remembered position.
    pub(super) from_beginning: bool,
}

/// Deliveries awaited together; the position is remembered after each such batch.
const BATCH_MESSAGES: usize = 1_000;
/// ... or after this many bytes of keys and values, whichever comes first.
const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// How often progress is written to stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Problem messages named in a refusal (the count says how many more there are).
const NAMED_PROBLEMS: usize = 20;

impl Filter {
    fn is_empty(&self) -> bool {
        self.key.is_none() && self.since.is_none()
    }
}

pub(super) async fn run(request: Request) -> anyhow::Result<()> {
    if request.to.as_deref() == Some(request.topic.as_str()) {
        return Err(UsageError(format!(
            "--to {} is the topic being replayed",
            request.topic
        ))
        .into());
    }
    let kafka = kafka_settings()?;
    check_producer_settings(&kafka)?;
    topics::check_broker(&kafka).await?;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || replay_blocking(&kafka, &request, &runtime))
        .await
        .context("the replay thread failed")?
}

/// The topic a dead-letter topic belongs to (`orders.dlq` → `orders`); none for a topic not
/// named like a dead-letter topic.
fn home_topic(dlq: &str) -> Option<&str> {
    match gregor_wire::base_topic(dlq) {
        (base, gregor_wire::TopicKind::DeadLetter) => Some(base),
        _ => None,
    }
}

/// Two streaming passes over the same offsets: the first checks every selected message (so a
/// refusal publishes nothing), the second republishes and remembers the position as it goes.
fn replay_blocking(
    kafka: &KafkaSettings,
    request: &Request,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let topic = request.topic.as_str();
    let home = home_topic(topic);
    let to = request.to.as_deref();
    let filter = &request.filter;
    let cursor = Cursor::open(kafka, topic, request.from_beginning)?;

    let mut check = Check::default();
    let last = cursor.scan(None, |msg| {
        check.read += 1;
        if filter.matches(&msg) {
            check.add(&msg, to, home);
        }
        Ok(())
    })?;
    check.verdict(topic, home)?;
    let destination = to.or(home).unwrap_or("-").to_owned();
    if check.selected > 0 {
        check_destination(kafka, &destination, check.selected)?;
    }
    if check.read == 0 {
        let line = format!(
            "replayed 0 of 0 messages from {topic} to - (nothing after the position remembered \
             by {}; --from-beginning replays everything again)",
            replay_group(topic)
        );
        println!("{}", shown(&line));
        return Ok(());
    }

    let line = format!(
        "progress: checked {} message(s) of {topic}{}; {} selected",
        check.read,
        if request.from_beginning {
            " from the beginning"
        } else {
            " after the remembered position"
        },
        check.selected
    );
    eprintln!("{}", shown(&line));
    let replayed_at = h::format_time(Utc::now());
    let remember = !request.dry_run && filter.is_empty();
    let producer: Option<FutureProducer> = if request.dry_run {
        None
    } else {
        Some(
            kafka
                .client_config(PRODUCER_DEFAULTS)
                .create()
                .context("cannot create a Kafka producer")?,
        )
    };
    let mut run = Progress::new(check.read);
    let mut batch = Batch::default();
    cursor.scan(Some(&last), |msg| {
        run.read += 1;
        if filter.matches(&msg) {
            run.selected += 1;
            if let Some(producer) = &producer {
                let headers = replay_headers(msg.headers(), &replayed_at, &replay_id(&msg, home));
                let delivery = enqueue(producer, &destination, &msg, headers)
                    .with_context(|| format!("{} -> {destination}", describe(&msg)))?;
                batch.bytes +=
                    msg.payload().map_or(0, <[u8]>::len) + msg.key().map_or(0, <[u8]>::len);
                batch.pending.push(delivery);
            } else {
                let line = format!("would replay {} -> {destination}", describe(&msg));
                println!("{}", shown(&line));
            }
        }
        batch.done.insert(msg.partition(), msg.offset());
        if batch.pending.len() >= BATCH_MESSAGES || batch.bytes >= BATCH_BYTES {
            run.replayed += batch.flush(runtime, &run, topic)?;
            if remember {
                cursor.remember(&batch.done)?;
            }
        }
        run.maybe_report(topic);
        Ok(())
    })?;
    run.replayed += batch.flush(runtime, &run, topic)?;
    if remember {
        cursor.remember(&batch.done)?;
    }
    let shown_to = if run.selected > 0 {
        destination.as_str()
    } else {
        "-"
    };
    let line = if request.dry_run {
        format!(
            "dry run: would replay {} of {} messages from {topic} to {shown_to}",
            run.selected, run.read
        )
    } else {
        format!(
            "replayed {} of {} messages from {topic} to {shown_to}",
            run.replayed, run.read
        )
    };
    println!("{}", shown(&line));
    if remember {
        eprintln!(
            "{}",
            shown(&format!(
                "position remembered by {}: a second run replays only newer dead letters \
                 (--from-beginning replays everything again)",
                replay_group(topic)
            ))
        );
    }
    Ok(())
}

/// The first pass: what is selected, and what makes the replay refuse.
#[derive(Default)]
struct Check {
    read: u64,
    selected: u64,
    stubs: Problems,
    homeless: Problems,
    foreign: Problems,
}

/// Up to [`NAMED_PROBLEMS`] named, the rest counted.
#[derive(Default)]
struct Problems {
    named: Vec<String>,
    more: u64,
}

impl Problems {
    fn push(&mut self, describe: impl FnOnce() -> String) {
        if self.named.len() < NAMED_PROBLEMS {
            self.named.push(describe());
        } else {
            self.more += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.named.is_empty()
    }

    fn list(&self) -> String {
        let mut list = self.named.join(", ");
        if self.more > 0 {
            list.push_str(&format!(" and {} more", self.more));
        }
        list
    }
}

impl Check {
    fn add(&mut self, msg: &OwnedMessage, to: Option<&str>, home: Option<&str>) {
        self.selected += 1;
        // A copy too large to carry its payload holds a reference, not the event: never
        // republish it as if it were one.
        if h::get_str(msg.headers(), h::PAYLOAD_OMITTED).is_some() {
            self.stubs.push(|| stub_reference(msg));
            return;
        }
        if to.is_some() {
            return;
        }
        // Without --to, a dead letter goes back only to the topic its DLQ belongs to: the
        // original-topic header is anyone's to write (P10).
        match h::get_str(msg.headers(), h::ORIGINAL_TOPIC).filter(|t| !t.trim().is_empty()) {
            None => self
                .homeless
                .push(|| format!("{}/{}", msg.partition(), msg.offset())),
            Some(original) if Some(original) != home => self.foreign.push(|| {
                shown(&format!(
                    "{}/{} (names {original})",
                    msg.partition(),
                    msg.offset()
                ))
                .to_string()
            }),
            Some(_) => {}
        }
    }

    fn verdict(&self, topic: &str, home: Option<&str>) -> anyhow::Result<()> {
        if !self.stubs.is_empty() {
            bail!(
                "nothing replayed: message(s) {} of {topic} were dead-lettered without their \
                 payload ({} header: the copy was too large); republish the original from the \
                 coordinates named, or leave these messages out with --key or --since",
                self.stubs.list(),
                h::PAYLOAD_OMITTED
            );
        }
        if !self.homeless.is_empty() {
            bail!(
                "nothing replayed: message(s) at {topic} partition/offset {} have no {} header; \
                 name a destination with --to",
                self.homeless.list(),
                h::ORIGINAL_TOPIC
            );
        }
        if !self.foreign.is_empty() {
            let belongs = home.map_or_else(
                || format!("{topic} is not named <topic>.dlq, so it belongs to no topic"),
                |home| format!("{topic} belongs to {home}"),
            );
            bail!(
                "nothing replayed: message(s) at {topic} partition/offset {} name another topic \
                 in {} ({belongs}); a dead letter is replayed only to its own topic — check them \
                 with `gregor dlq inspect`, then name the destination with --to",
                self.foreign.list(),
                h::ORIGINAL_TOPIC
            );
        }
        Ok(())
    }
}

/// Counters of the second pass, and when progress was last written.
struct Progress {
    total: u64,
    read: u64,
    selected: u64,
    replayed: u64,
    started: Instant,
    reported: Instant,
}

impl Progress {
    fn new(total: u64) -> Self {
        let now = Instant::now();
        Self {
            total,
            read: 0,
            selected: 0,
            replayed: 0,
            started: now,
            reported: now,
        }
    }

    fn maybe_report(&mut self, topic: &str) {
        if self.reported.elapsed() >= PROGRESS_EVERY {
            self.reported = Instant::now();
            let line = format!(
                "progress: read {} of {} messages of {topic}, replayed {} ({:.0?})",
                self.read,
                self.total,
                self.replayed,
                self.started.elapsed()
            );
            eprintln!("{}", shown(&line));
        }
    }
}

/// Deliveries not yet awaited, and the last offset handed over per partition.
#[derive(Default)]
struct Batch {
    pending: Vec<DeliveryFuture>,
    bytes: usize,
    done: BTreeMap<i32, i64>,
}

impl Batch {
    /// Awaits every pending delivery; returns how many were acknowledged, or an error saying
    /// how far the replay got.
    fn flush(
        &mut self,
        runtime: &tokio::runtime::Handle,
        run: &Progress,
        topic: &str,
    ) -> anyhow::Result<u64> {
        self.bytes = 0;
        let mut acknowledged = 0;
        let mut first_failure = None;
        for delivery in self.pending.drain(..) {
            match runtime.block_on(delivery) {
                Ok(Ok(_)) => acknowledged += 1,
                Ok(Err((e, _))) => {
                    first_failure.get_or_insert_with(|| e.to_string());
                }
                Err(_) => {
                    first_failure
                        .get_or_insert_with(|| "the producer dropped the delivery report".into());
                }
            }
        }
        if let Some(first) = first_failure {
            bail!(
                "replay of {topic} failed after republishing {} message(s) (first failure: \
                 {first}); the position up to the last acknowledged batch is remembered, and \
                 running replay again is safe: every copy carries a stable ce_id",
                run.replayed + acknowledged
            );
        }
        Ok(acknowledged)
    }
}

/// `<partition>/<offset> (original <topic>/<partition>@<offset>)` of a copy without its payload.
fn stub_reference(msg: &OwnedMessage) -> String {
    let original = |name: &str| h::get_str(msg.headers(), name).unwrap_or("?");
    shown(&format!(
        "{}/{} (original {}/{}@{})",
        msg.partition(),
        msg.offset(),
        original(h::ORIGINAL_TOPIC),
        original(h::ORIGINAL_PARTITION),
        original(h::ORIGINAL_OFFSET)
    ))
    .to_string()
}

/// The original headers in order, minus the consumer's diagnostics, any earlier replay mark
/// and `ce_id`, plus `ce_id` (the message's own, or one derived from its original coordinates:
/// [`replay_id`]) and `gregor-replayed-at`. The consumer's dedupe keys on `ce_id`.
fn replay_headers(original: Option<&OwnedHeaders>, replayed_at: &str, ce_id: &str) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    let mut id_written = false;
    if let Some(original) = original {
        for header in original.iter() {
            if h::DIAGNOSTIC_HEADERS.contains(&header.key) || header.key == h::REPLAYED_AT {
                continue;
            }
            if header.key == h::CE_ID {
                // One ce_id, in its original place.
                if id_written {
                    continue;
                }
                id_written = true;
                headers = headers.insert(Header {
                    key: h::CE_ID,
                    value: Some(ce_id),
                });
                continue;
            }
            headers = headers.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    if !id_written {
        headers = headers.insert(Header {
            key: h::CE_ID,
            value: Some(ce_id),
        });
    }
    headers.insert(Header {
        key: h::REPLAYED_AT,
        value: Some(replayed_at),
    })
}

/// The destination must exist (this command never creates topics).
fn check_destination(kafka: &KafkaSettings, to: &str, selected: u64) -> anyhow::Result<()> {
    let client = topics::metadata_client(kafka)?;
    let existing = topics::partition_counts(&client, kafka, &[to.to_owned()])?;
    if !existing.contains_key(to) {
        bail!(
            "nothing replayed: destination topic {to} ({selected} message(s)) does not exist on {}",
            kafka.bootstrap_servers()
        );
    }
    Ok(())
}

fn describe(msg: &OwnedMessage) -> String {
    format!(
        "{}/{} key={} ce_id={}",
        msg.partition(),
        msg.offset(),
        show_key(msg.key()),
        h::get_str(msg.headers(), h::CE_ID).unwrap_or("-")
    )
}

/// Replay must not weaken delivery: refuse pass-through settings that turn off idempotence
/// or all-replica acknowledgement.
fn check_producer_settings(kafka: &KafkaSettings) -> Result<(), ConfigError> {
    if let Some(v) = kafka.property("enable.idempotence")
        && !v.trim().eq_ignore_ascii_case("true")
    {
        let var = kafka
            .source_of("enable.idempotence")
            .unwrap_or("KAFKA_ENABLE_IDEMPOTENCE");
        return Err(ConfigError::invalid(
            var,
            "replay needs enable.idempotence=true",
        ));
    }
    for property in ["acks", "request.required.acks"] {
        if let Some(v) = kafka.property(property)
            && !matches!(v.trim(), "all" | "-1")
        {
            let var = kafka.source_of(property).unwrap_or("KAFKA_ACKS");
            return Err(ConfigError::invalid(var, "replay needs acks=all"));
        }
    }
    Ok(())
}

/// Hands one record to librdkafka, waiting while its queue is full.
fn enqueue(
    producer: &FutureProducer,
    to: &str,
    msg: &OwnedMessage,
    headers: OwnedHeaders,
) -> Result<DeliveryFuture, KafkaError> {
    loop {
        let mut record = FutureRecord::<[u8], [u8]>::to(to).headers(headers.clone());
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        if let Some(payload) = msg.payload() {
            record = record.payload(payload);
        }
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_lose_diagnostics_and_gain_the_replay_mark() {
        let mut original = OwnedHeaders::new()
            .insert(Header {
                key: h::CE_ID,
                value: Some("id-1"),
            })
            .insert(Header {
                key: "traceparent",
                value: Some("00-abc-def-01"),
            })
            .insert(Header::<&str> {
                key: "null-header",
                value: None,
            })
            .insert(Header {
                key: h::REPLAYED_AT,
                value: Some("earlier"),
            });
        for name in h::DIAGNOSTIC_HEADERS {
            original = original.insert(Header {
                key: name,
                value: Some("x"),
            });
        }
        let out = replay_headers(Some(&original), "2025-01-01T00:00:00.000Z", "id-1");
        let names: Vec<&str> = out.iter().map(|hd| hd.key).collect();
        assert_eq!(
            names,
            [h::CE_ID, "traceparent", "null-header", h::REPLAYED_AT]
        );
        assert_eq!(h::get_str(Some(&out), h::CE_ID), Some("id-1"));
        assert_eq!(
            h::get_str(Some(&out), h::REPLAYED_AT),
            Some("2025-01-01T00:00:00.000Z")
        );
        assert!(
            out.iter()
                .any(|hd| hd.key == "null-header" && hd.value.is_none())
        );
    }

    #[test]
    fn weakened_delivery_settings_are_refused() {
        let env = gregor_config::Env::from_pairs([
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            ("KAFKA_ACKS", "1"),
        ]);
        let kafka = KafkaSettings::from_env(&env).unwrap();
        assert_eq!(
            check_producer_settings(&kafka).unwrap_err().var(),
            "KAFKA_ACKS"
        );
        let env = gregor_config::Env::from_pairs([
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            ("KAFKA_ENABLE_IDEMPOTENCE", "false"),
        ]);
        let kafka = KafkaSettings::from_env(&env).unwrap();
        assert!(check_producer_settings(&kafka).is_err());
    }

    #[test]
    fn copies_without_their_payload_are_refused_before_anything_is_published() {
        let copy = |offset: i64, omitted: bool| {
            let mut headers = OwnedHeaders::new()
                .insert(Header {
                    key: h::ORIGINAL_TOPIC,
                    value: Some("orders"),
                })
                .insert(Header {
                    key: h::ORIGINAL_PARTITION,
                    value: Some("2"),
                })
                .insert(Header {
                    key: h::ORIGINAL_OFFSET,
                    value: Some("41"),
                });
            if omitted {
                headers = headers.insert(Header {
                    key: h::PAYLOAD_OMITTED,
                    value: Some("too-large"),
                });
            }
            OwnedMessage::new(
                Some(b"{\"gregor-payload-omitted\":\"too-large\"}".to_vec()),
                Some(b"k".to_vec()),
                "orders.dlq".into(),
                rdkafka::Timestamp::CreateTime(1000),
                0,
                offset,
                Some(headers),
            )
        };
        let mut check = Check::default();
        check.add(&copy(0, false), None, Some("orders"));
        assert!(check.verdict("orders.dlq", Some("orders")).is_ok());
        check.add(&copy(1, true), None, Some("orders"));
        let error = check
            .verdict("orders.dlq", Some("orders"))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("nothing replayed"), "{error}");
        assert!(error.contains("0/1 (original orders/2@41)"), "{error}");
        assert!(error.contains(h::PAYLOAD_OMITTED), "{error}");
    }

    #[test]
    fn a_dead_letter_naming_another_topic_needs_to() {
        let forged = OwnedMessage::new(
            None,
            None,
            "orders.dlq".into(),
            rdkafka::Timestamp::NotAvailable,
            0,
            3,
            Some(OwnedHeaders::new().insert(Header {
                key: h::ORIGINAL_TOPIC,
                value: Some("payments"),
            })),
        );
        let mut check = Check::default();
        check.add(&forged, None, Some("orders"));
        let error = check
            .verdict("orders.dlq", Some("orders"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("0/3 (names payments)"), "{error}");
        assert!(error.contains("--to"), "{error}");
        let mut with_to = Check::default();
        with_to.add(&forged, Some("orders"), Some("orders"));
        assert!(with_to.verdict("orders.dlq", Some("orders")).is_ok());
    }

    #[test]
    fn a_message_without_ce_id_gets_the_derived_one() {
        let out = replay_headers(None, "now", "derived");
        let names: Vec<&str> = out.iter().map(|hd| hd.key).collect();
        assert_eq!(names, [h::CE_ID, h::REPLAYED_AT]);
        assert_eq!(h::get_str(Some(&out), h::CE_ID), Some("derived"));
    }
}
