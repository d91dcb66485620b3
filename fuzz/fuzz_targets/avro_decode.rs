//! Arbitrary bytes through the Confluent-framed Avro decoder: it must return `Ok` or an error,
//! never panic, hang or allocate without bound. Three writer schemas are pre-loaded so no
//! registry call happens; the frame's schema id is mapped onto them. The third adds nested
//! containers the reader drops (issue 15): they are bounded all the same.

#![no_main]

use std::sync::OnceLock;

use gregor_avro::{AvroDeserializer, RegistryClient, RegistryConfig, Schema};
use libfuzzer_sys::fuzz_target;

const WRITER_V1: &str = r#"{"type":"record","name":"Shipment","namespace":"fuzz","fields":[
  {"name":"id","type":"long"},
  {"name":"carrier","type":{"type":"enum","name":"Carrier","symbols":["POST","COURIER"]}},
  {"name":"note","type":["null","string"],"default":null},
  {"name":"items","type":{"type":"array","items":"string"}},
  {"name":"weights","type":{"type":"map","values":"double"}},
  {"name":"signature","type":"bytes"},
  {"name":"express","type":"boolean"},
  {"name":"flags","type":{"type":"array","items":"boolean"},"default":[]},
  {"name":"options","type":{"type":"array","items":["null","string"]},"default":[]},
  {"name":"parent","type":["null","Shipment"],"default":null}]}"#;

/// An older writer: the reader resolves it (defaults, promotions).
const WRITER_V0: &str = r#"{"type":"record","name":"Shipment","namespace":"fuzz","fields":[
  {"name":"id","type":"int"},
  {"name":"carrier","type":{"type":"enum","name":"Carrier","symbols":["POST","COURIER"]}},
  {"name":"items","type":{"type":"array","items":"string"}},
  {"name":"weights","type":{"type":"map","values":"float"}},
  {"name":"signature","type":"bytes"},
  {"name":"express","type":"boolean"}]}"#;

/// A newer writer with nested containers the reader ignores.
const WRITER_V2: &str = r#"{"type":"record","name":"Shipment","namespace":"fuzz","fields":[
  {"name":"id","type":"long"},
  {"name":"carrier","type":{"type":"enum","name":"Carrier","symbols":["POST","COURIER"]}},
  {"name":"note","type":["null","string"],"default":null},
  {"name":"items","type":{"type":"array","items":"string"}},
  {"name":"weights","type":{"type":"map","values":"double"}},
  {"name":"signature","type":"bytes"},
  {"name":"express","type":"boolean"},
  {"name":"junk","type":{"type":"array","items":{"type":"array","items":["null","string"]}},"default":[]},
  {"name":"index","type":{"type":"map","values":{"type":"array","items":{"type":"map","values":"null"}}},"default":{}},
  {"name":"empties","type":{"type":"array","items":{"type":"record","name":"Empty","fields":[]}},"default":[]}]}"#;

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Shipment {
    id: i64,
    carrier: String,
    note: Option<String>,
    items: Vec<String>,
    weights: std::collections::HashMap<String, f64>,
    express: bool,
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    decoder: AvroDeserializer<Shipment>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let client =
            RegistryClient::new(RegistryConfig::new("http://127.0.0.1:9")).expect("client");
        client.insert_schema(1, Schema::parse_str(WRITER_V1).expect("v1"));
        client.insert_schema(2, Schema::parse_str(WRITER_V0).expect("v0"));
        client.insert_schema(3, Schema::parse_str(WRITER_V2).expect("v2"));
        Harness {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            decoder: AvroDeserializer::new(client, WRITER_V1).expect("reader"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    let mut bytes = data.to_vec();
    if bytes.len() >= 5 {
        // Keep the magic byte as fuzzed; point the id at a pre-loaded schema.
        let id = u32::from(bytes[1] % 3) + 1;
        bytes[1..5].copy_from_slice(&id.to_be_bytes());
    }
    let _ = harness.runtime.block_on(harness.decoder.decode(&bytes));
});
