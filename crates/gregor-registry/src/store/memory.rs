//! The in-memory store: one mutex around plain maps; a transaction holds the lock and keeps
//! an undo log of its changes, replayed backwards if it is dropped without committing. (It
//! used to clone the whole state before its first change: filling a registry was quadratic.)

use std::collections::{BTreeMap, HashMap};

use gregor_avro::CompatibilityLevel;
use tokio::sync::{Mutex, MutexGuard};

use super::{SchemaRef, StoreError, Tx, VersionRow};

#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
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
            undo: Vec::new(),
        }
    }
}

pub(crate) struct MemoryTx<'a> {
    state: MutexGuard<'a, State>,
    /// How to take back each change made so far, oldest first.
    undo: Vec<Undo>,
}

/// The inverse of one change.
#[derive(Debug)]
enum Undo {
    /// A schema was appended (it is the last one).
    InsertSchema,
    /// A version was added to a subject (which did not exist before when `new_subject`).
    InsertVersion {
        subject: String,
        version: i32,
        new_subject: bool,
    },
    /// These versions of a subject were live before a soft delete.
    SoftDelete { subject: String, versions: Vec<i32> },
    /// A subject's versions before a permanent delete.
    Remove {
        subject: String,
        versions: Vec<Version>,
    },
    /// A scope's level before it was set or reset.
    Level {
        scope: String,
        level: Option<CompatibilityLevel>,
    },
}

impl State {
    fn undo(&mut self, change: Undo) {
        match change {
            Undo::InsertSchema => {
                if let Some(text) = self.schemas.pop() {
                    self.ids.remove(&text);
                }
            }
            Undo::InsertVersion {
                subject,
                version,
                new_subject,
            } => {
                if new_subject {
                    self.subjects.remove(&subject);
                } else if let Some(versions) = self.subjects.get_mut(&subject) {
                    versions.retain(|v| v.version != version);
                }
            }
            Undo::SoftDelete { subject, versions } => {
                if let Some(stored) = self.subjects.get_mut(&subject) {
                    for v in stored.iter_mut().filter(|v| versions.contains(&v.version)) {
                        v.deleted = false;
                    }
                }
            }
            Undo::Remove { subject, versions } => {
                self.subjects.insert(subject, versions);
            }
            Undo::Level { scope, level } => {
                match level {
                    Some(level) => self.levels.insert(scope, level),
                    None => self.levels.remove(&scope),
                };
            }
        }
    }
}

impl MemoryTx<'_> {
    fn text(&self, id: i32) -> Option<&String> {
        usize::try_from(id)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.state.schemas.get(i))
    }
}

