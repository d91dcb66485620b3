//! `gregor topics …`, and the broker helpers the other Kafka commands share.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use gregor_config::{BrokerStatus, Env, KafkaSettings};
use gregor_wire::TopicKind;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use crate::UsageError;

/// How long a metadata or admin request may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Subcommand)]
pub(crate) enum TopicsCommand {
    /// Create a topic with its retry tiers (`<topic>.retry.1..N`) and its dead-letter topic
    /// (`<topic>.dlq`), all with the same partition count.
    ///
    /// Idempotent: topics that exist already are left alone. If the main topic exists, its
    /// partition count is used for the others; an existing retry or dead-letter topic with a
    /// different partition count is reported and the command fails (exit 1).
    Ensure {
        /// The main topic (not a `.retry.N` or `.dlq` topic).
        topic: String,
        /// Partitions of every topic created [default: 6, or the main topic's if it exists].
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=100_000))]
        partitions: Option<i32>,
        /// Number of retry tiers.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=100))]
        retry_tiers: u16,
        /// Replication factor of every topic created.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=100))]
        replication_factor: i32,
    },
}

const DEFAULT_PARTITIONS: i32 = 6;

/// Broker settings from `KAFKA_BOOTSTRAP_SERVERS` and the `KAFKA_*` pass-through variables.
pub(crate) fn kafka_settings() -> anyhow::Result<KafkaSettings> {
    Ok(KafkaSettings::from_env(&Env::from_process())?)
}

/// Connects once with `kafka`: refused credentials or a failed TLS handshake end the command
/// at once with a configuration error (exit 2), a broker that does not answer within
/// [`REQUEST_TIMEOUT`] with an operation error (exit 1).
pub(crate) async fn check_broker(kafka: &KafkaSettings) -> anyhow::Result<()> {
    let settings = kafka.clone();
    match tokio::task::spawn_blocking(move || settings.check_broker(REQUEST_TIMEOUT))
        .await
        .context("the broker check failed")??
    {
        BrokerStatus::Reachable => Ok(()),
        BrokerStatus::Unreachable(last) => bail!(
            "the broker at {} did not answer within {}s{}",
            kafka.bootstrap_servers(),
            REQUEST_TIMEOUT.as_secs(),
            last.map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        ),
    }
}

/// A consumer used only for metadata requests; it never asks the broker to create topics.
pub(crate) fn metadata_client(kafka: &KafkaSettings) -> anyhow::Result<BaseConsumer> {
    Ok(kafka
        .client_config(&[
            ("client.id", "gregor-cli"),
            ("allow.auto.create.topics", "false"),
        ])
        .create()?)
}

/// The partition count of each of `topics` that exists (absent ones are left out).
pub(crate) fn partition_counts(
    client: &BaseConsumer,
    kafka: &KafkaSettings,
    topics: &[String],
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut out = BTreeMap::new();
    for topic in topics {
        let metadata = client
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .with_context(|| {
                format!(
                    "cannot read the metadata of {topic} from {}",
                    kafka.bootstrap_servers()
                )
            })?;
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            match t.error().map(RDKafkaErrorCode::from) {
                None if !t.partitions().is_empty() => {
                    out.insert(topic.clone(), t.partitions().len());
                }
                None
                | Some(
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
                ) => {}
                Some(code) => bail!("cannot read the metadata of {topic}: {code}"),
            }
        }
    }
    Ok(out)
}

/// The partition count of one topic, or an error saying it does not exist.
pub(crate) fn existing_partitions(
    client: &BaseConsumer,
    kafka: &KafkaSettings,
    topic: &str,
) -> anyhow::Result<usize> {
    partition_counts(client, kafka, &[topic.to_owned()])?
        .get(topic)
        .copied()
        .with_context(|| {
            format!(
                "topic {topic} does not exist on {}",
                kafka.bootstrap_servers()
            )
        })
}

pub(crate) async fn run(cmd: TopicsCommand) -> anyhow::Result<()> {
    match cmd {
        TopicsCommand::Ensure {
            topic,
            partitions,
            retry_tiers,
            replication_factor,
        } => ensure(&topic, partitions, retry_tiers, replication_factor).await,
    }
}

