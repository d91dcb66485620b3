//! Issue 13, defect 3: an old owner must not deliver a record after the new owner of its
//! shard delivered later values of the key — on a compacted topic the key would regress to
//! the old value. Relay A lingers its records for 800 ms before sending (`KAFKA_LINGER_MS`);
//! it is stopped (SIGSTOP) while the key's first value lingers in its producer, relay B takes
//! the shards once A's lease expired and publishes the first value and then the second; then A
//! resumes. The old relay's producer kept records for librdkafka's 30 s message timeout and
//! sent the first value again *after* B's second. Today's relay hands a record over only while
//! the lease outlasts its delivery bound (30 % of the lease ttl), and librdkafka fails records
//! older than that at the first timeout scan after the resume, before it sends anything (its
//! broker thread scans for timeouts first whenever a second has passed since the last scan).

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::Duration;

use gregor_integration_tests::{relay_env, relay_id};
use gregor_outbox::{OutboxMessage, enqueue};
use gregor_testkit::as_pairs;
use gregor_testkit::process::Proc;
use gregor_testkit::{TestDb, kafka, kafka_bootstrap, unique_name, wait_until};
use sqlx::PgPool;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

async fn enqueue_value(pool: &PgPool, topic: &str, value: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    enqueue(
        &mut tx,
        OutboxMessage::new(topic, "stale", "/t")
            .key("k")
            .payload(value.as_bytes().to_vec()),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn owned_by(pool: &PgPool, relay: Uuid) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM gregor_relay_leases WHERE owner = $1 AND expires_at > now()",
    )
    .bind(relay)
    .fetch_one(pool)
    .await?)
}

async fn wait_drained(pool: &PgPool) -> anyhow::Result<()> {
    wait_until(WAIT, "the outbox to drain", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM gregor_outbox")
            .fetch_one(pool)
            .await?;
        Ok((left == 0).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_old_owner_never_delivers_an_old_value_after_the_new_owners() -> anyhow::Result<()>
{
    let db = TestDb::create("staleowner").await?;
    gregor_relay::migrate(&db.pool).await?;
    let topic = unique_name("staleowner");
    kafka::create_topic(&topic, 1).await?;
    let bootstrap = kafka_bootstrap()?;
    let spawn = |name: &str, extra: &[(&str, &str)]| -> anyhow::Result<Proc> {
        let mut env = relay_env(&db.url, &bootstrap);
        env.push(("GREGOR_RELAY_NAME".into(), name.into()));
        for (k, v) in extra {
            env.push(((*k).into(), (*v).into()));
        }
        Proc::spawn("gregor-relay", &as_pairs(&env))
    };

    let mut a = spawn("a", &[("KAFKA_LINGER_MS", "800")])?;
    let a_id = relay_id(&db.pool, "a").await?;
    wait_until(WAIT, "relay a to own every shard", || async {
        Ok((owned_by(&db.pool, a_id).await? == 64).then_some(()))
    })
    .await?;

    enqueue_value(&db.pool, &topic, "first").await?;
    // A claims the row within milliseconds of the commit (LISTEN/NOTIFY) and its producer
    // holds the record for 800 ms: stop A in the middle of that window. This wait places the
    // fault (A's log is written asynchronously, so it cannot say when the hand-over happened);
    // it synchronises nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.signal("STOP")?;

    let mut b = spawn("b", &[])?;
    let b_id = relay_id(&db.pool, "b").await?;
    wait_until(WAIT, "relay b to take every shard", || async {
        Ok((owned_by(&db.pool, b_id).await? == 64).then_some(()))
    })
    .await?;
    wait_drained(&db.pool).await?;
    enqueue_value(&db.pool, &topic, "second").await?;
    wait_drained(&db.pool).await?;

    // A resumes: whatever its producer still holds is sent now or never.
    a.signal("CONT")?;
    a.signal("TERM")?;
    let status = a.wait()?;
    eprintln!("relay a exited with {status}; its log:\n{}", a.log());
    b.signal("TERM")?;
    b.wait()?;

    let records = kafka::read_to_end(&topic, WAIT).await?;
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned())
        .collect();
    eprintln!("records of the key, in offset order: {values:?}");
    assert!(
        values.iter().any(|v| v == "first"),
        "the first value was published"
    );
    assert_eq!(
        values.last().map(String::as_str),
        Some("second"),
        "the key's last record is an old value delivered by the stopped old owner: {values:?}"
    );
    Ok(())
}
