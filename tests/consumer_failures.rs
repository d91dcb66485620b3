//! Failure routing of the consumer runtime: retries through tiers, the dead-letter topic and
//! its diagnostics, replay, retry timing across a restart, malformed payloads and tombstones.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use gregor_consumer::{Consumer, Context, Event, HandlerError, Json, Raw};
use gregor_integration_tests::{InProcessConsumer, consumer_config};
use gregor_testkit::kafka::{self, Record};
use gregor_testkit::{TestDb, process, unique_name, wait_until};
use gregor_wire::headers as h;

const WAIT: Duration = Duration::from_secs(60);

async fn effects_table(db: &TestDb) -> anyhow::Result<()> {
    sqlx::query(
        "CREATE TABLE effects (event_id TEXT NOT NULL, attempt INTEGER NOT NULL,
                               at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
    )
    .execute(&db.pool)
    .await?;
    Ok(())
}

async fn effect(ctx: &Context, event: &Event<Vec<u8>>) -> Result<(), HandlerError> {
    let mut tx = ctx.transaction().await?;
    sqlx::query("INSERT INTO effects (event_id, attempt) VALUES ($1, $2)")
        .bind(event.id().map(str::to_owned))
        .bind(i32::try_from(event.attempt).unwrap())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn count(db: &TestDb, event_id: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM effects WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&db.pool)
            .await?,
    )
}

