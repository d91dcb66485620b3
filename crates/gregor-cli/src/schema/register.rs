//! `gregor schema register`: set each subject's declared level, then register its schema.

use std::path::Path;

use anyhow::Context;
use gregor_avro::{AvroError, RegistryClient};

use super::catalog::{Catalog, Event};
use super::report::{Kind, Out, Status};

/// Registers every event's schema; a refusal (409 and other 4xx) is reported and the other
/// events still go ahead; an unreachable registry ends the run at once.
pub(crate) async fn run(dir: &Path, json: bool) -> anyhow::Result<()> {
    let catalog = Catalog::load(dir)?;
    let client = super::registry()?;
    let mut out = Out::new(json);
    for event in &catalog.events {
        register(&client, event, &mut out)
            .await
            .with_context(|| format!("event {} (subject {})", event.name, event.subject))?;
    }
    out.finish_register()
}

async fn register(client: &RegistryClient, event: &Event, out: &mut Out) -> anyhow::Result<()> {
    let subject = &event.subject;
    if let Some(level) = event.compatibility {
        match client.set_compatibility_level(subject, level).await {
            Ok(()) => out.line(Status::Ok, event, Kind::SetLevel(level), ""),
            Err(e) => {
                let Some(status) = refusal(&e) else {
                    return Err(e.into());
                };
                let detail = format!("refused compatibility level {level}: {}", reason(&e));
                out.line(Status::Fail, event, Kind::Rejected { status }, &detail);
                return Ok(());
            }
        }
    }
    match client.register(subject, &event.schema.text).await {
        Ok(id) => {
            let found = client
                .lookup(subject, &event.schema.text)
                .await?
                .with_context(|| {
                    format!("registered as id {id}, but the registry then did not find it")
                })?;
            let kind = Kind::Registered {
                id,
                version: found.version,
            };
            out.line(Status::Ok, event, kind, "");
        }
        Err(e) => {
            let Some(status) = refusal(&e) else {
                return Err(e.into());
            };
            let detail = format!(
                "refused {} (HTTP {status}): {}",
                event.schema.path,
                reason(&e)
            );
            out.line(Status::Fail, event, Kind::Rejected { status }, &detail);
        }
    }
    Ok(())
}

/// The HTTP status when the registry refused this request in particular (a conflict, an
/// invalid schema), as opposed to failing for every request (auth, outage).
fn refusal(error: &AvroError) -> Option<u16> {
    match error {
        AvroError::Registry { status, .. }
            if (400..500).contains(status) && !matches!(status, 401 | 403 | 408 | 429) =>
        {
            Some(*status)
        }
        _ => None,
    }
}

/// The registry's own message.
fn reason(error: &AvroError) -> String {
    match error {
        AvroError::Registry {
            message,
            error_code,
            ..
        } => format!("{message} (error_code {error_code})"),
        other => other.to_string(),
    }
}
