use gregor_pg::{PgError, is_retryable_sqlx};

/// Errors of the outbox library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The message cannot be enqueued as given (bad topic name, reserved header, …).
    #[error("invalid outbox message: {0}")]
    InvalidMessage(String),
    /// A payload could not be serialized.
    #[error("could not serialize the payload: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The database refused or failed the statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A schema migration failed.
    #[error("outbox migration {version} ({name}) failed: {source}")]
    Migration {
        /// The migration's version number.
        version: i32,
        /// The migration's name.
        name: &'static str,
        /// The underlying database error.
        #[source]
        source: sqlx::Error,
    },
}

impl OutboxError {
    /// The database error inside, if any.
    pub fn sqlx(&self) -> Option<&sqlx::Error> {
        match self {
            Self::Database(e) | Self::Migration { source: e, .. } => Some(e),
            Self::InvalidMessage(_) | Self::Serialize(_) => None,
        }
    }

    /// Whether trying the same call again may succeed (connection trouble, serialization
    /// failures, deadlocks), as opposed to a message or schema that will never be accepted.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidMessage(_) | Self::Serialize(_) => false,
            Self::Database(e) | Self::Migration { source: e, .. } => is_retryable_sqlx(e),
        }
    }
}

/// A failed migration stays [`OutboxError::Migration`], any other database error
/// [`OutboxError::Database`].
impl From<PgError> for OutboxError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Migration {
                version,
                name,
                source,
            } => Self::Migration {
                version,
                name,
                source,
            },
            other => Self::Database(other.into_sqlx()),
        }
    }
}