fn event(key: &str, id: &str) -> Record {
    Record::new(key, format!("payload of {id}"))
        .header(h::CE_ID, id)
        .header(h::CE_TYPE, "test.event")
        .header("x-custom", vec![0u8, 159, 146, 150])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_twice_then_succeeds_with_one_effect_and_visible_attempts() -> anyhow::Result<()> {
    let db = TestDb::create("retry_ok").await?;
    effects_table(&db).await?;
    let topic = unique_name("retry-ok");
    kafka::create_topic_family(&topic, 2, 2).await?;
    let config = consumer_config(
        &unique_name("g"),
        Some(&db.url),
        &[
            ("GREGOR_CONSUMER_IN_PLACE_ATTEMPTS", "1"),
            ("GREGOR_CONSUMER_RETRY_TIERS", "200ms,200ms"),
        ],
    )?;
    let consumer = InProcessConsumer::start(Consumer::builder(config).route(
        &topic,
        Raw,
        |ctx: Context, event: Event<Vec<u8>>| async move {
            if event.attempt <= 2 {
                return Err(HandlerError::retryable(format!("flaky #{}", event.attempt)));
            }
            effect(&ctx, &event).await
        },
    ))
    .await?;
    kafka::produce(&topic, vec![event("k1", "id-flaky")]).await?;
    wait_until(WAIT, "the third attempt's effect", || async {
        Ok((count(&db, "id-flaky").await? == 1).then_some(()))
    })
    .await?;
    let attempt: i32 =
        sqlx::query_scalar("SELECT attempt FROM effects WHERE event_id = 'id-flaky'")
            .fetch_one(&db.pool)
            .await?;
    assert_eq!(attempt, 3, "the effect records the attempt that succeeded");
    let stats = consumer.metrics.stats();
    assert_eq!(stats.failed_attempts, 2);
    assert_eq!(stats.retried, 2);
    assert_eq!(stats.handled, 1);
    consumer.stop().await?;
    assert_eq!(count(&db, "id-flaky").await?, 1, "exactly one effect");
    let dlq = kafka::read_to_end(&format!("{topic}.dlq"), Duration::from_secs(10)).await?;
    assert!(dlq.is_empty(), "nothing dead-lettered");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_failing_is_dead_lettered_with_diagnostics_and_replayed_exactly_once()
-> anyhow::Result<()> {
    let db = TestDb::create("dlq").await?;
    effects_table(&db).await?;
    let topic = unique_name("dlq");
    let dlq = format!("{topic}.dlq");
    kafka::create_topic_family(&topic, 3, 1).await?;
    let group = unique_name("g");
    let broken = Arc::new(AtomicBool::new(true));
    let config = consumer_config(
        &group,
        Some(&db.url),
        &[
            ("GREGOR_CONSUMER_IN_PLACE_ATTEMPTS", "2"),
            ("GREGOR_CONSUMER_RETRY_TIERS", "100ms"),
        ],
    )?;
    let flag = broken.clone();
    let consumer = InProcessConsumer::start(Consumer::builder(config).route(
        &topic,
        Raw,
        move |ctx: Context, event: Event<Vec<u8>>| {
            let broken = flag.load(Ordering::SeqCst);
            async move {
                if broken {
                    return Err(HandlerError::retryable("downstream is down"));
                }
                effect(&ctx, &event).await
            }
        },
    ))
    .await?;
    kafka::produce(&topic, vec![event("order-7", "id-poison")]).await?;
    let copies = kafka::read_topic(&dlq, 1, WAIT).await?;
    let copy = &copies[0];
    assert_eq!(copy.key.as_deref(), Some(&b"order-7"[..]));
    assert_eq!(copy.payload.as_deref(), Some(&b"payload of id-poison"[..]));
    assert_eq!(copy.header(h::CE_ID).as_deref(), Some("id-poison"));
    assert_eq!(copy.header(h::CE_TYPE).as_deref(), Some("test.event"));
    let custom = copy.headers.iter().find(|(k, _)| k == "x-custom").unwrap();
    assert_eq!(
        custom.1.as_deref(),
        Some(&[0u8, 159, 146, 150][..]),
        "binary header kept"
    );
    assert_eq!(
        copy.header(h::ORIGINAL_TOPIC).as_deref(),
        Some(topic.as_str())
    );
    assert!(
        copy.header(h::ORIGINAL_PARTITION)
            .unwrap()
            .parse::<i32>()
            .is_ok()
    );
    assert_eq!(copy.header(h::ORIGINAL_OFFSET).as_deref(), Some("0"));
    assert!(
        copy.header(h::ORIGINAL_TIMESTAMP)
            .unwrap()
            .parse::<i64>()
            .is_ok()
    );
    assert_eq!(
        copy.header(h::CONSUMER_GROUP).as_deref(),
        Some(group.as_str())
    );
    assert_eq!(
        copy.header(h::ATTEMPT).as_deref(),
        Some("3"),
        "2 in place + 1 tier"
    );
    assert_eq!(copy.header(h::ERROR_KIND).as_deref(), Some("retryable"));
    assert_eq!(
        copy.header(h::ERROR_MESSAGE).as_deref(),
        Some("downstream is down")
    );
    assert!(DateTime::parse_from_rfc3339(&copy.header(h::FIRST_FAILURE_AT).unwrap()).is_ok());
    assert!(
        copy.header(h::NOT_BEFORE).is_none(),
        "only retry copies carry a due time"
    );
    assert_eq!(
        copy.headers.iter().filter(|(k, _)| k == h::ATTEMPT).count(),
        1,
        "diagnostics replaced, not stacked"
    );
    assert_eq!(count(&db, "id-poison").await?, 0);

    // The handler is fixed; replay twice (the second run from the beginning: without it a
    // second run replays nothing, ADR 0011): one effect, the second copy is a counted duplicate.
    broken.store(false, Ordering::SeqCst);
    let env = [(
        "KAFKA_BOOTSTRAP_SERVERS",
        gregor_testkit::kafka_bootstrap()?,
    )];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for round in 1..=2 {
        let args: &[&str] = if round == 1 {
            &["dlq", "replay", &dlq]
        } else {
            &["dlq", "replay", &dlq, "--from-beginning"]
        };
        let out = process::run("gregor", args, &env)?;
        assert!(
            out.status.success(),
            "replay {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_until(WAIT, "the replayed copy handled", || async {
            let s = consumer.metrics.stats();
            Ok((s.handled + s.duplicates >= round).then_some(()))
        })
        .await?;
    }
    assert_eq!(count(&db, "id-poison").await?, 1, "replayed exactly once");
    let stats = consumer.metrics.stats();
    assert_eq!(
        (stats.handled, stats.duplicates, stats.dead_lettered),
        (1, 1, 1)
    );
    consumer.stop().await?;
    Ok(())
}

/// (event id, attempt, when the handler started)
type Seen = Arc<Mutex<Vec<(String, u32, DateTime<Utc>)>>>;

/// A consumer whose first attempt always fails, with one 5 s retry tier.
async fn start_delayed(topic: &str, group: &str, seen: Seen) -> anyhow::Result<InProcessConsumer> {
    let config = consumer_config(
        group,
        None,
        &[
            ("GREGOR_CONSUMER_IN_PLACE_ATTEMPTS", "1"),
            ("GREGOR_CONSUMER_RETRY_TIERS", "5s"),
        ],
    )?;
    InProcessConsumer::start(Consumer::builder(config).route(
        topic,
        Raw,
        move |_ctx: Context, event: Event<Vec<u8>>| {
            let now = Utc::now();
            let id = event.id().unwrap_or_default().to_owned();
            seen.lock().unwrap().push((id, event.attempt, now));
            async move {
                if event.attempt == 1 {
                    Err(HandlerError::retryable("not yet"))
                } else {
                    Ok(())
                }
            }
        },
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_delays_are_never_early_nor_late_by_more_than_a_tenth_across_a_restart()
-> anyhow::Result<()> {
    let topic = unique_name("delay");
    kafka::create_topic_family(&topic, 2, 1).await?;
    let group = unique_name("g");
    let delay = Duration::from_secs(5);
    let seen: Seen = Arc::default();
    let first = start_delayed(&topic, &group, seen.clone()).await?;
    let ids: Vec<String> = (0..4).map(|i| format!("id-{i}")).collect();
    kafka::produce(&topic, ids.iter().map(|id| event(id, id)).collect()).await?;
    wait_until(WAIT, "every first attempt forwarded", || async {
        Ok((first.metrics.stats().retried == 4).then_some(()))
    })
    .await?;
    // Restart while the retries are pending.
    first.stop().await?;
    let second = start_delayed(&topic, &group, seen.clone()).await?;
    wait_until(WAIT, "every retry handled", || async {
        Ok((second.metrics.stats().handled == 4).then_some(()))
    })
    .await?;
    second.stop().await?;
    let seen = seen.lock().unwrap().clone();
    for id in &ids {
        let at = |attempt: u32| {
            seen.iter()
                .find(|(i, a, _)| i == id && *a == attempt)
                .map(|(_, _, t)| *t)
                .unwrap()
        };
        let waited = (at(2) - at(1)).to_std().unwrap();
        eprintln!("{id}: retried after {waited:?}");
        assert!(waited >= delay, "{id} retried early: {waited:?}");
        assert!(
            waited <= delay + delay / 10,
            "{id} retried late: {waited:?}"
        );
    }
    Ok(())
}

/// (key, decoded order id) as the handler saw them.
type KeyAndValue = (Option<String>, Option<u64>);

#[derive(Debug, serde::Deserialize)]
struct Order {
    id: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payload_is_dead_lettered_at_once_and_tombstone_reaches_the_handler()
-> anyhow::Result<()> {
    let topic = unique_name("decode");
    kafka::create_topic_family(&topic, 1, 3).await?;
    let seen: Arc<Mutex<Vec<KeyAndValue>>> = Arc::default();
    let log = seen.clone();
    let config = consumer_config(&unique_name("g"), None, &[])?;
    let consumer = InProcessConsumer::start(Consumer::builder(config).route(
        &topic,
        Json::<Order>::new(),
        move |_ctx: Context, event: Event<Order>| {
            log.lock().unwrap().push((
                event.key_str().map(str::to_owned),
                event.value.map(|o| o.id),
            ));
            async { Ok(()) }
        },
    ))
    .await?;
    let tombstone = Record {
        key: Some(b"gone".to_vec()),
        payload: None,
        headers: vec![],
    };
    kafka::produce(
        &topic,
        vec![
            Record::new("bad", &b"\xff{not json"[..]).header(h::CE_ID, "id-bad"),
            tombstone,
            Record::new("good", r#"{"id": 7}"#),
        ],
    )
    .await?;
    let dead = kafka::read_topic(&format!("{topic}.dlq"), 1, WAIT).await?;
    assert_eq!(dead[0].key.as_deref(), Some(&b"bad"[..]));
    assert_eq!(dead[0].header(h::ERROR_KIND).as_deref(), Some("decode"));
    assert_eq!(
        dead[0].header(h::ATTEMPT).as_deref(),
        Some("1"),
        "no retries"
    );
    assert!(dead[0].header(h::ERROR_MESSAGE).unwrap().contains("json"));
    wait_until(WAIT, "tombstone and good event handled", || async {
        Ok((consumer.metrics.stats().handled == 2).then_some(()))
    })
    .await?;
    let stats = consumer.metrics.stats();
    assert_eq!((stats.retried, stats.dead_lettered), (0, 1));
    consumer.stop().await?;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (Some("gone".to_owned()), None),
            (Some("good".to_owned()), Some(7))
        ],
        "the handler saw the tombstone as no value and never the malformed bytes"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_retried_then_dead_lettered_as_panic() -> anyhow::Result<()> {
    let topic = unique_name("panic");
    kafka::create_topic_family(&topic, 1, 1).await?;
    let config = consumer_config(
        &unique_name("g"),
        None,
        &[
            ("GREGOR_CONSUMER_IN_PLACE_ATTEMPTS", "2"),
            ("GREGOR_CONSUMER_RETRY_TIERS", "100ms"),
        ],
    )?;
    let consumer = InProcessConsumer::start(Consumer::builder(config).route(
        &topic,
        Raw,
        |_ctx: Context, _event: Event<Vec<u8>>| async {
            if true {
                panic!("handler bug");
            }
            Ok(())
        },
    ))
    .await?;
    kafka::produce(&topic, vec![event("k", "id-panic")]).await?;
    let dead = kafka::read_topic(&format!("{topic}.dlq"), 1, WAIT).await?;
    assert_eq!(dead[0].header(h::ERROR_KIND).as_deref(), Some("panic"));
    assert_eq!(dead[0].header(h::ATTEMPT).as_deref(), Some("3"));
    assert!(
        dead[0]
            .header(h::ERROR_MESSAGE)
            .unwrap()
            .contains("handler bug")
    );
    assert_eq!(consumer.metrics.stats().failed_attempts, 3);
    consumer.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_dedupe_transactions_keep_effects_exactly_once_and_isolate_a_failure()
-> anyhow::Result<()> {
    let db = TestDb::create("batch").await?;
    effects_table(&db).await?;
    let topic = unique_name("batch");
    kafka::create_topic_family(&topic, 2, 1).await?;
    // 300 events; ids 0..50 are sent twice; id-13 is rejected for good (both copies, since a
    // rejected event leaves no dedupe row).
    let mut records: Vec<Record> = (0..300)
        .map(|i| event(&format!("k{}", i % 7), &format!("id-{i}")))
        .collect();
    records.extend((0..50).map(|i| event(&format!("k{}", i % 7), &format!("id-{i}"))));
    let config = consumer_config(
        &unique_name("g"),
        Some(&db.url),
        &[("GREGOR_CONSUMER_RETRY_TIERS", "100ms")],
    )?;
    let options = gregor_consumer::RouteOptions {
        batch_size: 64,
        ..Default::default()
    };
    let consumer = InProcessConsumer::start(Consumer::builder(config).route_with(
        &topic,
        Raw,
        |ctx: Context, event: Event<Vec<u8>>| async move {
            effect(&ctx, &event).await?;
            if event.id() == Some("id-13") {
                return Err(HandlerError::permanent("rejected"));
            }
            Ok(())
        },
        options,
    ))
    .await?;
    kafka::produce(&topic, records).await?;
    wait_until(WAIT, "every copy finished", || async {
        let s = consumer.metrics.stats();
        Ok((s.handled + s.duplicates + s.dead_lettered == 350).then_some(s))
    })
    .await?;
    let stats = consumer.metrics.stats();
    consumer.stop().await?;
    assert_eq!(
        (stats.handled, stats.duplicates, stats.dead_lettered),
        (299, 49, 2)
    );
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM effects")
            .fetch_one(&db.pool)
            .await?;
    assert_eq!((rows, distinct), (299, 299), "one effect per handled event");
    assert_eq!(
        count(&db, "id-13").await?,
        0,
        "the rejected event's effect rolled back"
    );
    let dead = kafka::read_topic(&format!("{topic}.dlq"), 2, WAIT).await?;
    assert!(
        dead.iter()
            .all(|d| d.header(h::CE_ID).as_deref() == Some("id-13"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_swallows_an_sql_error_is_not_counted_as_handled() -> anyhow::Result<()> {
    let db = TestDb::create("aborted").await?;
    sqlx::query("CREATE TABLE unique_things (id TEXT PRIMARY KEY)")
        .execute(&db.pool)
        .await?;
    sqlx::query("INSERT INTO unique_things VALUES ('taken')")
        .execute(&db.pool)
        .await?;
    let topic = unique_name("aborted");
    kafka::create_topic_family(&topic, 1, 1).await?;
    let config = consumer_config(
        &unique_name("g"),
        Some(&db.url),
        &[
            ("GREGOR_CONSUMER_IN_PLACE_ATTEMPTS", "1"),
            ("GREGOR_CONSUMER_RETRY_TIERS", "100ms"),
        ],
    )?;
    let consumer = InProcessConsumer::start(Consumer::builder(config).route(
        &topic,
        Raw,
        |ctx: Context, _event: Event<Vec<u8>>| async move {
            let mut tx = ctx.transaction().await?;
            // "Idempotent" insert that ignores the conflict error: the transaction is aborted.
            let _ = sqlx::query("INSERT INTO unique_things VALUES ('taken')")
                .execute(&mut *tx)
                .await;
            Ok::<(), HandlerError>(())
        },
    ))
    .await?;
    kafka::produce(&topic, vec![event("k", "id-aborted")]).await?;
    let dead = kafka::read_topic(&format!("{topic}.dlq"), 1, WAIT).await?;
    assert_eq!(dead[0].header(h::ATTEMPT).as_deref(), Some("2"));
    let message = dead[0].header(h::ERROR_MESSAGE).unwrap();
    assert!(message.contains("aborted"), "{message}");
    let stats = consumer.metrics.stats();
    assert_eq!(
        stats.handled, 0,
        "an aborted transaction is never a handled message"
    );
    consumer.stop().await?;
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM gregor_inbox")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(inbox, 0, "no dedupe mark without the effects");
    Ok(())
}
