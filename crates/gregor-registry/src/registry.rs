//! The registry's rules, written once over the store's primitive operations ([`Tx`]) and
//! offered as methods of [`Store`], each running in one transaction.

use std::panic::AssertUnwindSafe;

use apache_avro::Schema;
use gregor_avro::CompatibilityLevel;
use gregor_avro::compat;

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
    pub(crate) async fn register(
        &self,
        subject: &str,
        schema: &ParsedSchema,
    ) -> Result<i32, ApiError> {
        let (id, new_version) =
            transaction!(self, Access::Write, |tx| register(&mut tx, subject, schema)
                .await)?;
        if let Some(version) = new_version {
            tracing::info!(subject, version, id, "registered schema");
        }
        Ok(id)
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
    /// is incompatible; empty means compatible.
    pub(crate) async fn check_compatibility(
        &self,
        subject: &str,
        selector: Option<VersionSelector>,
        candidate: &ParsedSchema,
    ) -> Result<Vec<String>, ApiError> {
        transaction!(self, Access::Read, |tx| {
            let versions = tx.versions(subject).await?;
            let level = effective_level(&mut tx, subject).await?;
            let against: Vec<&VersionRow> = match selector {
                Some(selector) => vec![pick(subject, &versions, selector, false)?],
                None => visible(&versions, false).collect(),
            };
            Ok(match check(level, candidate, &against)? {
                Ok(()) => Vec::new(),
                Err(reason) => vec![reason],
            })
        })
    }
}

/// Returns the schema id and, when one was added, the new version.
async fn register<T: Tx>(
    tx: &mut T,
    subject: &str,
    candidate: &ParsedSchema,
) -> Result<(i32, Option<i32>), ApiError> {
    let versions = tx.versions(subject).await?;
    let live: Vec<&VersionRow> = visible(&versions, false).collect();
    if let Some(same) = live.iter().find(|v| v.schema == candidate.canonical) {
        return Ok((same.schema_id, None));
    }
    let level = effective_level(tx, subject).await?;
    check(level, candidate, &live)?.map_err(|reason| ApiError::Incompatible {
        subject: subject.to_owned(),
        reason,
    })?;
    let id = match tx.schema_id(&candidate.canonical).await? {
        Some(id) => id,
        None => tx.insert_schema(&candidate.canonical).await?,
    };
    // Versions are never reused, not even after a permanent delete of the newest one
    // leaves older ones.
    let version = versions
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
    Ok((id, Some(version)))
}

/// The subject's level, else the global one, else BACKWARD.
async fn effective_level<T: Tx>(tx: &mut T, subject: &str) -> Result<CompatibilityLevel, ApiError> {
    Ok(match tx.level(subject).await? {
        Some(level) => level,
        None => tx.level(GLOBAL).await?.unwrap_or_default(),
    })
}

/// Runs [`compat::check`] against `existing` (oldest first). The outer error is a store
/// failure; the inner one the reason the candidate is incompatible.
fn check(
    level: CompatibilityLevel,
    candidate: &ParsedSchema,
    existing: &[&VersionRow],
) -> Result<Result<(), String>, ApiError> {
    if level == CompatibilityLevel::None || existing.is_empty() {
        return Ok(Ok(()));
    }
    let parsed = existing
        .iter()
        .map(|v| ParsedSchema::stored(&v.schema).map(|s| (v.version, s)))
        .collect::<Result<Vec<(i32, Schema)>, ApiError>>()?;
    let refs: Vec<(i32, &Schema)> = parsed.iter().map(|(v, s)| (*v, s)).collect();
    // A checker bug must not accept a schema or take the connection down: a panic is a
    // refusal.
    let checked = std::panic::catch_unwind(AssertUnwindSafe(|| {
        compat::check(level, &candidate.schema, &refs)
    }));
    Ok(checked.unwrap_or_else(|_| Err("the compatibility checker failed on this schema".into())))
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
