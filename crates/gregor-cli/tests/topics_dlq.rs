//! `gregor topics ensure`, `gregor dlq inspect` and `gregor dlq replay` against the real broker.
//!
//! Needs the services of `./scripts/services up` and `KAFKA_BOOTSTRAP_SERVERS` (from
//! `eval "$(./scripts/services env)"`); without them every test fails with that command.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use gregor_testkit::{kafka, kafka_bootstrap, process, unique_name};
use gregor_wire::headers as h;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `gregor` with only the broker address in its environment.
fn gregor(args: &[&str]) -> anyhow::Result<Output> {
    let bootstrap = kafka_bootstrap()?;
    process::run("gregor", args, &[("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)])
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// Partition counts of the topics that exist among `topics`.
fn partition_counts(topics: &[String]) -> anyhow::Result<BTreeMap<String, usize>> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap()?)
        .set("allow.auto.create.topics", "false")
        .create()?;
    let mut out = BTreeMap::new();
    for topic in topics {
        let md = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in md.topics() {
            if t.name() == topic && t.error().is_none() && !t.partitions().is_empty() {
                out.insert(topic.clone(), t.partitions().len());
            }
        }
    }
    Ok(out)
}

/// A message as the consumer runtime dead-letters it.
struct DlqMessage {
    partition: i32,
    key: &'static str,
    value: &'static str,
    ce_id: String,
    original_topic: Option<String>,
    first_failure_at: String,
}

impl DlqMessage {
    fn new(partition: i32, key: &'static str, value: &'static str, original: &str) -> Self {
        Self {
            partition,
            key,
            value,
            ce_id: uuid::Uuid::new_v4().to_string(),
            original_topic: Some(original.to_owned()),
            first_failure_at: h::format_time(Utc::now() - chrono::TimeDelta::minutes(5)),
        }
    }

    fn headers(&self) -> OwnedHeaders {
        let mut pairs: Vec<(&str, &str)> = vec![
            (h::CE_SPECVERSION, "1.0"),
            (h::CE_ID, &self.ce_id),
            (h::CE_TYPE, "order.placed"),
            (h::CE_SOURCE, "/test"),
            (
                h::TRACEPARENT,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ];
        if let Some(t) = &self.original_topic {
            pairs.push((h::ORIGINAL_TOPIC, t));
        }
        pairs.extend([
            (h::ORIGINAL_PARTITION, "2"),
            (h::ORIGINAL_OFFSET, "345"),
            (h::ORIGINAL_TIMESTAMP, "1700000000000"),
            (h::CONSUMER_GROUP, "billing"),
            (h::ATTEMPT, "4"),
            (h::ERROR_KIND, "permanent"),
            (h::ERROR_MESSAGE, "amount must be positive"),
            (h::FIRST_FAILURE_AT, &self.first_failure_at),
        ]);
        pairs
            .into_iter()
            .fold(OwnedHeaders::new(), |hs, (key, value)| {
                hs.insert(Header {
                    key,
                    value: Some(value),
                })
            })
    }
}

/// Produces `messages` to `topic` (queued together, so the broker sees multi-message batches)
/// and waits for every acknowledgement.
async fn produce(topic: &str, messages: &[DlqMessage]) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap()?)
        .set("enable.idempotence", "true")
        .set("linger.ms", "50")
        .create()?;
    let mut deliveries = Vec::new();
    for m in messages {
        let record = FutureRecord::to(topic)
            .partition(m.partition)
            .key(m.key)
            .payload(m.value)
            .headers(m.headers());
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("cannot queue a message: {e}"))?,
        );
    }
    for d in deliveries {
        d.await?
            .map_err(|(e, _)| anyhow::anyhow!("delivery to {topic} failed: {e}"))?;
    }
    Ok(())
}

/// A main topic and its (empty) dead-letter topic.
async fn topic_pair(prefix: &str, partitions: i32) -> anyhow::Result<(String, String)> {
    let main = unique_name(prefix);
    let dlq = gregor_wire::dlq_topic(&main);
    kafka::create_topic(&main, partitions)
        .await
        .context("is the broker up? run ./scripts/services up")?;
    kafka::create_topic(&dlq, partitions).await?;
    Ok((main, dlq))
}

#[tokio::test]
async fn ensure_creates_tiers_and_dlq_then_reports_them_as_existing() -> anyhow::Result<()> {
    let topic = unique_name("ensure");
    let mut names = vec![topic.clone()];
    names.extend((1..=3).map(|n| gregor_wire::retry_topic(&topic, n)));
    names.push(gregor_wire::dlq_topic(&topic));

    let first = ok(&gregor(&["topics", "ensure", &topic, "--partitions", "4"])?);
    let expected: Vec<String> = names
        .iter()
        .map(|n| format!("created {n} (4 partitions)"))
        .collect();
    assert_eq!(first.lines().collect::<Vec<_>>(), expected, "{first}");

    let counts = partition_counts(&names)?;
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(counts.values().all(|&n| n == 4), "{counts:?}");

    // Second run: everything exists; the main topic's partition count wins.
    let second = ok(&gregor(&["topics", "ensure", &topic])?);
    let expected: Vec<String> = names
        .iter()
        .map(|n| format!("exists  {n} (4 partitions)"))
        .collect();
    assert_eq!(second.lines().collect::<Vec<_>>(), expected, "{second}");
    Ok(())
}

