//! `gregor schema check`: the local schemas against the registry's versions under the
//! subject's level, and every consumer's reader schema against every writer schema.

use std::path::Path;

use anyhow::Context;
use gregor_avro::compat::{self, CompatibilityLevel};
use gregor_avro::{RegistryClient, Schema};

use super::catalog::{Catalog, Event};
use super::report::{Kind, Out, Status, Writer, versions_text};

/// What the registry holds for one subject.
#[derive(Debug)]
struct History {
    /// Every live version, oldest first.
    versions: Vec<(i32, Schema)>,
    /// The level that applies to the subject (only fetched when it has versions).
    level: Option<CompatibilityLevel>,
    /// The version the local schema is registered as, if any.
    registered_as: Option<i32>,
}

impl History {
    async fn fetch(client: &RegistryClient, event: &Event) -> anyhow::Result<Self> {
        let subject = &event.subject;
        let mut numbers = client.versions(subject).await?;
        numbers.sort_unstable();
        let mut versions = Vec::with_capacity(numbers.len());
        for n in numbers {
            // Deleted since the listing: skip it.
            let Some(found) = client.version(subject, &n.to_string()).await? else {
                continue;
            };
            let schema = Schema::parse_str(&found.schema).with_context(|| {
                format!("version {n} of subject {subject} is not an Avro schema this tool can read")
            })?;
            versions.push((n, schema));
        }
        if versions.is_empty() {
            return Ok(Self {
                versions,
                level: None,
                registered_as: None,
            });
        }
        let level = Some(client.compatibility_level(subject).await?);
        let registered_as = client
            .lookup(subject, &event.schema.text)
            .await?
            .map(|found| found.version);
        Ok(Self {
            versions,
            level,
            registered_as,
        })
    }

    fn numbers(&self) -> Vec<i32> {
        self.versions.iter().map(|(n, _)| *n).collect()
    }
}

/// Runs every check, then fails when any did.
pub(crate) async fn run(dir: &Path, offline: bool, json: bool) -> anyhow::Result<()> {
    let catalog = Catalog::load(dir)?;
    let client = if offline {
        None
    } else {
        Some(super::registry()?)
    };
    let mut out = Out::new(json);
    for event in &catalog.events {
        let history =
            match &client {
                Some(client) => Some(History::fetch(client, event).await.with_context(|| {
                    format!("event {} (subject {})", event.name, event.subject)
                })?),
                None => None,
            };
        if let Some(history) = &history {
            compatibility(event, history, &mut out);
        }
        contracts(event, history.as_ref(), &mut out);
    }
    out.finish_check()
}

fn compatibility(event: &Event, history: &History, out: &mut Out) {
    let (Some(level), Some((latest, _))) = (history.level, history.versions.last()) else {
        let kind = Kind::Compatibility {
            level: event.compatibility,
            versions: Vec::new(),
        };
        out.line(
            Status::Ok,
            event,
            kind,
            "new subject, nothing to check against",
        );
        return;
    };
    if let Some(declared) = event.compatibility.filter(|d| *d != level) {
        let detail = format!(
            "the catalog declares {declared} but the registry applies {level} to {}; checking with {declared}, the level `gregor schema register` sets",
            event.subject
        );
        let kind = Kind::Level {
            catalog: declared,
            registry: level,
        };
        out.line(Status::Warn, event, kind, &detail);
    }
    // What `register` will enforce: the catalog's level when it declares one.
    let level = event.compatibility.unwrap_or(level);
    if history.registered_as == Some(*latest) {
        let kind = Kind::Compatibility {
            level: Some(level),
            versions: vec![*latest],
        };
        let detail = format!("unchanged (identical to version {latest})");
        out.line(Status::Ok, event, kind, &detail);
        return;
    }
    let existing: Vec<(i32, &Schema)> = history.versions.iter().map(|(n, s)| (*n, s)).collect();
    let checked: Vec<i32> = match level {
        CompatibilityLevel::None => Vec::new(),
        CompatibilityLevel::BackwardTransitive
        | CompatibilityLevel::ForwardTransitive
        | CompatibilityLevel::FullTransitive => history.numbers(),
        _ => vec![*latest],
    };
    let kind = Kind::Compatibility {
        level: Some(level),
        versions: checked.clone(),
    };
    match compat::check(level, &event.schema.parsed, &existing) {
        Ok(()) if checked.is_empty() => {
            out.line(
                Status::Ok,
                event,
                kind,
                &format!("{level}: nothing to check"),
            );
        }
        Ok(()) => {
            let detail = format!("{level} against {}", versions_text(&checked));
            out.line(Status::Ok, event, kind, &detail);
        }
        Err(reason) => out.line(Status::Fail, event, kind, &reason),
    }
}

fn contracts(event: &Event, history: Option<&History>, out: &mut Out) {
    let local = &event.schema;
    for consumer in &event.consumers {
        let reader = &consumer.reader;
        let kind = |writer| Kind::Contract {
            consumer: consumer.service.clone(),
            writer,
        };
        let local_kind = kind(Writer::Local(local.path.clone()));
        match compat::can_read(&local.parsed, &reader.parsed) {
            Ok(()) => {
                let detail = format!(
                    "{} reads {} (local producer schema)",
                    reader.path, local.path
                );
                out.line(Status::Ok, event, local_kind, &detail);
            }
            Err(reason) => {
                let detail = format!(
                    "{} cannot read {} (local producer schema): {reason}",
                    reader.path, local.path
                );
                out.line(Status::Fail, event, local_kind, &detail);
            }
        }
        let Some(history) = history.filter(|h| !h.versions.is_empty()) else {
            continue;
        };
        let mut all_ok = true;
        for (n, writer) in &history.versions {
            if let Err(reason) = compat::can_read(writer, &reader.parsed) {
                all_ok = false;
                let detail = format!(
                    "{} cannot read {} version {n} (already registered; its messages may still be in the topic): {reason}",
                    reader.path, event.subject
                );
                out.line(
                    Status::Fail,
                    event,
                    kind(Writer::Versions(vec![*n])),
                    &detail,
                );
            }
        }
        if all_ok {
            let numbers = history.numbers();
            let detail = format!(
                "{} reads {} {}",
                reader.path,
                event.subject,
                versions_text(&numbers)
            );
            out.line(Status::Ok, event, kind(Writer::Versions(numbers)), &detail);
        }
    }
}
