//! The gregor wire contract (DESIGN §3) in one place: the Kafka header names every part
//! writes or reads, and the names of retry and dead-letter topics.
//!
//! ```
//! use gregor_wire::{dlq_topic, retry_topic, headers};
//!
//! assert_eq!(retry_topic("orders", 2), "orders.retry.2");
//! assert_eq!(dlq_topic("orders"), "orders.dlq");
//! assert_eq!(headers::CE_ID, "ce_id");
//! ```

pub mod headers;
mod topics;

pub use topics::{TopicKind, base_topic, dlq_topic, retry_topic};
