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

/// Whether a sqlx error is a TLS failure that retrying cannot change: a server certificate
/// that does not verify against `sslrootcert` (or the system roots), a host name the
/// certificate does not name, no TLS on a server under `sslmode=require`. sqlx reports the
/// certificate checks as an I/O error carrying rustls' error.
pub fn is_tls_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(e) => e
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    }
}

/// Classifies a sqlx error as transient (worth retrying) or not. TLS failures
/// ([`is_tls_failure`]) are not.
pub fn is_retryable_sqlx(error: &sqlx::Error) -> bool {
    if is_tls_failure(error) {
        return false;
    }
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // 40001 serialization_failure, 40P01 deadlock_detected, 57P01 admin_shutdown,
            // 57P02 crash_shutdown, 57P03 cannot_connect_now, 08xxx connection exceptions,
            // 53300 too_many_connections.
            db.code().is_some_and(|code| {
                matches!(
                    code.as_ref(),
                    "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
                ) || code.starts_with("08")
            })
        }
        _ => false,
    }
}
