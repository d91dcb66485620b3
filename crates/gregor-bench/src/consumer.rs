//! `gregor-bench consumer`: the consumer runtime's throughput beside a bare rdkafka consume
//! loop reading the same topic: (1) the bare loop, (2) the runtime with JSON decode and no
//! dedupe, (3) the runtime with the PostgreSQL dedupe transaction and one handler INSERT per
//! event, at several key concurrencies, (4) the process RSS while the runtime drains a large
//! backlog, beside the RSS before that scenario started.
//!
//! Rates are measured from the first event received (or handled) to the last, so the group
//! join, the same for every consumer, is left out; the wall rate including it is reported too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gregor_config::Env;
use gregor_consumer::{
    Consumer, ConsumerConfig, ConsumerStats, Context, Event, HandlerError, Json, RouteOptions,
};
use gregor_testkit::{kafka, unique_name};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Workload;
use crate::relay::cpu_seconds;
use crate::report::emit;

/// Consumer benchmark options.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    #[command(flatten)]
    work: Workload,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Lanes per partition (GREGOR_CONSUMER_KEY_CONCURRENCY) tried in the dedupe scenario.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize])]
    key_concurrency: Vec<usize>,
    /// Dedupe transaction batch sizes to measure (`RouteOptions::batch_size`).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 64])]
    batch_size: Vec<usize>,
    /// PostgreSQL connections of the runtime (GREGOR_CONSUMER_DB_POOL_SIZE).
    #[arg(long, default_value_t = 8)]
    db_pool_size: u32,
    /// Profiling aid: only one of the JSON scenarios (`runtime`, `bare`, `bare-json`), printed
    /// without a ratio — e.g. to count its instructions with `perf stat -p` once the events are
    /// produced (docs/BENCHMARKS.md).
    #[arg(long)]
    pub(crate) only: Option<Only>,
    /// Skips the dedupe scenario.
    #[arg(long)]
    no_dedupe: bool,
    /// Events in the RSS-while-draining scenario (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    backlog_events: u64,
    /// JSON payload bytes per event of the backlog.
    #[arg(long, default_value_t = 100)]
    backlog_payload: usize,
}

/// One scenario alone (profiling).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Only {
    /// The runtime, JSON decode, trivial handler.
    Runtime,
    /// The bare consume loop.
    Bare,
    /// The bare loop decoding the JSON.
    BareJson,
}

/// What the handlers decode: every field of the produced JSON.
#[derive(Debug, Deserialize)]
struct BenchEvent {
    id: Uuid,
    key: String,
    seq: i64,
    amount: i64,
    note: String,
}

/// How long a drain took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Start (subscribe) to the first event.
    join: Duration,
    /// First event to the last.
    drain: Duration,
    /// CPU seconds of this process (every thread, librdkafka's included) over the whole
    /// scenario, join included.
    cpu: f64,
}

impl Timing {
    pub(crate) fn rate(&self, events: u64) -> f64 {
        events as f64 / self.drain.as_secs_f64().max(1e-9)
    }

    fn wall_rate(&self, events: u64) -> f64 {
        events as f64 / (self.join + self.drain).as_secs_f64().max(1e-9)
    }

    /// CPU microseconds per event (the whole process: handlers, runtime, librdkafka).
    pub(crate) fn cpu_us_per_event(&self, events: u64) -> f64 {
        round3(self.cpu * 1e6 / events.max(1) as f64)
    }

