//! Schemas as requests carry them, their canonical text, and version selectors.

use apache_avro::Schema;
use serde::Deserialize;

use crate::error::ApiError;

/// An Avro schema and the text the registry stores, compares and returns for it.
///
/// The canonical text is apache-avro's serialization of the parsed schema: whitespace and
/// key order do not matter, while defaults, docs, aliases and logical types are kept (unlike
/// Avro's "Parsing Canonical Form", which drops them and so would merge schemas that differ
/// in compatibility).
#[derive(Debug, Clone)]
pub(crate) struct ParsedSchema {
    pub(crate) schema: Schema,
    pub(crate) canonical: String,
}

impl ParsedSchema {
    /// Parses a schema sent by a client; errors are 42201.
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        // PostgreSQL cannot store a NUL in `text`; JSON allows none outside strings, and
        // inside one it must be escaped (`\u0000`, which stays accepted).
        if text.contains('\0') {
            return Err(ApiError::InvalidSchema(
                "the schema text holds a NUL character (escape it as \\u0000 inside a string)"
                    .to_owned(),
            ));
        }
        // A parser bug must not take the connection down with it: a panic is a refusal.
        let schema = std::panic::catch_unwind(|| Schema::parse_str(text))
            .map_err(|_| ApiError::InvalidSchema("the Avro parser failed on this schema".into()))?
            .map_err(|e| ApiError::InvalidSchema(e.to_string()))?;
        let canonical = serde_json::to_string(&schema)
            .and_then(|text| crate::canonical::dedupe_keys(&text))
            .map_err(|e| ApiError::InvalidSchema(e.to_string()))?;
        Ok(Self { schema, canonical })
    }

    /// Parses a schema read back from the store; a failure means corrupt data (50001).
    pub(crate) fn stored(canonical: &str) -> Result<Schema, ApiError> {
        Schema::parse_str(canonical).map_err(|e| {
            ApiError::Store(crate::store::StoreError::Corrupt(format!(
                "a stored schema does not parse: {e}"
            )))
        })
    }
}

/// The body of `POST /subjects/{s}/versions`, `POST /subjects/{s}` and
/// `POST /compatibility/...`. Fields Confluent added later (`metadata`, `ruleSet`, `id`,
/// `version`) are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SchemaRequest {
    schema: Option<String>,
    schema_type: Option<String>,
    references: Option<Vec<serde_json::Value>>,
}

impl SchemaRequest {
    /// [`Self::parse`] on a blocking thread: parsing a large schema costs milliseconds of CPU
    /// the async workers must not spend.
    pub(crate) async fn parse_detached(self, max_bytes: usize) -> Result<ParsedSchema, ApiError> {
        tokio::task::spawn_blocking(move || self.parse(max_bytes))
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::InvalidSchema(
                    "the Avro parser failed on this schema".into(),
                ))
            })
    }

    /// Checks the type, references and size (at most `max_bytes`), then parses the schema.
    pub(crate) fn parse(&self, max_bytes: usize) -> Result<ParsedSchema, ApiError> {
        if let Some(kind) = &self.schema_type
            && !kind.eq_ignore_ascii_case("AVRO")
        {
            return Err(ApiError::InvalidSchema(format!(
                "schemaType {kind:?} is not supported; this registry supports only AVRO"
            )));
        }
        if self.references.as_ref().is_some_and(|r| !r.is_empty()) {
            return Err(ApiError::InvalidSchema(
                "schema references are not supported".to_owned(),
            ));
        }
        let text = self
            .schema
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ApiError::InvalidSchema("the request has no \"schema\"".to_owned()))?;
        if text.len() > max_bytes {
            return Err(ApiError::SchemaTooLarge {
                bytes: text.len(),
                max: max_bytes,
            });
        }
        ParsedSchema::parse(text)
    }
}

/// A version in a path: a number, or `latest` (also spelled `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionSelector {
    Latest,
    Number(i32),
}

