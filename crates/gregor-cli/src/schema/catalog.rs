//! The event catalog (`<dir>/catalog.toml`): every event, its topic and subject, its schema,
//! its compatibility level, and the consumers' reader schemas.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use gregor_avro::{CompatibilityLevel, Schema};
use serde::Deserialize;

use crate::UsageError;

/// The catalog's file name inside the directory given on the command line.
pub(crate) const FILE_NAME: &str = "catalog.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    name: String,
    topic: String,
    schema: String,
    owner: String,
    compatibility: Option<String>,
    producers: Vec<String>,
    subject: Option<String>,
    #[serde(default)]
    consumers: Vec<RawConsumer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsumer {
    service: String,
    reader: String,
}

/// A validated catalog: every schema file read and parsed.
#[derive(Debug)]
pub(crate) struct Catalog {
    pub(crate) events: Vec<Event>,
}

/// One event type.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) name: String,
    pub(crate) subject: String,
    /// The level the catalog declares for the subject, if any.
    pub(crate) compatibility: Option<CompatibilityLevel>,
    /// The producers' schema.
    pub(crate) schema: SchemaFile,
    pub(crate) consumers: Vec<Consumer>,
}

/// A consumer-driven contract: `service` decodes the event with `reader`.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub(crate) service: String,
    pub(crate) reader: SchemaFile,
}

/// An Avro schema file, read and parsed.
#[derive(Debug)]
pub(crate) struct SchemaFile {
    /// The path as the catalog spells it (relative to the catalog).
    pub(crate) path: String,
    /// The file's text, as registered.
    pub(crate) text: String,
    pub(crate) parsed: Schema,
}

impl Catalog {
    /// Reads and validates `<dir>/catalog.toml`; every problem found is reported at once, as
    /// a [`UsageError`] (exit status 2).
    pub(crate) fn load(dir: &Path) -> Result<Self, UsageError> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
        let raw: RawCatalog = toml::from_str(&text)
            .map_err(|e| UsageError(format!("{} is not a valid catalog: {e}", path.display())))?;
        let mut problems = Vec::new();
        let events: Vec<Event> = raw
            .events
            .into_iter()
            .filter_map(|event| validate(dir, event, &mut problems))
            .collect();
        if events.is_empty() && problems.is_empty() {
            problems.push("it declares no [[events]]".to_owned());
        }
        duplicates(&events, &mut problems);
        if problems.is_empty() {
            Ok(Self { events })
        } else {
            Err(UsageError(format!(
                "invalid catalog {}:\n  {}",
                path.display(),
                problems.join("\n  ")
            )))
        }
    }
}

fn validate(dir: &Path, raw: RawEvent, problems: &mut Vec<String>) -> Option<Event> {
    let name = raw.name;
    let before = problems.len();
    for (key, value) in [
        ("name", &name),
        ("topic", &raw.topic),
        ("owner", &raw.owner),
    ] {
        if value.trim().is_empty() {
            problems.push(format!("event {name:?}: `{key}` is empty"));
        }
    }
    if raw.producers.iter().any(|p| p.trim().is_empty()) {
        problems.push(format!("event {name}: `producers` holds an empty name"));
    }
    let compatibility = match raw.compatibility.as_deref().map(str::parse) {
        None => None,
        Some(Ok(level)) => Some(level),
        Some(Err(e)) => {
            problems.push(format!("event {name}: {e}"));
            None
        }
    };
    let subject = raw
        .subject
        .unwrap_or_else(|| format!("{}-value", raw.topic));
    if subject.trim().is_empty() {
        problems.push(format!("event {name}: `subject` is empty"));
    }
    let schema = read_schema(dir, &raw.schema, &format!("event {name}: schema"), problems);
    let mut consumers = Vec::new();
    let mut services = BTreeSet::new();
    for consumer in raw.consumers {
        let what = format!("event {name}: consumer {}: reader", consumer.service);
        if !services.insert(consumer.service.clone()) {
            problems.push(format!(
                "event {name}: consumer {} is declared twice",
                consumer.service
            ));
        }
        if let Some(reader) = read_schema(dir, &consumer.reader, &what, problems) {
            consumers.push(Consumer {
                service: consumer.service,
                reader,
            });
        }
    }
    let schema = schema?;
    (problems.len() == before).then_some(Event {
        name,
        subject,
        compatibility,
        schema,
        consumers,
    })
}

fn read_schema(
    dir: &Path,
    relative: &str,
    what: &str,
    problems: &mut Vec<String>,
) -> Option<SchemaFile> {
    let full: PathBuf = dir.join(relative);
    let text = match std::fs::read_to_string(&full) {
        Ok(text) => text,
        Err(e) => {
            problems.push(format!("{what} {}: cannot read it: {e}", full.display()));
            return None;
        }
    };
    match Schema::parse_str(&text) {
        Ok(parsed) => Some(SchemaFile {
            path: relative.to_owned(),
            text,
            parsed,
        }),
        Err(e) => {
            problems.push(format!(
                "{what} {} is not a valid Avro schema: {e}",
                full.display()
            ));
            None
        }
    }
}

fn duplicates(events: &[Event], problems: &mut Vec<String>) {
    let mut names = BTreeSet::new();
    let mut subjects = BTreeMap::new();
    for event in events {
        if !names.insert(event.name.as_str()) {
            problems.push(format!("event {} is declared twice", event.name));
        }
        if let Some(other) = subjects.insert(event.subject.as_str(), event.name.as_str()) {
            problems.push(format!(
                "events {other} and {} both use subject {}",
                event.name, event.subject
            ));
        }
    }
}
