//! The dedupe transaction: begin → mark the dedupe rows → run the handler(s) inside it →
//! checked commit. One type for a single message and for a batch, so both paths fail, roll
//! back and classify database errors the same way.

use std::collections::HashSet;
use std::sync::Arc;

use rdkafka::message::OwnedMessage;
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::event::SharedTx;
use crate::route::ErrorKind;
use crate::{Context, dedupe, outage};

/// Why the dedupe transaction itself failed (not the handler).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DedupeTxError {
    /// A statement of the transaction, or its commit, failed.
    #[error("dedupe: {0}")]
    Database(#[from] sqlx::Error),
    /// The handler took the transaction out of its context and did not give it back.
    #[error("the dedupe transaction vanished before commit")]
    Vanished,
}

impl DedupeTxError {
    /// How the runtime routes it: a database that cannot be reached is an outage to wait
    /// out, anything else is retried.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::Database(e) if outage::is_database_unreachable(e) => ErrorKind::Unavailable,
            Self::Database(_) | Self::Vanished => ErrorKind::Retryable,
        }
    }

    /// The message recorded with the failure.
    pub(crate) fn message(&self) -> String {
        match self {
            Self::Database(e) if outage::is_database_unreachable(e) => {
                format!("database unreachable: {e}")
            }
            other => other.to_string(),
        }
    }
}

/// An open dedupe transaction whose dedupe rows are written.
#[derive(Debug)]
pub(crate) struct DedupeTx {
    shared: SharedTx,
    /// The dedupe keys that were new (a key repeated inside a batch counts once).
    new: HashSet<String>,
}

impl DedupeTx {
    /// Begins the transaction and writes the dedupe rows of `msgs` (keyed by `keys`, in the
    /// same order): one statement for one message, one `unnest` statement for a batch.
    pub(crate) async fn begin(
        pool: &PgPool,
        group: &str,
        keys: &[String],
        msgs: &[OwnedMessage],
    ) -> Result<Self, DedupeTxError> {
        let mut tx = pool.begin().await?;
        let new = match (keys, msgs) {
            ([key], [msg]) => {
                if dedupe::mark(&mut tx, group, key, msg).await? {
                    HashSet::from([key.clone()])
                } else {
                    HashSet::new()
                }
            }
            _ => dedupe::mark_batch(&mut tx, group, keys, msgs).await?,
        };
        Ok(Self {
            shared: Arc::new(Mutex::new(Some(tx))),
            new,
        })
    }

    /// Whether the message with this key still needs handling; false for a duplicate (also
    /// for the second copy of a key repeated inside one batch).
    pub(crate) fn claim(&mut self, key: &str) -> bool {
        self.new.remove(key)
    }

    /// The handler's context: [`Context::transaction`] is this transaction.
    pub(crate) fn context(&self, group: Arc<str>, pool: &PgPool) -> Context {
        Context::new(group, Some(pool.clone()), Some(self.shared.clone()))
    }

    /// Commits, first checking the transaction is still alive (see
    /// [`dedupe::commit_checked`]).
    pub(crate) async fn commit(self) -> Result<(), DedupeTxError> {
        let tx = self.shared.lock().await.take();
        let tx = tx.ok_or(DedupeTxError::Vanished)?;
        dedupe::commit_checked(tx).await?;
        Ok(())
    }

    /// Rolls back (best effort: a connection that is gone rolled back already).
    pub(crate) async fn rollback(self) {
        if let Some(tx) = self.shared.lock().await.take() {
            let _ = tx.rollback().await;
        }
    }
}
