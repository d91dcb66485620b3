//! A database outage is an outage, not a handler failure (P9): a private PostgreSQL is
//! stopped for longer than the consumer's pool acquire timeout and its retry tiers, then
//! started again. Every effect must then exist exactly once, in per-key order, with nothing
//! copied to a retry tier or dead-lettered.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::time::Duration;

use gregor_consumer::{Consumer, Context, Event, HandlerError, Raw, RouteOptions};
use gregor_integration_tests::{InProcessConsumer, consumer_config};
use gregor_testkit::free_port;
use gregor_testkit::kafka::{self, Record};
use gregor_testkit::{PrivatePostgres, TestDb, unique_name, wait_until};
use gregor_wire::headers as h;
use sqlx::postgres::PgPoolOptions;

const WAIT: Duration = Duration::from_secs(90);
const KEYS: usize = 4;
/// Events per key produced before the outage, just before the stop, and during it.
const BEFORE: usize = 5;
const AT_STOP: usize = 5;
const DURING: usize = 10;
const TIERS: usize = 2;

/// How the handler writes its effect.
#[derive(Debug, Clone, Copy)]
enum Effects {
    /// In the runtime's dedupe transaction (`Context::transaction`).
    DedupeTransaction,
    /// The same, with up to 10 waiting messages per dedupe transaction
    /// (`RouteOptions::batch_size`).
    DedupeBatches,
    /// With its own SQL on the pool (the route opted out of dedupe): the runtime begins no
    /// transaction, so only the handler's own statements meet the outage. The insert is
    /// idempotent on the event id.
    OwnSql,
}

async fn effects_table(db: &TestDb) -> anyhow::Result<()> {
    sqlx::query(
        "CREATE TABLE effects (n BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,
                               k TEXT NOT NULL, seq INTEGER NOT NULL)",
    )
    .execute(&db.pool)
    .await?;
    Ok(())
}

async fn apply(ctx: Context, event: Event<Vec<u8>>, how: Effects) -> Result<(), HandlerError> {
    let id = event.id().unwrap_or_default().to_owned();
    let key = event.key_str().unwrap_or_default().to_owned();
    let seq: i32 = std::str::from_utf8(event.value.as_deref().unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HandlerError::permanent("payload is not a sequence number"))?;
    let insert = "INSERT INTO effects (event_id, k, seq) VALUES ($1, $2, $3)
                  ON CONFLICT (event_id) DO NOTHING";
    match how {
        Effects::DedupeTransaction | Effects::DedupeBatches => {
            let mut tx = ctx.transaction().await?;
            // The dedupe row rules out a second effect; should one come anyway, it is
            // dead-lettered, which the test sees.
            let done = sqlx::query(insert)
                .bind(&id)
                .bind(&key)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(HandlerError::permanent(format!(
                    "effect of {id} applied twice despite the dedupe row"
                )));
            }
        }
        Effects::OwnSql => {
            let pool = ctx
                .pool()
                .ok_or_else(|| HandlerError::permanent("no pool"))?;
            sqlx::query(insert)
                .bind(&id)
                .bind(&key)
                .bind(seq)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

fn events(range: std::ops::Range<usize>, tag: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for seq in range {
        for k in 0..KEYS {
            out.push(
                Record::new(format!("key-{k}"), seq.to_string())
                    .header(h::CE_ID, format!("{tag}-{k}-{seq}"))
                    .header(h::CE_TYPE, "test.outage"),
            );
        }
    }
    out
}

async fn effects(db: &TestDb) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&db.pool)
        .await?)
}

/// Waits until `/readyz` on `addr` answers `status` with every line of `lines`.
async fn readyz(addr: &str, status: u16, lines: &[&str]) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("http://{addr}/readyz");
    let what = format!("/readyz to answer {status} with {lines:?}");
    wait_until(WAIT, &what, || async {
        let Ok(response) = client.get(&url).send().await else {
            return Ok(None);
        };
        let code = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Ok((code == status && lines.iter().all(|l| body.lines().any(|b| b == *l))).then_some(()))
    })
    .await
}

