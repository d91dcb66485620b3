//! Decoding framed messages into typed values, resolving each writer schema against the
//! consumer's reader schema once per schema id.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Read;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock, RwLock};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use serde::de::DeserializeOwned;

use crate::budget::Shape;
use crate::{AvroError, DecodeLimits, RegistryClient, compat, stack, wire};

/// Both schemas a cached reader borrows from, and the writer's shape the budget walks.
#[derive(Debug)]
struct Schemas {
    writer: Arc<Schema>,
    reader: Option<Arc<Schema>>,
    shape: Shape,
}

self_cell::self_cell!(
    /// A datum reader built once per writer schema id, owning the schemas it borrows.
    struct CachedReader {
        owner: Schemas,
        #[covariant]
        dependent: GenericDatumReader,
    }
);

/// What a writer schema id turned out to be: readable, or why not.
type Plan = Result<CachedReader, String>;

/// Decodes Confluent-framed Avro into `T`.
///
/// The first message with a given schema id fetches the writer schema (one HTTP call, then
/// cached), checks it can be read with the reader schema, and builds a resolving reader; every
/// later message with that id decodes without touching the registry.
///
/// Every body is checked against [`DecodeLimits`] before it is decoded — fields the reader
/// drops included — so a message declaring millions of nested items is refused
/// ([`AvroError::OverLimit`]) instead of decoded. The limits start from the client's
/// [`RegistryConfig::decode_limits`](crate::RegistryConfig::decode_limits)
/// (`GREGOR_AVRO_MAX_*`); [`AvroDeserializer::with_limits`] overrides them.
///
/// ```no_run
/// use gregor_avro::{AvroDeserializer, RegistryClient, RegistryConfig};
///
/// #[derive(serde::Deserialize)]
/// struct OrderPlaced { id: i64 }
///
/// # async fn run(bytes: &[u8]) -> Result<(), gregor_avro::AvroError> {
/// let client = RegistryClient::new(RegistryConfig::new("http://127.0.0.1:8081"))?;
/// let reader = r#"{"type":"record","name":"OrderPlaced","fields":[{"name":"id","type":"long"}]}"#;
/// let orders = AvroDeserializer::<OrderPlaced>::new(client, reader)?;
/// let order = orders.decode(bytes).await?;
/// # let _ = order.id; Ok(()) }
/// ```
pub struct AvroDeserializer<T> {
    client: RegistryClient,
    reader: Option<Arc<Schema>>,
    first: OnceLock<(u32, Plan)>,
    plans: RwLock<PlanMap>,
    limits: DecodeLimits,
    target: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for AvroDeserializer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroDeserializer")
            .field("reader", &self.reader.as_ref().map(|s| s.canonical_form()))
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<T> AvroDeserializer<T> {
    /// Decodes with `reader_schema` (an `.avsc` document): writer schemas are resolved
    /// against it (added fields take their defaults, removed ones are skipped, promotions).
    pub fn new(client: RegistryClient, reader_schema: &str) -> Result<Self, AvroError> {
        let reader = Schema::parse_str(reader_schema)
            .map_err(|e| AvroError::InvalidSchema(format!("reader schema: {e}")))?;
        Ok(Self::with_reader(client, Some(reader)))
    }

    /// Decodes with whatever schema each message was written with (no resolution).
    pub fn writer_schema_only(client: RegistryClient) -> Self {
        Self::with_reader(client, None)
    }

    fn with_reader(client: RegistryClient, reader: Option<Schema>) -> Self {
        Self {
            limits: client.config().decode_limits,
            client,
            reader: reader.map(Arc::new),
            first: OnceLock::new(),
            plans: RwLock::new(PlanMap::default()),
            target: PhantomData,
        }
    }

    /// Decodes under `limits` instead of the client's. A `max_depth` above
    /// [`DEPTH_CEILING`](crate::DEPTH_CEILING) counts as the ceiling.
    pub fn with_limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = DecodeLimits {
            max_depth: limits.max_depth.min(crate::DEPTH_CEILING),
            ..limits
        };
        self
    }

    /// The bounds every message is checked against before it is decoded.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// The reader schema, when one was given.
    pub fn reader_schema(&self) -> Option<&Schema> {
        self.reader.as_deref()
    }

    /// Decodes one framed message into an Avro [`Value`] shaped by the reader schema.
    pub async fn decode_value(&self, bytes: &[u8]) -> Result<Value, AvroError> {
        let (id, body) = wire::split(bytes)?;
        // Hottest path: the first writer schema seen, one atomic load away.
        if let Some((first, plan)) = self.first.get()
            && *first == id
        {
            return read(id, plan, body, &self.limits);
        }
        // Other writer schemas: decode under the map's read lock (no Arc traffic).
        if let Some(result) = self.plans.read().ok().and_then(|plans| {
            plans
                .get(&id)
                .map(|plan| read(id, plan, body, &self.limits))
        }) {
            return result;
        }
        let writer = self.client.schema_by_id(id).await?;
        if self.first.get().is_none() {
            let (first, plan) = self
                .first
                .get_or_init(|| (id, self.build(Arc::clone(&writer))));
            if *first == id {
                return read(id, plan, body, &self.limits);
            }
        }
        let plan = Arc::new(self.build(writer));
        if let Ok(mut plans) = self.plans.write() {
            plans.insert(id, Arc::clone(&plan));
        }
        read(id, &plan, body, &self.limits)
    }

