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
        }
    }

    /// Configuration errors never go away by retrying.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
