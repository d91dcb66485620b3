//! `gregor dlq replay`

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use gregor_config::{ConfigError, KafkaSettings};
use gregor_wire::headers as h;
use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::{read_to_end, show_key, timestamp};
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

/// One message to republish.
struct Planned {
    msg: OwnedMessage,
    to: String,
    headers: OwnedHeaders,
}

pub(super) async fn run(
    topic: &str,
    to: Option<&str>,
    filter: &Filter,
    dry_run: bool,
) -> anyhow::Result<()> {
    if to == Some(topic) {
        return Err(UsageError(format!("--to {topic} is the topic being replayed")).into());
    }
    let kafka = kafka_settings()?;
    check_producer_settings(&kafka)?;
    topics::check_broker(&kafka).await?;
    let messages = read_to_end(&kafka, topic, |m| m.detach()).await?;
    if messages.is_empty() {
        println!("no messages in {topic}");
        return Ok(());
    }
    let total = messages.len();
    let replayed_at = h::format_time(Utc::now());
    let plan = plan(topic, messages, to, filter, &replayed_at)?;
    check_destinations(&kafka, topic, &plan)?;

    let destinations = destination_list(&plan);
    if dry_run {
        for p in &plan {
            let line = format!("would replay {} -> {}", describe(&p.msg), p.to);
            println!("{}", shown(&line));
        }
        let line = format!(
            "dry run: would replay {} of {total} messages from {topic} to {destinations}",
            plan.len()
        );
        println!("{}", shown(&line));
        return Ok(());
    }

    let replayed = publish(&kafka, &plan).await?;
    let line = format!("replayed {replayed} of {total} messages from {topic} to {destinations}");
    println!("{}", shown(&line));
    Ok(())
}

