use crate::is_retryable_sqlx;

/// Errors of gregor's PostgreSQL plumbing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The database refused or failed a statement, or cannot be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A schema migration failed (and was rolled back with every other one of its run).
    #[error("gregor migration {version} ({name}) failed: {source}")]
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

impl PgError {
    /// The database error inside.
    pub fn sqlx(&self) -> &sqlx::Error {
        match self {
            Self::Database(e) | Self::Migration { source: e, .. } => e,
        }
    }

    /// The database error inside, owned: every `PgError` carries one.
    pub fn into_sqlx(self) -> sqlx::Error {
        match self {
            Self::Database(e) | Self::Migration { source: e, .. } => e,
        }
    }

    /// Whether trying again unchanged may succeed: connection trouble, serialization failures,
    /// deadlocks ([`is_retryable_sqlx`]), not a statement the server refuses or a TLS setting
    /// that cannot work.
    pub fn is_retryable(&self) -> bool {
        is_retryable_sqlx(self.sqlx())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_the_database_error_inside() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(PgError::Database(refused).is_retryable());
        let bad = PgError::Migration {
            version: 1,
            name: "outbox",
            source: sqlx::Error::Protocol("syntax".into()),
        };
        assert!(!bad.is_retryable());
        assert_eq!(
            bad.to_string(),
            "gregor migration 1 (outbox) failed: encountered unexpected or invalid data: syntax"
        );
    }
}
