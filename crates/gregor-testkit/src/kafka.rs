//! Topics and reading messages back from the broker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// One message read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Partition it was in.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Payload bytes (`None` for a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Headers in order (value `None` for a null header).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Received {
    /// The first header named `name`, as UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Creates `topic` with `partitions` partitions on the shared broker.
pub async fn create_topic(topic: &str, partitions: i32) -> anyhow::Result<()> {
    create_topic_on(&crate::kafka_bootstrap()?, topic, partitions).await
}

/// librdkafka properties of a client: `bootstrap.servers` plus, for a secured broker,
/// `security.protocol`, `sasl.*`, `ssl.*`.
pub type ClientProps = Vec<(String, String)>;

/// [`ClientProps`] for a plaintext broker at `bootstrap`.
pub fn plaintext(bootstrap: &str) -> ClientProps {
    vec![("bootstrap.servers".to_owned(), bootstrap.to_owned())]
}

fn client_config(props: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in props {
        config.set(k, v);
    }
    config
}

fn bootstrap_of(props: &[(String, String)]) -> &str {
    props
        .iter()
        .find(|(k, _)| k == "bootstrap.servers")
        .map_or("?", |(_, v)| v.as_str())
}

/// Creates `topic` on the broker at `bootstrap`.
pub async fn create_topic_on(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    create_topic_with(&plaintext(bootstrap), topic, partitions).await
}

/// Creates `topic` with a client configured by `props` (a secured broker).
pub async fn create_topic_with(
    props: &[(String, String)],
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let bootstrap = bootstrap_of(props);
    let admin: AdminClient<DefaultClientContext> = client_config(props).create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .with_context(|| format!("cannot create topic {topic} on {bootstrap}"))?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("creating topic {name} failed: {code}");
        }
    }
    Ok(())
}