async fn outage_is_waited_out(how: Effects) -> anyhow::Result<()> {
    let pg = PrivatePostgres::start().await?;
    let db = TestDb::create_on(&pg.url(), "dboutage").await?;
    effects_table(&db).await?;
    let topic = unique_name("db-outage");
    kafka::create_topic_family(&topic, 2, TIERS).await?;
    let tag = unique_name("ev");
    // The consumer's own pool gives up acquiring after 1 s: the outage below lasts far longer.
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(1))
        .connect(&db.url)
        .await?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let config = consumer_config(
        &unique_name("g"),
        None,
        &[
            ("GREGOR_CONSUMER_HTTP_ADDR", addr.as_str()),
            // A poll loop held up by the outage would lose the group within 7 s.
            ("KAFKA_MAX_POLL_INTERVAL_MS", "7000"),
            ("GREGOR_CONSUMER_IN_PLACE_ATTEMPTS", "2"),
            ("GREGOR_CONSUMER_MAX_BACKOFF_MS", "300"),
            ("GREGOR_CONSUMER_RETRY_TIERS", "100ms,100ms"),
        ],
    )?;
    let options = RouteOptions {
        dedupe: !matches!(how, Effects::OwnSql),
        batch_size: if matches!(how, Effects::DedupeBatches) {
            10
        } else {
            1
        },
        ..RouteOptions::default()
    };
    let consumer = InProcessConsumer::start(Consumer::builder(config).pool(pool).route_with(
        &topic,
        Raw,
        move |ctx: Context, event: Event<Vec<u8>>| apply(ctx, event, how),
        options,
    ))
    .await?;
    let total = i64::try_from(KEYS * (BEFORE + AT_STOP + DURING))?;

    kafka::produce(&topic, events(0..BEFORE, &tag)).await?;
    let before = i64::try_from(KEYS * BEFORE)?;
    wait_until(WAIT, "the effects before the outage", || async {
        Ok((effects(&db).await? == before).then_some(()))
    })
    .await?;

    // Some events in flight as the server stops, more while it is down.
    kafka::produce(&topic, events(BEFORE..BEFORE + AT_STOP, &tag)).await?;
    pg.stop()?;
    let stopped = std::time::Instant::now();
    kafka::produce(
        &topic,
        events(BEFORE + AT_STOP..BEFORE + AT_STOP + DURING, &tag),
    )
    .await?;
    // Long enough for the acquire timeout to expire many times over, on every partition —
    // more failed attempts than the in-place attempts and the tiers of one message — and
    // longer than max.poll.interval.ms.
    let metrics = consumer.metrics.clone();
    wait_until(WAIT, "the outage to outlast the retry policy", || async {
        let long = stopped.elapsed() >= Duration::from_secs(8);
        Ok((long && metrics.stats().failed_attempts >= 12).then_some(()))
    })
    .await?;
    let during = metrics.stats();
    eprintln!(
        "during the outage ({:?} so far): {during:?}",
        stopped.elapsed()
    );
    // Readiness is red for the database while the member keeps its partitions.
    readyz(&addr, 503, &["database: down", "group: up"]).await?;
    pg.resume().await?;

    let done = wait_until(WAIT, "every effect after the outage", || async {
        Ok((effects(&db).await? == total).then_some(()))
    })
    .await;
    readyz(&addr, 200, &["database: up", "group: up"]).await?;
    let stats = consumer.metrics.stats();
    consumer.stop().await?;
    eprintln!("after the outage: {stats:?}");

    let mut copies = Vec::new();
    for t in (1..=TIERS)
        .map(|n| format!("{topic}.retry.{n}"))
        .chain([format!("{topic}.dlq")])
    {
        let read = kafka::read_to_end(&t, Duration::from_secs(30)).await?;
        let n = read.len();
        copies.push(format!("{t}: {n}"));
        for copy in &read {
            copies.push(format!(
                "  {}: {}",
                copy.header(h::ERROR_KIND).unwrap_or_default(),
                copy.header(h::ERROR_MESSAGE).unwrap_or_default()
            ));
        }
        assert_eq!(
            n,
            0,
            "nothing may be forwarded because of an outage ({}; effects {} of {total}; {stats:?})",
            copies.join(", "),
            effects(&db).await?,
        );
    }
    done?;
    assert_eq!(stats.retried, 0, "{stats:?}");
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    assert_eq!(effects(&db).await?, total, "every effect exactly once");

    // Per key, effects happened in the order of the events.
    let rows: Vec<(String, i32)> = sqlx::query_as("SELECT k, seq FROM effects ORDER BY n")
        .fetch_all(&db.pool)
        .await?;
    let mut by_key: HashMap<String, Vec<i32>> = HashMap::new();
    for (k, seq) in rows {
        by_key.entry(k).or_default().push(seq);
    }
    let expected: Vec<i32> = (0..i32::try_from(BEFORE + AT_STOP + DURING)?).collect();
    for (k, seqs) in &by_key {
        assert_eq!(seqs, &expected, "effects of {k} in event order");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_under_dedupe_transactions_is_waited_out_in_order() -> anyhow::Result<()> {
    outage_is_waited_out(Effects::DedupeTransaction).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_met_by_the_handlers_own_sql_is_waited_out_in_order() -> anyhow::Result<()> {
    outage_is_waited_out(Effects::OwnSql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_under_batched_dedupe_transactions_is_waited_out_in_order() -> anyhow::Result<()>
{
    outage_is_waited_out(Effects::DedupeBatches).await
}
