//! What `gregor schema …` prints: one line per check or action, as text or as JSON.

use anyhow::bail;
use gregor_avro::CompatibilityLevel;
use serde_json::{Value, json};

use super::catalog::Event;
use crate::escape::{json_safe, shown};

/// How a line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    Fail,
    Warn,
}

impl Status {
    fn text(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Fail => "FAIL",
            Self::Warn => "warn",
        }
    }

    fn json(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Fail => "fail",
            Self::Warn => "warn",
        }
    }
}

/// Which data a contract check reads.
#[derive(Debug, Clone)]
pub(crate) enum Writer {
    /// The local producer schema (its path in the catalog).
    Local(String),
    /// Registered versions of the subject.
    Versions(Vec<i32>),
}

/// What a line is about.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// The local schema against the subject's versions, under `level`.
    Compatibility {
        level: Option<CompatibilityLevel>,
        versions: Vec<i32>,
    },
    /// The catalog and the registry disagree on the level.
    Level {
        catalog: CompatibilityLevel,
        registry: CompatibilityLevel,
    },
    /// A consumer's reader schema against a writer schema.
    Contract { consumer: String, writer: Writer },
    /// `register` set the subject's level.
    SetLevel(CompatibilityLevel),
    /// `register` registered the schema.
    Registered { id: u32, version: i32 },
    /// The registry refused a `register` request.
    Rejected { status: u16 },
}

/// Prints lines and counts checks and failures.
#[derive(Debug)]
pub(crate) struct Out {
    json: bool,
    checks: usize,
    failed: usize,
}

impl Out {
    pub(crate) fn new(json: bool) -> Self {
        Self {
            json,
            checks: 0,
            failed: 0,
        }
    }

    /// Prints one line; `ok` and `FAIL` lines count as checks.
    pub(crate) fn line(&mut self, status: Status, event: &Event, kind: Kind, detail: &str) {
        match status {
            Status::Ok => self.checks += 1,
            Status::Fail => {
                self.checks += 1;
                self.failed += 1;
            }
            Status::Warn => {}
        }
        if self.json {
            let line = json_line(status, event, &kind, detail).to_string();
            println!("{}", json_safe(&line));
        } else {
            // The detail may quote the registry's answers: escaped like every other line.
            println!("{}", shown(&text_line(status, event, &kind, detail)));
        }
    }

    /// Ends a `check`: an error when any check failed.
    pub(crate) fn finish_check(&self) -> anyhow::Result<()> {
        if self.failed > 0 {
            bail!("{} of {} checks failed", self.failed, self.checks);
        }
        if !self.json {
            match self.checks {
                1 => println!("the 1 check passed"),
                n => println!("all {n} checks passed"),
            }
        }
        Ok(())
    }

    /// Ends a `register`: an error when the registry refused anything.
    pub(crate) fn finish_register(&self) -> anyhow::Result<()> {
        if self.failed > 0 {
            bail!(
                "the registry refused {} of {} requests",
                self.failed,
                self.checks
            );
        }
        Ok(())
    }
}

fn text_line(status: Status, event: &Event, kind: &Kind, detail: &str) -> String {
    let (name, subject, st) = (&event.name, &event.subject, status.text());
    match kind {
        Kind::Compatibility { .. } | Kind::Level { .. } => {
            format!("{st:<4} {name}  {subject}  {detail}")
        }
        Kind::Contract { consumer, .. } => format!("{st:<4} {name}  contract {consumer}: {detail}"),
        Kind::SetLevel(level) => format!("compatibility {name} {subject} {level}"),
        Kind::Registered { id, version } => {
            format!("registered {name} {subject} id={id} version={version}")
        }
        Kind::Rejected { .. } => format!("{st} {name} {subject} {detail}"),
    }
}

fn json_line(status: Status, event: &Event, kind: &Kind, detail: &str) -> Value {
    let mut line = json!({
        "status": status.json(),
        "event": event.name,
        "subject": event.subject,
        "message": detail,
    });
    let extra = match kind {
        Kind::Compatibility { level, versions } => json!({
            "check": "compatibility",
            "level": level.map(CompatibilityLevel::as_str),
            "versions": versions,
        }),
        Kind::Level { catalog, registry } => json!({
            "check": "level",
            "catalog_level": catalog.as_str(),
            "registry_level": registry.as_str(),
        }),
        Kind::Contract { consumer, writer } => {
            let (file, versions) = match writer {
                Writer::Local(path) => (Some(path), None),
                Writer::Versions(v) => (None, Some(v)),
            };
            json!({
                "check": "contract",
                "consumer": consumer,
                "writer_file": file,
                "writer_versions": versions,
            })
        }
        Kind::SetLevel(level) => json!({ "action": "set_level", "level": level.as_str() }),
        Kind::Registered { id, version } => json!({
            "action": "register",
            "status": "registered",
            "id": id,
            "version": version,
        }),
        Kind::Rejected { status } => json!({ "action": "register", "http_status": status }),
    };
    if let (Value::Object(line), Value::Object(extra)) = (&mut line, extra) {
        line.extend(extra.into_iter().filter(|(_, v)| !v.is_null()));
    }
    line
}

/// `1..3`, `2`, or `1, 3, 4` when there are gaps.
pub(crate) fn versions_text(versions: &[i32]) -> String {
    match versions {
        [] => "none".to_owned(),
        [one] => format!("version {one}"),
        [first, .., last] if versions.windows(2).all(|w| w[1] == w[0] + 1) => {
            format!("versions {first}..{last}")
        }
        _ => {
            let list: Vec<String> = versions.iter().map(i32::to_string).collect();
            format!("versions {}", list.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::versions_text;

    #[test]
    fn version_ranges() {
        assert_eq!(versions_text(&[3]), "version 3");
        assert_eq!(versions_text(&[1, 2, 3]), "versions 1..3");
        assert_eq!(versions_text(&[1, 3, 4]), "versions 1, 3, 4");
    }
}
