//! The gregor wire contract (DESIGN §3) in one place: the Kafka header names every part
//! writes or reads, the names of retry and dead-letter topics, and — behind features — the
//! pieces that need a client library:
//!
//! * `kafka`: `headers::get_str` and `headers::get_time` read rdkafka message headers.
//! * `otel`: `propagation` carries the W3C `traceparent`/`tracestate` in and out of
//!   `tracing` spans, on the OpenTelemetry API alone (no SDK, no exporter).
//!
//! Without features the crate depends on `chrono` only, so the outbox can use it without
//! linking librdkafka.
//!
//! ```
//! use gregor_wire::{dlq_topic, retry_topic, headers};
//!
//! assert_eq!(retry_topic("orders", 2), "orders.retry.2");
//! assert_eq!(dlq_topic("orders"), "orders.dlq");
//! assert_eq!(headers::CE_ID, "ce_id");
//! ```
//!
//! With `otel`, and without an OpenTelemetry layer installed, nothing is attached and nothing
//! is produced:
//!
//! ```
//! # #[cfg(feature = "otel")]
//! # {
//! use gregor_wire::propagation;
//!
//! let span = tracing::info_span!("process orders");
//! let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
//! assert!(!propagation::set_remote_parent(&span, parent, None));
//! assert!(propagation::trace_headers(&span).is_none());
//! assert!(propagation::span_context(parent, None).is_some());
//! # }
//! ```

pub mod headers;
#[cfg(feature = "otel")]
pub mod propagation;
mod topics;

pub use topics::{TopicKind, base_topic, dlq_topic, retry_topic};
