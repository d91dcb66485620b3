use gregor_config::ConfigError;

/// Errors of the relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The configuration is invalid; the message names the variable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// PostgreSQL failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// An outbox operation failed. (Migrations fail with [`gregor_pg::PgError`], what
    /// [`crate::migrate`] returns.)
    #[error(transparent)]
    Outbox(#[from] gregor_outbox::OutboxError),
    /// The Kafka client could not be created or failed.
    #[error("kafka error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The health/metrics listener could not bind.
    #[error("cannot listen on {addr} (GREGOR_RELAY_HTTP_ADDR): {source}")]
    Http {
        /// The address given.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}

impl RelayError {
    /// Whether the failed operation may succeed when tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config(_) | Self::Http { .. } => false,
            Self::Database(e) => gregor_pg::is_retryable_sqlx(e),
            Self::Outbox(e) => e.is_retryable(),
            Self::Kafka(e) => e
                .rdkafka_error_code()
                .is_some_and(|c| crate::publish::classify(c) == crate::publish::Failure::Transient),
        }
    }
}