    fn build(&self, writer: Arc<Schema>) -> Plan {
        // Identical schemas need no resolution pass.
        let reader = self.reader.clone().filter(|r| **r != *writer);
        if let Some(reader) = &reader {
            compat::can_read(&writer, reader)?;
        }
        let shape = Shape::compile(&writer, reader.as_deref())?;
        CachedReader::try_new(
            Schemas {
                writer,
                reader,
                shape,
            },
            |s| {
                GenericDatumReader::builder(&s.writer)
                    .maybe_reader_schema(s.reader.as_deref())
                    .build()
            },
        )
        .map_err(|e| crate::error_chain(&e))
    }
}

/// Decodes `body` with a cached plan: the value, or why the bytes are at fault.
fn read(id: u32, plan: &Plan, body: &[u8], limits: &DecodeLimits) -> Result<Value, AvroError> {
    let reader = plan.as_ref().map_err(|reason| AvroError::Incompatible {
        id,
        reason: reason.clone(),
    })?;
    // Walk the lengths and counts first: apache-avro caps each array, not arrays nested in
    // arrays, and decodes fields the reader drops.
    let depth = reader.borrow_owner().shape.check(id, body, limits)?;
    // Deep values decode (and resolve) on a stack sized for them.
    stack::with_stack_for(depth, || decode_body(id, reader, body))?
}

/// Decodes a body the budget walk accepted.
fn decode_body(id: u32, reader: &CachedReader, body: &[u8]) -> Result<Value, AvroError> {
    let mut input = Guarded {
        rest: body,
        short: false,
    };
    let value = reader.borrow_dependent().read_value(&mut input);
    // apache-avro turns an early end inside a string, boolean or union into a null instead
    // of an error; a read past the end is the only reliable sign of truncation.
    if input.short {
        return Err(AvroError::Body {
            id,
            reason: format!(
                "truncated: the {}-byte body ends before the value does",
                body.len()
            ),
        });
    }
    let value = value.map_err(|e| AvroError::Body {
        id,
        reason: crate::error_chain(&e),
    })?;
    if !input.rest.is_empty() {
        return Err(AvroError::Body {
            id,
            reason: format!(
                "{} trailing bytes after the value ({} bytes decoded)",
                input.rest.len(),
                body.len() - input.rest.len()
            ),
        });
    }
    Ok(value)
}

/// Schema ids are small integers handed out by the registry: hashing them is wasted work.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u32(&mut self, id: u32) {
        // Spread ids over the table's high bits too (hashbrown uses the top 7 for tags).
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type PlanMap = HashMap<u32, Arc<Plan>, BuildHasherDefault<IdHasher>>;

/// A byte slice that remembers whether the decoder asked for more than was left, and fails
/// that read with an error apache-avro does not swallow: otherwise a few hostile bytes that
/// declare millions of booleans or union branches decode into millions of nulls first.
struct Guarded<'a> {
    rest: &'a [u8],
    short: bool,
}

impl Guarded<'_> {
    fn check(&mut self, wanted: usize) -> std::io::Result<()> {
        if wanted > self.rest.len() {
            self.short = true;
            return Err(std::io::Error::other("the body ends before the value does"));
        }
        Ok(())
    }
}

impl Read for Guarded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.check(buf.len())?;
        self.rest.read(buf)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.check(buf.len())?;
        self.rest.read_exact(buf)
    }
}

impl<T: DeserializeOwned> AvroDeserializer<T> {
    /// Decodes one framed message into `T`.
    pub async fn decode(&self, bytes: &[u8]) -> Result<T, AvroError> {
        let value = self.decode_value(bytes).await?;
        apache_avro::from_value(&value).map_err(|e| AvroError::Mismatch(crate::error_chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegistryConfig;

    const FLAGS: &str = r#"{"type":"record","name":"Flags","fields":[
      {"name":"flags","type":{"type":"array","items":"boolean"}},
      {"name":"notes","type":{"type":"array","items":["null","string"]}}]}"#;

    fn offline() -> AvroDeserializer<serde_json::Value> {
        // Nothing listens on port 9: any registry call would fail, so none may happen.
        let client =
            RegistryClient::new(RegistryConfig::new("http://127.0.0.1:9")).expect("client");
        client.insert_schema(1, Schema::parse_str(FLAGS).expect("schema"));
        AvroDeserializer::new(client, FLAGS).expect("reader")
    }

    #[tokio::test]
    async fn hostile_lengths_fail_fast_instead_of_decoding_millions_of_nulls() {
        let decoder = offline();
        // An array that declares 2^20 booleans, and one of 2^20 union branches, in 4 bytes
        // (under apache-avro's allocation cap, so only the truncation guard stops them).
        for body in [
            &[0x80, 0x80, 0x80, 0x01][..],
            &[0x00, 0x80, 0x80, 0x80, 0x01],
        ] {
            let started = std::time::Instant::now();
            let err = decoder
                .decode_value(&wire::frame(1, body))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("truncated"), "{err}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "took {:?}",
                started.elapsed()
            );
        }
    }

    #[tokio::test]
    async fn valid_arrays_decode() {
        let decoder = offline();
        // flags: [true, false]; notes: [null, "a"]
        let body = [4, 1, 0, 0, 4, 0, 2, 2, b'a', 0];
        let value = decoder
            .decode_value(&wire::frame(1, &body))
            .await
            .expect("decodes");
        assert!(format!("{value:?}").contains("Boolean(true)"), "{value:?}");
    }
}