impl VersionSelector {
    /// Parses a path segment; errors are 42202.
    pub(crate) fn parse(raw: &str) -> Result<Self, ApiError> {
        if raw.eq_ignore_ascii_case("latest") || raw == "-1" {
            return Ok(Self::Latest);
        }
        match raw.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(Self::Number(n)),
            _ => Err(ApiError::InvalidVersion(raw.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn canonical_text_keeps_defaults_docs_aliases_and_logical_types() {
        let text = r#"{
            "type": "record", "name": "Order", "namespace": "shop", "doc": "an order",
            "aliases": ["Purchase"],
            "fields": [
                {"name": "id", "type": "long", "doc": "the id"},
                {"name": "note", "type": "string", "default": "none", "aliases": ["remark"]},
                {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "price", "type": {"type": "bytes", "logicalType": "decimal",
                                           "precision": 9, "scale": 2}},
                {"name": "state", "type": {"type": "enum", "name": "State",
                                           "symbols": ["NEW", "PAID"], "default": "NEW"}}
            ]
        }"#;
        let parsed = ParsedSchema::parse(text).unwrap();
        let c = &parsed.canonical;
        for needle in [
            r#""default":"none""#,
            r#""doc":"an order""#,
            r#""doc":"the id""#,
            // Named-type aliases come back fully qualified (equivalent).
            r#""aliases":["shop.Purchase"]"#,
            r#""aliases":["remark"]"#,
            r#""logicalType":"timestamp-millis""#,
            r#""logicalType":"decimal""#,
            r#""precision":9"#,
            r#""default":"NEW""#,
            r#""namespace":"shop""#,
        ] {
            assert!(c.contains(needle), "{needle} missing from {c}");
        }
        // The canonical text is a fixed point.
        assert_eq!(&ParsedSchema::parse(c).unwrap().canonical, c);
        // Whitespace and key order do not change it.
        let reordered = r#"{"fields":[{"type":"long","name":"id","doc":"the id"},
            {"default":"none","name":"note","aliases":["remark"],"type":"string"},
            {"name":"at","type":{"logicalType":"timestamp-millis","type":"long"}},
            {"name":"price","type":{"scale":2,"precision":9,"logicalType":"decimal","type":"bytes"}},
            {"name":"state","type":{"default":"NEW","symbols":["NEW","PAID"],"name":"State","type":"enum"}}],
            "aliases":["Purchase"],"doc":"an order","name":"Order","namespace":"shop","type":"record"}"#;
        assert_eq!(&ParsedSchema::parse(reordered).unwrap().canonical, c);
    }

    #[test]
    fn fixed_decimals_have_each_key_once() {
        let parsed = ParsedSchema::parse(
            r#"{"type":"fixed","name":"d","size":8,"logicalType":"decimal","precision":10,"scale":2}"#,
        )
        .unwrap();
        assert_eq!(
            parsed.canonical,
            r#"{"type":"fixed","name":"d","size":8,"precision":10,"scale":2,"logicalType":"decimal"}"#
        );
        assert_eq!(
            ParsedSchema::parse(&parsed.canonical).unwrap().canonical,
            parsed.canonical
        );
    }

    #[test]
    fn primitive_schemas_have_one_canonical_text() {
        let a = ParsedSchema::parse(r#""string""#).unwrap();
        let b = ParsedSchema::parse(r#"{"type": "string"}"#).unwrap();
        assert_eq!(a.canonical, b.canonical);
    }

    #[test]
    fn requests_refuse_other_types_references_and_garbage() {
        let req = |v: serde_json::Value| serde_json::from_value::<SchemaRequest>(v).unwrap();
        let err = req(serde_json::json!({"schema": "{}", "schemaType": "PROTOBUF"}))
            .parse(MAX)
            .unwrap_err();
        assert!(err.to_string().contains("only AVRO"), "{err}");
        let err = req(serde_json::json!({"schema": "\"int\"", "references": [{"name": "x"}]}))
            .parse(MAX)
            .unwrap_err();
        assert!(err.to_string().contains("references"), "{err}");
        assert!(matches!(
            req(serde_json::json!({"schema": "{\"type\": \"nope\"}"})).parse(MAX),
            Err(ApiError::InvalidSchema(_))
        ));
        assert!(
            req(serde_json::json!({"schema": "\"int\"", "schemaType": "avro", "references": []}))
                .parse(MAX)
                .is_ok()
        );
    }

    #[test]
    fn schemas_over_the_size_limit_are_refused() {
        let text = r#"{"type":"string","doc":"0123456789"}"#;
        let request: SchemaRequest =
            serde_json::from_value(serde_json::json!({ "schema": text })).unwrap();
        assert!(request.parse(text.len()).is_ok());
        let err = request.parse(text.len() - 1).unwrap_err();
        assert!(
            matches!(err, ApiError::SchemaTooLarge { bytes, max } if bytes == text.len() && max == bytes - 1),
            "{err}"
        );
        assert!(
            err.to_string().contains("GREGOR_REGISTRY_MAX_SCHEMA_BYTES"),
            "{err}"
        );
    }

    #[test]
    fn version_selectors() {
        assert_eq!(
            VersionSelector::parse("latest").unwrap(),
            VersionSelector::Latest
        );
        assert_eq!(
            VersionSelector::parse("-1").unwrap(),
            VersionSelector::Latest
        );
        assert_eq!(
            VersionSelector::parse("LATEST").unwrap(),
            VersionSelector::Latest
        );
        assert_eq!(
            VersionSelector::parse("7").unwrap(),
            VersionSelector::Number(7)
        );
        for bad in ["0", "-2", "x", "2147483648", "", " 1"] {
            assert!(
                matches!(
                    VersionSelector::parse(bad),
                    Err(ApiError::InvalidVersion(_))
                ),
                "{bad}"
            );
        }
    }
}
