//! The bounds through the public decoder: hostile shapes are refused naming their bound, and
//! messages under the bounds decode exactly as apache-avro alone decodes them.

use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::types::Value;

use crate::{AvroDeserializer, AvroError, DecodeLimits, RegistryClient, RegistryConfig, wire};

/// The consumer's reader: just an id.
const READER: &str = r#"{"type":"record","name":"Parcel","namespace":"t","fields":[
  {"name":"id","type":"long"}]}"#;

/// A compatible writer with an extra field the reader drops (issue 15's hostile schema).
const NESTED: &str = r#"{"type":"record","name":"Parcel","namespace":"t","fields":[
  {"name":"id","type":"long"},
  {"name":"junk","type":{"type":"array","items":{"type":"array","items":"null"}},"default":[]}]}"#;

/// A dropped field whose items are empty records: no bytes, still items.
const EMPTY_RECORDS: &str = r#"{"type":"record","name":"Parcel","namespace":"t","fields":[
  {"name":"id","type":"long"},
  {"name":"junk","type":{"type":"array","items":{"type":"record","name":"Nothing","fields":[]}},"default":[]}]}"#;

/// A dropped map field.
const MAPPED: &str = r#"{"type":"record","name":"Parcel","namespace":"t","fields":[
  {"name":"id","type":"long"},
  {"name":"tags","type":{"type":"map","values":"null"},"default":{}}]}"#;

/// A dropped string field.
const NOTED: &str = r#"{"type":"record","name":"Parcel","namespace":"t","fields":[
  {"name":"id","type":"long"},
  {"name":"note","type":"string","default":""}]}"#;

/// A linked list: nesting as deep as the bytes say.
const LINKED: &str = r#"{"type":"record","name":"Node","namespace":"t","fields":[
  {"name":"next","type":["null","Node"]}]}"#;

/// A top-level array of nulls: exactly `1 + n` items for `n` nulls.
const NULLS: &str = r#"{"type":"array","items":"null"}"#;

/// Everything a real event uses, for the decode-identically table.
const RICH: &str = r#"{"type":"record","name":"Rich","namespace":"t","fields":[
  {"name":"b","type":"boolean"},
  {"name":"i","type":"int"},
  {"name":"l","type":"long"},
  {"name":"f","type":"float"},
  {"name":"d","type":"double"},
  {"name":"s","type":"string"},
  {"name":"raw","type":"bytes"},
  {"name":"fx","type":{"type":"fixed","name":"Four","size":4}},
  {"name":"e","type":{"type":"enum","name":"Colour","symbols":["RED","GREEN"]}},
  {"name":"opt","type":["null","string"]},
  {"name":"list","type":{"type":"array","items":{"type":"array","items":"long"}}},
  {"name":"dict","type":{"type":"map","values":{"type":"map","values":"string"}}},
  {"name":"child","type":["null",{"type":"record","name":"Child","fields":[
     {"name":"name","type":"string"},{"name":"tags","type":{"type":"array","items":"string"}}]}]},
  {"name":"day","type":{"type":"int","logicalType":"date"}},
  {"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
  {"name":"uuid","type":{"type":"string","logicalType":"uuid"}},
  {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
  {"name":"span","type":{"type":"fixed","name":"Span","size":12,"logicalType":"duration"}},
  {"name":"again","type":"Four"}]}"#;

/// Items of a record without fields: nothing in the body, one value each for the writer.
const EMPTY_ITEMS: &str =
    r#"{"type":"array","items":{"type":"record","name":"Item","namespace":"t","fields":[]}}"#;

/// The reader of [`EMPTY_ITEMS`]: ten fields per item, all filled from their defaults.
const DEFAULTED_ITEMS: &str = r#"{"type":"array","items":{"type":"record","name":"Item","namespace":"t","fields":[
  {"name":"a","type":"long","default":0},{"name":"b","type":"long","default":0},
  {"name":"c","type":"long","default":0},{"name":"d","type":"long","default":0},
  {"name":"e","type":"long","default":0},{"name":"f","type":"long","default":0},
  {"name":"g","type":"long","default":0},{"name":"h","type":"long","default":0},
  {"name":"i","type":"long","default":0},{"name":"j","type":"long","default":0}]}}"#;

const IDS: [(u32, &str); 8] = [
    (8, EMPTY_ITEMS),
    (1, NESTED),
    (2, EMPTY_RECORDS),
    (3, MAPPED),
    (4, NOTED),
    (5, LINKED),
    (6, NULLS),
    (7, RICH),
];

