//! A producer in librdkafka's fatal state is rebuilt and nothing is lost or reordered (issue
//! 13, defect 4). A real broker cannot make an idempotent producer fatal on demand, so the
//! broker here is librdkafka's mock cluster, told to answer the first produce request with
//! OUT_OF_ORDER_SEQUENCE_NUMBER: for the head-of-line request that is a sequence
//! desynchronisation, which librdkafka makes fatal. The outbox is the real PostgreSQL.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::Duration;

use gregor_integration_tests::InProcessRelay;
use gregor_outbox::{OutboxMessage, enqueue_batch};
use gregor_testkit::{TestDb, kafka, unique_name};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_is_rebuilt_and_the_key_keeps_its_order() -> anyhow::Result<()> {
    let mock = MockCluster::new(1)?;
    let topic = unique_name("fatal");
    mock.create_topic(&topic, 1, 1)?;
    let bootstrap = mock.bootstrap_servers();
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );

    let db = TestDb::create("fatalproducer").await?;
    let mut tx = db.pool.begin().await?;
    enqueue_batch(
        &mut tx,
        (0..20).map(|i| {
            OutboxMessage::new(&topic, "step", "/t")
                .key("one-key")
                .payload(i.to_string().into_bytes())
        }),
    )
    .await?;
    tx.commit().await?;
    let relay = InProcessRelay::start(&db.url, &bootstrap, &[])?;

    // Without a rebuild every row fails forever; with it, all of them arrive. Redelivered
    // copies are allowed (at least once); first occurrences must be in order.
    let got = kafka::read_topic_on(&bootstrap, &topic, 20, Duration::from_secs(60)).await?;
    let mut firsts = Vec::new();
    let mut all = got;
    all.sort_by_key(|m| m.offset);
    for m in &all {
        let seq: u32 = String::from_utf8(m.payload.clone().unwrap_or_default())?.parse()?;
        if !firsts.contains(&seq) {
            firsts.push(seq);
        }
    }
    assert_eq!(firsts, (0..20).collect::<Vec<_>>());
    relay.stop().await
}
