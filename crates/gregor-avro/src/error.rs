/// Everything that can go wrong framing, encoding, decoding or talking to the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AvroError {
    /// The bytes are not a Confluent-framed message (empty, short, wrong magic byte).
    #[error("not a Confluent-framed Avro message: {0}")]
    Frame(String),
    /// The registry has no schema with this id.
    #[error("schema id {id} is unknown to the schema registry")]
    UnknownSchemaId {
        /// The id from the frame header.
        id: u32,
    },
    /// The Avro body does not decode with its writer schema.
    #[error("Avro body does not decode with writer schema id {id}: {reason}")]
    Body {
        /// The writer schema's id.
        id: u32,
        /// What the decoder found.
        reason: String,
    },
    /// The body would decode into more than [`DecodeLimits`](crate::DecodeLimits) allow
    /// (items, decoded bytes or nesting depth); nothing was decoded.
    #[error("Avro body with writer schema id {id} is over a decoding limit: {reason}")]
    OverLimit {
        /// The writer schema's id.
        id: u32,
        /// Which bound, its setting and where the body crossed it.
        reason: String,
    },
    /// Data written with this schema cannot be read with the reader schema.
    #[error("writer schema id {id} is incompatible with the reader schema: {reason}")]
    Incompatible {
        /// The writer schema's id.
        id: u32,
        /// Which part of the schemas breaks.
        reason: String,
    },
    /// The decoded value does not fit the target type, or a value does not fit the schema.
    #[error("value does not match the schema: {0}")]
    Mismatch(String),
    /// The registry holds a writer schema under this id that cannot be used here (not Avro,
    /// schema references, unparsable): the message cannot be decoded, now or later.
    #[error("writer schema id {id} cannot be used: {reason}")]
    UnsupportedWriterSchema {
        /// The writer schema's id.
        id: u32,
        /// Why.
        reason: String,
    },
    /// The process could not provide what decoding needed (a thread with a deep enough stack
    /// for a deeply nested message): not the bytes' fault, retried.
    #[error("decoding could not run: {0}")]
    Resources(String),
    /// A schema is not valid Avro.
    #[error("invalid Avro schema: {0}")]
    InvalidSchema(String),
    /// The subject has no version of this schema and auto-registration is off.
    #[error("schema is not registered under subject {subject:?} (auto-registration is off)")]
    NotRegistered {
        /// The subject looked up.
        subject: String,
    },
    /// The registry answered with an error.
    #[error("schema registry answered {status} (error_code {error_code}): {message}")]
    Registry {
        /// HTTP status.
        status: u16,
        /// Confluent's `error_code` (the status when the body had none).
        error_code: i64,
        /// The registry's message.
        message: String,
    },
    /// The registry could not be reached (connection refused, timeout, TLS failure).
    #[error("schema registry unreachable at {url}: {reason}")]
    Unreachable {
        /// The registry URL tried last (credentials never included).
        url: String,
        /// What failed.
        reason: String,
    },
    /// The registry client's configuration is unusable.
    #[error(transparent)]
    Config(#[from] gregor_config::ConfigError),
}

impl AvroError {
    /// Whether trying again later can succeed: the registry is unreachable or failed on its
    /// side (5xx, 429). Everything else is a permanent problem with the bytes, the schema or
    /// the configuration.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Resources(_) => true,
            Self::Registry { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }

    /// Whether the fault lies in the message bytes themselves (so dead-lettering them is
    /// right), as opposed to the registry or the configuration.
    pub fn is_payload_fault(&self) -> bool {
        matches!(
            self,
            Self::Frame(_)
                | Self::UnknownSchemaId { .. }
                | Self::UnsupportedWriterSchema { .. }
                | Self::Body { .. }
                | Self::OverLimit { .. }
                | Self::Incompatible { .. }
                | Self::Mismatch(_)
        )
    }
}