#[tokio::test]
async fn ensure_refuses_an_existing_tier_with_another_partition_count() -> anyhow::Result<()> {
    let topic = unique_name("mismatch");
    let tier2 = gregor_wire::retry_topic(&topic, 2);
    kafka::create_topic(&topic, 3).await?;
    kafka::create_topic(&tier2, 2).await?;

    let out = gregor(&["topics", "ensure", &topic, "--retry-tiers", "2"])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("exists  {topic} (3 partitions)")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "created {} (3 partitions)",
            gregor_wire::retry_topic(&topic, 1)
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("exists  {tier2} (2 partitions, expected 3)")),
        "{text}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{tier2} has 2")) && err.contains(&format!("{topic} has 3")),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn inspect_prints_the_diagnostics() -> anyhow::Result<()> {
    let (main, dlq) = topic_pair("inspect", 2).await?;
    let empty = ok(&gregor(&["dlq", "inspect", &dlq])?);
    assert_eq!(empty.trim(), format!("no messages in {dlq}"));

    // Three messages in one batch on partition 1: nisshi's ListOffsets then reports a high
    // watermark of 1 there (DESIGN §5), so inspect must read to end-of-partition instead.
    let messages = vec![
        DlqMessage::new(0, "order-1", "v1", &main),
        DlqMessage::new(1, "order-2", "v2", &main),
        DlqMessage::new(1, "order-3", "v3", &main),
        DlqMessage::new(1, "order-4", "v4", &main),
    ];
    produce(&dlq, &messages).await?;

    let text = ok(&gregor(&["dlq", "inspect", &dlq])?);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "4 messages and a count: {text}");
    let first = lines[0];
    for needle in [
        "0/0 ".to_owned(),
        "key=order-1".to_owned(),
        "kind=permanent".to_owned(),
        "attempt=4".to_owned(),
        format!("original={main}/2/345"),
        "group=billing".to_owned(),
        format!("ce_id={}", messages[0].ce_id),
        "age=5m".to_owned(),
        "error=\"amount must be positive\"".to_owned(),
    ] {
        assert!(first.contains(&needle), "{needle:?} in {first}");
    }
    assert!(
        lines[1].starts_with("1/0 ") && lines[3].starts_with("1/2 "),
        "{text}"
    );
    assert_eq!(lines[4], format!("4 message(s) in {dlq}"));

    let json = ok(&gregor(&[
        "dlq", "inspect", &dlq, "--json", "--limit", "2",
    ])?);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), 2, "{json}");
    let row = &rows[0];
    assert_eq!(row["partition"], 0);
    assert_eq!(row["offset"], 0);
    assert_eq!(row["key"], "order-1");
    assert_eq!(row["error_kind"], "permanent");
    assert_eq!(row["error_message"], "amount must be positive");
    assert_eq!(row["original_topic"], main.as_str());
    assert_eq!(row["original_partition"], 2);
    assert_eq!(row["original_offset"], 345);
    assert_eq!(row["attempt"], 4);
    assert_eq!(row["ce_id"], messages[0].ce_id.as_str());
    let age = row["age_seconds"].as_f64().context("age_seconds")?;
    assert!((299.0..400.0).contains(&age), "{age}");
    Ok(())
}

