//! Issue 13, defect 5: rows dropped because their shard's lease lapsed while the claim ran
//! must go out before every later row of their keys, even when a renewal lands before the
//! next claim. Here another session holds both the outbox and the lease table locked for
//! longer than the lease ttl: the relay's claim and its renewal both wait, and on release the
//! claim returns the key's first row past the relay's deadline (dropped), while the renewal
//! takes the shards again at once, racing the claim loop's next iteration. The old relay went
//! on with its pass when the renewal won that race (microseconds wide): run six times against
//! the relay of d8eff4f, this test did not catch it, so the restart rule itself is pinned by
//! `claim_loop`'s unit test `a_dropped_row_restarts_the_pass_below_it_even_with_unchanged_leases`;
//! this one checks the whole path on the real services.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::Duration;

use gregor_integration_tests::InProcessRelay;
use gregor_outbox::{OutboxMessage, enqueue_batch};
use gregor_testkit::{TestDb, kafka, kafka_bootstrap, unique_name, wait_until};

const TTL_MS: u64 = 3_000;
const ROWS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_dropped_at_a_lapsed_lease_go_out_before_later_rows_of_their_key() -> anyhow::Result<()>
{
    let db = TestDb::create("lapsed").await?;
    // The lease table is read below, maybe before the relay has migrated.
    gregor_relay::migrate(&db.pool).await?;
    let topic = unique_name("lapsed");
    kafka::create_topic(&topic, 1).await?;
    let relay = InProcessRelay::start(
        &db.url,
        &kafka_bootstrap()?,
        &[
            ("GREGOR_RELAY_BATCH_SIZE", "1"),
            ("GREGOR_RELAY_LEASE_TTL_MS", &TTL_MS.to_string()),
        ],
    )?;
    wait_until(
        Duration::from_secs(20),
        "the relay to take every shard",
        || async {
            let owned: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM gregor_relay_leases
                  WHERE owner IS NOT NULL AND expires_at > now()",
            )
            .fetch_one(&db.pool)
            .await?;
            Ok((owned == 64).then_some(()))
        },
    )
    .await?;

    // One transaction locks both tables, writes the key's rows and keeps the locks past the
    // lease ttl; its commit makes the rows visible and releases the claim and the renewal
    // together.
    let mut tx = db.pool.begin().await?;
    sqlx::query("LOCK TABLE gregor_outbox, gregor_relay_leases IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let msgs = (0..ROWS).map(|i| {
        OutboxMessage::new(&topic, "lapsed", "/t")
            .key("lapsed")
            .payload(i.to_string().into_bytes())
    });
    enqueue_batch(&mut tx, msgs).await?;
    // The relay's claim (woken by its poll) and its next renewal now wait on the locks. Hold
    // them until every lease has expired in the database (read inside this transaction, which
    // holds the lock): the relay's own deadline, on its monotonic clock, is earlier still.
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM gregor_relay_leases WHERE expires_at > clock_timestamp()",
        )
        .fetch_one(&mut *tx)
        .await?;
        if live == 0 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < give_up,
            "the relay's leases did not expire within 30 s of locking the lease table"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.commit().await?;

    let received = kafka::read_topic(&topic, ROWS, Duration::from_secs(30)).await?;
    relay.stop().await?;
    let mut first_seen: Vec<String> = Vec::new();
    for record in &received {
        let value = String::from_utf8(record.payload.clone().unwrap_or_default())?;
        if !first_seen.contains(&value) {
            first_seen.push(value);
        }
    }
    let expected: Vec<String> = (0..ROWS).map(|i| i.to_string()).collect();
    assert_eq!(
        first_seen,
        expected,
        "the key's rows reached the broker out of order (first occurrences); all records: {:?}",
        received
            .iter()
            .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned())
            .collect::<Vec<_>>()
    );
    Ok(())
}