fn client() -> RegistryClient {
    // Nothing listens on port 9: any registry call would fail, so none may happen.
    let client = RegistryClient::new(RegistryConfig::new("http://127.0.0.1:9")).expect("client");
    for (id, text) in IDS {
        client.insert_schema(id, Schema::parse_str(text).expect("schema"));
    }
    client
}

fn reader(limits: DecodeLimits) -> AvroDeserializer<serde_json::Value> {
    AvroDeserializer::new(client(), READER)
        .expect("reader")
        .with_limits(limits)
}

fn writer_only(limits: DecodeLimits) -> AvroDeserializer<serde_json::Value> {
    AvroDeserializer::writer_schema_only(client()).with_limits(limits)
}

/// A zig-zag varint, as Avro writes every int, long, length and block count.
fn long(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// `id`, then `outer` inner arrays of `inner` nulls each: the issue's message when
/// `outer = 100, inner = 8_000_000` (about 500 bytes).
fn nested_body(outer: i64, inner: i64) -> Vec<u8> {
    let mut body = long(7);
    body.extend(long(outer));
    for _ in 0..outer {
        body.extend(long(inner));
        body.extend(long(0));
    }
    body.extend(long(0));
    body
}

/// Decodes `body` framed with `id`, measuring how long it takes.
async fn decode(
    decoder: &AvroDeserializer<serde_json::Value>,
    id: u32,
    body: &[u8],
) -> (Result<Value, AvroError>, Duration) {
    let started = Instant::now();
    let result = decoder.decode_value(&wire::frame(id, body)).await;
    (result, started.elapsed())
}

/// The error must be the bytes' fault, permanent, and name `bound`.
fn assert_over(result: Result<Value, AvroError>, elapsed: Duration, bound: &str) -> String {
    let err = match result {
        Ok(value) => panic!(
            "decoded instead of refusing over {bound}: {}",
            format!("{value:?}").chars().take(120).collect::<String>()
        ),
        Err(err) => err,
    };
    assert!(
        matches!(err, AvroError::OverLimit { .. }),
        "not OverLimit: {err}"
    );
    assert!(err.is_payload_fault() && !err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains(bound), "{text:?} does not name {bound}");
    assert!(
        elapsed < Duration::from_secs(1),
        "refusing took {elapsed:?}: {text}"
    );
    text
}

#[tokio::test]
async fn nested_arrays_over_the_item_bound_are_refused() {
    // 3 × 400 000 nulls: 1.2 million items in ~20 bytes, under apache-avro's per-array cap.
    let (result, took) = decode(
        &reader(DecodeLimits::default()),
        1,
        &nested_body(3, 400_000),
    )
    .await;
    let text = assert_over(result, took, "GREGOR_AVRO_MAX_ITEMS");
    assert!(text.contains("1000000"), "names the setting: {text}");
    // id (1 byte), outer count (1), then blocks of 3 bytes + terminator: the third at byte 10.
    assert!(
        text.contains("400000 more at byte 10 "),
        "points at the block: {text}"
    );
}

#[tokio::test]
async fn the_issue_message_is_refused_without_allocating() {
    // Issue 15: ~500 bytes declaring 100 inner arrays of 8 000 000 nulls (tens of GB once
    // decoded). Refused at the second inner block, before apache-avro sees it.
    let body = nested_body(100, 8_000_000);
    assert!(body.len() < 600, "{} bytes", body.len());
    let (result, took) = decode(&reader(DecodeLimits::default()), 1, &body).await;
    assert_over(result, took, "GREGOR_AVRO_MAX_ITEMS");
}

#[tokio::test]
async fn deep_nesting_over_the_depth_bound_is_refused() {
    let limits = DecodeLimits::default();
    let linked = |levels: usize| {
        // Each level but the last: branch 1 (another node); the last: branch 0 (null).
        let mut body = vec![2u8; levels - 1];
        body.push(0);
        body
    };
    let decoder = writer_only(limits);
    let (ok, _) = decode(&decoder, 5, &linked(limits.max_depth)).await;
    assert!(ok.is_ok(), "exactly max_depth levels decode: {ok:?}");
    let (result, took) = decode(&decoder, 5, &linked(limits.max_depth + 1)).await;
    assert_over(result, took, "GREGOR_AVRO_MAX_DEPTH");
    // The deepest a setting may allow decodes, on a stack sized for it (in a debug build 25
    // levels of this record overflow a 2 MiB stack).
    let deepest = DecodeLimits {
        max_depth: crate::DEPTH_CEILING,
        ..limits
    };
    let (ok, _) = decode(&writer_only(deepest), 5, &linked(crate::DEPTH_CEILING)).await;
    assert!(ok.is_ok(), "DEPTH_CEILING levels decode: {ok:?}");
    // … and deserialize through serde on the caller's stack.
    let typed = writer_only(deepest)
        .decode(&wire::frame(5, &linked(crate::DEPTH_CEILING)))
        .await;
    assert!(typed.is_ok(), "{typed:?}");
    // A setting above the ceiling counts as the ceiling.
    let beyond = writer_only(DecodeLimits {
        max_depth: 100_000,
        ..limits
    });
    assert_eq!(beyond.limits().max_depth, crate::DEPTH_CEILING);
    let (result, took) = decode(&beyond, 5, &linked(crate::DEPTH_CEILING + 1)).await;
    assert_over(result, took, "GREGOR_AVRO_MAX_DEPTH");
    // Far deeper than any stack would take: refused just as quickly.
    let (result, took) = decode(&decoder, 5, &linked(1_000_000)).await;
    assert_over(result, took, "GREGOR_AVRO_MAX_DEPTH");
}

#[tokio::test]
async fn a_long_string_over_the_byte_bound_is_refused() {
    let limits = DecodeLimits {
        max_decoded_bytes: 4096,
        ..DecodeLimits::default()
    };
    let mut body = long(7);
    body.extend(long(5000));
    body.extend(std::iter::repeat_n(b'x', 5000));
    let (result, took) = decode(&reader(limits), 4, &body).await;
    assert_over(result, took, "GREGOR_AVRO_MAX_DECODED_BYTES");
    // The same field, short: decodes (and is dropped by the reader).
    let mut body = long(7);
    body.extend(long(3));
    body.extend(b"abc");
    let (value, _) = decode(&reader(limits), 4, &body).await;
    assert_eq!(
        value.expect("decodes"),
        Value::Record(vec![("id".into(), Value::Long(7))])
    );
}

#[tokio::test]
async fn maps_are_charged_per_entry_and_per_key_byte() {
    let entries = |n: i64, key_len: usize| {
        let mut body = long(7);
        body.extend(long(n));
        for i in 0..n {
            let mut key = format!("{i:0key_len$}").into_bytes();
            key.truncate(key_len.max(1));
            body.extend(long(key.len() as i64));
            body.extend(key);
        }
        body.extend(long(0));
        body
    };
    let few_items = DecodeLimits {
        max_items: 1000,
        ..DecodeLimits::default()
    };
    let (ok, _) = decode(&reader(few_items), 3, &entries(10, 4)).await;
    assert!(ok.is_ok(), "{ok:?}");
    let (result, took) = decode(&reader(few_items), 3, &entries(2000, 4)).await;
    assert_over(result, took, "GREGOR_AVRO_MAX_ITEMS");
    let few_bytes = DecodeLimits {
        max_decoded_bytes: 64 * 1024,
        ..DecodeLimits::default()
    };
    let (result, took) = decode(&reader(few_bytes), 3, &entries(100, 1000)).await;
    assert_over(result, took, "GREGOR_AVRO_MAX_DECODED_BYTES");
}

#[tokio::test]
async fn negative_block_counts_are_charged_like_positive_ones() {
    // A block of -n items carries its byte size after the count (Avro's skippable blocks).
    let negative = |n: i64| {
        let mut body = long(-n);
        body.extend(long(0)); // byte size: nulls take none
        body.extend(long(0));
        body
    };
    let limits = DecodeLimits {
        max_items: 11,
        ..DecodeLimits::default()
    };
    let decoder = writer_only(limits);
    let (value, _) = decode(&decoder, 6, &negative(10)).await;
    assert_eq!(
        value.expect("10 nulls and the array: 11 items"),
        Value::Array(vec![Value::Null; 10])
    );
    let (result, took) = decode(&decoder, 6, &negative(11)).await;
    assert_over(result, took, "GREGOR_AVRO_MAX_ITEMS");
    // The most negative count cannot be negated: malformed, and quickly.
    let mut body = long(i64::MIN);
    body.extend(long(0));
    let (result, took) = decode(&decoder, 6, &body).await;
    let err = result.expect_err("refused");
    assert!(err.is_payload_fault(), "{err}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Counts up to i64::MAX are charged before any item is walked.
    for n in [i64::MAX, -i64::MAX] {
        let mut body = long(n);
        body.extend(long(0));
        let (result, took) = decode(&writer_only(DecodeLimits::default()), 6, &body).await;
        assert_over(result, took, "GREGOR_AVRO_MAX_ITEMS");
    }
}

#[tokio::test]
async fn a_dropped_writer_field_of_empty_records_still_costs_items() {
    // 5 000 000 empty records take no bytes at all: 5 bytes declare them.
    let mut body = long(7);
    body.extend(long(5_000_000));
    body.extend(long(0));
    assert_eq!(body.len(), 6);
    let (result, took) = decode(&reader(DecodeLimits::default()), 2, &body).await;
    assert_over(result, took, "GREGOR_AVRO_MAX_ITEMS");
    // A handful of them is fine: the reader drops the field.
    let mut body = long(7);
    body.extend(long(3));
    body.extend(long(0));
    let (value, _) = decode(&reader(DecodeLimits::default()), 2, &body).await;
    assert_eq!(
        value.expect("decodes"),
        Value::Record(vec![("id".into(), Value::Long(7))])
    );
}

#[tokio::test]
async fn the_item_bound_is_exact() {
    // A top-level array of n nulls is 1 + n items.
    let nulls = |n: i64| {
        let mut body = long(n);
        body.extend(long(0));
        body
    };
    let limits = DecodeLimits {
        max_items: 101,
        ..DecodeLimits::default()
    };
    let (ok, _) = decode(&writer_only(limits), 6, &nulls(100)).await;
    assert_eq!(ok.expect("101 items"), Value::Array(vec![Value::Null; 100]));
    let (result, took) = decode(&writer_only(limits), 6, &nulls(101)).await;
    let text = assert_over(result, took, "GREGOR_AVRO_MAX_ITEMS");
    assert!(text.contains("101"), "{text}");
}

#[tokio::test]
async fn truncated_lengths_are_refused_before_anything_is_allocated() {
    // A string declaring 1 GiB with 3 bytes behind it: the body's fault, said plainly.
    let mut body = long(7);
    body.extend(long(1 << 30));
    body.extend(b"abc");
    let (result, took) = decode(&reader(DecodeLimits::default()), 4, &body).await;
    let err = result.expect_err("refused");
    assert!(matches!(err, AvroError::Body { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

fn rich_values() -> Vec<Value> {
    let record = |s: &str, list: Vec<Vec<i64>>, dict: Vec<(&str, Vec<(&str, &str)>)>, child| {
        Value::Record(vec![
            ("b".into(), Value::Boolean(true)),
            ("i".into(), Value::Int(-42)),
            ("l".into(), Value::Long(i64::MIN)),
            ("f".into(), Value::Float(1.5)),
            ("d".into(), Value::Double(-0.25)),
            ("s".into(), Value::String(s.into())),
            ("raw".into(), Value::Bytes(s.as_bytes().to_vec())),
            ("fx".into(), Value::Fixed(4, vec![1, 2, 3, 4])),
            ("e".into(), Value::Enum(1, "GREEN".into())),
            (
                "opt".into(),
                if s.is_empty() {
                    Value::Union(0, Box::new(Value::Null))
                } else {
                    Value::Union(1, Box::new(Value::String(s.into())))
                },
            ),
            (
                "list".into(),
                Value::Array(
                    list.into_iter()
                        .map(|l| Value::Array(l.into_iter().map(Value::Long).collect()))
                        .collect(),
                ),
            ),
            (
                "dict".into(),
                Value::Map(
                    dict.into_iter()
                        .map(|(k, m)| {
                            (
                                k.to_owned(),
                                Value::Map(
                                    m.into_iter()
                                        .map(|(k, v)| (k.to_owned(), Value::String(v.into())))
                                        .collect(),
                                ),
                            )
                        })
                        .collect(),
                ),
            ),
            ("child".into(), child),
            ("day".into(), Value::Date(19_000)),
            ("at".into(), Value::TimestampMicros(1_700_000_000_000_000)),
            (
                "uuid".into(),
                Value::Uuid(
                    "67e55044-10b1-426f-9247-bb680e5fe0c8"
                        .parse()
                        .expect("uuid literal"),
                ),
            ),
            (
                "amount".into(),
                Value::Decimal(apache_avro::Decimal::from(vec![0x01, 0x02])),
            ),
            (
                "span".into(),
                Value::Duration(apache_avro::Duration::new(
                    apache_avro::Months::new(1),
                    apache_avro::Days::new(2),
                    apache_avro::Millis::new(3),
                )),
            ),
            ("again".into(), Value::Fixed(4, vec![9, 9, 9, 9])),
        ])
    };
    let child = |name: &str, tags: &[&str]| {
        Value::Union(
            1,
            Box::new(Value::Record(vec![
                ("name".into(), Value::String(name.into())),
                (
                    "tags".into(),
                    Value::Array(tags.iter().map(|t| Value::String((*t).into())).collect()),
                ),
            ])),
        )
    };
    vec![
        record("", vec![], vec![], Value::Union(0, Box::new(Value::Null))),
        record(
            "ünïcödé ✓",
            vec![vec![], vec![1, -1, i64::MAX]],
            vec![("a", vec![]), ("b", vec![("x", "y"), ("", "")])],
            child("c", &["t1", "t2", ""]),
        ),
        record(
            &"long ".repeat(2000),
            (0..50).map(|i| (0..i).collect()).collect(),
            vec![("k", (0..20).map(|_| ("same", "v")).collect())],
            child("", &[]),
        ),
    ]
}

#[tokio::test]
async fn messages_under_the_bounds_decode_exactly_as_apache_avro_decodes_them() {
    let schema = Schema::parse_str(RICH).expect("schema");
    let bounded = writer_only(DecodeLimits::default());
    for (i, value) in rich_values().into_iter().enumerate() {
        let mut body = Vec::new();
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .expect("writer")
            .write_value(&mut body, value)
            .expect("encodes");
        let expected = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .expect("reader")
            .read_value(&mut body.as_slice())
            .expect("apache-avro decodes");
        let (got, _) = decode(&bounded, 7, &body).await;
        assert_eq!(got.expect("bounded decoder decodes"), expected, "value {i}");
    }
    // The issue's writer with a legitimate junk field: the reader still sees only the id.
    let (got, _) = decode(&reader(DecodeLimits::default()), 1, &nested_body(10, 1000)).await;
    assert_eq!(
        got.expect("10 000 items are fine"),
        Value::Record(vec![("id".into(), Value::Long(7))])
    );
}

#[tokio::test]
async fn negative_blocks_decode_like_positive_ones() {
    // [[1, 2], [3]] as two negative blocks carrying byte sizes.
    let schema = r#"{"type":"array","items":{"type":"array","items":"long"}}"#;
    let client = client();
    client.insert_schema(8, Schema::parse_str(schema).expect("schema"));
    let decoder = AvroDeserializer::<serde_json::Value>::writer_schema_only(client).with_limits(
        DecodeLimits {
            max_items: 6,
            ..DecodeLimits::default()
        },
    );
    let mut body = long(-2);
    body.extend(long(7)); // byte size of the two inner arrays
    body.extend(long(-2));
    body.extend(long(2));
    body.extend(long(1));
    body.extend(long(2));
    body.extend(long(0));
    body.extend(long(1));
    body.extend(long(3));
    body.extend(long(0));
    body.extend(long(0));
    let (got, _) = decode(&decoder, 8, &body).await;
    assert_eq!(
        got.expect("1 + 2 + 3 items"),
        Value::Array(vec![
            Value::Array(vec![Value::Long(1), Value::Long(2)]),
            Value::Array(vec![Value::Long(3)]),
        ])
    );
}

#[tokio::test]
async fn a_huge_fixed_in_the_writer_schema_is_a_truncation_not_an_allocation() {
    // A registrant's schema can declare any fixed size; apache-avro allocates it before
    // reading (`vec![0; size]`), so 2^40 bytes would abort the process.
    let schema = r#"{"type":"record","name":"Blob","fields":[
      {"name":"blob","type":{"type":"fixed","name":"Huge","size":1099511627776}}]}"#;
    let client = client();
    client.insert_schema(9, Schema::parse_str(schema).expect("schema"));
    let decoder = AvroDeserializer::<serde_json::Value>::writer_schema_only(client);
    let (result, took) = decode(&decoder, 9, b"tiny").await;
    let err = result.expect_err("refused");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test]
async fn reader_defaults_count_toward_the_item_bound() {
    // 100 000 empty writer records are 100 001 values for the walk, but resolution fills ten
    // defaulted reader fields into each: 1 100 001 values and about 100 MB, over the default
    // bounds (the byte bound is met first).
    let mut body = long(100_000);
    body.extend(long(0));
    let deserializer = AvroDeserializer::<serde_json::Value>::new(client(), DEFAULTED_ITEMS)
        .expect("reader")
        .with_limits(DecodeLimits::default());
    let (result, took) = decode(&deserializer, 8, &body).await;
    assert_over(result, took, "GREGOR_AVRO_MAX_");
    // A few items decode, with their defaults.
    let mut body = long(2);
    body.extend(long(0));
    let (value, _) = decode(&deserializer, 8, &body).await;
    assert!(value.is_ok(), "{value:?}");
}
