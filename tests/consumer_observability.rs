//! What the consumer and the relay tell an operator over HTTP: `/metrics` follows the flow of
//! messages (consumed, finished, dead-lettered, DLQ depth, lag, in flight), and `/readyz`
//! follows the database and the broker going away and coming back.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gregor_consumer::{Consumer, Context, Event, HandlerError, Raw};
use gregor_integration_tests::{InProcessConsumer, InProcessRelay, consumer_config};
use gregor_testkit::kafka::{self, Record};
use gregor_testkit::{PrivateBroker, PrivatePostgres, TestDb, unique_name, wait_until};

const WAIT: Duration = Duration::from_secs(60);
/// Rejoining the group after a frozen broker thaws can take a session timeout or two.
const RECOVER: Duration = Duration::from_secs(120);

/// An address nothing listens on right now (the listener is dropped at once).
fn free_addr() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?)
}

/// GET `http://addr/path`: status and body; `None` while nothing answers.
async fn get(client: &reqwest::Client, addr: &str, path: &str) -> Option<(u16, String)> {
    let response = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// One sample of the Prometheus text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

fn parse(body: &str) -> Vec<Sample> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The samples of `name` whose labels include every one of `labels`.
fn select<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The single value of `name{labels}`, if exported.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    match select(samples, name, labels).as_slice() {
        [one] => Some(one.value),
        _ => None,
    }
}

