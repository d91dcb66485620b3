//! `gregor-bench relay`: relay drain throughput with 1 and 3 replicas beside (a) a bare
//! rdkafka producer sending the same messages from memory and (b) a bare SQL read-and-delete
//! loop; commit-to-consumer latency at a steady rate beside a bare producer's send-to-ack
//! latency; the relay's peak RSS.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gregor_outbox::OutboxMessage;
use gregor_testkit::{TestDb, kafka, unique_name};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Workload;
use crate::relay_extra as extra;
use crate::report::{emit, quantile};

fn per_event(cpu_seconds: f64, events: u64) -> f64 {
    cpu_seconds * 1e6 / events.max(1) as f64
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// A small waiting backlog for the first-publish scenario.
async fn fill_small(pool: &PgPool, bootstrap: &str, partitions: i32) -> anyhow::Result<()> {
    let topic = unique_name("bench-first");
    kafka::create_topic_on(bootstrap, &topic, partitions).await?;
    let work = Workload {
        events: 1000,
        payload: 100,
        keys: 100,
    };
    fill_with(pool, &topic, &work, None).await
}

/// Relay benchmark options.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    #[command(flatten)]
    work: Workload,
    /// Events per second in the latency scenario.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of steady load in the latency scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
}

pub(crate) async fn run(o: Options) -> anyhow::Result<()> {
    let server = gregor_testkit::database_url()?;
    let bootstrap = gregor_testkit::kafka_bootstrap()?;
    let relay_bin = relay_binary()?;
    println!(
        "relay benchmark: {} events of {} bytes over {} keys, {} partitions",
        o.work.events, o.work.payload, o.work.keys, o.partitions
    );

    let cpu_before = extra::own_cpu() + extra::cpu_of_processes(extra::SERVICES);
    let producer_rate = bare_producer(&bootstrap, &o).await?;
    let producer_cpu = per_event(
        extra::own_cpu() + extra::cpu_of_processes(extra::SERVICES) - cpu_before,
        o.work.events,
    );
    println!(
        "baseline (a) bare rdkafka producer: {producer_rate:.0} events/s, {producer_cpu:.1} CPU-µs/event (bench + PostgreSQL + broker)"
    );

    let db = TestDb::create_on(&server, "bench").await?;
    fill(&db.pool, "unused", &o).await?;
    let cpu_before = extra::own_cpu() + extra::cpu_of_processes(extra::SERVICES);
    let sql_rate = bare_sql_drain(&db.pool, o.work.events).await?;
    let sql_cpu = per_event(
        extra::own_cpu() + extra::cpu_of_processes(extra::SERVICES) - cpu_before,
        o.work.events,
    );
    println!("baseline (b) bare SQL read+delete: {sql_rate:.0} rows/s, {sql_cpu:.1} CPU-µs/event");
    let baseline = producer_rate.min(sql_rate);
    let bare_cpu = producer_cpu + sql_cpu;

    let topic = unique_name("bench-hand");
    kafka::create_topic_on(&bootstrap, &topic, o.partitions).await?;
    fill(&db.pool, &topic, &o).await?;
    let hand_producer: FutureProducer = producer_config(&bootstrap).create()?;
    let (hand_rate, hand_cpu) =
        extra::hand_rolled_drain(&db.pool, &hand_producer, &topic, o.work.events).await?;
    drop(hand_producer);
    println!(
        "baseline (c) hand-rolled single-statement drain: {hand_rate:.0} events/s, {hand_cpu:.1} CPU-µs/event"
    );

    let mut peak_rss_kib = 0;
    let mut quiet_rate = 0.0;
    for (replicas, held) in [(1usize, false), (3, false), (1, true)] {
        let topic = unique_name("bench-relay");
        kafka::create_topic_on(&bootstrap, &topic, o.partitions).await?;
        fill(&db.pool, &topic, &o).await?;
        let snapshot = if held {
            Some(extra::HeldSnapshot::take(&db.pool).await?)
        } else {
            None
        };
        let services_before = extra::cpu_of_processes(extra::SERVICES);
        let (rate, rss, relay_cpu) =
            relay_drain(&db, &bootstrap, &relay_bin, replicas, o.work.events, &[]).await?;
        let services_cpu = extra::cpu_of_processes(extra::SERVICES) - services_before;
        if let Some(snapshot) = snapshot {
            snapshot.release().await?;
        }
        peak_rss_kib = peak_rss_kib.max(rss);
        let total_cpu = per_event(relay_cpu + services_cpu, o.work.events);
        let name = match (replicas, held) {
            (_, true) => "relay_drain_held_snapshot".to_owned(),
            (1, false) => "relay_drain_1_replica".to_owned(),
            (n, false) => format!("relay_drain_{n}_replicas"),
        };
        if replicas == 1 && !held {
            quiet_rate = rate;
        }
        let (base, base_kind, target) = if held {
            (quiet_rate, "the quiet 1-replica drain of this run", 0.9)
        } else {
            (
                baseline,
                "slower of bare producer and bare SQL",
                if replicas == 1 { 0.6 } else { 0.7 },
            )
        };
        emit(
            &name,
            rate,
            "events/s",
            base,
            &[
                ("baseline_kind", json!(base_kind)),
                ("baseline_producer", json!(producer_rate.round())),
                ("baseline_sql", json!(sql_rate.round())),
                ("baseline_hand_rolled", json!(hand_rate.round())),
                (
                    "ratio_to_hand_rolled",
                    json!((rate / hand_rate * 1000.0).round() / 1000.0),
                ),
                (
                    "relay_cpu_us_per_event",
                    json!(round1(per_event(relay_cpu, o.work.events))),
                ),
                ("total_cpu_us_per_event", json!(round1(total_cpu))),
                ("bare_cpu_us_per_event", json!(round1(bare_cpu))),
                ("hand_rolled_cpu_us_per_event", json!(round1(hand_cpu))),
                (
                    "cpu_ratio_to_bare",
                    json!(round1(total_cpu / bare_cpu * 100.0) / 100.0),
                ),
                ("replicas", json!(replicas)),
                ("events", json!(o.work.events)),
                ("target_ratio", json!(target)),
            ],
        );
    }

    fill_small(&db.pool, &bootstrap, o.partitions).await?;
    let first = extra::first_publish(&db, &bootstrap, &relay_bin, 1000).await?;
    emit(
        "relay_first_publish",
        first * 1000.0,
        "ms",
        500.0,
        &[
            ("baseline_kind", json!("target")),
            (
                "measures",
                json!(
                    "relay process spawned → first row of a waiting backlog acknowledged and deleted"
                ),
            ),
        ],
    );
    sqlx::query("DELETE FROM gregor_outbox")
        .execute(&db.pool)
        .await?;

    let (p50, p99, bare_p50, bare_p99) = latency(&db, &bootstrap, &relay_bin, &o, false).await?;
    // Records lost across the hand-over end this scenario with the count (checked by a full
    // re-read, see `latency`); the rest of the run goes on.
    match latency(&db, &bootstrap, &relay_bin, &o, true).await {
        Ok((roll_p50, roll_p99, _, _)) => emit(
            "relay_latency_p99_rolling_restart",
            roll_p99,
            "ms",
            250.0,
            &[
                ("p50_ms", json!(roll_p50)),
                ("baseline_kind", json!("target")),
                ("rate", json!(o.rate)),
                (
                    "measures",
                    json!("commit → consumer receipt while each of 2 replicas is restarted once"),
                ),
            ],
        ),
        Err(e) => println!("relay_latency_p99_rolling_restart: not measured: {e:#}"),
    }
    sqlx::query("DELETE FROM gregor_outbox")
        .execute(&db.pool)
        .await?;
    emit(
        "relay_latency_p99",
        p99,
        "ms",
        bare_p99,
        &[
            ("p50_ms", json!(p50)),
            ("baseline_p50_ms", json!(bare_p50)),
            ("rate", json!(o.rate)),
            ("target_ms", json!(20)),
            (
                "measures",
                json!(
                    "commit → consumer receipt (upper bound of commit → broker ack); baseline: bare producer send → ack"
                ),
            ),
        ],
    );
    let rss_mib = peak_rss_kib as f64 / 1024.0;
    emit(
        "relay_rss",
        rss_mib,
        "MiB",
        64.0,
        &[
            ("baseline_kind", json!("target")),
            (
                "measures",
                json!("peak VmHWM of any relay process in this run"),
            ),
        ],
    );
    Ok(())
}