/// Selects the messages, finds each one's destination and builds its headers; fails before
/// anything is published if a selected message has no destination.
fn plan(
    topic: &str,
    messages: Vec<OwnedMessage>,
    to: Option<&str>,
    filter: &Filter,
    replayed_at: &str,
) -> anyhow::Result<Vec<Planned>> {
    let mut plan = Vec::new();
    let mut homeless = Vec::new();
    let mut stubs = Vec::new();
    for msg in messages.into_iter().filter(|m| filter.matches(m)) {
        // A copy too large to carry its payload holds a reference, not the event: never
        // republish it as if it were one.
        if h::get_str(msg.headers(), h::PAYLOAD_OMITTED).is_some() {
            stubs.push(stub_reference(&msg));
            continue;
        }
        let dest = to
            .map(str::to_owned)
            .or_else(|| h::get_str(msg.headers(), h::ORIGINAL_TOPIC).map(str::to_owned))
            .filter(|t| !t.trim().is_empty());
        match dest {
            Some(dest) => {
                let headers = replay_headers(msg.headers(), replayed_at);
                plan.push(Planned {
                    msg,
                    to: dest,
                    headers,
                });
            }
            None => homeless.push(format!("{}/{}", msg.partition(), msg.offset())),
        }
    }
    if !stubs.is_empty() {
        bail!(
            "nothing replayed: message(s) {} of {topic} were dead-lettered without their payload \
             ({} header: the copy was too large); republish the original from the coordinates \
             named, or leave these messages out with --key or --since",
            stubs.join(", "),
            h::PAYLOAD_OMITTED
        );
    }
    if !homeless.is_empty() {
        bail!(
            "nothing replayed: message(s) at {topic} partition/offset {} have no {} header; \
             name a destination with --to",
            homeless.join(", "),
            h::ORIGINAL_TOPIC
        );
    }
    Ok(plan)
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

/// The original headers in order, minus the consumer's diagnostics (and any earlier replay
/// mark), plus `gregor-replayed-at`. `ce_id` stays: the consumer's dedupe keys on it.
fn replay_headers(original: Option<&OwnedHeaders>, replayed_at: &str) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = original {
        for header in original.iter() {
            if h::DIAGNOSTIC_HEADERS.contains(&header.key) || header.key == h::REPLAYED_AT {
                continue;
            }
            headers = headers.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    headers.insert(Header {
        key: h::REPLAYED_AT,
        value: Some(replayed_at),
    })
}

/// Every destination must exist (this command never creates topics) and must not be the
/// dead-letter topic itself.
fn check_destinations(kafka: &KafkaSettings, topic: &str, plan: &[Planned]) -> anyhow::Result<()> {
    let mut wanted: BTreeMap<&str, usize> = BTreeMap::new();
    for p in plan {
        *wanted.entry(p.to.as_str()).or_default() += 1;
    }
    if wanted.contains_key(topic) {
        bail!("messages in {topic} name {topic} itself as their original topic; pass --to");
    }
    let names: Vec<String> = wanted.keys().map(|t| (*t).to_owned()).collect();
    let client = topics::metadata_client(kafka)?;
    let existing = topics::partition_counts(&client, kafka, &names)?;
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(t, _)| !existing.contains_key(**t))
        .map(|(t, n)| format!("{t} ({n} message(s))"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "nothing replayed: destination topic(s) {} do not exist on {}",
            missing.join(", "),
            kafka.bootstrap_servers()
        );
    }
    Ok(())
}

fn destination_list(plan: &[Planned]) -> String {
    let mut names: Vec<&str> = plan.iter().map(|p| p.to.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(", ")
    }
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

/// Produces every planned message in order and awaits each delivery; returns how many were
/// acknowledged, or an error saying how many were.
async fn publish(kafka: &KafkaSettings, plan: &[Planned]) -> anyhow::Result<usize> {
    let producer: FutureProducer = kafka
        .client_config(PRODUCER_DEFAULTS)
        .create()
        .context("cannot create a Kafka producer")?;
    let mut pending: Vec<(&Planned, DeliveryFuture)> = Vec::with_capacity(plan.len());
    let mut failures: Vec<String> = Vec::new();
    for p in plan {
        match enqueue(&producer, p).await {
            Ok(delivery) => pending.push((p, delivery)),
            Err(e) => {
                failures.push(format!("{} -> {}: {e}", describe(&p.msg), p.to));
                break;
            }
        }
    }
    let mut replayed = 0;
    for (p, delivery) in pending {
        match delivery.await {
            Ok(Ok(delivered)) => {
                replayed += 1;
                let line = format!(
                    "sent {} -> {} {}/{}",
                    describe(&p.msg),
                    p.to,
                    delivered.partition,
                    delivered.offset
                );
                println!("{}", shown(&line));
            }
            Ok(Err((e, _))) => failures.push(format!("{} -> {}: {e}", describe(&p.msg), p.to)),
            Err(_) => failures.push(format!(
                "{} -> {}: the producer dropped the delivery report",
                describe(&p.msg),
                p.to
            )),
        }
    }
    if let Some(first) = failures.first() {
        bail!(
            "replay failed after republishing {replayed} of {} selected messages \
             ({} failed or not attempted; first failure: {first}); \
             running replay again is safe: consumers skip events they already handled by ce_id",
            plan.len(),
            plan.len() - replayed
        );
    }
    Ok(replayed)
}

/// Hands one record to librdkafka, waiting while its queue is full.
async fn enqueue(producer: &FutureProducer, p: &Planned) -> Result<DeliveryFuture, KafkaError> {
    loop {
        let mut record = FutureRecord::<[u8], [u8]>::to(&p.to).headers(p.headers.clone());
        if let Some(key) = p.msg.key() {
            record = record.key(key);
        }
        if let Some(payload) = p.msg.payload() {
            record = record.payload(payload);
        }
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
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
        let out = replay_headers(Some(&original), "2025-01-01T00:00:00.000Z");
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
        let error = plan(
            "orders.dlq",
            vec![copy(0, false), copy(1, true)],
            None,
            &Filter::default(),
            "now",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(error.starts_with("nothing replayed"), "{error}");
        assert!(error.contains("0/1 (original orders/2@41)"), "{error}");
        assert!(error.contains(h::PAYLOAD_OMITTED), "{error}");
        let ok = plan(
            "orders.dlq",
            vec![copy(0, false)],
            None,
            &Filter::default(),
            "now",
        )
        .unwrap();
        assert_eq!(ok.len(), 1);
    }
}
