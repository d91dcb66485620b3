//! Telemetry for gregor: what binaries install once, and what libraries use to carry a trace
//! across Kafka.
//!
//! * [`propagation`]: W3C `traceparent`/`tracestate` in and out of `tracing` spans —
//!   `gregor_wire::propagation` (feature `otel` of `gregor-wire`), re-exported here. Libraries
//!   only emit `tracing` spans and events; with an OpenTelemetry layer installed, a consumer's
//!   handling span continues the trace an HTTP request started before the outbox. Libraries
//!   depend on `gregor-wire` for it, not on this crate, so that they do not link the
//!   OpenTelemetry SDK.
//! * [`init()`] (feature `init`): the global subscriber of a binary — log lines on stderr
//!   (`RUST_LOG`, `GREGOR_LOG_FORMAT=text|pretty|json`) and, when `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   is set, batched OTLP/HTTP trace export honouring the standard `OTEL_*` variables; and
//!   [`cancel_on_signal`] for a graceful stop on SIGTERM/SIGINT.
//! * [`health`] (feature `health`): `/healthz`, `/readyz` and the Prometheus `/metrics`.
//!
//! ```
//! use gregor_telemetry::propagation;
//!
//! // Without an OpenTelemetry layer nothing is attached and nothing is produced.
//! let span = tracing::info_span!("process orders");
//! let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
//! assert!(!propagation::set_remote_parent(&span, parent, None));
//! assert!(propagation::trace_headers(&span).is_none());
//! assert!(propagation::span_context(parent, None).is_some());
//! ```
//!
//! A binary's `main`:
//!
//! ```no_run
//! # #[cfg(feature = "init")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let env = gregor_config::Env::from_process();
//! let _telemetry = gregor_telemetry::init_from_env("my-service", &env)?; // flushes when dropped
//! tracing::info!("started");
//! # Ok(()) }
//! # #[cfg(not(feature = "init"))]
//! # fn main() {}
//! ```

#[cfg(feature = "init")]
mod config;
mod error;
#[cfg(feature = "health")]
pub mod health;
#[cfg(feature = "init")]
mod init;
pub use gregor_wire::propagation;
#[cfg(feature = "init")]
mod signal;

#[cfg(feature = "init")]
pub use config::{DEFAULT_LOG_FILTER, LogFormat, TelemetryConfig};
pub use error::TelemetryError;
#[cfg(feature = "init")]
pub use init::{Telemetry, init, init_from_env};
#[cfg(feature = "init")]
pub use signal::cancel_on_signal;
