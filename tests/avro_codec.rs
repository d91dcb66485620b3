//! Avro through the real registry over HTTP: round trips, evolution under every
//! compatibility level, and the bad-input corpus.

use gregor_avro::{
    AvroDeserializer, AvroError, AvroSerializer, CompatibilityLevel, RegistryClient,
    RegistryConfig, SerializerConfig, SubjectNameStrategy, wire,
};
use gregor_consumer::{Avro, DecodeError, Decoder};
use gregor_testkit::{PrivateRegistry, unique_name};
use serde::{Deserialize, Serialize};

const V1: &str = r#"{"type":"record","name":"Parcel","namespace":"t","fields":[
  {"name":"id","type":"long"},
  {"name":"weight","type":"int"},
  {"name":"label","type":"string"}]}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ParcelV1 {
    id: i64,
    weight: i32,
    label: String,
}

fn client(registry: &PrivateRegistry) -> anyhow::Result<RegistryClient> {
    Ok(RegistryClient::new(RegistryConfig::new(registry.url()))?)
}

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Parcel","namespace":"t","fields":[{fields}]}}"#)
}

#[tokio::test]
async fn typed_round_trip_through_the_registry() -> anyhow::Result<()> {
    let registry = PrivateRegistry::start().await?;
    let client = client(&registry)?;
    let topic = unique_name("parcels");
    let writer = AvroSerializer::new(client.clone(), V1, SerializerConfig::default())?;
    let parcel = ParcelV1 {
        id: 42,
        weight: 1200,
        label: "fragile ✓".into(),
    };
    let bytes = writer.serialize(&topic, &parcel).await?;
    let (id, _) = wire::split(&bytes)?;
    let registered = client
        .latest(&format!("{topic}-value"))
        .await?
        .expect("subject registered on first use");
    assert_eq!(registered.id, id);

    // A fresh client (empty cache) fetches the writer schema by id over HTTP.
    let reader = AvroDeserializer::<ParcelV1>::new(self::client(&registry)?, V1)?;
    assert_eq!(reader.decode(&bytes).await?, parcel);
    // The same schema under another topic keeps its id (canonical-form dedupe).
    let other = writer.serialize(&unique_name("other"), &parcel).await?;
    assert_eq!(wire::split(&other)?.0, id);
    Ok(())
}

#[tokio::test]
async fn subject_name_strategies_pick_the_subject() -> anyhow::Result<()> {
    let registry = PrivateRegistry::start().await?;
    let client = client(&registry)?;
    let topic = unique_name("strategy");
    for (strategy, subject) in [
        (SubjectNameStrategy::TopicName, format!("{topic}-value")),
        (SubjectNameStrategy::RecordName, "t.Parcel".to_owned()),
        (
            SubjectNameStrategy::TopicRecordName,
            format!("{topic}-t.Parcel"),
        ),
    ] {
        let config = SerializerConfig {
            strategy,
            auto_register: true,
        };
        let writer = AvroSerializer::new(client.clone(), V1, config)?;
        writer
            .serialize(
                &topic,
                &ParcelV1 {
                    id: 1,
                    weight: 1,
                    label: String::new(),
                },
            )
            .await?;
        assert!(
            client.latest(&subject).await?.is_some(),
            "{strategy}: {subject} registered"
        );
    }
    // Without auto-registration an unknown subject is a clear, permanent error.
    let strict = AvroSerializer::new(
        client,
        V1,
        SerializerConfig {
            strategy: SubjectNameStrategy::TopicName,
            auto_register: false,
        },
    )?;
    let err = strict
        .schema_id(&unique_name("unregistered"))
        .await
        .unwrap_err();
    assert!(matches!(err, AvroError::NotRegistered { .. }), "{err}");
    assert!(!err.is_retryable());
    Ok(())
}

