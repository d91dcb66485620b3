//! A forward that can never succeed never blocks its partition silently (issue 14, defect 2):
//! a dead-letter copy too large for the producer's `message.max.bytes` is sent without its
//! payload (a reference to the original coordinates instead) and the partition moves on; a
//! dead-letter topic that refuses writes stops the consumer with an error naming it.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gregor_consumer::{Consumer, ConsumerError, Context, Event, HandlerError, Raw};
use gregor_integration_tests::consumer_config;
use gregor_testkit::kafka::{self, Record};
use gregor_testkit::{unique_name, wait_until};
use gregor_wire::headers as h;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// The value of `gregor_consumer_forward_failures_total{kind}`.
fn forward_failures(metrics: &gregor_consumer::ConsumerMetrics, kind: &str) -> f64 {
    metrics
        .registry()
        .gather()
        .iter()
        .filter(|f| f.name() == "gregor_consumer_forward_failures_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == kind))
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// Fails every message whose key is `big` permanently with a long error message; records
/// the keys of the others.
fn handler(
    seen: Arc<Mutex<Vec<String>>>,
) -> impl Fn(Context, Event<Vec<u8>>) -> std::future::Ready<Result<(), HandlerError>> + Send + Sync
{
    move |_ctx: Context, event: Event<Vec<u8>>| {
        let key = String::from_utf8_lossy(event.key.as_deref().unwrap_or_default()).into_owned();
        if key == "big" {
            return std::future::ready(Err(HandlerError::permanent("no: ".repeat(300))));
        }
        seen.lock().unwrap().push(key);
        std::future::ready(Ok(()))
    }
}

/// A consumer of `topic` whose producer refuses copies over 4 000 bytes, running `handler`.
struct Running {
    seen: Arc<Mutex<Vec<String>>>,
    metrics: gregor_consumer::ConsumerMetrics,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<Result<(), ConsumerError>>,
}

impl Running {
    async fn start(topic: &str, retry_tiers: &str) -> anyhow::Result<Self> {
        let config = consumer_config(
            &unique_name("g"),
            None,
            &[
                ("GREGOR_CONSUMER_IN_PLACE_ATTEMPTS", "1"),
                ("GREGOR_CONSUMER_RETRY_TIERS", retry_tiers),
                // A message fits; its copy with diagnostics may not.
                ("KAFKA_MESSAGE_MAX_BYTES", "4000"),
            ],
        )?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let consumer = Consumer::builder(config)
            .route(topic, Raw, handler(seen.clone()))
            .build()
            .await?;
        let metrics = consumer.metrics();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(consumer.run(shutdown.clone()));
        Ok(Self {
            seen,
            metrics,
            shutdown,
            running,
        })
    }

    /// Waits until the handler took the message with `key`.
    async fn handled(&self, key: &str) -> anyhow::Result<()> {
        wait_until(WAIT, "the next message of the partition", || async {
            Ok(self
                .seen
                .lock()
                .unwrap()
                .iter()
                .any(|k| k == key)
                .then_some(()))
        })
        .await
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.running).await???;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_copy_too_large_is_sent_without_its_payload_and_the_partition_moves_on()
-> anyhow::Result<()> {
    let topic = unique_name("fwd-large");
    let dlq = format!("{topic}.dlq");
    kafka::create_topic_family(&topic, 1, 0).await?;
    let consumer = Running::start(&topic, "none").await?;

    kafka::produce(
        &topic,
        vec![
            Record::new("big", vec![b'x'; 3900]).header(h::CE_ID, "id-big"),
            Record::new("after", "small").header(h::CE_ID, "id-after"),
        ],
    )
    .await?;
    let copies = kafka::read_topic(&dlq, 1, WAIT).await?;
    let copy = &copies[0];
    assert_eq!(copy.key.as_deref(), Some(&b"big"[..]));
    assert_eq!(
        copy.header(h::PAYLOAD_OMITTED).as_deref(),
        Some("too-large")
    );
    assert_eq!(copy.header(h::CE_ID).as_deref(), Some("id-big"));
    assert_eq!(copy.header(h::ERROR_KIND).as_deref(), Some("permanent"));
    assert_eq!(copy.header(h::ORIGINAL_OFFSET).as_deref(), Some("0"));
    let reference: serde_json::Value =
        serde_json::from_slice(copy.payload.as_deref().unwrap_or_default())?;
    assert_eq!(reference["topic"], topic.as_str(), "{reference}");
    assert_eq!(reference["partition"], 0, "{reference}");
    assert_eq!(reference["offset"], 0, "{reference}");
    assert_eq!(reference["bytes"], 3900, "{reference}");

    consumer.handled("after").await?;
    assert!(forward_failures(&consumer.metrics, "too_large") >= 1.0);
    consumer.stop().await
}

/// Headers alone can make a copy too large: the smallest copy leaves them out (keeping a
/// short `ce_id`), so one hostile message cannot stop the consumer on every restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_copy_with_huge_headers_is_sent_without_them() -> anyhow::Result<()> {
    let topic = unique_name("fwd-headers");
    let dlq = format!("{topic}.dlq");
    kafka::create_topic_family(&topic, 1, 0).await?;
    let consumer = Running::start(&topic, "none").await?;

    kafka::produce(
        &topic,
        vec![
            Record::new("big", "small")
                .header(h::CE_ID, "id-headers")
                .header("blob", vec![b'h'; 3900]),
            Record::new("after", "small").header(h::CE_ID, "id-after"),
        ],
    )
    .await?;
    let copies = kafka::read_topic(&dlq, 1, WAIT).await?;
    let copy = &copies[0];
    assert_eq!(
        copy.header(h::HEADERS_OMITTED).as_deref(),
        Some("too-large")
    );
    assert_eq!(
        copy.header(h::PAYLOAD_OMITTED).as_deref(),
        Some("too-large")
    );
    assert_eq!(copy.header(h::CE_ID).as_deref(), Some("id-headers"));
    assert!(copy.header("blob").is_none(), "the huge header is left out");
    consumer.handled("after").await?;
    consumer.stop().await
}

/// nisshi has no ACLs and keeps serving a deleted topic, so the broker that refuses the
/// dead-letter copy is librdkafka's mock cluster, told to answer produce requests with
/// TOPIC_AUTHORIZATION_FAILED: the consumer must stop and say which topic and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_that_refuses_writes_stops_the_consumer_naming_it() -> anyhow::Result<()>
{
    let mock = MockCluster::new(1)?;
    let bootstrap = mock.bootstrap_servers();
    let topic = unique_name("fwd-denied");
    let dlq = format!("{topic}.dlq");
    mock.create_topic(&topic, 1, 1)?;
    mock.create_topic(&dlq, 1, 1)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    producer
        .send(
            FutureRecord::to(&topic).key("big").payload("poison"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    // Every later produce request (the consumer's copies) is refused.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 50],
    );

    let config = consumer_config(
        &unique_name("g"),
        None,
        &[
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
            ("GREGOR_CONSUMER_IN_PLACE_ATTEMPTS", "1"),
            ("GREGOR_CONSUMER_RETRY_TIERS", "none"),
            ("GREGOR_CONSUMER_DLQ_DEPTH_INTERVAL_MS", "0"),
        ],
    )?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = Consumer::builder(config)
        .route(&topic, Raw, handler(seen))
        .build()
        .await?;
    let metrics = consumer.metrics();
    let shutdown = CancellationToken::new();
    let result = tokio::time::timeout(WAIT, consumer.run(shutdown.clone()))
        .await
        .map_err(|_| anyhow::anyhow!("the consumer kept running for {WAIT:?}: a silent stall"))?;
    let error = result.expect_err("the consumer stopped without an error");
    assert!(matches!(error, ConsumerError::Forward(_)), "{error:?}");
    let text = error.to_string();
    assert!(text.contains(&dlq), "names the topic: {text}");
    assert!(
        text.contains(&format!("{topic}/0@0")),
        "names the message: {text}"
    );
    assert!(
        text.to_lowercase().contains("authorization"),
        "names the cause: {text}"
    );
    assert!(forward_failures(&metrics, "unwritable") >= 1.0);
    Ok(())
}

/// A retry copy must carry its payload to the handler: one too large even with brief
/// diagnostics is dead-lettered (without its payload) instead of blocking the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_copy_too_large_is_dead_lettered_instead() -> anyhow::Result<()> {
    let topic = unique_name("fwd-retry-large");
    kafka::create_topic_family(&topic, 1, 1).await?;
    let consumer = Running::start(&topic, "100ms").await?;
    kafka::produce(
        &topic,
        vec![
            Record::new("big", vec![b'x'; 3950]).header(h::CE_ID, "id-big"),
            Record::new("after", "small").header(h::CE_ID, "id-after"),
        ],
    )
    .await?;
    let copies = kafka::read_topic(&format!("{topic}.dlq"), 1, WAIT).await?;
    assert_eq!(
        copies[0].header(h::PAYLOAD_OMITTED).as_deref(),
        Some("too-large")
    );
    assert_eq!(copies[0].header(h::ATTEMPT).as_deref(), Some("1"));
    consumer.handled("after").await?;
    consumer.stop().await?;
    let retried = kafka::read_to_end(&format!("{topic}.retry.1"), Duration::from_secs(5)).await?;
    assert!(retried.is_empty(), "no stub on the retry tier: {retried:?}");
    Ok(())
}
