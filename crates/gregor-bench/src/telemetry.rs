//! `gregor-bench telemetry`: what tracing with OTLP export costs. The relay drains traced
//! outbox rows with export off and then on (a separate process each time, exporting to an
//! OTLP/HTTP receiver in this process), and the consumer runtime drains traced messages with
//! its OpenTelemetry layer off and then on — each pair in one run, alternating, with the
//! default sampler (parent-based, always on: every sampled trace context is exported).

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::bail;
use gregor_testkit::otlp::OtlpReceiver;
use gregor_testkit::{TestDb, kafka, unique_name};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::json;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::Workload;
use crate::consumer::{self, Mode};
use crate::relay;
use crate::report::emit;

/// Telemetry benchmark options.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    #[command(flatten)]
    work: Workload,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Off/on pairs per component (the best of each side is reported).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Every n-th event's trace context is flagged sampled (1: all of them, the worst case;
    /// 10 models a caller sampling 10 % of its requests).
    #[arg(long, default_value_t = 1)]
    sampled_every: u64,
    /// Skips the dedupe (database) consumer scenario.
    #[arg(long)]
    no_dedupe: bool,
    /// Skips the relay scenario.
    #[arg(long)]
    no_relay: bool,
}

/// Whether the OpenTelemetry layer sees spans (a per-layer filter, so the layer stays
/// installed and reachable for `set_parent`; a reload layer would hide it).
static EXPORT: AtomicBool = AtomicBool::new(false);

pub(crate) async fn run(o: Options) -> anyhow::Result<()> {
    let server = gregor_testkit::database_url()?;
    let bootstrap = gregor_testkit::kafka_bootstrap()?;
    let receiver = OtlpReceiver::start_discarding().await?;
    println!(
        "telemetry benchmark: {} traced events of {} bytes over {} keys, {} partitions, {} rounds",
        o.work.events, o.work.payload, o.work.keys, o.partitions, o.rounds
    );
    if !o.no_relay {
        relay_overhead(&o, &server, &bootstrap, &receiver).await?;
    }
    consumer_overhead(&o, &server, &bootstrap, &receiver).await
}

async fn relay_overhead(
    o: &Options,
    server: &str,
    bootstrap: &str,
    receiver: &OtlpReceiver,
) -> anyhow::Result<()> {
    let bin = relay::relay_binary()?;
    let db = TestDb::create_on(server, "bench_telemetry").await?;
    let endpoint = receiver.endpoint().to_owned();
    let on_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "gregor-relay-bench"),
    ];
    let (mut off, mut on) = (0.0f64, 0.0f64);
    let (mut cpu_off, mut cpu_on) = (f64::MAX, f64::MAX);
    let mut exported = 0;
    for round in 0..o.rounds {
        for export in [false, true] {
            let topic = unique_name("bench-telemetry");
            kafka::create_topic_on(bootstrap, &topic, o.partitions).await?;
            relay::fill_with(&db.pool, &topic, &o.work, Some(o.sampled_every)).await?;
            let env: &[(&str, &str)] = if export { &on_env } else { &[] };
            let before = receiver.span_count();
            let (rate, _, cpu) =
                relay::relay_drain(&db, bootstrap, &bin, 1, o.work.events, env).await?;
            let spans = receiver.span_count() - before;
            // CPU of the relay process per event: independent of what else shares the machine.
            let cpu_us = cpu * 1e6 / o.work.events as f64;
            println!(
                "round {round}: relay export {}: {rate:.0} events/s, {cpu_us:.1} µs CPU/event, {spans} spans received",
                if export { "on" } else { "off" }
            );
            if export {
                on = on.max(rate);
                cpu_on = cpu_on.min(cpu_us);
                exported += spans;
            } else {
                off = off.max(rate);
                cpu_off = cpu_off.min(cpu_us);
            }
        }
    }
    emit(
        "relay_drain_otlp_on",
        on,
        "events/s",
        off,
        &[
            ("baseline_kind", json!("same relay, export off")),
            ("target_ratio", json!(0.9)),
            ("cpu_us_per_event", json!((cpu_on * 10.0).round() / 10.0)),
            (
                "baseline_cpu_us_per_event",
                json!((cpu_off * 10.0).round() / 10.0),
            ),
            ("spans_received", json!(exported)),
            ("sampled_every", json!(o.sampled_every)),
            ("events", json!(o.work.events)),
            ("rounds", json!(o.rounds)),
        ],
    );
    Ok(())
}

