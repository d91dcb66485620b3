//! `gregor schema …`: check and register the schemas of an event catalog
//! (`<dir>/catalog.toml`).

mod catalog;
mod check;
mod register;
mod report;

use std::path::PathBuf;

use clap::Subcommand;
use gregor_avro::{AvroError, RegistryClient};
use gregor_config::Env;

#[derive(Debug, Subcommand)]
pub(crate) enum SchemaCommand {
    /// Check the catalog's schemas against the registry and every consumer contract.
    ///
    /// For each event whose subject exists, the local schema is checked against the
    /// subject's versions under the level the registry applies to it (a level the catalog
    /// declares differently is reported as a warning). For each declared consumer, its reader
    /// schema must read the local producer schema and every version already registered (old
    /// messages are still in the topic). Every check runs; the exit status is 1 when any
    /// failed or the registry could not be asked, 2 when the catalog is invalid.
    Check {
        /// The directory holding catalog.toml (schema paths are relative to it).
        dir: PathBuf,
        /// Check only the contracts between local files; no registry needed.
        #[arg(long)]
        offline: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set each subject's declared compatibility level, then register its schema.
    ///
    /// Prints `registered <event> <subject> id=<id> version=<version>` for each event. When
    /// the registry refuses a schema (409: incompatible), its reason is printed, the other
    /// events are still registered, and the exit status is 1.
    Register {
        /// The directory holding catalog.toml (schema paths are relative to it).
        dir: PathBuf,
        /// Run `gregor schema check` instead; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(cmd: SchemaCommand) -> anyhow::Result<()> {
    match cmd {
        SchemaCommand::Check { dir, offline, json } => check::run(&dir, offline, json).await,
        SchemaCommand::Register {
            dir,
            dry_run: true,
            json,
        } => check::run(&dir, false, json).await,
        SchemaCommand::Register { dir, json, .. } => register::run(&dir, json).await,
    }
}

/// The registry client from `SCHEMA_REGISTRY_*`; a configuration error keeps its type, so
/// that it exits with status 2.
fn registry() -> anyhow::Result<RegistryClient> {
    RegistryClient::from_env(&Env::from_process()).map_err(|e| match e {
        AvroError::Config(config) => anyhow::Error::from(config),
        other => anyhow::Error::from(other),
    })
}
