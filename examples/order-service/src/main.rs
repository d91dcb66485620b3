//! Example order service for the gregor demo.
//!
//! * `order-service serve` — `POST /orders {"customer": "c-1", "amount_cents": 1200}` places an
//!   order: the order row and its `order.placed` event commit in one transaction.
//! * `order-service generate --orders N --rate R` — places N orders at R per second over a
//!   set of customers, printing progress.
//! * `order-service summary --topic T` — reads the topic back and checks that every order
//!   placed is there, each customer's events in the order they were placed.
//!
//! Events are Avro (`schemas/orders/order_placed.avsc`) in the Confluent wire format.
//!
//! Configuration: `DATABASE_URL`, `SCHEMA_REGISTRY_URL` (and `SCHEMA_REGISTRY_*`),
//! `KAFKA_BOOTSTRAP_SERVERS` (summary), `GREGOR_ORDERS_TOPIC`.

#![allow(clippy::print_stdout)]

mod orders;
mod summary;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "order-service",
    about = "gregor example: places orders through the outbox"
)]
struct Cli {
    /// Topic for order events.
    #[arg(
        long,
        env = "GREGOR_ORDERS_TOPIC",
        default_value = "orders",
        global = true
    )]
    topic: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve POST /orders.
    Serve {
        /// Listen address.
        #[arg(long, env = "GREGOR_ORDERS_ADDR", default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
    },
    /// Place orders at a steady rate.
    Generate {
        /// How many orders.
        #[arg(long, default_value_t = 5000)]
        orders: u64,
        /// Orders per second.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        /// Number of customers (event keys).
        #[arg(long, default_value_t = 50)]
        customers: u32,
    },
    /// Read the topic back and check it against the orders table.
    Summary {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let env = gregor::config::Env::from_process();
    let mut config = gregor_telemetry::TelemetryConfig::from_env("order-service", &env)?;
    if env.get("RUST_LOG").is_none() {
        config.log_filter = "warn".to_owned();
    }
    let telemetry = gregor_telemetry::init(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run());
    // Export buffered spans after the runtime is gone (the exporter blocks).
    drop(runtime);
    drop(telemetry);
    result
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let database_url =
        std::env::var("DATABASE_URL").map_err(|_| anyhow::anyhow!("DATABASE_URL is required"))?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&database_url)
        .await?;
    orders::migrate(&pool).await?;
    let env = gregor::config::Env::from_process();
    let registry = gregor::avro::RegistryClient::from_env(&env)?;
    match cli.command {
        Command::Serve { addr } => {
            let avro = serializer(registry, &env)?;
            // Register (or look up) the schema now, not inside the first order's transaction.
            avro.schema_id(&cli.topic).await?;
            orders::serve(pool, avro, cli.topic, addr).await
        }
        Command::Generate {
            orders,
            rate,
            customers,
        } => {
            let avro = serializer(registry, &env)?;
            avro.schema_id(&cli.topic).await?;
            orders::generate(&pool, &avro, &cli.topic, orders, rate, customers).await
        }
        Command::Summary { timeout_secs } => {
            let bootstrap = std::env::var("KAFKA_BOOTSTRAP_SERVERS")
                .map_err(|_| anyhow::anyhow!("KAFKA_BOOTSTRAP_SERVERS is required"))?;
            summary::run(
                &pool,
                registry,
                &bootstrap,
                &cli.topic,
                std::time::Duration::from_secs(timeout_secs),
            )
            .await
        }
    }
}

fn serializer(
    registry: gregor::avro::RegistryClient,
    env: &gregor::config::Env,
) -> anyhow::Result<gregor::avro::AvroSerializer> {
    Ok(gregor::avro::AvroSerializer::new(
        registry,
        orders::ORDER_PLACED_SCHEMA,
        gregor::avro::SerializerConfig::from_env(env)?,
    )?)
}
