//! `gregor inbox …`: the consumers' dedupe inbox (`gregor_inbox`), per consumer group.
//!
//! A running consumer deletes its own group's expired rows; the rows of a group that no longer
//! runs stay until they are purged here.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use gregor_config::{DatabaseUrl, Env};
use sqlx::PgPool;

use crate::UsageError;
use crate::escape::shown;

/// Rows deleted per statement by `purge`, so that no statement holds a huge transaction.
const PURGE_BATCH: i64 = 10_000;

#[derive(Debug, Subcommand)]
pub(crate) enum InboxCommand {
    /// List the consumer groups with dedupe rows: rows, oldest and newest.
    Groups,
    /// Delete every dedupe row of one consumer group (a group that no longer runs). A group
    /// that still runs would then apply redelivered messages a second time, so a group with
    /// a row newer than an hour is refused without --force.
    Purge {
        /// The consumer group (GREGOR_CONSUMER_GROUP of its consumers).
        #[arg(long)]
        group: String,
        /// Purge even though the group handled a message within the last hour.
        #[arg(long)]
        force: bool,
    },
}

/// One group's rows.
#[derive(Debug, sqlx::FromRow)]
struct GroupRows {
    consumer_group: String,
    rows: i64,
    oldest: DateTime<Utc>,
    newest: DateTime<Utc>,
}

async fn pool() -> anyhow::Result<PgPool> {
    let env = Env::from_process();
    let url = DatabaseUrl::parse("DATABASE_URL", env.require("DATABASE_URL")?)?;
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url.expose())
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

/// Whether the inbox table exists (it is created by the first consumer with a database).
async fn has_inbox(pool: &PgPool) -> anyhow::Result<bool> {
    let found: Option<String> = sqlx::query_scalar("SELECT to_regclass('gregor_inbox')::text")
        .fetch_one(pool)
        .await?;
    Ok(found.is_some())
}

pub(crate) async fn run(cmd: InboxCommand) -> anyhow::Result<()> {
    let pool = pool().await?;
    if !has_inbox(&pool).await? {
        println!("no inbox table (gregor_inbox): no consumer with a database has run here");
        return Ok(());
    }
    match cmd {
        InboxCommand::Groups => {
            // One index-only walk per group over (consumer_group, processed_at).
            let groups: Vec<GroupRows> = sqlx::query_as(
                "SELECT consumer_group, count(*) AS rows,
                        min(processed_at) AS oldest, max(processed_at) AS newest
                 FROM gregor_inbox GROUP BY consumer_group ORDER BY consumer_group",
            )
            .fetch_all(&pool)
            .await?;
            if groups.is_empty() {
                println!("no inbox rows");
            }
            for g in groups {
                println!(
                    "group={} rows={} oldest={} newest={}",
                    shown(&g.consumer_group),
                    g.rows,
                    g.oldest.to_rfc3339(),
                    g.newest.to_rfc3339()
                );
            }
        }
        InboxCommand::Purge { group, force } => {
            let newest: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT max(processed_at) FROM gregor_inbox WHERE consumer_group = $1",
            )
            .bind(&group)
            .fetch_one(&pool)
            .await?;
            if let Some(newest) = newest
                && newest > Utc::now() - chrono::Duration::hours(1)
                && !force
            {
                return Err(UsageError(format!(
                    "group {} handled a message at {}: it may still run, and purging its \
                     inbox would let redelivered messages take effect twice; stop its \
                     consumers first, or pass --force",
                    shown(&group),
                    newest.to_rfc3339()
                ))
                .into());
            }
            let mut total: u64 = 0;
            loop {
                let deleted = sqlx::query(
                    "DELETE FROM gregor_inbox WHERE ctid = ANY(ARRAY(
                         SELECT ctid FROM gregor_inbox WHERE consumer_group = $1 LIMIT $2))",
                )
                .bind(&group)
                .bind(PURGE_BATCH)
                .execute(&pool)
                .await?
                .rows_affected();
                total += deleted;
                if deleted < PURGE_BATCH.unsigned_abs() {
                    break;
                }
            }
            println!("purged {total} row(s) of group {}", shown(&group));
        }
    }
    Ok(())
}
