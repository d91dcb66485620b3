/// A configuration problem, always naming the variable at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required variable is not set (or is empty).
    #[error("{var} is required but not set")]
    Missing {
        /// The variable's name.
        var: String,
    },
    /// A variable is set to a value that cannot be used.
    #[error("{var} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        var: String,
        /// Why the value was refused (never the value itself when it may be secret).
        reason: String,
    },
    /// The broker refused this client's SASL credentials (user, password or mechanism).
    /// Retrying with the same settings cannot help.
    #[error(
        "the broker at {bootstrap} refused authentication (SASL {mechanism}{}): {reason} \
         — check KAFKA_SASL_MECHANISMS, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        .username.as_ref().map(|u| format!(", user {u:?}")).unwrap_or_default()
    )]
    BrokerAuthentication {
        /// The bootstrap list.
        bootstrap: String,
        /// The SASL mechanism configured.
        mechanism: String,
        /// The user name configured, if any (never the password).
        username: Option<String>,
        /// librdkafka's reason, with every secret value removed.
        reason: String,
    },
    /// The TLS handshake with the broker failed (certificate not trusted, wrong host name,
    /// TLS against a plaintext listener). Retrying with the same settings cannot help.
    #[error(
        "TLS with the broker at {bootstrap} failed: {reason} — check KAFKA_SECURITY_PROTOCOL \
         and KAFKA_SSL_CA_LOCATION (the CA that signed the broker's certificate)"
    )]
    BrokerTls {
        /// The bootstrap list.
        bootstrap: String,
        /// librdkafka's reason, with every secret value removed.
        reason: String,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub fn invalid(var: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            var: var.into(),
            reason: reason.into(),
        }
    }

    /// The variable this error is about.
    pub fn var(&self) -> &str {
        match self {
            Self::Missing { var } | Self::Invalid { var, .. } => var,
            Self::BrokerAuthentication { .. } => "KAFKA_SASL_PASSWORD",
            Self::BrokerTls { .. } => "KAFKA_SSL_CA_LOCATION",
        }
    }

    /// Configuration errors, refused credentials and TLS failures included, never go away by
    /// retrying.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
