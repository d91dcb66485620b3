/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A variable is malformed.
    #[error(transparent)]
    Config(#[from] gregor_config::ConfigError),
    /// A log or trace filter does not parse.
    #[error("{var}: {reason}")]
    Filter {
        /// The variable holding the filter.
        var: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP trace exporter: {0}")]
    Exporter(String),
    /// The health/metrics endpoint could not listen.
    #[error("cannot listen on {addr} for /healthz, /readyz and /metrics: {source}")]
    Listen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What the socket said.
        #[source]
        source: std::io::Error,
    },
    /// Another subscriber is already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

impl TelemetryError {
    /// Whether trying again unchanged could succeed (never: these are all set-up faults).
    pub fn is_retryable(&self) -> bool {
        false
    }
}