async fn consumer_overhead(
    o: &Options,
    server: &str,
    bootstrap: &str,
    receiver: &OtlpReceiver,
) -> anyhow::Result<()> {
    let provider = install(receiver)?;
    let topic = unique_name("bench-telemetry-consumer");
    consumer::create_topics(bootstrap, &topic, o.partitions).await?;
    consumer::produce_with(
        bootstrap,
        &topic,
        o.work.events,
        o.work.payload,
        o.work.keys,
        Some(o.sampled_every),
    )
    .await?;
    let db = consumer::BenchDb::create(server).await?;
    let result = consumer_rounds(o, bootstrap, &topic, receiver, &provider, &db).await;
    let dropped = db.drop().await;
    result?;
    dropped
}

async fn consumer_rounds(
    o: &Options,
    bootstrap: &str,
    topic: &str,
    receiver: &OtlpReceiver,
    provider: &SdkTracerProvider,
    db: &consumer::BenchDb,
) -> anyhow::Result<()> {
    let scenarios = [
        ("consumer_json_otlp_on", Mode::Touch, None),
        (
            "consumer_dedupe_otlp_on",
            Mode::Insert { batch: 1 },
            Some(db.url.as_str()),
        ),
    ];
    let count = if o.no_dedupe { 1 } else { 2 };
    for (name, mode, url) in scenarios.into_iter().take(count) {
        let (mut off, mut on) = (0.0f64, 0.0f64);
        let mut exported = 0;
        for round in 0..o.rounds {
            for export in [false, true] {
                sqlx::query("TRUNCATE bench_effects, gregor_inbox")
                    .execute(&db.pool)
                    .await?;
                EXPORT.store(export, Ordering::Relaxed);
                let before = receiver.span_count();
                let config = consumer::config(bootstrap, url, 1, 8)?;
                let timing = consumer::runtime_drain(config, topic, o.work.events, mode).await;
                EXPORT.store(false, Ordering::Relaxed);
                if let Err(e) = provider.force_flush() {
                    bail!("trace export did not flush: {e}");
                }
                let rate = timing?.rate(o.work.events);
                let spans = receiver.span_count() - before;
                println!(
                    "round {round}: {name} export {}: {rate:.0} events/s, {spans} spans received",
                    if export { "on" } else { "off" }
                );
                if export {
                    on = on.max(rate);
                    exported += spans;
                } else {
                    off = off.max(rate);
                }
            }
        }
        emit(
            name,
            on,
            "events/s",
            off,
            &[
                (
                    "baseline_kind",
                    json!("same runtime, OpenTelemetry layer off"),
                ),
                ("target_ratio", json!(0.9)),
                ("spans_received", json!(exported)),
                ("sampled_every", json!(o.sampled_every)),
                ("events", json!(o.work.events)),
                ("rounds", json!(o.rounds)),
            ],
        );
    }
    Ok(())
}

/// The global subscriber: the same exporter set-up as `gregor_telemetry::init` with an
/// endpoint, its layer filtered by [`EXPORT`].
fn install(receiver: &OtlpReceiver) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", receiver.endpoint()))
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("gregor"))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_filter(dynamic_filter_fn(|meta, _| {
            // As `init()` with the default GREGOR_TRACE_FILTER=info.
            EXPORT.load(Ordering::Relaxed) && *meta.level() <= tracing::Level::INFO
        }));
    tracing_subscriber::registry().with(layer).try_init()?;
    Ok(provider)
}