#[tokio::test]
async fn replay_republishes_to_the_original_topic_without_diagnostics() -> anyhow::Result<()> {
    let (main, dlq) = topic_pair("replay", 2).await?;
    let messages = vec![
        DlqMessage::new(0, "order-1", "v1", &main),
        DlqMessage::new(1, "order-2", "v2", &main),
    ];
    produce(&dlq, &messages).await?;
    let before = Utc::now();

    let text = ok(&gregor(&["dlq", "replay", &dlq])?);
    assert!(
        text.contains(&format!("replayed 2 of 2 messages from {dlq} to {main}")),
        "{text}"
    );

    let got = kafka::read_to_end(&main, READ_TIMEOUT).await?;
    assert_eq!(got.len(), 2, "{got:?}");
    for m in &messages {
        let copy = got
            .iter()
            .find(|r| r.key.as_deref() == Some(m.key.as_bytes()))
            .with_context(|| format!("{} was not replayed: {got:?}", m.key))?;
        assert_eq!(copy.payload.as_deref(), Some(m.value.as_bytes()));
        assert_eq!(copy.header(h::CE_ID).as_deref(), Some(m.ce_id.as_str()));
        assert_eq!(copy.header(h::CE_TYPE).as_deref(), Some("order.placed"));
        assert!(copy.header(h::TRACEPARENT).is_some());
        for name in h::DIAGNOSTIC_HEADERS {
            assert!(copy.header(name).is_none(), "{name} kept: {copy:?}");
        }
        let replayed_at = copy.header(h::REPLAYED_AT).context("gregor-replayed-at")?;
        let at = chrono::DateTime::parse_from_rfc3339(&replayed_at)?;
        assert!(
            at >= before - chrono::TimeDelta::seconds(1),
            "{replayed_at}"
        );
    }
    // The dead-letter topic is left as it was.
    let again = ok(&gregor(&["dlq", "inspect", &dlq])?);
    assert!(again.contains(&format!("2 message(s) in {dlq}")), "{again}");
    Ok(())
}

#[tokio::test]
async fn replay_filters_by_key_and_dry_run_publishes_nothing() -> anyhow::Result<()> {
    let (main, dlq) = topic_pair("replay-key", 1).await?;
    let messages = vec![
        DlqMessage::new(0, "a", "a1", &main),
        DlqMessage::new(0, "b", "b1", &main),
        DlqMessage::new(0, "a", "a2", &main),
    ];
    produce(&dlq, &messages).await?;

    let dry = ok(&gregor(&[
        "dlq",
        "replay",
        &dlq,
        "--key",
        "a",
        "--dry-run",
    ])?);
    assert_eq!(dry.matches("would replay 0/").count(), 2, "{dry}");
    assert!(
        dry.contains(&format!(
            "dry run: would replay 2 of 3 messages from {dlq} to {main}"
        )),
        "{dry}"
    );
    assert!(
        kafka::read_to_end(&main, READ_TIMEOUT).await?.is_empty(),
        "a dry run published something"
    );

    // Nothing failed after a time in the future.
    let since = h::format_time(Utc::now() + chrono::TimeDelta::hours(1));
    let none = ok(&gregor(&["dlq", "replay", &dlq, "--since", &since])?);
    assert!(none.contains("replayed 0 of 3 messages"), "{none}");

    let text = ok(&gregor(&["dlq", "replay", &dlq, "--key", "a"])?);
    assert!(
        text.contains(&format!("replayed 2 of 3 messages from {dlq} to {main}")),
        "{text}"
    );
    let got = kafka::read_to_end(&main, READ_TIMEOUT).await?;
    let values: Vec<&[u8]> = got.iter().filter_map(|r| r.payload.as_deref()).collect();
    assert_eq!(
        values,
        [b"a1".as_slice(), b"a2".as_slice()],
        "in order: {got:?}"
    );
    Ok(())
}

#[tokio::test]
async fn replay_needs_a_destination_for_every_message() -> anyhow::Result<()> {
    let (_, dlq) = topic_pair("replay-to", 1).await?;
    let elsewhere = unique_name("replay-target");
    kafka::create_topic(&elsewhere, 1).await?;
    let mut orphan = DlqMessage::new(0, "k", "v", "unused");
    orphan.original_topic = None;
    produce(&dlq, &[orphan]).await?;

    let out = gregor(&["dlq", "replay", &dlq])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("0/0") && err.contains(h::ORIGINAL_TOPIC) && err.contains("--to"),
        "{err}"
    );

    let text = ok(&gregor(&["dlq", "replay", &dlq, "--to", &elsewhere])?);
    assert!(
        text.contains(&format!(
            "replayed 1 of 1 messages from {dlq} to {elsewhere}"
        )),
        "{text}"
    );
    assert_eq!(kafka::read_to_end(&elsewhere, READ_TIMEOUT).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn missing_topics_fail_clearly() -> anyhow::Result<()> {
    let missing = unique_name("absent");
    for command in ["inspect", "replay"] {
        let out = gregor(&["dlq", command, &missing])?;
        assert_eq!(out.status.code(), Some(1), "{command}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("topic {missing} does not exist")),
            "{command}: {}",
            stderr(&out)
        );
    }
    assert!(
        partition_counts(&[missing])?.is_empty(),
        "reading a missing topic created it"
    );
    Ok(())
}

#[test]
fn a_missing_bootstrap_variable_is_a_usage_error() -> anyhow::Result<()> {
    for args in [
        &["topics", "ensure", "orders"][..],
        &["dlq", "inspect", "orders.dlq"][..],
        &["dlq", "replay", "orders.dlq", "--dry-run"][..],
    ] {
        let out = process::run("gregor", args, &[])?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("KAFKA_BOOTSTRAP_SERVERS"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    Ok(())
}
