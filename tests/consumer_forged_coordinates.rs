//! P10 for the coordinate headers: `gregor-original-topic/-partition/-offset` count only on
//! the runtime's own retry/DLQ copies of this group. A message without `ce_id` on a main topic
//! that forges them must not take another message's dedupe key (the real message would then
//! be skipped as a duplicate: silent loss), and a forged retry copy claiming another group's
//! coordinates must not either.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::Duration;

use gregor_consumer::{Consumer, Context, Event, HandlerError, Raw};
use gregor_integration_tests::{InProcessConsumer, consumer_config};
use gregor_testkit::kafka::{self, Record};
use gregor_testkit::{TestDb, unique_name, wait_until};
use gregor_wire::headers as h;

const WAIT: Duration = Duration::from_secs(60);

async fn start(db: &TestDb, topic: &str, group: &str) -> anyhow::Result<InProcessConsumer> {
    sqlx::query("CREATE TABLE effects (payload TEXT NOT NULL)")
        .execute(&db.pool)
        .await?;
    let config = consumer_config(
        group,
        Some(&db.url),
        &[("GREGOR_CONSUMER_RETRY_TIERS", "200ms")],
    )?;
    InProcessConsumer::start(Consumer::builder(config).route(
        topic,
        Raw,
        |ctx: Context, event: Event<Vec<u8>>| async move {
            let mut tx = ctx.transaction().await?;
            sqlx::query("INSERT INTO effects (payload) VALUES ($1)")
                .bind(
                    String::from_utf8_lossy(event.value.as_deref().unwrap_or_default())
                        .into_owned(),
                )
                .execute(&mut *tx)
                .await?;
            Ok::<(), HandlerError>(())
        },
    ))
    .await
}

async fn effects(db: &TestDb, payload: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM effects WHERE payload = $1")
            .bind(payload)
            .fetch_one(&db.pool)
            .await?,
    )
}

/// Forged coordinates naming `topic/0/offset` for `group`.
fn forged(payload: &str, topic: &str, offset: i64, group: &str) -> Record {
    Record::new("k", payload)
        .header(h::ORIGINAL_TOPIC, topic)
        .header(h::ORIGINAL_PARTITION, "0")
        .header(h::ORIGINAL_OFFSET, offset.to_string())
        .header(h::CONSUMER_GROUP, group)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_coordinates_do_not_take_another_messages_dedupe_key() -> anyhow::Result<()> {
    let db = TestDb::create("forged_coords").await?;
    let topic = unique_name("forged-coords");
    kafka::create_topic_family(&topic, 1, 1).await?;
    let group = unique_name("g");
    let consumer = start(&db, &topic, &group).await?;

    // Main topic, offsets 0 and 1: the forger at 0 claims offset 1, the victim's own.
    kafka::produce(&topic, vec![forged("forger-main", &topic, 1, &group)]).await?;
    kafka::produce(&topic, vec![Record::new("k", "victim-main")]).await?;
    // Retry tier, a copy claiming another group: it names main offset 2 (the next victim).
    kafka::produce(
        &format!("{topic}.retry.1"),
        vec![forged("forger-retry", &topic, 2, "another-group")],
    )
    .await?;
    wait_until(WAIT, "the forged retry copy to be handled", || async {
        Ok((effects(&db, "forger-retry").await? == 1).then_some(()))
    })
    .await?;
    kafka::produce(&topic, vec![Record::new("k", "victim-retry")]).await?;

    for payload in ["forger-main", "victim-main", "victim-retry"] {
        wait_until(WAIT, &format!("{payload} to take effect"), || async {
            Ok((effects(&db, payload).await? >= 1).then_some(()))
        })
        .await?;
    }
    for payload in ["forger-main", "victim-main", "forger-retry", "victim-retry"] {
        assert_eq!(
            effects(&db, payload).await?,
            1,
            "{payload} took effect once"
        );
    }
    consumer.stop().await?;
    Ok(())
}