impl Drop for MemoryTx<'_> {
    fn drop(&mut self) {
        while let Some(change) = self.undo.pop() {
            self.state.undo(change);
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
        let id = i32::try_from(self.state.schemas.len() + 1)
            .map_err(|_| StoreError::Corrupt("schema ids are exhausted".to_owned()))?;
        self.state.schemas.push(canonical.to_owned());
        self.state.ids.insert(canonical.to_owned(), id);
        self.undo.push(Undo::InsertSchema);
        Ok(id)
    }

    async fn insert_version(
        &mut self,
        subject: &str,
        version: i32,
        schema_id: i32,
    ) -> Result<(), StoreError> {
        let existing = self.state.subjects.get(subject);
        if existing.is_some_and(|versions| versions.iter().any(|v| v.version == version)) {
            return Err(StoreError::Corrupt(format!(
                "subject {subject:?} already has version {version}"
            )));
        }
        let new_subject = existing.is_none();
        let versions = self.state.subjects.entry(subject.to_owned()).or_default();
        versions.push(Version {
            version,
            schema_id,
            deleted: false,
        });
        versions.sort_by_key(|v| v.version);
        self.undo.push(Undo::InsertVersion {
            subject: subject.to_owned(),
            version,
            new_subject,
        });
        Ok(())
    }

    async fn soft_delete(&mut self, subject: &str, version: Option<i32>) -> Result<(), StoreError> {
        if let Some(versions) = self.state.subjects.get_mut(subject) {
            let mut changed = Vec::new();
            for v in versions
                .iter_mut()
                .filter(|v| !v.deleted && version.is_none_or(|n| n == v.version))
            {
                v.deleted = true;
                changed.push(v.version);
            }
            self.undo.push(Undo::SoftDelete {
                subject: subject.to_owned(),
                versions: changed,
            });
        }
        Ok(())
    }

    async fn remove(&mut self, subject: &str, version: Option<i32>) -> Result<(), StoreError> {
        let state = &mut *self.state;
        if let Some(versions) = state.subjects.get_mut(subject) {
            let before = versions.clone();
            versions.retain(|v| version.is_some_and(|n| n != v.version));
            if versions.is_empty() {
                state.subjects.remove(subject);
            }
            self.undo.push(Undo::Remove {
                subject: subject.to_owned(),
                versions: before,
            });
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
        let levels = &mut self.state.levels;
        let previous = match level {
            Some(level) => levels.insert(scope.to_owned(), level),
            None => levels.remove(scope),
        };
        self.undo.push(Undo::Level {
            scope: scope.to_owned(),
            level: previous,
        });
        Ok(())
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        self.undo.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    async fn register(store: &MemoryStore, n: usize) -> Result<(), StoreError> {
        let mut tx = store.begin().await;
        let text = format!("{n:0>512}");
        let id = tx.insert_schema(&text).await?;
        tx.insert_version(&format!("subject-{n}"), 1, id).await?;
        tx.commit().await
    }

    async fn time_block(store: &MemoryStore, from: usize, count: usize) -> Duration {
        let started = Instant::now();
        for n in from..from + count {
            register(store, n).await.expect("register");
        }
        started.elapsed()
    }

    /// A write costs the same in a large registry as in an empty one: no copy of the whole
    /// state per transaction (that made filling a registry quadratic).
    #[tokio::test]
    async fn a_write_does_not_copy_the_whole_state() {
        let store = MemoryStore::default();
        let block = 200;
        let first = time_block(&store, 0, block).await;
        time_block(&store, block, 1600).await;
        let last = time_block(&store, 1800, block).await;
        assert!(
            last < first * 4 + Duration::from_millis(100),
            "the last {block} writes took {last:?}, the first {block} {first:?}"
        );
    }

    /// A transaction dropped without commit leaves the state as it was, after every kind
    /// of change.
    #[tokio::test]
    async fn a_dropped_transaction_undoes_every_change() -> Result<(), StoreError> {
        let store = MemoryStore::default();
        {
            let mut tx = store.begin().await;
            let a = tx.insert_schema("a").await?;
            let b = tx.insert_schema("b").await?;
            tx.insert_version("s", 1, a).await?;
            tx.insert_version("s", 2, b).await?;
            tx.insert_version("t", 1, a).await?;
            tx.set_level("s", Some(CompatibilityLevel::Full)).await?;
            tx.commit().await?;
        }
        let before = format!("{:?}", *store.state.lock().await);
        {
            let mut tx = store.begin().await;
            let c = tx.insert_schema("c").await?;
            tx.insert_version("s", 3, c).await?;
            tx.insert_version("u", 1, c).await?;
            tx.soft_delete("s", Some(1)).await?;
            tx.soft_delete("t", None).await?;
            tx.remove("s", Some(2)).await?;
            tx.remove("t", None).await?;
            tx.set_level("s", None).await?;
            tx.set_level("u", Some(CompatibilityLevel::None)).await?;
            tx.set_level(super::super::GLOBAL, Some(CompatibilityLevel::Forward))
                .await?;
            // dropped: rolled back
        }
        let after = format!("{:?}", *store.state.lock().await);
        assert_eq!(before, after);
        let mut tx = store.begin().await;
        assert_eq!(tx.schema_id("c").await?, None);
        assert_eq!(
            tx.insert_schema("c").await?,
            3,
            "ids are not used up by a rollback"
        );
        Ok(())
    }
}