    pub(crate) fn extra(&self, events: u64) -> [(&'static str, serde_json::Value); 4] {
        [
            ("join_s", json!(round3(self.join.as_secs_f64()))),
            ("drain_s", json!(round3(self.drain.as_secs_f64()))),
            ("wall_events_per_s", json!(self.wall_rate(events).round())),
            ("cpu_us_per_event", json!(self.cpu_us_per_event(events))),
        ]
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub(crate) async fn run(o: Options) -> anyhow::Result<()> {
    let admin_url = gregor_testkit::database_url()?;
    let bootstrap = gregor_testkit::kafka_bootstrap()?;
    println!(
        "consumer benchmark: {} events of {} bytes JSON over {} keys, {} partitions",
        o.work.events, o.work.payload, o.work.keys, o.partitions
    );

    let topic = unique_name("bench-consumer");
    create_topics(&bootstrap, &topic, o.partitions).await?;
    let produced = produce(
        &bootstrap,
        &topic,
        o.work.events,
        o.work.payload,
        o.work.keys,
    )
    .await?;
    println!(
        "produced {} events to {topic} at {produced:.0} events/s",
        o.work.events
    );

    if let Some(only) = o.only {
        let timing = match only {
            Only::Runtime => {
                let config = config(&bootstrap, None, 1, o.db_pool_size)?;
                runtime_drain(config, &topic, o.work.events, Mode::Touch).await?
            }
            Only::Bare => bare_consume(&bootstrap, &topic, o.work.events, false).await?,
            Only::BareJson => bare_consume(&bootstrap, &topic, o.work.events, true).await?,
        };
        println!(
            "{only:?} only: {:.0} events/s, {} CPU-µs per event",
            timing.rate(o.work.events),
            timing.cpu_us_per_event(o.work.events)
        );
        return Ok(());
    }

    // (1) The bare rdkafka consume loop.
    let bare = bare_consume(&bootstrap, &topic, o.work.events, false).await?;
    let baseline = bare.rate(o.work.events);
    println!("baseline: bare rdkafka StreamConsumer loop: {baseline:.0} events/s");
    emit(
        "consumer_bare_rdkafka",
        baseline,
        "events/s",
        baseline,
        &[
            &bare.extra(o.work.events)[..],
            &[
                ("baseline_kind", json!("self: this is the baseline")),
                ("events", json!(o.work.events)),
                ("payload_bytes", json!(o.work.payload)),
                ("partitions", json!(o.partitions)),
            ],
        ]
        .concat(),
    );

    // (1b) The same loop decoding the JSON into the handlers' struct.
    let bare_json = bare_consume(&bootstrap, &topic, o.work.events, true).await?;
    let json_baseline = bare_json.rate(o.work.events);
    println!("baseline: bare loop with JSON decode: {json_baseline:.0} events/s");
    emit(
        "consumer_bare_json",
        json_baseline,
        "events/s",
        baseline,
        &[
            &bare_json.extra(o.work.events)[..],
            &[
                ("baseline_kind", json!("the bare loop without decoding")),
                ("events", json!(o.work.events)),
            ],
        ]
        .concat(),
    );

    // (2) The runtime, JSON decode, no dedupe, trivial handler.
    let config = config(&bootstrap, None, 1, o.db_pool_size)?;
    let queue_capacity = config.queue_capacity;
    let plain = runtime_drain(config, &topic, o.work.events, Mode::Touch).await?;
    emit(
        "consumer_json_no_dedupe",
        plain.rate(o.work.events),
        "events/s",
        baseline,
        &[
            &plain.extra(o.work.events)[..],
            &[
                (
                    "ratio_to_bare_json",
                    json!(round3(plain.rate(o.work.events) / json_baseline)),
                ),
                (
                    "bare_json_cpu_us_per_event",
                    json!(bare_json.cpu_us_per_event(o.work.events)),
                ),
                (
                    "bare_cpu_us_per_event",
                    json!(bare.cpu_us_per_event(o.work.events)),
                ),
                ("target_ratio", json!(0.8)),
                ("key_concurrency", json!(1)),
                ("queue_capacity", json!(queue_capacity)),
                ("events", json!(o.work.events)),
            ],
        ]
        .concat(),
    );

    // (3) The runtime with the dedupe transaction and one INSERT per event.
    if !o.no_dedupe {
        let db = BenchDb::create(&admin_url).await?;
        println!("database {} created", db.name);
        let dedupe = dedupe_scenarios(&db, &bootstrap, &topic, &o, baseline).await;
        let dropped = db.drop().await;
        dedupe?;
        dropped?;
    }

    // (4) RSS while the runtime drains a large backlog.
    if o.backlog_events > 0 {
        backlog_rss(&bootstrap, &o).await?;
    }
    Ok(())
}

async fn dedupe_scenarios(
    db: &BenchDb,
    bootstrap: &str,
    topic: &str,
    o: &Options,
    baseline: f64,
) -> anyhow::Result<()> {
    let runs = o
        .key_concurrency
        .iter()
        .flat_map(|&lanes| o.batch_size.iter().map(move |&batch| (lanes, batch)));
    for (lanes, batch) in runs {
        sqlx::query("TRUNCATE bench_effects, gregor_inbox")
            .execute(&db.pool)
            .await?;
        let config = config(bootstrap, Some(&db.url), lanes, o.db_pool_size)?;
        let timing = runtime_drain(config, topic, o.work.events, Mode::Insert { batch }).await?;
        let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_effects")
            .fetch_one(&db.pool)
            .await?;
        if u64::try_from(effects)? != o.work.events {
            bail!(
                "{effects} effect rows after handling {} events",
                o.work.events
            );
        }
        let rate = timing.rate(o.work.events);
        emit(
            &format!("consumer_dedupe_insert_kc{lanes}_batch{batch}"),
            rate,
            "events/s",
            baseline,
            &[
                &timing.extra(o.work.events)[..],
                &[
                    ("target_events_per_s", json!(20_000)),
                    ("meets_target", json!(rate >= 20_000.0)),
                    ("key_concurrency", json!(lanes)),
                    ("batch_size", json!(batch)),
                    ("db_pool_size", json!(o.db_pool_size)),
                    ("partitions", json!(o.partitions)),
                    ("events", json!(o.work.events)),
                ],
            ]
            .concat(),
        );
    }
    Ok(())
}

async fn backlog_rss(bootstrap: &str, o: &Options) -> anyhow::Result<()> {
    let topic = unique_name("bench-consumer-backlog");
    create_topics(bootstrap, &topic, o.partitions).await?;
    let produced = produce(
        bootstrap,
        &topic,
        o.backlog_events,
        o.backlog_payload,
        o.work.keys,
    )
    .await?;
    println!(
        "produced a backlog of {} events of {} bytes at {produced:.0} events/s",
        o.backlog_events, o.backlog_payload
    );
    let before = rss_kib("VmRSS:");
    let peak = Arc::new(AtomicU64::new(before));
    let samples = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, samples, stop) = (peak.clone(), samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib("VmRSS:"), Ordering::Relaxed);
                samples.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let config = config(bootstrap, None, 1, o.db_pool_size)?;
    let queue_capacity = config.queue_capacity;
    let drained = runtime_drain(config, &topic, o.backlog_events, Mode::Touch).await;
    stop.store(true, Ordering::Relaxed);
    sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the RSS sampler panicked"))?;
    let timing = drained?;
    let (before_mib, peak_mib) = (
        before as f64 / 1024.0,
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
    );
    emit(
        "consumer_backlog_rss",
        peak_mib,
        "MiB",
        before_mib,
        &[
            &timing.extra(o.backlog_events)[..],
            &[
                ("baseline_kind", json!("VmRSS before the scenario started")),
                ("growth_mib", json!(round3(peak_mib - before_mib))),
                ("samples", json!(samples.load(Ordering::Relaxed))),
                ("events", json!(o.backlog_events)),
                ("payload_bytes", json!(o.backlog_payload)),
                ("events_per_s", json!(timing.rate(o.backlog_events).round())),
                ("queue_capacity", json!(queue_capacity)),
                (
                    "measures",
                    json!("peak VmRSS of this process, sampled every 100 ms while draining"),
                ),
            ],
        ]
        .concat(),
    );
    Ok(())
}

/// `kind` (`VmRSS:`, `VmHWM:`) of this process in KiB.
fn rss_kib(kind: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(kind))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

pub(crate) async fn create_topics(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    kafka::create_topic_on(bootstrap, topic, partitions).await?;
    kafka::create_topic_on(bootstrap, &format!("{topic}.dlq"), 1).await
}

fn key(i: u64, keys: u64) -> String {
    format!("key-{:04}", i % keys.max(1))
}

/// A JSON event of about `size` bytes (the note pads it).
fn event_json(seq: u64, id: &str, key: &str, size: usize) -> Vec<u8> {
    let mut s = format!(
        r#"{{"id":"{id}","key":"{key}","seq":{seq},"amount":{},"note":""#,
        seq % 10_000
    );
    let pad = size.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s.into_bytes()
}

/// Produces `events` JSON events with a unique `ce_id` each through an idempotent producer;
/// returns the production rate.
pub(crate) async fn produce(
    bootstrap: &str,
    topic: &str,
    events: u64,
    size: usize,
    keys: u64,
) -> anyhow::Result<f64> {
    produce_with(bootstrap, topic, events, size, keys, None).await
}

/// [`produce`]; with `sampled_every: Some(n)`, each event also carries a `traceparent` of its
/// own trace, every n-th one flagged sampled.
pub(crate) async fn produce_with(
    bootstrap: &str,
    topic: &str,
    events: u64,
    size: usize,
    keys: u64,
    sampled_every: Option<u64>,
) -> anyhow::Result<f64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(10_000);
    for i in 0..events {
        let id = Uuid::new_v4().to_string();
        let k = key(i, keys);
        let body = event_json(i, &id, &k, size);
        let mut headers = OwnedHeaders::new().insert(Header {
            key: gregor_wire::headers::CE_ID,
            value: Some(id.as_str()),
        });
        if let Some(every) = sampled_every {
            let flags = if i % every.max(1) == 0 { "01" } else { "00" };
            let parent = format!("00-{}-{:016x}-{flags}", Uuid::new_v4().simple(), i + 1);
            headers = headers.insert(Header {
                key: gregor_wire::headers::TRACEPARENT,
                value: Some(parent.as_str()),
            });
        }
        let mut record = FutureRecord::to(topic)
            .key(k.as_str())
            .payload(body.as_slice())
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    if pending.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    for f in pending.drain(..) {
                        f.await?.map_err(|(e, _)| e)?;
                    }
                }
                Err((e, _)) => return Err(e.into()),
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
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// (1) A bare rdkafka consume loop: fresh group, from the earliest offset, counting messages
/// and touching each payload; with `json`, decoding each payload into the handlers' struct
/// and touching its fields — the same essential work as the runtime's JSON scenario.
async fn bare_consume(
    bootstrap: &str,
    topic: &str,
    events: u64,
    json: bool,
) -> anyhow::Result<Timing> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("bench-bare-consumer"))
        .set("auto.offset.reset", "earliest")
        .create()?;
    let cpu_before = cpu_seconds(std::process::id());
    consumer.subscribe(&[topic])?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut first = None;
    let (mut count, mut bytes, mut check) = (0u64, 0u64, 0u8);
    while count < events {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, consumer.recv())
            .await
            .with_context(|| format!("the bare consumer read {count} of {events} events"))??;
        first.get_or_insert_with(Instant::now);
        if let Some(p) = msg.payload() {
            if json {
                let v: BenchEvent = serde_json::from_slice(p)?;
                std::hint::black_box((v.id, v.key.len(), v.seq, v.amount, v.note.len()));
            } else {
                bytes += p.len() as u64;
                check ^= p.iter().fold(0u8, |a, b| a ^ b);
            }
        }
        count += 1;
    }
    let done = Instant::now();
    std::hint::black_box((bytes, check));
    let first = first.unwrap_or(done);
    Ok(Timing {
        join: first - started,
        drain: done - first,
        cpu: cpu_seconds(std::process::id()) - cpu_before,
    })
}

