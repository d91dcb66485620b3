//! What a handler receives: the decoded [`Event`] and its [`Context`].

use std::sync::Arc;

use rdkafka::message::{Headers, OwnedHeaders};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::HandlerError;

/// One consumed message, decoded.
#[derive(Debug, Clone)]
pub struct Event<T> {
    /// The decoded value; `None` for a tombstone (a message without payload).
    pub value: Option<T>,
    /// The message key.
    pub key: Option<Vec<u8>>,
    /// The main topic the event belongs to (also when it arrived through a retry tier).
    pub topic: String,
    /// The topic it was read from (`orders.retry.1` for a retry).
    pub source_topic: String,
    /// Partition it was read from.
    pub partition: i32,
    /// Offset it was read at.
    pub offset: i64,
    /// Broker timestamp, milliseconds since the epoch.
    pub timestamp: Option<i64>,
    /// This attempt's number, 1 for the first.
    pub attempt: u32,
    /// The message headers.
    pub headers: Option<OwnedHeaders>,
}

impl<T> Event<T> {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .as_ref()?
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
    }

    /// The first value of header `name` as UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The CloudEvents id (`ce_id`).
    pub fn id(&self) -> Option<&str> {
        self.header_str(gregor_wire::headers::CE_ID)
    }

    /// The key as UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }
}

pub(crate) type SharedTx = Arc<Mutex<Option<Transaction<'static, Postgres>>>>;

/// Per-message context: the dedupe transaction and the consumer's identity.
///
/// Cheap to clone; clones share the transaction.
#[derive(Debug, Clone)]
pub struct Context {
    group: Arc<str>,
    pool: Option<PgPool>,
    tx: Option<SharedTx>,
}

impl Context {
    pub(crate) fn new(group: Arc<str>, pool: Option<PgPool>, tx: Option<SharedTx>) -> Self {
        Self { group, pool, tx }
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The pool, for work outside the dedupe transaction.
    pub fn pool(&self) -> Option<&PgPool> {
        self.pool.as_ref()
    }

    /// The transaction in which this message's dedupe row is already written: the handler's
    /// writes and the dedupe mark commit together after the handler returns `Ok`, or roll
    /// back together on error.
    ///
    /// ```no_run
    /// # async fn handler(ctx: gregor_consumer::Context) -> Result<(), gregor_consumer::HandlerError> {
    /// let mut tx = ctx.transaction().await?;
    /// sqlx::query("INSERT INTO shipments (order_id) VALUES ($1)")
    ///     .bind(42_i64)
    ///     .execute(&mut *tx)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction(&self) -> Result<Tx, HandlerError> {
        let tx = self.tx.as_ref().ok_or_else(|| {
            HandlerError::permanent(
                "no dedupe transaction: the consumer has no DATABASE_URL or the route opted out",
            )
        })?;
        let guard = tx.clone().try_lock_owned().map_err(|_| {
            HandlerError::permanent(
                "the dedupe transaction is already borrowed: drop the previous Tx first",
            )
        })?;
        OwnedMutexGuard::try_map(guard, Option::as_mut)
            .map(|guard| Tx { guard })
            .map_err(|_| HandlerError::retryable("the dedupe transaction has already ended"))
    }
}

/// The dedupe transaction, borrowed by a handler: derefs to the connection, so it is used as
/// `query.execute(&mut *tx)`. Drop it before returning; the runtime commits afterwards.
#[derive(Debug)]
pub struct Tx {
    guard: OwnedMappedMutexGuard<
        Option<Transaction<'static, Postgres>>,
        Transaction<'static, Postgres>,
    >,
}

impl std::ops::Deref for Tx {
    type Target = sqlx::PgConnection;

    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Compiles only if a handler that writes through the dedupe transaction is `Send`, which
    // the runtime needs (sqlx executors and borrowed guards easily break that).
    #[allow(dead_code)]
    fn handler_futures_using_the_transaction_are_send(ctx: Context) {
        fn is_send<T: Send>(_: T) {}
        is_send(async move {
            let mut tx = ctx.transaction().await?;
            sqlx::query("SELECT 1").execute(&mut *tx).await?;
            Ok::<(), HandlerError>(())
        });
    }
}
