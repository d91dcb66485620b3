//! `gregor`: the operator CLI.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod dlq;
mod escape;
mod inbox;
mod outbox;
mod schema;
mod topics;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Operate gregor: the outbox, topics, dead-letter topics, the consumers' dedupe inbox and the
/// event catalog's schemas.
///
/// Exit status: 0 on success, 1 when the operation failed, 2 on bad usage or configuration.
#[derive(Debug, Parser)]
#[command(name = "gregor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect and operate the outbox table (uses DATABASE_URL).
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
    /// Create topics with their retry tiers and dead-letter topic (uses KAFKA_BOOTSTRAP_SERVERS
    /// and KAFKA_*).
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Inspect and replay dead-letter topics (uses KAFKA_BOOTSTRAP_SERVERS and KAFKA_*).
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// List and purge the consumers' dedupe inbox rows per consumer group (uses DATABASE_URL).
    #[command(subcommand)]
    Inbox(inbox::InboxCommand),
    /// Check and register the event catalog's Avro schemas (uses SCHEMA_REGISTRY_URL, and
    /// SCHEMA_REGISTRY_USERNAME/SCHEMA_REGISTRY_PASSWORD for basic auth).
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
}

/// Bad usage found after argument parsing (exit status 2, like clap's own usage errors).
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// 2 for configuration and usage errors, 1 for everything else.
fn exit_code(error: &anyhow::Error) -> u8 {
    let bad_input = error
        .chain()
        .any(|cause| cause.is::<gregor_config::ConfigError>() || cause.is::<UsageError>());
    if bad_input { 2 } else { 1 }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gregor: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Outbox(cmd) => outbox::run(cmd).await,
            Command::Topics(cmd) => topics::run(cmd).await,
            Command::Dlq(cmd) => dlq::run(cmd).await,
            Command::Inbox(cmd) => inbox::run(cmd).await,
            Command::Schema(cmd) => schema::run(cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gregor: {}", escape::shown_lines(&format!("{e:#}")));
            ExitCode::from(exit_code(&e))
        }
    }
}
