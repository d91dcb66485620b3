//! `gregor outbox …`

use anyhow::Context;
use clap::Subcommand;
use gregor_config::{DatabaseUrl, Env};
use gregor_outbox::{OutboxMessage, Requeue};
use sqlx::PgPool;

use crate::escape::shown;

#[derive(Debug, Subcommand)]
pub(crate) enum OutboxCommand {
    /// Backlog, oldest unpublished age and parked rows.
    Status,
    /// List parked rows with their errors.
    Parked {
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Put parked rows back in line (attempts reset).
    Requeue {
        /// Row ids (from `gregor outbox parked`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Requeue every parked row.
        #[arg(long)]
        all: bool,
    },
    /// Enqueue one event (smoke tests and operations).
    Send {
        /// Destination topic.
        #[arg(long)]
        topic: String,
        /// Partition key.
        #[arg(long)]
        key: Option<String>,
        /// Payload (UTF-8); omit for a tombstone.
        #[arg(long)]
        value: Option<String>,
        /// Extra header, repeatable.
        #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// CloudEvents type.
        #[arg(long = "type", default_value = "gregor.manual")]
        event_type: String,
        /// CloudEvents source.
        #[arg(long, default_value = "/gregor/cli")]
        source: String,
        /// content-type header.
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Create or upgrade the outbox's and the relay's tables (what the relay applies at start).
    Migrate,
}

fn parse_header(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{raw:?} is not NAME=VALUE"))
}

async fn pool() -> anyhow::Result<PgPool> {
    let env = Env::from_process();
    let url = DatabaseUrl::parse("DATABASE_URL", env.require("DATABASE_URL")?)?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url.expose())
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    gregor_outbox::migrate(&pool).await?;
    Ok(pool)
}

pub(crate) async fn run(cmd: OutboxCommand) -> anyhow::Result<()> {
    let pool = pool().await?;
    match cmd {
        OutboxCommand::Status => {
            let s = gregor_outbox::status(&pool).await?;
            println!("backlog: {}", s.backlog);
            println!("oldest unpublished age: {:.3}s", s.oldest_age_seconds);
            println!("parked: {}", s.parked);
        }
        OutboxCommand::Parked { limit } => {
            let rows = gregor_outbox::parked(&pool, limit).await?;
            if rows.is_empty() {
                println!("no parked rows");
            }
            for r in rows {
                let key = r.key.as_deref().map_or_else(
                    || "<none>".to_owned(),
                    |k| String::from_utf8_lossy(k).into_owned(),
                );
                let size = r
                    .payload_bytes
                    .map_or_else(|| "tombstone".to_owned(), |b| format!("{b} bytes"));
                let line = format!(
                    "id={} event_id={} topic={} key={} payload={} attempts={} parked_at={} error={}",
                    r.id,
                    r.event_id,
                    r.topic,
                    key,
                    size,
                    r.attempts,
                    r.parked_at.to_rfc3339(),
                    r.last_error.as_deref().unwrap_or("-")
                );
                println!("{}", shown(&line));
            }
        }
        OutboxCommand::Requeue { ids, all } => {
            let which = if all { Requeue::All } else { Requeue::Ids(ids) };
            let n = gregor_outbox::requeue(&pool, &which).await?;
            println!("requeued {n} row(s)");
        }
        OutboxCommand::Send {
            topic,
            key,
            value,
            headers,
            event_type,
            source,
            content_type,
        } => {
            let mut msg = OutboxMessage::new(topic, event_type, source);
            if let Some(k) = key {
                msg = msg.key(k);
            }
            if let Some(v) = value {
                msg = msg.payload(v.into_bytes());
            }
            for (name, v) in headers {
                msg = msg.header(name, v.into_bytes());
            }
            if let Some(ct) = content_type {
                msg = msg.content_type(ct);
            }
            let mut tx = pool.begin().await?;
            let id = gregor_outbox::enqueue(&mut tx, msg).await?;
            tx.commit().await?;
            println!("enqueued event {id}");
        }
        OutboxCommand::Migrate => {
            gregor_relay::migrate(&pool).await?;
            println!("outbox and relay schema are up to date");
        }
    }
    Ok(())
}
