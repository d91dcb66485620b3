//! `gregor-bench`: benchmark programs. Every scenario prints its figure beside a baseline
//! measured in the same run, and ends with one JSON line
//! `{"scenario", "value", "unit", "baseline", "ratio", …}`.
//!
//! Needs the services of `scripts/services up` (`DATABASE_URL`, `KAFKA_BOOTSTRAP_SERVERS`,
//! `SCHEMA_REGISTRY_URL`) and
//! release binaries (`cargo build --release --bins`).

#![allow(clippy::print_stdout)]

mod avro;
mod consumer;
mod relay;
mod relay_extra;
mod report;
mod telemetry;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "gregor-bench", about = "gregor benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Relay drain throughput (1 and 3 replicas) vs a bare producer and bare SQL, latency at a
    /// steady rate, relay RSS.
    Relay(relay::Options),
    /// Consumer runtime throughput (JSON decode; dedupe transaction + INSERT) vs a bare
    /// rdkafka consume loop, RSS while draining a backlog.
    Consumer(consumer::Options),
    /// Avro decode into a typed struct (framing, schema cache, resolution) vs bare apache-avro
    /// with pre-parsed schemas; needs SCHEMA_REGISTRY_URL.
    Avro(avro::Options),
    /// Relay and consumer throughput with tracing and OTLP export on vs off.
    Telemetry(telemetry::Options),
}

/// The events every throughput scenario produces.
#[derive(Debug, clap::Args)]
pub(crate) struct Workload {
    /// Events per throughput scenario.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Relay(options) => relay::run(options).await,
        Command::Consumer(options) => consumer::run(options).await,
        Command::Avro(options) => avro::run(options).await,
        Command::Telemetry(options) => telemetry::run(options).await,
    }
}
