//! Encoding typed values into Confluent-framed Avro, registering (or looking up) the schema
//! under the subject the strategy names, once per subject.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use apache_avro::writer::datum::GenericDatumWriter;
use gregor_config::{ConfigError, Env};
use serde::Serialize;

use crate::{AvroError, RegistryClient, SubjectNameStrategy, wire};

/// The `content-type` of framed Avro payloads.
pub const AVRO_CONTENT_TYPE: &str = "application/avro";

/// How a serializer picks its subject and whether it may register schemas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerializerConfig {
    /// Subject name strategy (`GREGOR_AVRO_SUBJECT_STRATEGY`: `topic`, `record`,
    /// `topic_record`; default `topic`).
    pub strategy: SubjectNameStrategy,
    /// Register the schema when the subject lacks it (`GREGOR_AVRO_AUTO_REGISTER`, default
    /// `true`). With `false` the schema must already be registered (`gregor schema register`).
    pub auto_register: bool,
}

impl Default for SerializerConfig {
    fn default() -> Self {
        Self {
            strategy: SubjectNameStrategy::TopicName,
            auto_register: true,
        }
    }
}

impl SerializerConfig {
    /// Reads `GREGOR_AVRO_SUBJECT_STRATEGY` and `GREGOR_AVRO_AUTO_REGISTER`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let strategy = match env.get("GREGOR_AVRO_SUBJECT_STRATEGY") {
            None => defaults.strategy,
            Some(raw) => raw
                .parse()
                .map_err(|e| ConfigError::invalid("GREGOR_AVRO_SUBJECT_STRATEGY", e))?,
        };
        Ok(Self {
            strategy,
            auto_register: env.parse_or("GREGOR_AVRO_AUTO_REGISTER", defaults.auto_register)?,
        })
    }
}

/// Encodes values of one schema for any topic.
///
/// ```no_run
/// use gregor_avro::{AvroSerializer, RegistryClient, RegistryConfig, SerializerConfig};
///
/// #[derive(serde::Serialize)]
/// struct OrderPlaced { id: i64 }
///
/// # async fn run() -> Result<(), gregor_avro::AvroError> {
/// let client = RegistryClient::new(RegistryConfig::new("http://127.0.0.1:8081"))?;
/// let schema = r#"{"type":"record","name":"OrderPlaced","fields":[{"name":"id","type":"long"}]}"#;
/// let orders = AvroSerializer::new(client, schema, SerializerConfig::default())?;
/// let bytes = orders.serialize("orders", &OrderPlaced { id: 42 }).await?;
/// assert_eq!(bytes[0], 0); // magic byte, then the schema id, then the body
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AvroSerializer {
    client: RegistryClient,
    schema: Arc<Schema>,
    text: String,
    config: SerializerConfig,
    /// Schema id per topic.
    ids: RwLock<HashMap<String, u32>>,
}

impl AvroSerializer {
    /// A serializer for `schema` (an `.avsc` document).
    pub fn new(
        client: RegistryClient,
        schema: &str,
        config: SerializerConfig,
    ) -> Result<Self, AvroError> {
        let parsed =
            Schema::parse_str(schema).map_err(|e| AvroError::InvalidSchema(e.to_string()))?;
        Ok(Self {
            client,
            schema: Arc::new(parsed),
            // Registered and looked up as written: a registry compares what it is sent, and a
            // reprint may differ from what `gregor schema register` stored.
            text: schema.to_owned(),
            config,
            ids: RwLock::new(HashMap::new()),
        })
    }

    /// The writer schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The schema id to frame values for `topic` with: registered (or looked up) on first
    /// use, then cached.
    pub async fn schema_id(&self, topic: &str) -> Result<u32, AvroError> {
        // Keyed by topic: the schema is fixed, so the subject depends on the topic alone and
        // the hot path needs neither the strategy nor a new string.
        if let Some(id) = self.ids.read().ok().and_then(|ids| ids.get(topic).copied()) {
            return Ok(id);
        }
        let subject = self.config.strategy.subject(topic, &self.schema, false)?;
        let id = if self.config.auto_register {
            self.client.register(&subject, &self.text).await?
        } else {
            match self.client.lookup(&subject, &self.text).await? {
                Some(found) => found.id,
                None => return Err(AvroError::NotRegistered { subject }),
            }
        };
        if let Ok(mut ids) = self.ids.write() {
            ids.insert(topic.to_owned(), id);
        }
        Ok(id)
    }

    /// Encodes `value` for `topic`: magic byte, schema id, Avro body.
    pub async fn serialize<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Vec<u8>, AvroError> {
        let id = self.schema_id(topic).await?;
        let body = self.encode_body(value)?;
        Ok(wire::frame(id, &body))
    }

    /// The Avro body of `value` alone, without the frame header.
    pub fn encode_body<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, AvroError> {
        let value = apache_avro::to_value(value)
            .map_err(|e| AvroError::Mismatch(crate::error_chain(&e)))?;
        GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|writer| writer.write_value_to_vec(value))
            .map_err(|e| AvroError::Mismatch(crate::error_chain(&e)))
    }

    /// An outbox message carrying `value` as framed Avro (`content-type: application/avro`),
    /// ready for [`gregor_outbox::enqueue`]; the relay publishes the bytes unchanged.
    #[cfg(feature = "outbox")]
    pub async fn message<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event_type: &str,
        source: &str,
        value: &T,
    ) -> Result<gregor_outbox::OutboxMessage, AvroError> {
        let payload = self.serialize(topic, value).await?;
        Ok(gregor_outbox::OutboxMessage::new(topic, event_type, source)
            .payload(payload)
            .content_type(AVRO_CONTENT_TYPE))
    }
}