async fn ensure(
    topic: &str,
    partitions: Option<i32>,
    retry_tiers: u16,
    replication_factor: i32,
) -> anyhow::Result<()> {
    validate_main_topic(topic)?;
    let kafka = kafka_settings()?;
    check_broker(&kafka).await?;
    let client = metadata_client(&kafka)?;

    let mut names = vec![topic.to_owned()];
    names.extend((1..=usize::from(retry_tiers)).map(|n| gregor_wire::retry_topic(topic, n)));
    names.push(gregor_wire::dlq_topic(topic));

    let mut existing = partition_counts(&client, &kafka, &names)?;
    let wanted = match existing.get(topic) {
        Some(&n) => {
            if let Some(asked) = partitions
                && usize::try_from(asked).ok() != Some(n)
            {
                eprintln!(
                    "gregor: note: {topic} exists with {n} partitions; --partitions {asked} is ignored"
                );
            }
            i32::try_from(n).context("partition count out of range")?
        }
        None => partitions.unwrap_or(DEFAULT_PARTITIONS),
    };

    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !existing.contains_key(*n))
        .collect();
    let mut created = BTreeSet::new();
    if !missing.is_empty() {
        let admin: AdminClient<DefaultClientContext> = kafka
            .client_config(&[("client.id", "gregor-cli")])
            .create()?;
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|n| NewTopic::new(n, wanted, TopicReplication::Fixed(replication_factor)))
            .collect();
        let results = admin
            .create_topics(
                &new_topics,
                &AdminOptions::new()
                    .request_timeout(Some(REQUEST_TIMEOUT))
                    .operation_timeout(Some(REQUEST_TIMEOUT)),
            )
            .await
            .with_context(|| format!("cannot create topics on {}", kafka.bootstrap_servers()))?;
        let mut raced = Vec::new();
        for result in results {
            match result {
                Ok(name) => {
                    existing.insert(name.clone(), usize::try_from(wanted)?);
                    created.insert(name);
                }
                // Created by someone else since we looked: read its partition count.
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => raced.push(name),
                Err((name, code)) => bail!("cannot create topic {name}: {code}"),
            }
        }
        if !raced.is_empty() {
            let counts = partition_counts(&client, &kafka, &raced)?;
            for name in raced {
                let n = counts.get(&name).copied().with_context(|| {
                    format!("{name} exists according to the broker, but has no metadata")
                })?;
                existing.insert(name, n);
            }
        }
    }

    let expected = usize::try_from(wanted)?;
    let mut mismatched = Vec::new();
    for name in &names {
        let n = existing
            .get(name)
            .copied()
            .with_context(|| format!("{name} was neither found nor created"))?;
        let label = if created.contains(name) {
            "created"
        } else {
            "exists "
        };
        if n == expected {
            println!("{label} {name} ({n} partitions)");
        } else {
            println!("{label} {name} ({n} partitions, expected {expected})");
            mismatched.push(format!("{name} has {n}"));
        }
    }
    if !mismatched.is_empty() {
        bail!(
            "partition counts differ: {topic} has {expected} partitions but {}; \
             retry and dead-letter topics must have as many partitions as their main topic \
             (recreate them, or add partitions with your broker's tools)",
            mismatched.join(", ")
        );
    }
    Ok(())
}

/// `ensure` takes a main topic: refuse retry/dead-letter names and invalid topic names.
fn validate_main_topic(topic: &str) -> Result<(), UsageError> {
    match gregor_wire::base_topic(topic) {
        (base, TopicKind::DeadLetter) => {
            return Err(UsageError(format!(
                "{topic} is a dead-letter topic; ensure its main topic instead: gregor topics ensure {base}"
            )));
        }
        (base, TopicKind::Retry(_)) => {
            return Err(UsageError(format!(
                "{topic} is a retry topic; ensure its main topic instead: gregor topics ensure {base}"
            )));
        }
        (_, TopicKind::Main) => {}
    }
    // Kafka's rule; the longest derived name (`.retry.N`) must fit too.
    let valid = !topic.is_empty()
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(UsageError(format!(
            "{topic:?} is not a valid topic name (letters, digits, '.', '_' and '-' only)"
        )));
    }
    if topic.len() + ".retry.100".len() > 249 {
        return Err(UsageError(format!(
            "{topic:?} is too long: with its retry suffix it would exceed Kafka's 249 characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_derived_and_invalid_names() {
        assert!(validate_main_topic("orders").is_ok());
        assert!(validate_main_topic("orders.v1_x-y").is_ok());
        let e = validate_main_topic("orders.dlq").unwrap_err();
        assert!(e.0.contains("gregor topics ensure orders"), "{e}");
        assert!(validate_main_topic("orders.retry.2").is_err());
        assert!(validate_main_topic("bad topic").is_err());
        assert!(validate_main_topic("").is_err());
        assert!(validate_main_topic(&"a".repeat(245)).is_err());
    }
}
