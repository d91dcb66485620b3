//! `gregor`: the operator CLI.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod outbox;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Operate gregor: the outbox today; topics, dead-letter queues and schemas join here.
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
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gregor: {e:#}");
            ExitCode::from(1)
        }
    }
}
