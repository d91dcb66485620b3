//! gregor: event-driven services on Kafka without losing events.
//!
//! One dependency for services: the outbox (write events in your own transaction), the
//! consumer runtime (typed handlers, dedupe inbox, retry topics, dead letters) and the shared
//! configuration types.
//!
//! ```
//! use gregor::outbox::OutboxMessage;
//!
//! let event = OutboxMessage::new("orders", "order.placed", "/orders").key("42");
//! assert!(event.validate().is_ok());
//! ```

pub use gregor_avro as avro;
pub use gregor_config as config;
pub use gregor_consumer as consumer;
pub use gregor_outbox as outbox;
pub use gregor_outbox::{OutboxError, OutboxMessage, enqueue, enqueue_batch};
