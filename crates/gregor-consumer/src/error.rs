use gregor_config::ConfigError;
use rdkafka::error::KafkaError;

use crate::ErrorKind;

/// A boxed error from a handler or decoder.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a handler reports when it cannot finish a message. Each variant is its cause, shown
/// and chained as is (`source()` is the cause's own source); match the variant to reach the
/// cause itself and downcast it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Worth trying again later (a database or downstream service hiccup).
    #[error(transparent)]
    Retryable(BoxError),
    /// Will never succeed as is (the event breaks a business rule); dead-lettered at once.
    #[error(transparent)]
    Permanent(BoxError),
    /// A dependency cannot be reached (the database is down): not the event's fault. The
    /// message waits in place, its partition paused behind it, and is tried again until the
    /// dependency answers; it is never forwarded to a retry tier or dead-lettered for this.
    /// `From<sqlx::Error>` gives this for connection failures (see
    /// [`is_database_unreachable`](crate::is_database_unreachable)).
    #[error(transparent)]
    Unavailable(BoxError),
}

impl HandlerError {
    /// A retryable error from anything printable.
    pub fn retryable(error: impl Into<BoxError>) -> Self {
        Self::Retryable(error.into())
    }

    /// A permanent error from anything printable.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::Permanent(error.into())
    }

    /// An outage of a dependency from anything printable.
    pub fn unavailable(error: impl Into<BoxError>) -> Self {
        Self::Unavailable(error.into())
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_) | Self::Unavailable(_))
    }

    /// The failure kind the runtime routes by: a retryable error caused by a database that
    /// cannot be reached (also when the handler wrapped it in its own error) is an outage.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::Retryable(e) if crate::outage::caused_by_unreachable_database(&**e) => {
                ErrorKind::Unavailable
            }
            Self::Retryable(_) => ErrorKind::Retryable,
            Self::Permanent(_) => ErrorKind::Permanent,
            Self::Unavailable(_) => ErrorKind::Unavailable,
        }
    }
}

/// A database that cannot be reached is an outage ([`HandlerError::Unavailable`]); other
/// database errors inside a handler are retryable unless they are constraint violations of
/// the handler's own data, which no retry can fix.
impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        if crate::outage::is_database_unreachable(&e) {
            return Self::Unavailable(Box::new(e));
        }
        if gregor_pg::is_retryable_sqlx(&e) {
            return Self::Retryable(Box::new(e));
        }
        match &e {
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("22") || c.starts_with("23")) =>
            {
                Self::Permanent(Box::new(e))
            }
            _ => Self::Retryable(Box::new(e)),
        }
    }
}

/// Why a payload could not be decoded. The decoder's own error is the [`source`]
/// (`std::error::Error::source`); [`DecodeError::reason`] is the text recorded with the
/// message (`gregor-error-message` on a dead letter).
///
/// [`source`]: std::error::Error::source
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not what the decoder expects; dead-lettered at once
    /// (`gregor-error-kind=decode`).
    #[error("malformed {format} payload")]
    Malformed {
        /// The format the decoder reads (`json`, `avro`, …).
        format: &'static str,
        /// What the decoder refused.
        #[source]
        source: BoxError,
    },
    /// The decoder's dependency (a schema registry) is unreachable; retried, never
    /// dead-lettered for this reason alone.
    #[error("{format} decoder unavailable")]
    Unavailable {
        /// The format the decoder reads.
        format: &'static str,
        /// Why the dependency cannot be used.
        #[source]
        source: BoxError,
    },
}

impl DecodeError {
    /// The payload is not valid `format`.
    pub fn malformed(format: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Malformed {
            format,
            source: source.into(),
        }
    }

    /// The `format` decoder cannot work now (its registry is down).
    pub fn unavailable(format: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            format,
            source: source.into(),
        }
    }

    /// Whether decoding again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// `<format>: <the source and its sources, joined by ": ">` — the reason recorded with
    /// the message.
    pub fn reason(&self) -> String {
        let (Self::Malformed { format, source } | Self::Unavailable { format, source }) = self;
        let mut text = format!("{format}: {source}");
        let mut next = source.source();
        while let Some(e) = next {
            let part = e.to_string();
            // Many errors end their own message with their source's already.
            if !text.ends_with(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            next = e.source();
        }
        text
    }
}

/// Errors of the consumer runtime itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The dedupe schema could not be applied.
    #[error("dedupe schema: {0}")]
    Schema(#[from] gregor_pg::PgError),
    /// Topics the routes need do not exist.
    #[error(
        "missing topics: {} (create them with `gregor topics ensure <topic>`)",
        .0.join(", ")
    )]
    MissingTopics(Vec<String>),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The builder was given no route.
    #[error("no routes: add at least one with ConsumerBuilder::route")]
    NoRoutes,
    /// Two routes for one topic.
    #[error("topic {0} is routed twice")]
    DuplicateRoute(String),
    /// A retry or dead-letter copy could not be forwarded (the topic is missing, invalid or
    /// not writable, or the copy is too large even without its payload): the consumer stopped
    /// rather than block the message's partition forever. The message's offset is not
    /// committed.
    #[error(transparent)]
    Forward(#[from] crate::forward_error::ForwardError),
    /// The `/healthz`, `/readyz` and `/metrics` endpoint (`GREGOR_CONSUMER_HTTP_ADDR`) could
    /// not start, say because the address is taken.
    #[error("GREGOR_CONSUMER_HTTP_ADDR: {0}")]
    Http(#[from] gregor_telemetry::TelemetryError),
}

impl ConsumerError {
    /// Whether starting again later may succeed (broker or database down), as opposed to a
    /// mistake in configuration or code.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Kafka(_) | Self::MissingTopics(_) => true,
            Self::Database(e) => gregor_pg::is_retryable_sqlx(e),
            Self::Schema(e) => e.is_retryable(),
            Self::Http(e) => e.is_retryable(),
            Self::Config(_)
            | Self::Metrics(_)
            | Self::NoRoutes
            | Self::DuplicateRoute(_)
            | Self::Forward(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }

    #[test]
    fn an_unreachable_database_in_a_handler_is_an_outage() {
        assert_eq!(HandlerError::from(refused()).kind(), ErrorKind::Unavailable);
        assert_eq!(
            HandlerError::from(sqlx::Error::PoolTimedOut).kind(),
            ErrorKind::Unavailable
        );
        // Also when the handler called it retryable itself.
        assert_eq!(
            HandlerError::retryable(refused()).kind(),
            ErrorKind::Unavailable
        );
        assert!(HandlerError::from(refused()).is_retryable());
    }

    #[test]
    fn other_handler_errors_keep_their_kind() {
        assert_eq!(
            HandlerError::from(sqlx::Error::RowNotFound).kind(),
            ErrorKind::Retryable
        );
        assert_eq!(
            HandlerError::retryable("downstream is slow").kind(),
            ErrorKind::Retryable
        );
        // The handler's explicit word wins.
        assert_eq!(
            HandlerError::permanent(sqlx::Error::PoolTimedOut).kind(),
            ErrorKind::Permanent
        );
        assert_eq!(
            HandlerError::unavailable("the payment service is down").kind(),
            ErrorKind::Unavailable
        );
    }
}
