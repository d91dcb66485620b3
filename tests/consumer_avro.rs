//! Avro through the consumer runtime: a registry outage pauses consumption without
//! dead-lettering anything, and undecodable Avro is dead-lettered with the precise reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gregor_avro::{AvroSerializer, RegistryClient, RegistryConfig, SerializerConfig, wire};
use gregor_consumer::{Avro, Consumer, Context, Event};
use gregor_integration_tests::{InProcessConsumer, consumer_config};
use gregor_testkit::kafka::{self, Record};
use gregor_testkit::{PrivateRegistry, TestDb, unique_name, wait_until};
use gregor_wire::headers as h;
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(60);

const V1: &str = r#"{"type":"record","name":"Parcel","namespace":"t","fields":[
  {"name":"id","type":"long"}]}"#;
const V2: &str = r#"{"type":"record","name":"Parcel","namespace":"t","fields":[
  {"name":"id","type":"long"},{"name":"insured","type":"boolean","default":false}]}"#;

#[derive(Debug, Serialize, Deserialize)]
struct Parcel {
    id: i64,
}

#[derive(Debug, Serialize)]
struct ParcelV2 {
    id: i64,
    insured: bool,
}

async fn produce<T: Serialize>(
    avro: &AvroSerializer,
    topic: &str,
    values: impl IntoIterator<Item = T>,
) -> anyhow::Result<()> {
    let mut records = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        records.push(Record::new(
            format!("k{}", i % 4),
            avro.serialize(topic, &value).await?,
        ));
    }
    kafka::produce(topic, records).await
}

#[tokio::test]
async fn registry_outage_pauses_consumption_and_nothing_is_dead_lettered() -> anyhow::Result<()> {
    // Schemas survive the registry's restart because it stores them in PostgreSQL.
    let db = TestDb::create("registry_outage").await?;
    let mut registry = PrivateRegistry::start_on_database(&db.url).await?;
    let topic = unique_name("avro-outage");
    kafka::create_topic_family(&topic, 2, 3).await?;
    let client = RegistryClient::new(RegistryConfig::new(registry.url()))?;
    let v1 = AvroSerializer::new(client.clone(), V1, SerializerConfig::default())?;
    let v2 = AvroSerializer::new(client, V2, SerializerConfig::default())?;
    // Both writer ids exist before the outage; the consumer has only seen v1 when it starts.
    v2.schema_id(&topic).await?;

    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let mut registry_config = RegistryConfig::new(registry.url());
    registry_config.timeout = Duration::from_millis(500);
    registry_config.retries = 0;
    let decoder = Avro::<Parcel>::new(RegistryClient::new(registry_config)?, V1)?;
    let config = consumer_config(&unique_name("g"), None, &[])?;
    let consumer = InProcessConsumer::start(Consumer::builder(config).route(
        &topic,
        decoder,
        move |_ctx: Context, _event: Event<Parcel>| {
            count.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        },
    ))
    .await?;

    produce(&v1, &topic, (0..50).map(|id| Parcel { id })).await?;
    wait_until(WAIT, "the first 50 events", || async {
        Ok((handled.load(Ordering::SeqCst) == 50).then_some(()))
    })
    .await?;

    // The registry goes away; events with a writer schema the consumer has not cached arrive.
    registry.stop()?;
    produce(
        &v2,
        &topic,
        (50..100).map(|id| ParcelV2 { id, insured: true }),
    )
    .await?;
    wait_until(WAIT, "the consumer to hit the outage", || async {
        Ok((consumer.metrics.stats().failed_attempts > 0).then_some(()))
    })
    .await?;
    assert_eq!(
        handled.load(Ordering::SeqCst),
        50,
        "nothing decoded without the registry"
    );
    assert_eq!(consumer.metrics.stats().dead_lettered, 0);

    // It comes back: consumption resumes by itself.
    registry.resume().await?;
    wait_until(
        WAIT,
        "all 100 events after the registry returned",
        || async { Ok((handled.load(Ordering::SeqCst) == 100).then_some(())) },
    )
    .await?;
    let stats = consumer.metrics.stats();
    consumer.stop().await?;
    assert_eq!((stats.dead_lettered, stats.retried), (0, 0));
    let dead = kafka::read_to_end(&format!("{topic}.dlq"), Duration::from_secs(5)).await?;
    assert!(dead.is_empty(), "no DLQ entries, found {}", dead.len());
    Ok(())
}

#[tokio::test]
async fn undecodable_avro_is_dead_lettered_with_the_precise_reason() -> anyhow::Result<()> {
    let registry = PrivateRegistry::start().await?;
    let topic = unique_name("avro-dlq");
    kafka::create_topic_family(&topic, 1, 3).await?;
    let client = RegistryClient::new(RegistryConfig::new(registry.url()))?;
    let v1 = AvroSerializer::new(client.clone(), V1, SerializerConfig::default())?;
    let good = v1.serialize(&topic, &Parcel { id: 1 }).await?;
    // A writer schema the consumer's reader cannot read (it lacks the required `id`).
    let other = AvroSerializer::new(
        client.clone(),
        r#"{"type":"record","name":"Parcel","namespace":"t","fields":[{"name":"code","type":"string"}]}"#,
        SerializerConfig {
            strategy: gregor_avro::SubjectNameStrategy::TopicName,
            auto_register: true,
        },
    )?;
    #[derive(Serialize)]
    struct Coded {
        code: String,
    }
    let incompatible = other
        .serialize(&unique_name("elsewhere"), &Coded { code: "x".into() })
        .await?;

    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let config = consumer_config(&unique_name("g"), None, &[])?;
    let consumer = InProcessConsumer::start(Consumer::builder(config).route(
        &topic,
        Avro::<Parcel>::new(client, V1)?,
        move |_ctx: Context, _event: Event<Parcel>| {
            count.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        },
    ))
    .await?;
    let cases = [
        (
            "unknown-id",
            wire::frame(424_242, &[2]),
            "schema id 424242 is unknown",
        ),
        (
            "magic",
            [&[7u8][..], &good[1..]].concat(),
            "wrong magic byte 0x07",
        ),
        ("truncated", good[..good.len() - 1].to_vec(), "truncated"),
        (
            "incompatible",
            incompatible.clone(),
            "incompatible with the reader",
        ),
        (
            "trailing",
            [good.as_slice(), &[0]].concat(),
            "1 trailing bytes",
        ),
    ];
    let mut records: Vec<Record> = cases
        .iter()
        .map(|(key, bytes, _)| Record::new(*key, bytes.clone()).header(h::CE_ID, *key))
        .collect();
    records.push(Record::new("good", good.clone()));
    kafka::produce(&topic, records).await?;

    let dead = kafka::read_topic(&format!("{topic}.dlq"), cases.len(), WAIT).await?;
    for (key, _, reason) in &cases {
        let entry = dead
            .iter()
            .find(|d| d.key.as_deref() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("{key} not dead-lettered"));
        assert_eq!(
            entry.header(h::ERROR_KIND).as_deref(),
            Some("decode"),
            "{key}"
        );
        assert_eq!(
            entry.header(h::ATTEMPT).as_deref(),
            Some("1"),
            "{key}: no retries"
        );
        let message = entry.header(h::ERROR_MESSAGE).unwrap_or_default();
        assert!(
            message.contains(reason),
            "{key}: {message:?} lacks {reason:?}"
        );
    }
    wait_until(WAIT, "the good event", || async {
        Ok((handled.load(Ordering::SeqCst) == 1).then_some(()))
    })
    .await?;
    consumer.stop().await?;
    Ok(())
}
