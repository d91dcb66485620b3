//! The registry's rules, written once over the store's primitive operations ([`Tx`]) and
//! offered as methods of [`Store`], each running in one transaction.

use std::panic::AssertUnwindSafe;

use apache_avro::Schema;
use gregor_avro::CompatibilityLevel;
use gregor_avro::compat::{self, CheckError};

use crate::error::ApiError;
use crate::schema::{ParsedSchema, VersionSelector};
use crate::store::{Access, GLOBAL, SchemaRef, Store, Tx, VersionRow, transaction};

/// A version of a subject, as `GET /subjects/{s}/versions/{v}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubjectVersion {
    pub(crate) subject: String,
    pub(crate) version: i32,
    pub(crate) id: i32,
    pub(crate) schema: String,
}

impl SubjectVersion {
    fn new(subject: &str, row: &VersionRow) -> Self {
        Self {
            subject: subject.to_owned(),
            version: row.version,
            id: row.schema_id,
            schema: row.schema.clone(),
        }
    }
}

impl Store {
    /// Registers `schema` under `subject` and returns its id (see the crate docs for the rules).
    ///
    /// The compatibility check runs on a snapshot, outside any lock and off the async
    /// workers, within the work budget; the write then takes the lock and goes ahead only if
    /// the subject's live versions and level are still those checked against (else it checks
    /// again, [`ATTEMPTS`] times at most, then answers 409).
    pub(crate) async fn register(
        &self,
        subject: &str,
        schema: &ParsedSchema,
    ) -> Result<i32, ApiError> {
        for _ in 0..ATTEMPTS {
            let seen = transaction!(self, Access::Read, |tx| Snapshot::read(&mut tx, subject)
                .await)?;
            if let Some(same) = seen.live().find(|v| v.schema == schema.canonical) {
                return Ok(same.schema_id);
            }
            let against: Vec<VersionRow> = seen.live().cloned().collect();
            match self.check_detached(seen.level, schema, against).await? {
                Ok(()) => {}
                Err(CheckError::TooCostly { max_steps }) => {
                    return Err(ApiError::CheckTooCostly {
                        subject: subject.to_owned(),
                        max_steps,
                    });
                }
                Err(reason) => {
                    return Err(ApiError::Incompatible {
                        subject: subject.to_owned(),
                        reason: reason.to_string(),
                    });
                }
            }
            let written = transaction!(self, Access::Write, |tx| register(
                &mut tx, subject, schema, &seen
            )
            .await)?;
            if let Some((id, new_version)) = written {
                if let Some(version) = new_version {
                    tracing::info!(subject, version, id, "registered schema");
                }
                return Ok(id);
            }
            tracing::debug!(subject, "subject changed during the compatibility check");
        }
        Err(ApiError::SubjectChanged(subject.to_owned()))
    }

    /// Runs [`compat::check_within`] on a blocking thread, within the store's work budget.
    /// The outer error is a store failure (a stored schema that does not parse).
    async fn check_detached(
        &self,
        level: CompatibilityLevel,
        candidate: &ParsedSchema,
        against: Vec<VersionRow>,
    ) -> Result<Result<(), CheckError>, ApiError> {
        if level == CompatibilityLevel::None || against.is_empty() {
            return Ok(Ok(()));
        }
        let candidate = candidate.schema.clone();
        let max_steps = self.limits().max_check_steps;
        let task =
            tokio::task::spawn_blocking(move || check(level, &candidate, &against, max_steps));
        task.await.unwrap_or_else(|_| {
            Ok(Err(CheckError::Incompatible(
                "the compatibility checker failed on this schema".into(),
            )))
        })
    }

    /// The subject's version that holds `schema`.
    pub(crate) async fn lookup(
        &self,
        subject: &str,
        schema: &ParsedSchema,
        include_deleted: bool,
    ) -> Result<SubjectVersion, ApiError> {
        transaction!(self, Access::Read, |tx| {
            let versions = tx.versions(subject).await?;
            let visible: Vec<&VersionRow> = visible(&versions, include_deleted).collect();
            if visible.is_empty() {
                return Err(ApiError::SubjectNotFound(subject.to_owned()));
            }
            let matching = |v: &&&VersionRow| v.schema == schema.canonical;
            visible
                .iter()
                .filter(matching)
                .find(|v| !v.deleted)
                .or_else(|| visible.iter().rfind(matching))
                .map(|v| SubjectVersion::new(subject, v))
                .ok_or(ApiError::SchemaNotFound(None))
        })
    }

    /// Subject names.
    pub(crate) async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>, ApiError> {
        transaction!(self, Access::Read, |tx| Ok::<_, ApiError>(
            tx.subjects(include_deleted).await?
        ))
    }

