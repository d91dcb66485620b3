//! Where subjects, versions, schemas and compatibility levels live: in memory or in
//! PostgreSQL. Both offer the same small set of primitive operations inside a transaction
//! ([`Tx`]); the registry's rules are written once on top of them (`crate::registry`).

use std::future::Future;
use std::sync::Arc;

use gregor_avro::CompatibilityLevel;
use gregor_config::DatabaseUrl;

use crate::config::{Limits, Storage};

pub(crate) mod memory;
pub(crate) mod postgres;

/// The key under which the global compatibility level is stored.
pub(crate) const GLOBAL: &str = "";

/// One version of a subject, with its schema's canonical text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VersionRow {
    pub(crate) version: i32,
    pub(crate) schema_id: i32,
    pub(crate) deleted: bool,
    pub(crate) schema: String,
}

/// A subject/version that uses a schema id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaRef {
    pub(crate) subject: String,
    pub(crate) version: i32,
    pub(crate) deleted: bool,
}

/// The data store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// PostgreSQL refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The stored data breaks an invariant (an unparsable level or schema, ids exhausted).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Database(e) => !matches!(
                e,
                sqlx::Error::Configuration(_)
                    | sqlx::Error::ColumnDecode { .. }
                    | sqlx::Error::Decode(_)
                    | sqlx::Error::TypeNotFound { .. }
            ),
            Self::Corrupt(_) => false,
        }
    }
}

/// The primitive operations of one transaction. Dropping it without [`Tx::commit`] rolls
/// back.
pub(crate) trait Tx: Send + Sized {
    /// Every version of `subject` (soft-deleted ones included), oldest first.
    fn versions(
        &mut self,
        subject: &str,
    ) -> impl Future<Output = Result<Vec<VersionRow>, StoreError>> + Send;

    /// Subject names in order; soft-deleted subjects only with `include_deleted`.
    fn subjects(
        &mut self,
        include_deleted: bool,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// The canonical text of schema `id`, if some version (soft-deleted or not) uses it.
    fn schema_text(
        &mut self,
        id: i32,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// The versions using schema `id`, by subject and version.
    fn schema_refs(
        &mut self,
        id: i32,
    ) -> impl Future<Output = Result<Vec<SchemaRef>, StoreError>> + Send;

    /// The id of a canonical schema text, if it was ever stored.
    fn schema_id(
        &mut self,
        canonical: &str,
    ) -> impl Future<Output = Result<Option<i32>, StoreError>> + Send;

    /// Stores a new canonical schema text and returns its id (the next one).
    fn insert_schema(
        &mut self,
        canonical: &str,
    ) -> impl Future<Output = Result<i32, StoreError>> + Send;

    /// Adds a (non-deleted) version.
    fn insert_version(
        &mut self,
        subject: &str,
        version: i32,
        schema_id: i32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks one version (or, with `None`, every version) of `subject` deleted.
    fn soft_delete(
        &mut self,
        subject: &str,
        version: Option<i32>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes one version (or, with `None`, every version) of `subject`.
    fn remove(
        &mut self,
        subject: &str,
        version: Option<i32>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The level set for `scope` (a subject, or [`GLOBAL`]).
    fn level(
        &mut self,
        scope: &str,
    ) -> impl Future<Output = Result<Option<CompatibilityLevel>, StoreError>> + Send;

    /// Sets (`Some`) or clears (`None`) the level of `scope`.
    fn set_level(
        &mut self,
        scope: &str,
        level: Option<CompatibilityLevel>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes the changes durable.
    fn commit(self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Whether a transaction changes data (and so takes the registry-wide write lock) or only
/// reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// The registry's storage: in memory (lost at exit) or PostgreSQL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    limits: Limits,
}

#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Memory(Arc<memory::MemoryStore>),
    Postgres(postgres::PgStore),
}

impl Store {
    /// An empty in-memory store.
    pub fn memory() -> Self {
        Self {
            backend: Backend::Memory(Arc::new(memory::MemoryStore::default())),
            limits: Limits::default(),
        }
    }

    /// Connects to PostgreSQL and creates the registry's tables if they are missing.
    pub async fn postgres(url: &DatabaseUrl) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Postgres(postgres::PgStore::connect(url).await?),
            limits: Limits::default(),
        })
    }

    /// Uses an existing pool, creating the registry's tables if they are missing.
    pub async fn from_pool(pool: sqlx::PgPool) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Postgres(postgres::PgStore::from_pool(pool).await?),
            limits: Limits::default(),
        })
    }

    /// Opens the store a configuration asks for.
    pub async fn open(storage: &Storage) -> Result<Self, StoreError> {
        match storage {
            Storage::Memory => Ok(Self::memory()),
            Storage::Postgres(url) => Self::postgres(url).await,
        }
    }

    /// Closes database connections (a no-op in memory).
    pub async fn close(&self) {
        if let Backend::Postgres(pg) = &self.backend {
            pg.close().await;
        }
    }

    /// The same store, answering requests within `limits` (the defaults otherwise).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// What one request may cost.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }
}

/// Commits `tx` when `out` is a success; otherwise drops (rolls back) it.
pub(crate) async fn finish<T: Tx, R, E: From<StoreError>>(
    tx: T,
    out: Result<R, E>,
) -> Result<R, E> {
    let value = out?;
    tx.commit().await?;
    Ok(value)
}

/// Runs `$body` with `$tx` bound to a transaction of `$store` (with `$access`), committing
/// on success. The body is expanded once per backend, so it may be generic over [`Tx`].
macro_rules! transaction {
    ($store:expr, $access:expr, |$tx:ident| $body:expr) => {
        match $store.backend() {
            $crate::store::Backend::Memory(memory) => {
                let mut $tx = memory.begin().await;
                let out = $body;
                $crate::store::finish($tx, out).await
            }
            $crate::store::Backend::Postgres(pg) => {
                let mut $tx = pg.begin($access).await?;
                let out = $body;
                $crate::store::finish($tx, out).await
            }
        }
    };
}
pub(crate) use transaction;

/// Axum needs `Send` futures; this fails to compile when a PostgreSQL future is not
/// (`sqlx::raw_sql(..).execute(&mut *tx)` is one such).
#[cfg(test)]
mod send_check {
    fn assert_send<T: Send>(_: &T) {}

    #[allow(dead_code)]
    fn futures_are_send(pool: sqlx::PgPool, url: &super::DatabaseUrl) {
        assert_send(&super::postgres::PgStore::from_pool(pool));
        assert_send(&super::postgres::PgStore::connect(url));
    }
}
