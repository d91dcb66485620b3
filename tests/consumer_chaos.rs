//! Two shipping-service processes in one group; one is SIGKILLed mid-run and restarted.
//! Every event's effect exists exactly once, and committed offsets never run ahead of effects.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::time::Duration;

use gregor_avro::{AvroSerializer, RegistryClient, RegistryConfig, SerializerConfig};
use gregor_testkit::kafka::{self, Record};
use gregor_testkit::process::Proc;
use gregor_testkit::{PrivateRegistry, TestDb, kafka_bootstrap, unique_name, wait_until};
use gregor_wire::headers as h;
use sqlx::PgPool;

const EVENTS: i64 = 20_000;

/// order-service's `order.placed`, written with its schema as order-service writes it.
#[derive(serde::Serialize)]
struct OrderPlaced {
    order_id: String,
    customer: String,
    customer_seq: i64,
    amount_cents: i64,
    currency: String,
}
const PARTITIONS: i32 = 8;

async fn shipped(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(DISTINCT event_id) FROM shipments")
            .fetch_one(pool)
            .await?,
    )
}

/// Every offset below a partition's committed offset has its effect.
async fn assert_commits_follow_effects(
    pool: &PgPool,
    committed: &HashMap<i32, i64>,
) -> anyhow::Result<()> {
    for (&partition, &offset) in committed {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT \"offset\") FROM shipments
             WHERE \"partition\" = $1 AND \"offset\" < $2",
        )
        .bind(partition)
        .bind(offset)
        .fetch_one(pool)
        .await?;
        assert_eq!(
            done, offset,
            "partition {partition}: committed {offset} but only {done} effects below it"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_consumer_loses_nothing_and_duplicates_no_effect() -> anyhow::Result<()> {
    let db = TestDb::create("cchaos").await?;
    let topic = unique_name("shipping");
    kafka::create_topic_family(&topic, PARTITIONS, 1).await?;
    let group = unique_name("shipping");
    let registry = PrivateRegistry::start().await?;
    let avro = AvroSerializer::new(
        RegistryClient::new(RegistryConfig::new(registry.url()))?,
        include_str!("../schemas/orders/order_placed.avsc"),
        SerializerConfig::default(),
    )?;
    let mut records = Vec::new();
    for i in 0..EVENTS {
        let id = uuid::Uuid::now_v7().to_string();
        let order = OrderPlaced {
            order_id: id.clone(),
            customer: format!("c{}", i % 100),
            customer_seq: i,
            amount_cents: 1000 + i,
            currency: "EUR".into(),
        };
        let body = avro.serialize(&topic, &order).await?;
        records.push(Record::new(order.customer, body).header(h::CE_ID, id));
    }
    kafka::produce(&topic, records).await?;

    let bootstrap = kafka_bootstrap()?;
    let registry_url = registry.url();
    let env = [
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
        ("DATABASE_URL", db.url.as_str()),
        ("GREGOR_CONSUMER_GROUP", group.as_str()),
        ("SHIPPING_TOPIC", topic.as_str()),
        ("SCHEMA_REGISTRY_URL", registry_url.as_str()),
        ("GREGOR_CONSUMER_RETRY_TIERS", "1s"),
        ("GREGOR_CONSUMER_COMMIT_INTERVAL_MS", "100"),
        ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ("KAFKA_HEARTBEAT_INTERVAL_MS", "500"),
        ("SHIPPING_STATS_INTERVAL_MS", "60000"),
    ];
    let mut victim = Proc::spawn("shipping-service", &env)?;
    let mut survivor = Proc::spawn("shipping-service", &env)?;
    // The shipments table is created by the service itself.
    wait_until(
        Duration::from_secs(120),
        "a quarter of the effects",
        || async {
            let n = shipped(&db.pool).await.unwrap_or(0);
            Ok((n >= EVENTS / 4).then_some(()))
        },
    )
    .await?;
    for p in [&mut victim, &mut survivor] {
        assert!(
            p.try_wait()?.is_none(),
            "both consumers run before the kill:\n{}",
            p.log()
        );
    }
    victim.kill9()?;
    let committed = kafka::committed_offsets(&group, &topic)?;
    eprintln!("committed at the kill: {committed:?}");
    assert!(
        !committed.is_empty(),
        "some offsets were committed before the kill"
    );
    assert_commits_follow_effects(&db.pool, &committed).await?;

    let mut restarted = Proc::spawn("shipping-service", &env)?;
    wait_until(Duration::from_secs(240), "every effect", || async {
        Ok((shipped(&db.pool).await? == EVENTS).then_some(()))
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\nsurvivor:\n{}\nrestarted:\n{}",
            survivor.log(),
            restarted.log()
        )
    })?;
    for p in [&survivor, &restarted] {
        p.signal("TERM")?;
    }
    for p in [&mut survivor, &mut restarted] {
        let status = p.wait()?;
        assert!(status.success(), "stopped with {status}:\n{}", p.log());
    }

    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM shipments")
            .fetch_one(&db.pool)
            .await?;
    assert_eq!(
        (rows, distinct),
        (EVENTS, EVENTS),
        "each effect exactly once"
    );
    let committed = kafka::committed_offsets(&group, &topic)?;
    assert_commits_follow_effects(&db.pool, &committed).await?;
    assert_eq!(
        committed.values().sum::<i64>(),
        EVENTS,
        "everything committed at the end"
    );
    let duplicates: i64 =
        sqlx::query_scalar("SELECT count(*) FROM gregor_inbox WHERE consumer_group = $1")
            .bind(&group)
            .fetch_one(&db.pool)
            .await?;
    assert_eq!(duplicates, EVENTS, "one dedupe row per event");
    Ok(())
}