/// Each level: a change it allows registers and old data decodes with the new reader; a
/// change it forbids is refused with 409 and a reason.
#[tokio::test]
async fn evolution_under_each_compatibility_level() -> anyhow::Result<()> {
    let registry = PrivateRegistry::start().await?;
    let client = client(&registry)?;
    let base = r#"{"name":"id","type":"long"},{"name":"weight","type":"int"},{"name":"label","type":"string"}"#;
    // (level, allowed after version 1, forbidden after that)
    let add_with_default = record(&format!(
        r#"{base},{{"name":"insured","type":"boolean","default":false}}"#
    ));
    let add_without_default = record(&format!(r#"{base},{{"name":"insured","type":"boolean"}}"#));
    let remove_label = record(r#"{"name":"id","type":"long"},{"name":"weight","type":"int"}"#);
    let label_with_default = record(
        r#"{"name":"id","type":"long"},{"name":"weight","type":"int"},{"name":"label","type":"string","default":""}"#,
    );
    let promote_weight = record(
        r#"{"name":"id","type":"long"},{"name":"weight","type":"long"},{"name":"label","type":"string"}"#,
    );
    let retype_label = record(
        r#"{"name":"id","type":"long"},{"name":"weight","type":"int"},{"name":"label","type":"int"}"#,
    );
    use CompatibilityLevel as L;
    let cases: [(L, &str, &str); 7] = [
        (L::None, &retype_label, ""),
        (L::Backward, &promote_weight, &add_without_default),
        // Transitive levels: the forbidden change is compatible with version 2 but not with 1.
        (
            L::BackwardTransitive,
            &add_with_default,
            &add_without_default,
        ),
        (L::Forward, &add_without_default, &remove_label),
        (L::ForwardTransitive, &label_with_default, &remove_label),
        (L::Full, &add_with_default, &remove_label),
        // Compatible with version 2 (which has the field, with a default) but not with 1.
        (L::FullTransitive, &add_with_default, &add_without_default),
    ];
    let v1 = ParcelV1 {
        id: 7,
        weight: 300,
        label: "x".into(),
    };
    for (level, allowed, forbidden) in cases {
        let topic = unique_name(&format!("evolve-{}", level.as_str().to_lowercase()));
        let subject = format!("{topic}-value");
        let old = AvroSerializer::new(client.clone(), V1, SerializerConfig::default())?;
        let old_bytes = old.serialize(&topic, &v1).await?;
        client.set_compatibility_level(&subject, level).await?;

        client.register(&subject, allowed).await?;
        assert_eq!(
            client.versions(&subject).await?,
            [1, 2],
            "{level}: allowed change"
        );
        if level != L::None && !allowed.contains(r#""insured","type":"boolean"}"#) {
            // Backward-style changes: data written with v1 decodes with the new schema.
            let reader = AvroDeserializer::<serde_json::Value>::new(client.clone(), allowed)?;
            let value = reader.decode_value(&old_bytes).await?;
            assert!(format!("{value:?}").contains("300"), "{level}: {value:?}");
        }
        if forbidden.is_empty() {
            continue;
        }
        match client.register(&subject, forbidden).await {
            Err(AvroError::Registry {
                status: 409,
                message,
                ..
            }) => assert!(
                message.to_lowercase().contains("incompatible"),
                "{level}: {message}"
            ),
            other => panic!("{level}: forbidden change answered {other:?}"),
        }
    }
    Ok(())
}

/// Reader resolution: added fields take their defaults, removed ones are skipped, ints are
/// promoted; a writer the reader cannot read is a permanent, named error.
#[tokio::test]
async fn reader_schema_resolves_writer_schemas() -> anyhow::Result<()> {
    let registry = PrivateRegistry::start().await?;
    let client = client(&registry)?;
    let topic = unique_name("resolve");
    let old = AvroSerializer::new(client.clone(), V1, SerializerConfig::default())?;
    let bytes = old
        .serialize(
            &topic,
            &ParcelV1 {
                id: 1,
                weight: 5,
                label: "gone".into(),
            },
        )
        .await?;

    #[derive(Debug, PartialEq, Deserialize)]
    struct ParcelV2 {
        id: i64,
        weight: i64,
        insured: bool,
    }
    let reader_v2 = record(
        r#"{"name":"id","type":"long"},{"name":"weight","type":"long"},{"name":"insured","type":"boolean","default":true}"#,
    );
    let reader = AvroDeserializer::<ParcelV2>::new(client.clone(), &reader_v2)?;
    assert_eq!(
        reader.decode(&bytes).await?,
        ParcelV2 {
            id: 1,
            weight: 5,
            insured: true
        }
    );

    let needs_field = record(r#"{"name":"id","type":"long"},{"name":"customs","type":"string"}"#);
    let strict = AvroDeserializer::<serde_json::Value>::new(client, &needs_field)?;
    let err = strict.decode_value(&bytes).await.unwrap_err();
    assert!(matches!(err, AvroError::Incompatible { .. }), "{err}");
    assert!(
        err.to_string().contains("customs"),
        "names the field: {err}"
    );
    assert!(err.is_payload_fault() && !err.is_retryable());
    Ok(())
}

/// What a Confluent-framed message decodes to, for the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Decodes.
    Ok,
    /// Dead-lettered (`DecodeError::Malformed`) with a reason containing the text.
    Malformed(&'static str),
}

/// The bad-input corpus (documented in docs/adr/0006-avro-and-schema-registry.md): each
/// case's outcome through the consumer's decoder, never a panic.
#[tokio::test]
async fn bad_input_corpus_has_documented_outcomes() -> anyhow::Result<()> {
    let registry = PrivateRegistry::start().await?;
    let client = client(&registry)?;
    let topic = unique_name("corpus");
    let writer = AvroSerializer::new(client.clone(), V1, SerializerConfig::default())?;
    let good = writer
        .serialize(
            &topic,
            &ParcelV1 {
                id: 3,
                weight: 4,
                label: "abc".into(),
            },
        )
        .await?;
    let id = wire::split(&good)?.0;
    let string_id = client
        .register(&unique_name("str-value"), r#""string""#)
        .await?;
    let header = |id: u32| wire::frame(id, &[]);
    let with_body = |id: u32, body: &[u8]| wire::frame(id, body);
    // id=3 (zigzag 6), weight=4 (8), label: length 3 (6) "abc".
    let body = &good[wire::HEADER_LEN..];
    assert_eq!(body, [6, 8, 6, b'a', b'b', b'c']);

    let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
        ("valid message", good.clone(), Outcome::Ok),
        ("empty value", vec![], Outcome::Malformed("empty payload")),
        (
            "1 byte",
            vec![0],
            Outcome::Malformed("shorter than the 5-byte"),
        ),
        (
            "2 bytes",
            vec![0, 0],
            Outcome::Malformed("shorter than the 5-byte"),
        ),
        (
            "3 bytes",
            vec![0, 0, 0],
            Outcome::Malformed("shorter than the 5-byte"),
        ),
        (
            "4 bytes",
            vec![0, 0, 0, 0],
            Outcome::Malformed("shorter than the 5-byte"),
        ),
        (
            "wrong magic byte",
            {
                let mut b = good.clone();
                b[0] = 1;
                b
            },
            Outcome::Malformed("wrong magic byte 0x01"),
        ),
        (
            "JSON instead of Avro",
            br#"{"id":3}"#.to_vec(),
            Outcome::Malformed("wrong magic byte 0x7b"),
        ),
        (
            "unknown schema id",
            with_body(999_999, body),
            Outcome::Malformed("schema id 999999 is unknown"),
        ),
        (
            "header only, no body",
            header(id),
            Outcome::Malformed("does not decode"),
        ),
        (
            "truncated body",
            good[..good.len() - 2].to_vec(),
            Outcome::Malformed("truncated"),
        ),
        (
            "truncated inside a varint",
            with_body(id, &[0x80]),
            Outcome::Malformed("does not decode"),
        ),
        (
            "trailing garbage",
            [good.as_slice(), &[1, 2, 3]].concat(),
            Outcome::Malformed("3 trailing bytes"),
        ),
        (
            "huge declared string length",
            with_body(id, &[6, 8, 0xfe, 0xff, 0xff, 0xff, 0x0f]),
            Outcome::Malformed("does not decode"),
        ),
        (
            "negative string length",
            with_body(id, &[6, 8, 0x01, b'a']),
            Outcome::Malformed("does not decode"),
        ),
        (
            "varint longer than 10 bytes",
            with_body(id, &[0xff; 12]),
            Outcome::Malformed("does not decode"),
        ),
        (
            "invalid UTF-8 in a string",
            with_body(id, &[6, 8, 4, 0xc3, 0x28]),
            Outcome::Malformed("does not decode"),
        ),
        (
            "wrong schema type (a string schema)",
            with_body(string_id, &[6, b'a', b'b', b'c']),
            Outcome::Malformed("incompatible with the reader"),
        ),
        (
            "all 0xff",
            vec![0xff; 64],
            Outcome::Malformed("wrong magic byte 0xff"),
        ),
    ];
    assert!(cases.len() >= 16);
    let decoder = Avro::<ParcelV1>::new(client, V1)?;
    for (name, bytes, expected) in cases {
        let got = decoder.decode(&bytes).await;
        match (expected, got) {
            (Outcome::Ok, Ok(_)) => {}
            (Outcome::Malformed(text), Err(e @ DecodeError::Malformed { .. })) => {
                let reason = e.reason();
                assert!(reason.contains(text), "{name}: {reason:?} lacks {text:?}");
            }
            (expected, got) => panic!("{name}: expected {expected:?}, got {got:?}"),
        }
    }
    Ok(())
}

/// An unreachable registry is not the message's fault: the decoder says "unavailable" (the
/// runtime retries and waits), never "malformed" (which would dead-letter it).
#[tokio::test]
async fn unreachable_registry_is_unavailable_not_malformed() -> anyhow::Result<()> {
    let mut registry = PrivateRegistry::start().await?;
    let client = client(&registry)?;
    let writer = AvroSerializer::new(client.clone(), V1, SerializerConfig::default())?;
    let bytes = writer
        .serialize(
            &unique_name("down"),
            &ParcelV1 {
                id: 1,
                weight: 1,
                label: String::new(),
            },
        )
        .await?;
    registry.stop()?;
    let mut config = RegistryConfig::new(registry.url());
    config.retries = 0;
    let decoder = Avro::<ParcelV1>::new(RegistryClient::new(config)?, V1)?;
    match decoder.decode(&bytes).await {
        Err(e @ DecodeError::Unavailable { .. }) => {
            let reason = e.reason();
            assert!(reason.contains("unreachable"), "{reason}");
            assert!(reason.contains(&registry.url()), "names the URL: {reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    Ok(())
}

/// Basic auth: without credentials the registry refuses (a clear, secret-free error the
/// consumer treats as unavailable, not as bad bytes); with them everything works.
#[tokio::test]
async fn basic_auth_to_the_registry() -> anyhow::Result<()> {
    let registry = PrivateRegistry::start_with(&[
        ("GREGOR_REGISTRY_USERNAME", "svc"),
        ("GREGOR_REGISTRY_PASSWORD", "canary-s3cret"),
    ])
    .await?;
    let topic = unique_name("auth");
    let anonymous = client(&registry)?;
    let writer = AvroSerializer::new(anonymous.clone(), V1, SerializerConfig::default())?;
    let parcel = ParcelV1 {
        id: 1,
        weight: 2,
        label: "x".into(),
    };
    let err = writer.serialize(&topic, &parcel).await.unwrap_err();
    assert!(
        matches!(err, AvroError::Registry { status: 401, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("SCHEMA_REGISTRY_USERNAME"),
        "{err}"
    );

    let mut config = RegistryConfig::new(registry.url());
    config.username = Some("svc".into());
    config.password = Some(gregor_config::Secret::new("canary-s3cret".into()));
    let authed = RegistryClient::new(config)?;
    assert!(!format!("{authed:?}").contains("canary"));
    let writer = AvroSerializer::new(authed.clone(), V1, SerializerConfig::default())?;
    let bytes = writer.serialize(&topic, &parcel).await?;
    let reader = AvroDeserializer::<ParcelV1>::new(authed, V1)?;
    assert_eq!(reader.decode(&bytes).await?, parcel);

    // A consumer with the wrong credentials waits instead of dead-lettering.
    let decoder = Avro::<ParcelV1>::new(anonymous, V1)?;
    match decoder.decode(&bytes).await {
        Err(e @ DecodeError::Unavailable { .. }) => {
            let reason = e.reason();
            assert!(
                reason.contains("401") && !reason.contains("canary"),
                "{reason}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    Ok(())
}
