//! The in-memory store: one mutex around plain maps; a transaction holds the lock and
//! restores a snapshot if it is dropped after a change without committing.

use std::collections::{BTreeMap, HashMap};

use gregor_avro::CompatibilityLevel;
use tokio::sync::{Mutex, MutexGuard};

use super::{SchemaRef, StoreError, Tx, VersionRow};

#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone)]
struct State {
    /// Canonical texts; schema id `n` is at index `n - 1`.
    schemas: Vec<String>,
    ids: HashMap<String, i32>,
    /// Subject → versions, oldest first.
    subjects: BTreeMap<String, Vec<Version>>,
    /// Subject (or `GLOBAL`) → level.
    levels: HashMap<String, CompatibilityLevel>,
}

#[derive(Debug, Clone, Copy)]
struct Version {
    version: i32,
    schema_id: i32,
    deleted: bool,
}

impl MemoryStore {
    pub(crate) async fn begin(&self) -> MemoryTx<'_> {
        MemoryTx {
            state: self.state.lock().await,
            before: None,
        }
    }
}

pub(crate) struct MemoryTx<'a> {
    state: MutexGuard<'a, State>,
    /// The state before the first change, put back on rollback.
    before: Option<State>,
}

impl MemoryTx<'_> {
    fn change(&mut self) -> &mut State {
        if self.before.is_none() {
            self.before = Some(self.state.clone());
        }
        &mut self.state
    }

    fn text(&self, id: i32) -> Option<&String> {
        usize::try_from(id)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.state.schemas.get(i))
    }
}

impl Drop for MemoryTx<'_> {
    fn drop(&mut self) {
        if let Some(before) = self.before.take() {
            *self.state = before;
        }
    }
}

impl Tx for MemoryTx<'_> {
    async fn versions(&mut self, subject: &str) -> Result<Vec<VersionRow>, StoreError> {
        let Some(versions) = self.state.subjects.get(subject) else {
            return Ok(Vec::new());
        };
        versions
            .iter()
            .map(|v| {
                let schema = self.text(v.schema_id).ok_or_else(|| {
                    StoreError::Corrupt(format!("schema {} is missing", v.schema_id))
                })?;
                Ok(VersionRow {
                    version: v.version,
                    schema_id: v.schema_id,
                    deleted: v.deleted,
                    schema: schema.clone(),
                })
            })
            .collect()
    }

    async fn subjects(&mut self, include_deleted: bool) -> Result<Vec<String>, StoreError> {
        Ok(self
            .state
            .subjects
            .iter()
            .filter(|(_, versions)| include_deleted || versions.iter().any(|v| !v.deleted))
            .map(|(subject, _)| subject.clone())
            .collect())
    }

    async fn schema_text(&mut self, id: i32) -> Result<Option<String>, StoreError> {
        let used = self
            .state
            .subjects
            .values()
            .flatten()
            .any(|v| v.schema_id == id);
        Ok(if used { self.text(id).cloned() } else { None })
    }

    async fn schema_refs(&mut self, id: i32) -> Result<Vec<SchemaRef>, StoreError> {
        Ok(self
            .state
            .subjects
            .iter()
            .flat_map(|(subject, versions)| {
                versions
                    .iter()
                    .filter(move |v| v.schema_id == id)
                    .map(move |v| SchemaRef {
                        subject: subject.clone(),
                        version: v.version,
                        deleted: v.deleted,
                    })
            })
            .collect())
    }

    async fn schema_id(&mut self, canonical: &str) -> Result<Option<i32>, StoreError> {
        Ok(self.state.ids.get(canonical).copied())
    }

    async fn insert_schema(&mut self, canonical: &str) -> Result<i32, StoreError> {
        let state = self.change();
        let id = i32::try_from(state.schemas.len() + 1)
            .map_err(|_| StoreError::Corrupt("schema ids are exhausted".to_owned()))?;
        state.schemas.push(canonical.to_owned());
        state.ids.insert(canonical.to_owned(), id);
        Ok(id)
    }

    async fn insert_version(
        &mut self,
        subject: &str,
        version: i32,
        schema_id: i32,
    ) -> Result<(), StoreError> {
        let versions = self
            .change()
            .subjects
            .entry(subject.to_owned())
            .or_default();
        if versions.iter().any(|v| v.version == version) {
            return Err(StoreError::Corrupt(format!(
                "subject {subject:?} already has version {version}"
            )));
        }
        versions.push(Version {
            version,
            schema_id,
            deleted: false,
        });
        versions.sort_by_key(|v| v.version);
        Ok(())
    }

    async fn soft_delete(&mut self, subject: &str, version: Option<i32>) -> Result<(), StoreError> {
        if let Some(versions) = self.change().subjects.get_mut(subject) {
            for v in versions
                .iter_mut()
                .filter(|v| version.is_none_or(|n| n == v.version))
            {
                v.deleted = true;
            }
        }
        Ok(())
    }

    async fn remove(&mut self, subject: &str, version: Option<i32>) -> Result<(), StoreError> {
        let state = self.change();
        if let Some(versions) = state.subjects.get_mut(subject) {
            versions.retain(|v| version.is_some_and(|n| n != v.version));
            if versions.is_empty() {
                state.subjects.remove(subject);
            }
        }
        Ok(())
    }

    async fn level(&mut self, scope: &str) -> Result<Option<CompatibilityLevel>, StoreError> {
        Ok(self.state.levels.get(scope).copied())
    }

    async fn set_level(
        &mut self,
        scope: &str,
        level: Option<CompatibilityLevel>,
    ) -> Result<(), StoreError> {
        let levels = &mut self.change().levels;
        match level {
            Some(level) => levels.insert(scope.to_owned(), level),
            None => levels.remove(scope),
        };
        Ok(())
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        self.before = None;
        Ok(())
    }
}
