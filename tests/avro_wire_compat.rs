//! Wire compatibility with an implementation not written here: `schema_registry_converter`
//! (crates.io), whose Confluent-framed Avro encoder and decoder talk to the same registry.

use std::collections::BTreeMap;

use gregor_avro::{
    AvroDeserializer, AvroSerializer, RegistryClient, RegistryConfig, SerializerConfig,
};
use gregor_testkit::{PrivateRegistry, unique_name};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::{Deserialize, Serialize};

/// Unions, enums, arrays, maps, bytes and floating point: more than a flat record.
const SHIPMENT: &str = r#"{"type":"record","name":"Shipment","namespace":"compat","fields":[
  {"name":"id","type":"long"},
  {"name":"carrier","type":{"type":"enum","name":"Carrier","symbols":["POST","COURIER","FREIGHT"]}},
  {"name":"note","type":["null","string"],"default":null},
  {"name":"items","type":{"type":"array","items":"string"}},
  {"name":"weights","type":{"type":"map","values":"double"}},
  {"name":"signature","type":"bytes"},
  {"name":"express","type":"boolean"}]}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Carrier {
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "COURIER")]
    Courier,
    #[serde(rename = "FREIGHT")]
    Freight,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Shipment {
    id: i64,
    carrier: Carrier,
    note: Option<String>,
    items: Vec<String>,
    weights: BTreeMap<String, f64>,
    #[serde(with = "serde_bytes_as_vec")]
    signature: Vec<u8>,
    express: bool,
}

/// apache-avro maps `bytes` to serde's byte buffers, not sequences.
mod serde_bytes_as_vec {
    use serde::Serializer;
    use serde::de::{Deserializer, SeqAccess, Visitor};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_bytes(Bytes)
    }
}

fn samples() -> Vec<Shipment> {
    vec![
        Shipment {
            id: 1,
            carrier: Carrier::Courier,
            note: Some("leave at the door — ✓".into()),
            items: vec!["book".into(), "lamp".into()],
            weights: BTreeMap::from([("book".into(), 0.5), ("lamp".into(), 2.25)]),
            signature: vec![0, 1, 2, 255],
            express: true,
        },
        Shipment {
            id: -9_007_199_254_740_993,
            carrier: Carrier::Freight,
            note: None,
            items: vec![],
            weights: BTreeMap::new(),
            signature: vec![],
            express: false,
        },
    ]
}

#[tokio::test]
async fn gregor_and_schema_registry_converter_read_each_others_messages() -> anyhow::Result<()> {
    let registry = PrivateRegistry::start().await?;
    let client = RegistryClient::new(RegistryConfig::new(registry.url()))?;
    let settings = SrSettings::new(registry.url());

    // gregor frames → the independent decoder reads.
    let topic = unique_name("compat-from-gregor");
    let ours = AvroSerializer::new(client.clone(), SHIPMENT, SerializerConfig::default())?;
    let theirs = AvroDecoder::new(settings.clone());
    for sample in samples() {
        let bytes = ours.serialize(&topic, &sample).await?;
        let decoded = theirs
            .decode(Some(&bytes))
            .await
            .map_err(|e| anyhow::anyhow!("converter could not decode gregor's bytes: {e}"))?;
        let value: Shipment = apache_avro::from_value(&decoded.value)?;
        assert_eq!(value, sample);
    }

    // The independent encoder frames (registering on its own) → gregor reads.
    let topic = unique_name("compat-from-converter");
    let encoder = AvroEncoder::new(settings);
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.clone(),
        false,
        SuppliedSchema::new(None, SchemaType::Avro, SHIPMENT.to_owned()),
    );
    let reader = AvroDeserializer::<Shipment>::new(
        RegistryClient::new(RegistryConfig::new(registry.url()))?,
        SHIPMENT,
    )?;
    for sample in samples() {
        let bytes = encoder
            .encode_struct(&sample, &strategy)
            .await
            .map_err(|e| anyhow::anyhow!("converter could not encode: {e}"))?;
        assert_eq!(reader.decode(&bytes).await?, sample);
        // Same schema, same registry: the same schema id, and the very same bytes — except
        // that both sides write map entries in hash order, so multi-entry maps may differ.
        let mine = ours.serialize(&topic, &sample).await?;
        assert_eq!(mine[..5], bytes[..5], "same frame header");
        if sample.weights.len() <= 1 {
            assert_eq!(mine, bytes);
        }
    }
    Ok(())
}