/// The runtime's configuration: pass-through `KAFKA_*` and `GREGOR_CONSUMER_*` variables of
/// this process, then the scenario's own settings.
pub(crate) fn config(
    bootstrap: &str,
    database_url: Option<&str>,
    key_concurrency: usize,
    db_pool_size: u32,
) -> anyhow::Result<ConsumerConfig> {
    let mut env = Env::from_pairs(
        std::env::vars()
            .filter(|(k, _)| k.starts_with("KAFKA_") || k.starts_with("GREGOR_CONSUMER_")),
    )
    .with("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    .with("GREGOR_CONSUMER_GROUP", unique_name("bench-consumer"))
    .with("GREGOR_CONSUMER_RETRY_TIERS", "none")
    .with(
        "GREGOR_CONSUMER_KEY_CONCURRENCY",
        key_concurrency.to_string(),
    )
    .with("GREGOR_CONSUMER_DB_POOL_SIZE", db_pool_size.to_string());
    if let Some(url) = database_url {
        env = env.with("DATABASE_URL", url);
    }
    Ok(ConsumerConfig::from_env(&env)?)
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Decode and touch the fields.
    Touch,
    /// One INSERT in the dedupe transaction, `batch` messages per transaction.
    Insert { batch: usize },
}

async fn touch(_ctx: Context, event: Event<BenchEvent>) -> Result<(), HandlerError> {
    if let Some(v) = event.value {
        std::hint::black_box((v.id, v.key.len(), v.seq, v.amount, v.note.len()));
    }
    Ok(())
}

async fn insert(ctx: Context, event: Event<BenchEvent>) -> Result<(), HandlerError> {
    let Some(v) = event.value else {
        return Ok(());
    };
    let mut tx = ctx.transaction().await?;
    sqlx::query("INSERT INTO bench_effects (id, seq) VALUES ($1, $2)")
        .bind(v.id)
        .bind(v.seq)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Runs the runtime over `topic` until it handled `events` events.
pub(crate) async fn runtime_drain(
    config: ConsumerConfig,
    topic: &str,
    events: u64,
    mode: Mode,
) -> anyhow::Result<Timing> {
    let builder = Consumer::builder(config);
    let builder = match mode {
        Mode::Touch => builder.route(topic, Json::<BenchEvent>::new(), touch),
        Mode::Insert { batch } => builder.route_with(
            topic,
            Json::<BenchEvent>::new(),
            insert,
            RouteOptions {
                batch_size: batch,
                ..RouteOptions::default()
            },
        ),
    };
    let consumer = builder.build().await?;
    let metrics = consumer.metrics();
    let token = CancellationToken::new();
    let cpu_before = cpu_seconds(std::process::id());
    let started = Instant::now();
    let task = tokio::spawn(consumer.run(token.clone()));
    let deadline = started + Duration::from_secs(900);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut first = None;
    let finished = |s: &ConsumerStats| s.handled + s.duplicates + s.dead_lettered >= events;
    let stats = loop {
        tick.tick().await;
        let s = metrics.stats();
        if first.is_none() && s.handled > 0 {
            first = Some(Instant::now());
        }
        if finished(&s) {
            break s;
        }
        if task.is_finished() || Instant::now() > deadline {
            token.cancel();
            let _ = task.await;
            bail!("the runtime stopped after {s:?} of {events} events");
        }
    };
    let done = Instant::now();
    token.cancel();
    task.await??;
    if stats.handled != events || stats.failed_attempts != 0 {
        bail!("expected {events} events handled without failures, got {stats:?}");
    }
    let first = first.unwrap_or(done);
    Ok(Timing {
        join: first - started,
        drain: done - first,
        cpu: cpu_seconds(std::process::id()) - cpu_before,
    })
}

/// A fresh database for the dedupe scenario, dropped at the end.
#[derive(Debug)]
pub(crate) struct BenchDb {
    admin_url: String,
    name: String,
    pub(crate) url: String,
    pub(crate) pool: PgPool,
}

impl BenchDb {
    pub(crate) async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = unique_name("bench").replace('-', "_");
        let mut admin = PgConnection::connect(admin_url)
            .await
            .context("cannot reach PostgreSQL at DATABASE_URL")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let url = gregor_testkit::services::with_database(admin_url, &name);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await?;
        sqlx::query("CREATE TABLE bench_effects (id uuid PRIMARY KEY, seq bigint NOT NULL)")
            .execute(&pool)
            .await?;
        gregor_consumer::migrate_dedupe(&pool).await?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
            pool,
        })
    }

    pub(crate) async fn drop(self) -> anyhow::Result<()> {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        println!("database {} dropped", self.name);
        Ok(())
    }
}