    /// The version numbers of a subject.
    pub(crate) async fn version_numbers(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<Vec<i32>, ApiError> {
        transaction!(self, Access::Read, |tx| {
            let versions = tx.versions(subject).await?;
            let numbers: Vec<i32> = visible(&versions, include_deleted)
                .map(|v| v.version)
                .collect();
            if numbers.is_empty() {
                return Err(ApiError::SubjectNotFound(subject.to_owned()));
            }
            Ok(numbers)
        })
    }

    /// One version of a subject.
    pub(crate) async fn version(
        &self,
        subject: &str,
        selector: VersionSelector,
        include_deleted: bool,
    ) -> Result<SubjectVersion, ApiError> {
        transaction!(self, Access::Read, |tx| {
            let versions = tx.versions(subject).await?;
            let row = pick(subject, &versions, selector, include_deleted)?;
            Ok(SubjectVersion::new(subject, row))
        })
    }

    /// The canonical text of schema `id`.
    pub(crate) async fn schema_by_id(&self, id: i32) -> Result<String, ApiError> {
        transaction!(self, Access::Read, |tx| tx
            .schema_text(id)
            .await?
            .ok_or(ApiError::SchemaNotFound(Some(id))))
    }

    /// The subject/versions that use schema `id`.
    pub(crate) async fn schema_versions(
        &self,
        id: i32,
        include_deleted: bool,
    ) -> Result<Vec<SchemaRef>, ApiError> {
        transaction!(self, Access::Read, |tx| {
            if tx.schema_text(id).await?.is_none() {
                return Err(ApiError::SchemaNotFound(Some(id)));
            }
            let mut refs = tx.schema_refs(id).await?;
            refs.retain(|r| include_deleted || !r.deleted);
            Ok(refs)
        })
    }

    /// Soft-deletes a subject, or with `permanent` removes a soft-deleted one; returns the
    /// versions affected.
    pub(crate) async fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<i32>, ApiError> {
        transaction!(self, Access::Write, |tx| {
            let versions = tx.versions(subject).await?;
            if versions.is_empty() {
                return Err(ApiError::SubjectNotFound(subject.to_owned()));
            }
            if permanent {
                if versions.iter().any(|v| !v.deleted) {
                    return Err(ApiError::SubjectNotSoftDeleted(subject.to_owned()));
                }
                tx.remove(subject, None).await?;
                tx.set_level(subject, None).await?;
                Ok(versions.iter().map(|v| v.version).collect())
            } else {
                let live: Vec<i32> = visible(&versions, false).map(|v| v.version).collect();
                if live.is_empty() {
                    return Err(ApiError::SubjectSoftDeleted(subject.to_owned()));
                }
                tx.soft_delete(subject, None).await?;
                Ok(live)
            }
        })
    }

    /// Soft-deletes a version, or with `permanent` removes a soft-deleted one.
    pub(crate) async fn delete_version(
        &self,
        subject: &str,
        selector: VersionSelector,
        permanent: bool,
    ) -> Result<i32, ApiError> {
        transaction!(self, Access::Write, |tx| {
            let versions = tx.versions(subject).await?;
            if versions.is_empty() {
                return Err(ApiError::SubjectNotFound(subject.to_owned()));
            }
            let row = match selector {
                // `latest` is the newest live version for a soft delete, and the newest
                // version of all for a permanent one (which must be soft-deleted already).
                VersionSelector::Latest if !permanent => {
                    versions.iter().rfind(|v| !v.deleted).or(versions.last())
                }
                VersionSelector::Latest => versions.last(),
                VersionSelector::Number(n) => versions.iter().find(|v| v.version == n),
            };
            let Some(row) = row else {
                let VersionSelector::Number(n) = selector else {
                    return Err(ApiError::SubjectNotFound(subject.to_owned()));
                };
                return Err(ApiError::VersionNotFound(n));
            };
            let version = row.version;
            if permanent {
                if !row.deleted {
                    return Err(ApiError::VersionNotSoftDeleted {
                        subject: subject.to_owned(),
                        version,
                    });
                }
                tx.remove(subject, Some(version)).await?;
            } else {
                if row.deleted {
                    return Err(ApiError::VersionSoftDeleted {
                        subject: subject.to_owned(),
                        version,
                    });
                }
                tx.soft_delete(subject, Some(version)).await?;
            }
            Ok(version)
        })
    }

    /// The level set for `subject` (`None`: the global one), falling back to the global
    /// level when `fallback` is set; `Ok(None)` when nothing is set.
    pub(crate) async fn level(
        &self,
        subject: Option<&str>,
        fallback: bool,
    ) -> Result<Option<CompatibilityLevel>, ApiError> {
        transaction!(self, Access::Read, |tx| {
            let own = tx.level(subject.unwrap_or(GLOBAL)).await?;
            match own {
                None if fallback && subject.is_some() => Ok::<_, ApiError>(tx.level(GLOBAL).await?),
                own => Ok(own),
            }
        })
    }

    /// Sets the level of `subject` (`None`: the global one).
    pub(crate) async fn set_level(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<(), ApiError> {
        transaction!(self, Access::Write, |tx| Ok::<_, ApiError>(
            tx.set_level(subject.unwrap_or(GLOBAL), Some(level)).await?
        ))
    }

    /// Clears the global level and returns the one in force before (the default if unset).
    pub(crate) async fn reset_global_level(&self) -> Result<CompatibilityLevel, ApiError> {
        transaction!(self, Access::Write, |tx| {
            let before = tx.level(GLOBAL).await?.unwrap_or_default();
            tx.set_level(GLOBAL, None).await?;
            Ok::<_, ApiError>(before)
        })
    }

    /// Clears a subject's level and returns it; 40408 when it has none (40401 when the
    /// subject does not exist either).
    pub(crate) async fn reset_subject_level(
        &self,
        subject: &str,
    ) -> Result<CompatibilityLevel, ApiError> {
        transaction!(self, Access::Write, |tx| {
            let Some(before) = tx.level(subject).await? else {
                return Err(if tx.versions(subject).await?.is_empty() {
                    ApiError::SubjectNotFound(subject.to_owned())
                } else {
                    ApiError::SubjectConfigNotFound(subject.to_owned())
                });
            };
            tx.set_level(subject, None).await?;
            Ok(before)
        })
    }

    /// Checks `candidate` against one version of the subject (`Some`) or, like a
    /// registration, against the versions its level asks for (`None`). Returns the reasons it
    /// is incompatible; empty means compatible. The check runs on a snapshot, outside any
    /// lock, within the work budget.
    pub(crate) async fn check_compatibility(
        &self,
        subject: &str,
        selector: Option<VersionSelector>,
        candidate: &ParsedSchema,
    ) -> Result<Vec<String>, ApiError> {
        let (level, against) = transaction!(self, Access::Read, |tx| {
            let seen = Snapshot::read(&mut tx, subject).await?;
            let against: Vec<VersionRow> = match selector {
                Some(selector) => vec![pick(subject, &seen.versions, selector, false)?.clone()],
                None => seen.live().cloned().collect(),
            };
            Ok::<_, ApiError>((seen.level, against))
        })?;
        match self.check_detached(level, candidate, against).await? {
            Ok(()) => Ok(Vec::new()),
            Err(CheckError::TooCostly { max_steps }) => Err(ApiError::CheckTooCostly {
                subject: subject.to_owned(),
                max_steps,
            }),
            Err(reason) => Ok(vec![reason.to_string()]),
        }
    }
}

/// How many times a registration checks again when the subject changed during its check.
const ATTEMPTS: usize = 4;

/// What a compatibility check is made against: a subject's versions and level, read in one
/// short transaction.
struct Snapshot {
    versions: Vec<VersionRow>,
    level: CompatibilityLevel,
}

impl Snapshot {
    async fn read<T: Tx>(tx: &mut T, subject: &str) -> Result<Self, ApiError> {
        Ok(Self {
            versions: tx.versions(subject).await?,
            level: effective_level(tx, subject).await?,
        })
    }

    fn live(&self) -> impl Iterator<Item = &VersionRow> {
        visible(&self.versions, false)
    }

    /// Whether a registration needs no check (level NONE, or no live version).
    fn needs_no_check(&self) -> bool {
        self.level == CompatibilityLevel::None || self.live().next().is_none()
    }

    /// Whether a check against `self` still holds for `now`: the same live versions (with
    /// the same schemas) and the same level.
    fn same_checks(&self, now: &Self) -> bool {
        self.level == now.level
            && self
                .live()
                .map(|v| (v.version, v.schema_id))
                .eq(now.live().map(|v| (v.version, v.schema_id)))
    }
}

/// Adds `candidate`, checked against `checked`, as the subject's next version. Returns the
/// schema id and, when one was added, the new version; `None` when the subject changed since
/// `checked` was read (nothing is written).
async fn register<T: Tx>(
    tx: &mut T,
    subject: &str,
    candidate: &ParsedSchema,
    checked: &Snapshot,
) -> Result<Option<(i32, Option<i32>)>, ApiError> {
    let now = Snapshot::read(tx, subject).await?;
    if let Some(same) = now.live().find(|v| v.schema == candidate.canonical) {
        return Ok(Some((same.schema_id, None)));
    }
    if !checked.same_checks(&now) && !now.needs_no_check() {
        return Ok(None);
    }
    let id = match tx.schema_id(&candidate.canonical).await? {
        Some(id) => id,
        None => tx.insert_schema(&candidate.canonical).await?,
    };
    // Versions are never reused, not even after a permanent delete of the newest one
    // leaves older ones.
    let version = now
        .versions
        .iter()
        .map(|v| v.version)
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or_else(|| {
            ApiError::Store(crate::store::StoreError::Corrupt(format!(
                "subject {subject:?} has used up its version numbers"
            )))
        })?;
    tx.insert_version(subject, version, id).await?;
    Ok(Some((id, Some(version))))
}

/// The subject's level, else the global one, else BACKWARD.
async fn effective_level<T: Tx>(tx: &mut T, subject: &str) -> Result<CompatibilityLevel, ApiError> {
    Ok(match tx.level(subject).await? {
        Some(level) => level,
        None => tx.level(GLOBAL).await?.unwrap_or_default(),
    })
}

/// Runs [`compat::check_within`] against `existing` (oldest first). The outer error is a
/// store failure; the inner one why the candidate is refused. CPU-bound: call it on a
/// blocking thread.
fn check(
    level: CompatibilityLevel,
    candidate: &Schema,
    existing: &[VersionRow],
    max_steps: u64,
) -> Result<Result<(), CheckError>, ApiError> {
    let parsed = existing
        .iter()
        .map(|v| ParsedSchema::stored(&v.schema).map(|s| (v.version, s)))
        .collect::<Result<Vec<(i32, Schema)>, ApiError>>()?;
    let refs: Vec<(i32, &Schema)> = parsed.iter().map(|(v, s)| (*v, s)).collect();
    // A checker bug must not accept a schema or take the connection down: a panic is a
    // refusal.
    let checked = std::panic::catch_unwind(AssertUnwindSafe(|| {
        compat::check_within(level, candidate, &refs, max_steps)
    }));
    Ok(checked.unwrap_or_else(|_| {
        Err(CheckError::Incompatible(
            "the compatibility checker failed on this schema".into(),
        ))
    }))
}

fn visible(versions: &[VersionRow], include_deleted: bool) -> impl Iterator<Item = &VersionRow> {
    versions
        .iter()
        .filter(move |v| include_deleted || !v.deleted)
}

/// The version a selector names: 40401 when the subject has no visible version, 40402 when
/// it lacks that one.
fn pick<'a>(
    subject: &str,
    versions: &'a [VersionRow],
    selector: VersionSelector,
    include_deleted: bool,
) -> Result<&'a VersionRow, ApiError> {
    let mut candidates = visible(versions, include_deleted).peekable();
    if candidates.peek().is_none() {
        return Err(ApiError::SubjectNotFound(subject.to_owned()));
    }
    match selector {
        VersionSelector::Latest => candidates
            .last()
            .ok_or_else(|| ApiError::SubjectNotFound(subject.to_owned())),
        VersionSelector::Number(n) => candidates
            .find(|v| v.version == n)
            .ok_or(ApiError::VersionNotFound(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> ParsedSchema {
        ParsedSchema::parse(&format!(
            r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
        ))
        .expect("valid schema")
    }

    /// A write whose check was made against versions that have changed since is not done;
    /// with a fresh snapshot it is.
    #[tokio::test]
    async fn a_write_after_a_stale_check_is_not_done() -> Result<(), ApiError> {
        let store = Store::memory();
        let a = r#"{"name":"a","type":"int"}"#;
        store.register("s", &record(a)).await?;
        let seen = transaction!(store, Access::Read, |tx| Snapshot::read(&mut tx, "s").await)?;
        // Another registration lands while `seen` is being checked.
        let b = r#"{"name":"b","type":"int","default":0}"#;
        store.register("s", &record(&format!("{a},{b}"))).await?;
        let c = record(&format!(
            r#"{a},{b},{{"name":"c","type":"int","default":0}}"#
        ));
        let stale = transaction!(store, Access::Write, |tx| register(&mut tx, "s", &c, &seen)
            .await)?;
        assert_eq!(stale, None);
        let fresh = transaction!(store, Access::Read, |tx| Snapshot::read(&mut tx, "s").await)?;
        let done = transaction!(store, Access::Write, |tx| register(
            &mut tx, "s", &c, &fresh
        )
        .await)?;
        assert_eq!(done, Some((3, Some(3))));
        // Under NONE nothing needs checking: a stale snapshot does not matter.
        store.set_level(Some("s"), CompatibilityLevel::None).await?;
        let d = record(r#"{"name":"d","type":"string"}"#);
        let done = transaction!(store, Access::Write, |tx| register(&mut tx, "s", &d, &seen)
            .await)?;
        assert_eq!(done, Some((4, Some(4))));
        Ok(())
    }
}
