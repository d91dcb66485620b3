//! Subject name strategies: which registry subject a topic's schema lives under.

use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;

use crate::AvroError;

/// How a subject name is derived, as Confluent's serializers do it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectNameStrategy {
    /// `<topic>-value` (or `-key`): one schema lineage per topic. The default.
    #[default]
    TopicName,
    /// The record's full name: one lineage per record type, shared across topics.
    RecordName,
    /// `<topic>-<record full name>`: several record types per topic.
    TopicRecordName,
}

impl SubjectNameStrategy {
    /// The subject for `schema` written to `topic`, as a value or (`is_key`) a key.
    ///
    /// ```
    /// use apache_avro::Schema;
    /// use gregor_avro::SubjectNameStrategy;
    ///
    /// let schema = Schema::parse_str(
    ///     r#"{"type":"record","name":"OrderPlaced","namespace":"shop","fields":[]}"#,
    /// ).expect("schema");
    /// let topic = SubjectNameStrategy::TopicName;
    /// assert_eq!(topic.subject("orders", &schema, false).expect("subject"), "orders-value");
    /// let record = SubjectNameStrategy::TopicRecordName;
    /// assert_eq!(record.subject("orders", &schema, false).expect("subject"), "orders-shop.OrderPlaced");
    /// ```
    pub fn subject(self, topic: &str, schema: &Schema, is_key: bool) -> Result<String, AvroError> {
        let record = || match schema {
            Schema::Record(record) => Ok(record.name.fullname(None)),
            Schema::Enum(e) => Ok(e.name.fullname(None)),
            Schema::Fixed(f) => Ok(f.name.fullname(None)),
            other => Err(AvroError::InvalidSchema(format!(
                "the record name strategies need a named schema, got {:?}",
                apache_avro::schema::SchemaKind::from(other)
            ))),
        };
        Ok(match self {
            Self::TopicName => format!("{topic}-{}", if is_key { "key" } else { "value" }),
            Self::RecordName => record()?,
            Self::TopicRecordName => format!("{topic}-{}", record()?),
        })
    }
}

impl fmt::Display for SubjectNameStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TopicName => "topic",
            Self::RecordName => "record",
            Self::TopicRecordName => "topic_record",
        })
    }
}

impl FromStr for SubjectNameStrategy {
    type Err = String;

    /// Accepts `topic`, `record`, `topic_record` and Confluent's class names
    /// (`TopicNameStrategy`, `RecordNameStrategy`, `TopicRecordNameStrategy`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let short = s
            .trim()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match short.as_str() {
            "topic" | "topicname" | "topicnamestrategy" => Ok(Self::TopicName),
            "record" | "recordname" | "recordnamestrategy" => Ok(Self::RecordName),
            "topic_record" | "topicrecordname" | "topicrecordnamestrategy" => {
                Ok(Self::TopicRecordName)
            }
            _ => Err(format!(
                "unknown subject name strategy {s:?} (expected topic, record or topic_record)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_from_short_and_confluent_names() {
        for (text, want) in [
            ("topic", SubjectNameStrategy::TopicName),
            (
                "io.confluent.kafka.serializers.subject.RecordNameStrategy",
                SubjectNameStrategy::RecordName,
            ),
            (
                "TopicRecordNameStrategy",
                SubjectNameStrategy::TopicRecordName,
            ),
        ] {
            assert_eq!(text.parse::<SubjectNameStrategy>(), Ok(want), "{text}");
        }
        assert!("sideways".parse::<SubjectNameStrategy>().is_err());
    }

    #[test]
    fn record_strategies_need_a_named_schema() {
        let schema = Schema::parse_str(r#""string""#).expect("schema");
        assert_eq!(
            SubjectNameStrategy::TopicName
                .subject("t", &schema, true)
                .expect("subject"),
            "t-key"
        );
        assert!(
            SubjectNameStrategy::RecordName
                .subject("t", &schema, false)
                .is_err()
        );
    }
}