pub(crate) fn relay_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .context("no parent directory")?
        .join("gregor-relay");
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo build --release --bins` first",
            path.display()
        );
    }
    Ok(path)
}

fn key(i: u64, keys: u64) -> String {
    format!("key-{:04}", i % keys)
}

fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "200000");
    config
}

/// (a) The same messages from memory through a bare idempotent producer.
async fn bare_producer(bootstrap: &str, o: &Options) -> anyhow::Result<f64> {
    let topic = unique_name("bench-bare");
    kafka::create_topic_on(bootstrap, &topic, o.partitions).await?;
    let producer: FutureProducer = producer_config(bootstrap).create()?;
    let payload = vec![b'x'; o.work.payload];
    let keys: Vec<String> = (0..o.work.events).map(|i| key(i, o.work.keys)).collect();
    let started = Instant::now();
    let mut pending = Vec::with_capacity(10_000);
    for k in &keys {
        let mut record = FutureRecord::to(&topic)
            .key(k.as_str())
            .payload(payload.as_slice());
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((_, back)) => {
                    record = back;
                    // Queue full: wait for the oldest deliveries.
                    for f in pending.drain(..) {
                        f.await?.map_err(|(e, _)| e)?;
                    }
                }
            }
        }
        if pending.len() >= 10_000 {
            for f in pending.drain(..) {
                f.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for f in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    Ok(o.work.events as f64 / started.elapsed().as_secs_f64())
}

/// Fills the outbox through the library's batch enqueue.
async fn fill(pool: &PgPool, topic: &str, o: &Options) -> anyhow::Result<()> {
    fill_with(pool, topic, &o.work, None).await
}

/// [`fill`]; with `sampled_every: Some(n)`, each row carries a trace context of its own
/// trace, every n-th one flagged sampled.
pub(crate) async fn fill_with(
    pool: &PgPool,
    topic: &str,
    work: &crate::Workload,
    sampled_every: Option<u64>,
) -> anyhow::Result<()> {
    let o = work;
    let payload = vec![b'x'; o.payload];
    let mut i = 0;
    while i < o.events {
        let end = (i + 5000).min(o.events);
        let mut tx = pool.begin().await?;
        gregor_outbox::enqueue_batch(
            &mut tx,
            (i..end).map(|n| {
                let message = OutboxMessage::new(topic, "bench", "/bench")
                    .key(key(n, o.keys))
                    .payload(payload.clone());
                if let Some(every) = sampled_every {
                    let flags = if n % every.max(1) == 0 { "01" } else { "00" };
                    let parent = format!("00-{}-{:016x}-{flags}", Uuid::new_v4().simple(), n + 1);
                    message.trace_context(parent, None)
                } else {
                    message
                }
            }),
        )
        .await?;
        tx.commit().await?;
        i = end;
    }
    sqlx::query("VACUUM ANALYZE gregor_outbox")
        .execute(pool)
        .await?;
    Ok(())
}

/// id, key, payload of a drained row.
pub(crate) type DrainedRow = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// (b) The fastest bare SQL drain: delete-returning in id order, each batch starting after the
/// last id of the previous one.
async fn bare_sql_drain(pool: &PgPool, events: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut after: i64 = 0;
    let mut drained = 0u64;
    loop {
        let rows: Vec<DrainedRow> = sqlx::query_as(
            "DELETE FROM gregor_outbox WHERE id IN (
                 SELECT id FROM gregor_outbox WHERE id > $1 ORDER BY id LIMIT 1000)
             RETURNING id, key, payload",
        )
        .bind(after)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.iter().map(|r| r.0).max() else {
            break;
        };
        after = last;
        drained += rows.len() as u64;
    }
    if drained != events {
        bail!("bare SQL drained {drained} rows, expected {events}");
    }
    Ok(drained as f64 / started.elapsed().as_secs_f64())
}

pub(crate) struct RelayProc(Child);

impl RelayProc {
    /// SIGTERM and wait: the relay releases its leases and leaves.
    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn spawn_relay(
    bin: &PathBuf,
    db: &TestDb,
    bootstrap: &str,
    name: &str,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<RelayProc> {
    let child = Command::new(bin)
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env("GREGOR_RELAY_NAME", name)
        .env("GREGOR_RELAY_HTTP_ADDR", "off")
        .env("GREGOR_RELAY_LEASE_TTL_MS", "3000")
        .env("RUST_LOG", "warn")
        // KAFKA_* and GREGOR_RELAY_* of the benchmark's own environment reach the relay, so
        // settings can be compared (`KAFKA_LINGER_MS=1 gregor-bench relay`).
        .envs(std::env::vars().filter(|(k, _)| {
            (k.starts_with("KAFKA_") && k != "KAFKA_BOOTSTRAP_SERVERS")
                || (k.starts_with("GREGOR_RELAY_") && k != "GREGOR_RELAY_NAME")
        }))
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(RelayProc(child))
}

/// User plus system CPU time a process used so far (all its threads).
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // Linux reports these in USER_HZ, 100 per second on every supported platform.
    ticks as f64 / 100.0
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

pub(crate) async fn poll<F, Fut>(
    timeout: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<Instant>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        if check().await? {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
    }
}

/// Forgets replicas of earlier scenarios (their heartbeats would shrink the fair share).
/// Creates the relay's tables first: no relay may have run on the database yet.
pub(crate) async fn reset_leases(pool: &PgPool) -> anyhow::Result<()> {
    gregor_relay::migrate(pool).await?;
    sqlx::query("UPDATE gregor_relay_leases SET owner = NULL, expires_at = '-infinity'")
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM gregor_relay_members")
        .execute(pool)
        .await?;
    Ok(())
}

/// Drain time from the first lease taken to an empty outbox.
pub(crate) async fn relay_drain(
    db: &TestDb,
    bootstrap: &str,
    bin: &PathBuf,
    replicas: usize,
    events: u64,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<(f64, u64, f64)> {
    reset_leases(&db.pool).await?;
    let procs: Vec<RelayProc> = (0..replicas)
        .map(|i| spawn_relay(bin, db, bootstrap, &format!("bench-{i}"), extra_env))
        .collect::<Result<_, _>>()?;
    let pool = &db.pool;
    let started = poll(
        Duration::from_secs(30),
        "a relay to take a lease",
        || async {
            Ok(sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM gregor_relay_leases WHERE owner IS NOT NULL)",
            )
            .fetch_one(pool)
            .await?)
        },
    )
    .await?;
    let done = poll(Duration::from_secs(600), "the outbox to drain", || async {
        Ok(
            !sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM gregor_outbox)")
                .fetch_one(pool)
                .await?,
        )
    })
    .await?;
    let rss = procs
        .iter()
        .map(|p| peak_rss_kib(p.0.id()))
        .max()
        .unwrap_or(0);
    let cpu = procs.iter().map(|p| cpu_seconds(p.0.id())).sum();
    for p in procs {
        p.stop();
    }
    Ok((events as f64 / (done - started).as_secs_f64(), rss, cpu))
}

/// Steady load: single-event transactions at `rate`; latency from just before COMMIT to the
/// consumer's receipt. Baseline: a bare producer's send → ack at the same rate.
async fn latency(
    db: &TestDb,
    bootstrap: &str,
    bin: &PathBuf,
    o: &Options,
    rolling: bool,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    let topic = unique_name("bench-latency");
    kafka::create_topic_on(bootstrap, &topic, o.partitions).await?;
    reset_leases(&db.pool).await?;
    // With `rolling`, two replicas share the shards and each is restarted once while the load
    // runs (SIGTERM, then a new process), as a rolling deploy does.
    let mut relays = vec![spawn_relay(bin, db, bootstrap, "bench-latency-a", &[])?];
    if rolling {
        relays.push(spawn_relay(bin, db, bootstrap, "bench-latency-b", &[])?);
    }
    let pool = &db.pool;
    poll(
        Duration::from_secs(30),
        "the relay to hold every lease",
        || async {
            Ok(sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM gregor_relay_leases WHERE owner IS NOT NULL",
            )
            .fetch_one(pool)
            .await?
                == 64)
        },
    )
    .await?;

    let total = o.rate * o.seconds;
    let committed: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    // The reader connects and starts fetching before the first commit, so its start-up is
    // not counted as relay latency.
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (bootstrap, topic, committed) =
            (bootstrap.to_owned(), topic.clone(), committed.clone());
        let (partitions, ready) = (o.partitions, ready.clone());
        tokio::task::spawn_blocking(move || {
            read_latencies(&bootstrap, &topic, partitions, total, &committed, &ready)
        })
    };
    poll(
        Duration::from_secs(30),
        "the latency reader to fetch",
        || async { Ok(ready.load(std::sync::atomic::Ordering::SeqCst)) },
    )
    .await?;
    let writers = 4u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (pool, topic, committed) = (db.pool.clone(), topic.clone(), committed.clone());
        let per_writer = total / writers;
        let period = Duration::from_micros(1_000_000 * writers / o.rate.max(1));
        let payload = vec![b'x'; o.work.payload];
        let keys = o.work.keys;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            for i in 0..per_writer {
                tick.tick().await;
                let mut tx = pool.begin().await?;
                let id = gregor_outbox::enqueue(
                    &mut tx,
                    OutboxMessage::new(&topic, "bench", "/bench")
                        .key(key(i * writers + w, keys))
                        .payload(payload.clone()),
                )
                .await?;
                committed
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .insert(id, Instant::now());
                tx.commit().await?;
            }
            anyhow::Ok(())
        }));
    }
    let restarts = if rolling {
        let (bin, db, bootstrap) = (bin.clone(), db.clone(), bootstrap.to_owned());
        let third = Duration::from_secs(o.seconds) / 3;
        let mut old: Vec<RelayProc> = std::mem::take(&mut relays);
        Some(tokio::spawn(async move {
            let mut fresh = Vec::new();
            for name in ["bench-latency-a2", "bench-latency-b2"] {
                tokio::time::sleep(third).await;
                let stopping = old.remove(0);
                tokio::task::spawn_blocking(move || stopping.stop()).await?;
                fresh.push(spawn_relay(&bin, &db, &bootstrap, name, &[])?);
            }
            anyhow::Ok(fresh)
        }))
    } else {
        None
    };
    for t in tasks {
        t.await??;
    }
    let (mut samples, seen) = reader.await??;
    if let Some(restarts) = restarts {
        relays = restarts.await??;
    }
    for relay in relays {
        relay.stop();
    }
    if (seen.len() as u64) < total {
        // nisshi can hand a live reader a later batch while an earlier one is still being
        // stored, and the reader never sees the earlier one (docs/nisshi.md). Tell that apart
        // from a loss with a full read from offset 0, now that nothing is produced.
        let all: std::collections::HashSet<Uuid> =
            kafka::read_to_end_on(bootstrap, &topic, Duration::from_secs(60))
                .await?
                .iter()
                .filter_map(|m| m.header("ce_id").and_then(|v| v.parse().ok()))
                .collect();
        if (all.len() as u64) < total {
            bail!(
                "events lost: {} of {total} on the broker (the live reader saw {})",
                all.len(),
                seen.len()
            );
        }
        println!(
            "latency: the live reader missed {} of {total} events that a full re-read found \
             (nisshi's live-read race, docs/nisshi.md); their latency is not counted",
            total - seen.len() as u64
        );
    }
    let p50 = quantile(&mut samples, 500);
    let p99 = quantile(&mut samples, 990);

    // Baseline: bare producer at the same rate.
    let producer: FutureProducer = producer_config(bootstrap).create()?;
    let bare_topic = unique_name("bench-latency-bare");
    kafka::create_topic_on(bootstrap, &bare_topic, o.partitions).await?;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / o.rate.max(1)));
    let mut acks = Vec::new();
    let payload = vec![b'x'; o.work.payload];
    for i in 0..total {
        tick.tick().await;
        let sent = Instant::now();
        let k = key(i, o.work.keys);
        let delivery = producer
            .send_result(
                FutureRecord::to(&bare_topic)
                    .key(k.as_str())
                    .payload(payload.as_slice()),
            )
            .map_err(|(e, _)| e)?;
        acks.push(tokio::spawn(async move {
            delivery
                .await
                .ok()
                .and_then(Result::ok)
                .map(|_| sent.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut bare = Vec::new();
    for a in acks {
        if let Some(ms) = a.await? {
            bare.push(ms);
        }
    }
    producer.flush(Duration::from_secs(10))?;
    Ok((p50, p99, quantile(&mut bare, 500), quantile(&mut bare, 990)))
}

fn read_latencies(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    total: u64,
    committed: &Mutex<HashMap<Uuid, Instant>>,
    ready: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<(Vec<f64>, std::collections::HashSet<Uuid>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("bench-latency"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        // Offset 0, not `Beginning` (docs/nisshi.md).
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(0))?;
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut samples = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut seen = std::collections::HashSet::new();
    let mut empty_polls = 0;
    while (seen.len() as u64) < total && Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            // A few empty fetches: connected and fetching from every partition.
            empty_polls += 1;
            if empty_polls == 5 {
                ready.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            continue;
        };
        let msg = msg?;
        let received = Instant::now();
        let Some(id) = msg
            .headers()
            .and_then(|h| h.iter().find(|x| x.key == "ce_id").and_then(|x| x.value))
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<Uuid>().ok())
        else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let at = committed
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .get(&id)
            .copied();
        if let Some(at) = at {
            samples.push(received.saturating_duration_since(at).as_secs_f64() * 1000.0);
        }
    }
    Ok((samples, seen))
}