/// Reads `topic` from the beginning of every partition until `expected` messages arrived,
/// failing after `timeout`. Reading each partition (rather than trusting high watermarks)
/// counts exactly; see DESIGN §5 on nisshi's ListOffsets.
pub async fn read_topic(
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Received>> {
    read_topic_on(&crate::kafka_bootstrap()?, topic, expected, timeout).await
}

/// [`read_topic`] against the broker at `bootstrap`.
pub async fn read_topic_on(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Received>> {
    read_topic_with(&plaintext(bootstrap), topic, expected, timeout).await
}

/// [`read_topic`] with a client configured by `props` (a secured broker).
pub async fn read_topic_with(
    props: &[(String, String)],
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Received>> {
    let props = props.to_vec();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_blocking(&props, &topic, expected, timeout)).await?
}

fn read_blocking(
    props: &[(String, String)],
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Received>> {
    let consumer = assigned_consumer(props, topic, partition_count(props, topic)?)?;
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(expected);
    let mut seen: HashMap<(i32, i64), ()> = HashMap::new();
    while out.len() < expected {
        if Instant::now() >= deadline {
            bail!(
                "read {} of {expected} expected messages from {topic} within {timeout:?}",
                out.len()
            );
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = to_received(&result?);
        if seen.insert((msg.partition, msg.offset), ()).is_some() {
            continue;
        }
        out.push(msg);
    }
    Ok(out)
}

/// The header that marks [`read_to_end`]'s end-of-partition markers.
pub const MARKER_HEADER: &str = "gregor-test-end-marker";

/// Reads every message of `topic` written before this call returns: it appends an end
/// marker to each partition (acknowledged by the broker), then reads every partition until
/// its marker. Markers are not returned. Call it once every writer has stopped.
pub async fn read_to_end(topic: &str, timeout: Duration) -> anyhow::Result<Vec<Received>> {
    read_to_end_on(&crate::kafka_bootstrap()?, topic, timeout).await
}

/// [`read_to_end`] against the broker at `bootstrap`.
pub async fn read_to_end_on(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Received>> {
    read_to_end_with(&plaintext(bootstrap), topic, timeout).await
}

/// [`read_to_end`] with clients configured by `props` (a secured broker).
pub async fn read_to_end_with(
    props: &[(String, String)],
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Received>> {
    use rdkafka::message::OwnedHeaders;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let partitions = partition_count(props, topic)?;
    let producer: FutureProducer = client_config(props)
        .set("enable.idempotence", "true")
        .create()?;
    let marker = crate::unique_name("marker");
    for p in 0..partitions {
        let headers = OwnedHeaders::new().insert(rdkafka::message::Header {
            key: MARKER_HEADER,
            value: Some(marker.as_str()),
        });
        producer
            .send(
                FutureRecord::<(), [u8]>::to(topic)
                    .partition(p)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("cannot write the end marker to {topic}/{p}: {e}"))?;
    }
    let props = props.to_vec();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer = assigned_consumer(&props, &topic, partitions)?;
        let deadline = Instant::now() + timeout;
        let mut open: std::collections::HashSet<i32> = (0..partitions).collect();
        let mut out = Vec::new();
        while !open.is_empty() {
            if Instant::now() >= deadline {
                bail!("partitions {open:?} of {topic} did not reach their end marker within {timeout:?}");
            }
            let Some(result) = consumer.poll(Duration::from_millis(100)) else { continue };
            let msg = to_received(&result?);
            if msg.header(MARKER_HEADER).as_deref() == Some(marker.as_str()) {
                open.remove(&msg.partition);
            } else if msg.header(MARKER_HEADER).is_none() {
                out.push(msg);
            }
        }
        Ok(out)
    })
    .await?
}

/// How many partitions `topic` has on the broker at `bootstrap` (an auto-created topic gets
/// the broker's default).
pub fn partition_count_on(bootstrap: &str, topic: &str) -> anyhow::Result<i32> {
    partition_count(&plaintext(bootstrap), topic)
}

fn partition_count(props: &[(String, String)], topic: &str) -> anyhow::Result<i32> {
    let bootstrap = bootstrap_of(props);
    let consumer: BaseConsumer = client_config(props).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let n = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .sum::<usize>();
    if n == 0 {
        bail!("topic {topic} has no partitions on {bootstrap}");
    }
    Ok(i32::try_from(n)?)
}

fn assigned_consumer(
    props: &[(String, String)],
    topic: &str,
    partitions: i32,
) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = client_config(props)
        .set("group.id", crate::unique_name("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // Below the log start (a real Kafka after retention): from the earliest record.
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        // Offset 0 rather than `Beginning`: nisshi's ListOffsets(earliest) can answer the
        // batch written first in time instead of the lowest offset, and the reader would
        // start past records (docs/nisshi.md).
        tpl.add_partition_offset(topic, p, Offset::Offset(0))?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

fn to_received(msg: &rdkafka::message::BorrowedMessage<'_>) -> Received {
    let headers = msg
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    Received {
        partition: msg.partition(),
        offset: msg.offset(),
        key: msg.key().map(<[u8]>::to_vec),
        payload: msg.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// One message to produce.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Payload bytes (`None` = tombstone).
    pub payload: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// A record with a key and a payload.
    pub fn new(key: impl Into<Vec<u8>>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            key: Some(key.into()),
            payload: Some(payload.into()),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// Produces `records` to `topic` on the shared broker and waits for every acknowledgement.
pub async fn produce(topic: &str, records: Vec<Record>) -> anyhow::Result<()> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", crate::kafka_bootstrap()?)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let mut pending = Vec::with_capacity(records.len());
    for r in &records {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
        if let Some(k) = &r.key {
            record = record.key(k);
        }
        if let Some(p) = &r.payload {
            record = record.payload(p);
        }
        pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
        if pending.len() >= 10_000 {
            for p in pending.drain(..) {
                p.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for p in pending {
        p.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Creates `topic`, its retry tiers `1..=tiers` and its `.dlq`, all with `partitions`.
pub async fn create_topic_family(topic: &str, partitions: i32, tiers: usize) -> anyhow::Result<()> {
    create_topic(topic, partitions).await?;
    for n in 1..=tiers {
        create_topic(&format!("{topic}.retry.{n}"), partitions).await?;
    }
    create_topic(&format!("{topic}.dlq"), partitions).await
}

/// The offsets `group` has committed for each partition of `topic` (partitions without a
/// commit are left out). Reads them without joining the group.
pub fn committed_offsets(group: &str, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    committed_offsets_on(&crate::kafka_bootstrap()?, group, topic)
}

/// [`committed_offsets`] on the broker at `bootstrap`.
pub fn committed_offsets_on(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> anyhow::Result<HashMap<i32, i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}