/// Polls `/readyz` until it answers `status` with every line of `lines` in its body.
async fn readyz_becomes(
    client: &reqwest::Client,
    addr: &str,
    status: u16,
    lines: &[&str],
    timeout: Duration,
) -> anyhow::Result<String> {
    let what = format!("/readyz on {addr} to answer {status} with {lines:?}");
    wait_until(timeout, &what, || async {
        Ok(match get(client, addr, "/readyz").await {
            Some((code, body))
                if code == status && lines.iter().all(|l| body.lines().any(|b| b == *l)) =>
            {
                Some(body)
            }
            _ => None,
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_flow() -> anyhow::Result<()> {
    const N: u64 = 40;
    let topic = unique_name("obs");
    let dlq = format!("{topic}.dlq");
    kafka::create_topic_family(&topic, 2, 0).await?;
    let group = unique_name("g");
    let addr = free_addr()?;
    let config = consumer_config(
        &group,
        None,
        &[
            ("GREGOR_CONSUMER_HTTP_ADDR", addr.as_str()),
            ("GREGOR_CONSUMER_RETRY_TIERS", "none"),
            ("GREGOR_CONSUMER_DLQ_DEPTH_INTERVAL_MS", "200"),
            ("KAFKA_STATISTICS_INTERVAL_MS", "500"),
        ],
    )?;
    // Everything read from partition 0 fails for good; partition 1 is handled. Only one lane
    // then writes to the DLQ, one acknowledged copy at a time: on nisshi a produce batch of
    // several messages skews the high watermark that DLQ depth is computed from.
    // Partition 1 waits behind a gate until the test has seen its lag and the messages in
    // flight.
    let failed = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (failing, gated) = (failed.clone(), gate.clone());
    let consumer = InProcessConsumer::start(Consumer::builder(config).route(
        &topic,
        Raw,
        move |_ctx: Context, event: Event<Vec<u8>>| {
            let (failing, gated) = (failing.clone(), gated.clone());
            async move {
                if event.partition == 0 {
                    failing.fetch_add(1, Ordering::SeqCst);
                    return Err(HandlerError::permanent("partition 0 is refused"));
                }
                drop(gated.acquire().await);
                Ok(())
            }
        },
    ))
    .await?;
    let client = http()?;
    wait_until(WAIT, "/healthz", || async {
        Ok(get(&client, &addr, "/healthz")
            .await
            .filter(|(code, _)| *code == 200))
    })
    .await?;

    let records = (0..N)
        .map(|i| Record::new(format!("key-{i}"), format!("payload {i}")))
        .collect();
    kafka::produce(&topic, records).await?;

    let n = N as f64;
    let (topic_ref, group_ref, dlq_ref, failed_ref) = (&topic, &group, &dlq, &failed);
    let (client_ref, addr_ref) = (&client, addr.as_str());
    let blocked = wait_until(
        WAIT,
        "lag and in-flight messages behind the gate",
        || async move {
            let Some((200, body)) = get(client_ref, addr_ref, "/metrics").await else {
                return Ok(None);
            };
            let s = parse(&body);
            let lag = value(
                &s,
                "gregor_consumer_lag",
                &[
                    ("group", group_ref),
                    ("topic", topic_ref),
                    ("partition", "1"),
                ],
            );
            let in_flight = value(&s, "gregor_consumer_in_flight", &[]);
            Ok(
                (lag.is_some_and(|l| l > 0.0) && in_flight.is_some_and(|f| f > 0.0))
                    .then_some((lag, in_flight)),
            )
        },
    )
    .await?;
    eprintln!(
        "behind the gate: lag {:?}, in flight {:?}",
        blocked.0, blocked.1
    );
    gate.add_permits(1);
    let last = std::sync::Mutex::new(String::new());
    let last_ref = &last;
    let settled = wait_until(
        WAIT,
        "/metrics to show every message finished",
        || async move {
            let Some((200, body)) = get(client_ref, addr_ref, "/metrics").await else {
                return Ok(None);
            };
            *last_ref.lock().unwrap() = body.clone();
            let s = parse(&body);
            let t = topic_ref.as_str();
            let f = failed_ref.load(Ordering::SeqCst) as f64;
            let outcome = |o: &str| {
                value(
                    &s,
                    "gregor_consumer_messages_total",
                    &[("topic", t), ("outcome", o)],
                )
                .unwrap_or(0.0)
            };
            let lags = select(
                &s,
                "gregor_consumer_lag",
                &[("group", group_ref), ("topic", t)],
            );
            let ok = value(&s, "gregor_consumer_consumed_total", &[("topic", t)]) == Some(n)
                && outcome("handled") + outcome("dead_lettered") == n
                && f > 0.0
                && f < n
                && value(
                    &s,
                    "gregor_consumer_dead_lettered_total",
                    &[("topic", t), ("kind", "permanent")],
                ) == Some(f)
                && value(&s, "gregor_dlq_depth", &[("topic", dlq_ref)]) == Some(f)
                && lags.len() == 2
                && lags.iter().all(|l| l.value == 0.0)
                && value(&s, "gregor_consumer_in_flight", &[]) == Some(0.0);
            Ok(ok.then_some(body))
        },
    )
    .await
    .inspect_err(|_| eprintln!("last /metrics:\n{}", last.lock().unwrap()))?;

    for line in settled
        .lines()
        .filter(|l| l.starts_with("gregor_") && !l.contains("_bucket"))
    {
        eprintln!("{line}");
    }
    let s = parse(&settled);
    let failed = failed.load(Ordering::SeqCst) as f64;
    assert_eq!(
        value(
            &s,
            "gregor_consumer_messages_total",
            &[("topic", &topic), ("outcome", "dead_lettered")]
        ),
        Some(failed)
    );
    assert_eq!(
        value(
            &s,
            "gregor_consumer_messages_total",
            &[("topic", &topic), ("outcome", "handled")]
        ),
        Some(n - failed)
    );
    assert_eq!(
        value(
            &s,
            "gregor_consumer_handle_seconds_count",
            &[("topic", &topic)]
        ),
        Some(n)
    );
    assert_eq!(
        value(&s, "gregor_consumer_assigned_partitions", &[]),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "gregor_consumer_paused_partitions", &[]),
        Some(0.0)
    );
    let mut partitions: Vec<&str> = select(&s, "gregor_consumer_lag", &[("topic", &topic)])
        .iter()
        .map(|l| l.labels["partition"].as_str())
        .collect();
    partitions.sort_unstable();
    assert_eq!(partitions, ["0", "1"]);
    let stats = consumer.metrics.stats();
    assert_eq!(stats.handled + stats.dead_lettered, N);
    readyz_becomes(&client, &addr, 200, &["broker: up", "group: up"], WAIT).await?;
    consumer.stop().await?;
    assert!(
        get(&client, &addr, "/healthz").await.is_none(),
        "the endpoint stops with the consumer"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_database_and_broker() -> anyhow::Result<()> {
    let broker = PrivateBroker::start().await?;
    let pg = PrivatePostgres::start().await?;
    let db = TestDb::create_on(&pg.url(), "obsready").await?;
    let bootstrap = broker.bootstrap();
    let topic = unique_name("ready");
    kafka::create_topic_on(&bootstrap, &topic, 1).await?;
    kafka::create_topic_on(&bootstrap, &format!("{topic}.dlq"), 1).await?;
    let addr = free_addr()?;
    let config = consumer_config(
        &unique_name("g"),
        Some(&db.url),
        &[
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
            ("GREGOR_CONSUMER_HTTP_ADDR", addr.as_str()),
            ("GREGOR_CONSUMER_RETRY_TIERS", "none"),
        ],
    )?;
    let consumer = InProcessConsumer::start(Consumer::builder(config).route(
        &topic,
        Raw,
        |_ctx: Context, _event: Event<Vec<u8>>| async { Ok(()) },
    ))
    .await?;
    let client = http()?;
    let all_up = ["database: up", "broker: up", "group: up"];
    readyz_becomes(&client, &addr, 200, &all_up, WAIT).await?;

    pg.stop()?;
    let body = readyz_becomes(&client, &addr, 503, &["database: down"], WAIT).await?;
    eprintln!("postgres stopped:\n{body}");
    pg.resume().await?;
    readyz_becomes(&client, &addr, 200, &all_up, WAIT).await?;

    broker.freeze()?;
    let frozen = readyz_becomes(&client, &addr, 503, &["broker: down"], WAIT).await;
    broker.thaw()?;
    eprintln!("broker frozen:\n{}", frozen?);
    readyz_becomes(&client, &addr, 200, &all_up, RECOVER).await?;
    consumer.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_readyz_follows_database_and_broker() -> anyhow::Result<()> {
    let broker = PrivateBroker::start().await?;
    let pg = PrivatePostgres::start().await?;
    let db = TestDb::create_on(&pg.url(), "relayready").await?;
    let addr = free_addr()?;
    let relay = InProcessRelay::start(
        &db.url,
        &broker.bootstrap(),
        &[("GREGOR_RELAY_HTTP_ADDR", addr.as_str())],
    )?;
    let client = http()?;
    let all_up = ["database: up", "broker: up", "membership: up"];
    readyz_becomes(&client, &addr, 200, &all_up, WAIT).await?;

    pg.stop()?;
    let body = readyz_becomes(&client, &addr, 503, &["database: down"], WAIT).await?;
    eprintln!("postgres stopped:\n{body}");
    pg.resume().await?;
    readyz_becomes(&client, &addr, 200, &all_up, WAIT).await?;

    broker.freeze()?;
    let frozen = readyz_becomes(&client, &addr, 503, &["broker: down"], WAIT).await;
    broker.thaw()?;
    eprintln!("broker frozen:\n{}", frozen?);
    readyz_becomes(&client, &addr, 200, &all_up, WAIT).await?;
    relay.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_partitions_is_ready() -> anyhow::Result<()> {
    let topic = unique_name("idle");
    kafka::create_topic_family(&topic, 1, 0).await?;
    let group = unique_name("g");
    let client = http()?;
    let mut members = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let addr = free_addr()?;
        let config = consumer_config(
            &group,
            None,
            &[
                ("GREGOR_CONSUMER_HTTP_ADDR", addr.as_str()),
                ("GREGOR_CONSUMER_RETRY_TIERS", "none"),
            ],
        )?;
        members.push(
            InProcessConsumer::start(Consumer::builder(config).route(
                &topic,
                Raw,
                |_ctx: Context, _event: Event<Vec<u8>>| async { Ok(()) },
            ))
            .await?,
        );
        readyz_becomes(&client, &addr, 200, &["broker: up", "group: up"], WAIT).await?;
        addrs.push(addr);
    }
    // One partition, two members: one of them holds nothing and is ready all the same.
    let addrs_ref = &addrs;
    let client_ref = &client;
    wait_until(
        WAIT,
        "the partition held by exactly one member",
        || async move {
            let mut assigned = Vec::new();
            for addr in addrs_ref {
                let Some((200, body)) = get(client_ref, addr, "/metrics").await else {
                    return Ok(None);
                };
                assigned.push(value(
                    &parse(&body),
                    "gregor_consumer_assigned_partitions",
                    &[],
                ));
            }
            assigned.sort_by(|a, b| a.partial_cmp(b).unwrap());
            Ok((assigned == [Some(0.0), Some(1.0)]).then_some(()))
        },
    )
    .await?;
    for addr in &addrs {
        readyz_becomes(&client, addr, 200, &["group: up"], WAIT).await?;
    }
    for member in members {
        member.stop().await?;
    }
    Ok(())
}
