//! The worker against the real broker (`KAFKA_BOOTSTRAP_SERVERS`, as
//! `eval "$(./scripts/services env)"` sets it): paths no subscription reaches.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::{Offset, Timestamp, TopicPartitionList};

use gregor_wire::headers as h;

use super::*;

fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").expect(
        "KAFKA_BOOTSTRAP_SERVERS is not set: run `./scripts/services up && \
         eval \"$(./scripts/services env)\"`",
    )
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

async fn create_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

/// The headers and payload of the first message of partition 0 of `topic`.
fn read_first(bootstrap: &str, topic: &str) -> (HashMap<String, String>, Option<Vec<u8>>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(0))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = result.unwrap();
        let headers = msg
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                        (h.key.to_owned(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        return (headers, msg.payload().map(<[u8]>::to_vec));
    }
    panic!("nothing arrived on {topic} within 30 s");
}

fn worker_without_routes(bootstrap: &str, group: &str) -> Worker {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all");
    let metrics = ConsumerMetrics::new().unwrap();
    let forwarder = Forwarder::new(
        config,
        None,
        metrics.producer_rebuilds.clone(),
        metrics.forward_failures.clone(),
        gregor_telemetry::health::Check::default(),
    )
    .unwrap();
    Worker {
        group: Arc::from(group),
        routes: Default::default(),
        hot: Default::default(),
        pool: None,
        forwarder: Arc::new(forwarder),
        offsets: Arc::new(Offsets::default()),
        progress: Arc::new(Notify::new()),
        metrics,
        halt: CancellationToken::new(),
        halted: std::sync::Mutex::new(None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_a_topic_without_a_route_is_dead_lettered_as_permanent() {
    let bootstrap = bootstrap();
    let stray = unique("stray");
    let dlq = dlq_topic(&stray);
    create_topic(&bootstrap, &dlq).await;
    let worker = worker_without_routes(&bootstrap, "g-unrouted");
    let msg = OwnedMessage::new(
        Some(b"payload".to_vec()),
        Some(b"key-1".to_vec()),
        stray.clone(),
        Timestamp::CreateTime(1_700_000_000_000),
        0,
        42,
        Some(OwnedHeaders::new().insert(Header {
            key: h::CE_ID,
            value: Some("id-stray"),
        })),
    );
    let token = CancellationToken::new();
    let outcome = tokio::time::timeout(Duration::from_secs(60), worker.process(&msg, &token))
        .await
        .expect("the stray message was not finished within 60 s");
    assert_eq!(
        outcome,
        Outcome::DeadLettered,
        "a message without a route is dead-lettered, not abandoned (which would stop its lane)"
    );
    let stats = worker.metrics.stats();
    assert_eq!(stats.dead_lettered, 1, "{stats:?}");

    let (headers, payload) = read_first(&bootstrap, &dlq);
    assert_eq!(payload.as_deref(), Some(&b"payload"[..]));
    let header = |name: &str| headers.get(name).map(String::as_str);
    assert_eq!(header(h::CE_ID), Some("id-stray"));
    assert_eq!(header(h::ERROR_KIND), Some("permanent"));
    assert_eq!(header(h::ORIGINAL_TOPIC), Some(stray.as_str()));
    assert_eq!(header(h::ORIGINAL_OFFSET), Some("42"));
    assert_eq!(header(h::CONSUMER_GROUP), Some("g-unrouted"));
    let message = header(h::ERROR_MESSAGE).unwrap_or_default();
    assert!(
        message.contains("no route for topic") && message.contains(&stray),
        "a clear message: {message}"
    );
}

/// A forwarding producer in librdkafka's fatal state is rebuilt and the copy still arrives
/// (issue 14, defect 4). A real broker cannot make an idempotent producer fatal on demand:
/// librdkafka's mock cluster answers the first produce request with
/// OUT_OF_ORDER_SEQUENCE_NUMBER, which for the head-of-line request is a sequence
/// desynchronisation that librdkafka makes fatal (rdkafka_request.c).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_forwarding_producer_is_rebuilt_and_the_copy_arrives() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let mock = MockCluster::new(1).unwrap();
    let stray = unique("fatal");
    let dlq = dlq_topic(&stray);
    mock.create_topic(&dlq, 1, 1).unwrap();
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    let bootstrap = mock.bootstrap_servers();
    let worker = worker_without_routes(&bootstrap, "g-fatal");
    let msg = OwnedMessage::new(
        Some(b"payload".to_vec()),
        Some(b"key-1".to_vec()),
        stray.clone(),
        Timestamp::CreateTime(1_700_000_000_000),
        0,
        7,
        None,
    );
    let token = CancellationToken::new();
    let outcome = tokio::time::timeout(Duration::from_secs(60), worker.process(&msg, &token))
        .await
        .expect("the copy was not forwarded within 60 s: the fatal producer was never rebuilt");
    assert_eq!(outcome, Outcome::DeadLettered);
    assert_eq!(worker.metrics.producer_rebuilds.get(), 1, "rebuilt once");
    assert!(
        worker
            .metrics
            .forward_failures
            .with_label_values(&["producer"])
            .get()
            >= 1
    );
    let (headers, payload) = read_first(&bootstrap, &dlq);
    assert_eq!(payload.as_deref(), Some(&b"payload"[..]));
    assert_eq!(
        headers.get(h::ORIGINAL_OFFSET).map(String::as_str),
        Some("7")
    );
}
