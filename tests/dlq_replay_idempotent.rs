//! `gregor dlq replay` is safe to run twice, for every message: a dead letter without `ce_id`
//! is replayed with a `ce_id` derived from its original coordinates (so the consumer's
//! dedupe applies it once), progress is remembered per dead-letter topic (a second run
//! replays nothing), `--from-beginning` replays again (still applied once), a dead letter
//! naming another topic as its original is refused unless `--to` is given, and a large
//! dead-letter topic streams through bounded memory.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::process::Output;
use std::time::{Duration, Instant};

use gregor_consumer::{Consumer, Context, Event, HandlerError, Raw};
use gregor_integration_tests::{InProcessConsumer, consumer_config};
use gregor_testkit::kafka::{self, Record};
use gregor_testkit::{TestDb, kafka_bootstrap, process, unique_name, wait_until};
use gregor_wire::headers as h;

const WAIT: Duration = Duration::from_secs(60);

fn gregor(args: &[&str]) -> anyhow::Result<Output> {
    let bootstrap = kafka_bootstrap()?;
    process::run("gregor", args, &[("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)])
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "gregor failed: {}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A dead letter as the runtime writes it, without `ce_id`.
fn dead_letter(payload: &str, original: &str, offset: i64, group: &str) -> Record {
    Record::new("k", payload)
        .header(h::ORIGINAL_TOPIC, original)
        .header(h::ORIGINAL_PARTITION, "0")
        .header(h::ORIGINAL_OFFSET, offset.to_string())
        .header(h::CONSUMER_GROUP, group)
        .header(h::ATTEMPT, "1")
        .header(h::ERROR_KIND, "permanent")
        .header(h::ERROR_MESSAGE, "boom")
}

async fn effects(db: &TestDb, payload: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM effects WHERE payload = $1")
            .bind(payload)
            .fetch_one(&db.pool)
            .await?,
    )
}

/// Waits until `group` has committed `end` on partition 0 of `topic`: everything before it
/// has been handled (or skipped as a duplicate).
async fn handled_up_to(group: &str, topic: &str, end: i64) -> anyhow::Result<()> {
    wait_until(
        WAIT,
        &format!("{group} to commit {topic}@{end}"),
        || async {
            let committed = kafka::committed_offsets(group, topic)?;
            Ok((committed.get(&0).copied().unwrap_or(-1) >= end).then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_twice_and_from_the_beginning_applies_each_message_once() -> anyhow::Result<()> {
    let db = TestDb::create("replay_twice").await?;
    sqlx::query("CREATE TABLE effects (payload TEXT NOT NULL)")
        .execute(&db.pool)
        .await?;
    let topic = unique_name("replay-twice");
    kafka::create_topic_family(&topic, 1, 0).await?;
    let dlq = format!("{topic}.dlq");
    let group = unique_name("g");
    let config = consumer_config(
        &group,
        Some(&db.url),
        &[("GREGOR_CONSUMER_RETRY_TIERS", "none")],
    )?;
    let consumer = InProcessConsumer::start(Consumer::builder(config).route(
        &topic,
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
    .await?;

    kafka::produce(
        &dlq,
        vec![
            dead_letter("no-id", &topic, 7, &group),
            dead_letter("with-id", &topic, 8, &group).header(h::CE_ID, "id-with-id"),
        ],
    )
    .await?;

    let started = Instant::now();
    let first = ok(&gregor(&["dlq", "replay", &dlq])?);
    assert!(first.contains("replayed 2 "), "{first}");
    handled_up_to(&group, &topic, 2).await?;

    let second = ok(&gregor(&["dlq", "replay", &dlq])?);
    assert!(
        second.contains("replayed 0 "),
        "a second run replays nothing already replayed: {second}"
    );
    kafka::produce(
        &topic,
        vec![Record::new("k", "marker").header(h::CE_ID, "m1")],
    )
    .await?;
    handled_up_to(&group, &topic, 3).await?;

    let again = ok(&gregor(&["dlq", "replay", &dlq, "--from-beginning"])?);
    assert!(again.contains("replayed 2 "), "{again}");
    kafka::produce(
        &topic,
        vec![Record::new("k", "marker").header(h::CE_ID, "m2")],
    )
    .await?;
    handled_up_to(&group, &topic, 6).await?;

    for payload in ["no-id", "with-id"] {
        assert_eq!(effects(&db, payload).await?, 1, "{payload} applied once");
    }
    eprintln!(
        "three replays and their handling took {:?}",
        started.elapsed()
    );
    consumer.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_naming_another_topic_is_refused_unless_to_is_given() -> anyhow::Result<()> {
    let topic = unique_name("replay-forged");
    let victim = unique_name("replay-victim");
    kafka::create_topic_family(&topic, 1, 0).await?;
    kafka::create_topic(&victim, 1).await?;
    let dlq = format!("{topic}.dlq");
    kafka::produce(
        &dlq,
        vec![
            dead_letter("honest", &topic, 1, "g"),
            dead_letter("forged", &victim, 2, "g"),
        ],
    )
    .await?;

    let refused = gregor(&["dlq", "replay", &dlq])?;
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains(&victim), "{}", text(&refused));
    assert!(text(&refused).contains("--to"), "{}", text(&refused));
    let in_victim = kafka::read_to_end(&victim, Duration::from_secs(30)).await?;
    assert!(in_victim.is_empty(), "nothing reached {victim}");
    let in_topic = kafka::read_to_end(&topic, Duration::from_secs(30)).await?;
    assert!(in_topic.is_empty(), "nothing was replayed at all");

    let out = ok(&gregor(&["dlq", "replay", &dlq, "--to", &topic])?);
    assert!(out.contains("replayed 2 "), "{out}");
    assert_eq!(
        kafka::read_to_end(&topic, Duration::from_secs(30))
            .await?
            .len(),
        2
    );
    assert!(
        kafka::read_to_end(&victim, Duration::from_secs(30))
            .await?
            .is_empty()
    );
    Ok(())
}

/// `GREGOR_REPLAY_RSS_MESSAGES` (default 50 000) dead letters of 200 bytes each; the child's
/// peak RSS (from `/usr/bin/time -f %M`) must stay under 100 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_dead_letter_topic_replays_in_bounded_memory() -> anyhow::Result<()> {
    let count: i64 = std::env::var("GREGOR_REPLAY_RSS_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let topic = unique_name("replay-rss");
    kafka::create_topic_family(&topic, 2, 0).await?;
    let dlq = format!("{topic}.dlq");
    let payload = "x".repeat(200);
    let records = (0..count)
        .map(|i| dead_letter(&payload, &topic, i, "g").header(h::CE_ID, format!("id-{i}")))
        .collect();
    kafka::produce(&dlq, records).await?;

    let bootstrap = kafka_bootstrap()?;
    let started = Instant::now();
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "max-rss-kib=%M"])
        .arg(process::binary("gregor")?)
        .args(["dlq", "replay", &dlq])
        .env_clear()
        .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
        .output()?;
    let took = started.elapsed();
    let stdout = ok(&out);
    assert!(stdout.contains(&format!("replayed {count} ")), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rss_kib: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("max-rss-kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    eprintln!(
        "replayed {count} messages in {took:?}, peak RSS {} MiB",
        rss_kib / 1024
    );
    assert!(rss_kib < 100 * 1024, "peak RSS {rss_kib} KiB");
    assert!(
        stderr.contains("progress"),
        "progress is shown on stderr: {stderr}"
    );
    Ok(())
}
