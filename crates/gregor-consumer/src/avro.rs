//! Avro through the decode seam: Confluent-framed payloads, writer schemas from the registry.

use std::sync::Arc;

use gregor_avro::{AvroDeserializer, AvroError, RegistryClient};
use serde::de::DeserializeOwned;

use crate::{DecodeError, Decoder};

/// Decodes Confluent-framed Avro into `T` with a reader schema.
///
/// A registry that cannot be reached (or fails on its side, or refuses the credentials) is
/// [`DecodeError::Unavailable`]: the message is retried and its partition waits — nothing is
/// dead-lettered for it. Bytes that cannot be decoded — wrong magic byte, unknown schema id,
/// truncated body, trailing bytes, a writer schema the reader cannot read — are
/// [`DecodeError::Malformed`] and go to the dead-letter topic with the precise reason.
///
/// ```no_run
/// use gregor_consumer::Avro;
/// use gregor_avro::{RegistryClient, RegistryConfig};
///
/// #[derive(serde::Deserialize)]
/// struct OrderPlaced { id: i64 }
///
/// # fn run() -> Result<(), gregor_avro::AvroError> {
/// let client = RegistryClient::new(RegistryConfig::new("http://127.0.0.1:8081"))?;
/// let decoder = Avro::<OrderPlaced>::new(client, include_str!("../../../schemas/orders/order_placed.avsc"))?;
/// # let _ = decoder; Ok(()) }
/// ```
#[derive(Debug)]
pub struct Avro<T>(Arc<AvroDeserializer<T>>);

impl<T> Clone for Avro<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Avro<T> {
    /// Decodes with `reader_schema` (an `.avsc` document).
    pub fn new(client: RegistryClient, reader_schema: &str) -> Result<Self, AvroError> {
        Ok(Self(Arc::new(AvroDeserializer::new(
            client,
            reader_schema,
        )?)))
    }

    /// Wraps an existing deserializer.
    pub fn from_deserializer(deserializer: AvroDeserializer<T>) -> Self {
        Self(Arc::new(deserializer))
    }
}

impl<T: DeserializeOwned + Send + 'static> Decoder for Avro<T> {
    type Value = T;

    async fn decode(&self, payload: &[u8]) -> Result<T, DecodeError> {
        self.0.decode(payload).await.map_err(classify)
    }
}

/// The bytes' fault → dead-letter; anything else (registry down, misconfigured) → wait.
fn classify(error: AvroError) -> DecodeError {
    if error.is_payload_fault() {
        DecodeError::malformed("avro", error)
    } else {
        DecodeError::unavailable("avro", error)
    }
}
