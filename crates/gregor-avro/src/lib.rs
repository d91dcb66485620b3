//! Avro for gregor, framed the way every Confluent-compatible client frames it: magic byte
//! `0`, the 4-byte big-endian schema id, then the Avro binary body.
//!
//! * [`AvroSerializer`] turns a serde value into framed bytes, registering (or looking up) its
//!   schema under the subject a [`SubjectNameStrategy`] names — once per subject.
//!   `AvroSerializer::message` (feature `outbox`, off by default; on in the `gregor` facade)
//!   builds an outbox message, so the relay stays bytes-only.
//! * [`AvroDeserializer`] turns framed bytes into a serde value, resolving the writer schema
//!   against the reader schema (added fields with defaults, removed fields, promotions).
//!   Schemas and resolution plans are cached per schema id: the hot path makes no HTTP call.
//!   Each body is first checked against [`DecodeLimits`] (items, decoded bytes, nesting depth)
//!   by a walk over the writer schema and the bytes that allocates nothing, so a few hostile
//!   bytes cannot make the decoder allocate or loop without bound.
//! * [`RegistryClient`] speaks the Confluent Schema Registry API with timeouts, retries,
//!   failover across URLs, basic auth and extra CA certificates ([`RegistryConfig`] reads
//!   `SCHEMA_REGISTRY_*`).
//! * [`compat`] holds the compatibility levels and rules; [`wire`] the framing.
//!
//! Errors say whether retrying can help ([`AvroError::is_retryable`]: the registry is
//! unreachable) and whether the bytes themselves are at fault
//! ([`AvroError::is_payload_fault`]: dead-letter them).
//!
//! ```no_run
//! use gregor_avro::{AvroDeserializer, AvroSerializer, RegistryClient, RegistryConfig, SerializerConfig};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct OrderPlaced { id: i64, customer: String }
//!
//! const SCHEMA: &str = r#"{"type":"record","name":"OrderPlaced","namespace":"shop",
//!   "fields":[{"name":"id","type":"long"},{"name":"customer","type":"string"}]}"#;
//!
//! # async fn run() -> Result<(), gregor_avro::AvroError> {
//! let client = RegistryClient::from_env(&gregor_config::Env::from_process())?;
//! let writer = AvroSerializer::new(client.clone(), SCHEMA, SerializerConfig::default())?;
//! let order = OrderPlaced { id: 42, customer: "ada".into() };
//! let bytes = writer.serialize("orders", &order).await?;
//!
//! let reader = AvroDeserializer::<OrderPlaced>::new(client, SCHEMA)?;
//! assert_eq!(reader.decode(&bytes).await?, order);
//! # Ok(()) }
//! ```

mod budget;
mod client;
pub mod compat;
mod config;
mod deserializer;
mod error;
mod limits;
mod serializer;
mod stack;
mod subject;
pub mod wire;

pub use apache_avro::Schema;
pub use client::{CONTENT_TYPE as REGISTRY_CONTENT_TYPE, RegisteredSchema, RegistryClient};
pub use compat::CompatibilityLevel;
pub use config::{RegistryConfig, URL_VAR};
pub use deserializer::AvroDeserializer;
pub use error::AvroError;
pub use limits::{
    DEPTH_CEILING, DecodeLimits, MAX_DECODED_BYTES_VAR, MAX_DEPTH_VAR, MAX_ITEMS_VAR,
};
pub use serializer::{AVRO_CONTENT_TYPE, AvroSerializer, SerializerConfig};
pub use subject::SubjectNameStrategy;

/// An error's message followed by its causes, so nothing the Avro library said is lost.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
