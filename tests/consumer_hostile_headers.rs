//! P10 for the retry bookkeeping headers: anyone who can produce can write `gregor-attempt`
//! and `gregor-not-before`. A forged attempt count must not overflow (a panic outside the
//! handler's `catch_unwind` in debug builds, a wrap to 0 in release), and a forged due time
//! must not stall a retry partition beyond the tier's own delay.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use gregor_consumer::{Consumer, Context, Event, HandlerError, Raw};
use gregor_integration_tests::{InProcessConsumer, consumer_config};
use gregor_testkit::kafka::{self, Record};
use gregor_testkit::{unique_name, wait_until};
use gregor_wire::headers as h;

const WAIT: Duration = Duration::from_secs(60);

/// The attempt numbers handlers saw, by event id.
type Seen = Arc<Mutex<Vec<(String, u32)>>>;

async fn start(
    topic: &str,
    group: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<(InProcessConsumer, Seen)> {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let config = consumer_config(group, None, extra)?;
    let consumer = InProcessConsumer::start(Consumer::builder(config).route(
        topic,
        Raw,
        move |_ctx: Context, event: Event<Vec<u8>>| {
            let record = record.clone();
            async move {
                let id = event.id().unwrap_or("-").to_owned();
                record.lock().unwrap().push((id, event.attempt));
                Ok::<(), HandlerError>(())
            }
        },
    ))
    .await?;
    Ok((consumer, seen))
}

async fn attempt_of(seen: &Seen, id: &str) -> anyhow::Result<u32> {
    wait_until(WAIT, &format!("the handler to see {id}"), || async {
        Ok(seen
            .lock()
            .unwrap()
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, a)| *a))
    })
    .await
}

/// Sum of `gregor_consumer_suspect_headers_total` for one header name.
fn suspect(consumer: &InProcessConsumer, header: &str) -> f64 {
    consumer
        .metrics
        .registry()
        .gather()
        .iter()
        .filter(|f| f.name() == "gregor_consumer_suspect_headers_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "header" && l.value() == header)
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_header_at_u32_max_is_handled_with_a_bounded_attempt() -> anyhow::Result<()> {
    let topic = unique_name("hostile-attempt");
    kafka::create_topic_family(&topic, 1, 1).await?;
    let group = unique_name("g");
    let (consumer, seen) =
        start(&topic, &group, &[("GREGOR_CONSUMER_RETRY_TIERS", "200ms")]).await?;
    let forged = |id: &str| {
        Record::new("k", "v")
            .header(h::CE_ID, id)
            .header(h::ATTEMPT, u32::MAX.to_string())
            .header(h::CONSUMER_GROUP, group.as_str())
            .header(h::ORIGINAL_TOPIC, topic.as_str())
    };
    kafka::produce(&topic, vec![forged("on-main")]).await?;
    kafka::produce(&format!("{topic}.retry.1"), vec![forged("on-retry")]).await?;
    // Then ordinary messages behind them: the partitions must move on.
    kafka::produce(
        &topic,
        vec![Record::new("k", "v").header(h::CE_ID, "after-main")],
    )
    .await?;
    for id in ["on-main", "on-retry", "after-main"] {
        let attempt = attempt_of(&seen, id).await?;
        assert!(
            (1..=1_000_001).contains(&attempt),
            "{id}: attempt {attempt} is neither wrapped nor unbounded"
        );
    }
    consumer.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_far_future_not_before_waits_at_most_the_tier_delay_plus_slack()
-> anyhow::Result<()> {
    let topic = unique_name("hostile-due");
    kafka::create_topic_family(&topic, 1, 1).await?;
    let group = unique_name("g");
    let delay = Duration::from_secs(1);
    let slack = Duration::from_secs(2);
    let (consumer, seen) = start(
        &topic,
        &group,
        &[
            ("GREGOR_CONSUMER_RETRY_TIERS", "1s"),
            ("GREGOR_CONSUMER_RETRY_DUE_SLACK_MS", "2000"),
        ],
    )
    .await?;
    // Warm up: the group has joined and the retry tier is assigned once a genuine retry
    // copy's neighbour is handled there.
    kafka::produce(
        &format!("{topic}.retry.1"),
        vec![Record::new("k", "v").header(h::CE_ID, "warm-up")],
    )
    .await?;
    attempt_of(&seen, "warm-up").await?;

    let forged_due = h::format_time(Utc::now() + chrono::Duration::days(3650));
    let honest_due = h::format_time(Utc::now() + chrono::Duration::milliseconds(500));
    let started = Instant::now();
    kafka::produce(
        &format!("{topic}.retry.1"),
        vec![
            Record::new("k", "v")
                .header(h::CE_ID, "forged")
                .header(h::ATTEMPT, "1")
                .header(h::CONSUMER_GROUP, group.as_str())
                .header(h::ORIGINAL_TOPIC, topic.as_str())
                .header(h::NOT_BEFORE, forged_due.as_str()),
            Record::new("k", "v")
                .header(h::CE_ID, "honest")
                .header(h::ATTEMPT, "1")
                .header(h::CONSUMER_GROUP, group.as_str())
                .header(h::ORIGINAL_TOPIC, topic.as_str())
                .header(h::NOT_BEFORE, honest_due.as_str()),
        ],
    )
    .await?;
    attempt_of(&seen, "forged").await?;
    attempt_of(&seen, "honest").await?;
    let took = started.elapsed();
    eprintln!("forged and honest retry copies handled after {took:?}");
    assert!(
        took < delay + slack + Duration::from_secs(5),
        "the forged due time stalled the partition for {took:?}"
    );
    assert!(
        took >= Duration::from_millis(400),
        "an honest due time is still waited for ({took:?})"
    );
    assert!(
        suspect(&consumer, h::NOT_BEFORE) >= 1.0,
        "the forged due time is counted in gregor_consumer_suspect_headers_total"
    );
    consumer.stop().await?;
    Ok(())
}
