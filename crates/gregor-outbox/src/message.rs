use serde::Serialize;

use crate::OutboxError;

/// Header names the relay writes itself; a message may not set them.
pub const RESERVED_HEADERS: &[&str] = &["content-type", "traceparent", "tracestate"];

/// Headers starting with this are the consumer runtime's diagnostics (`gregor-original-topic`,
/// `gregor-attempt`, …): an event may not carry them.
pub const RESERVED_PREFIX: &str = "gregor-";

/// The longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// One event to publish: where it goes, its key and payload, and its CloudEvents attributes.
///
/// A message without a payload is a tombstone (compacted topics delete the key).
///
/// ```
/// use gregor_outbox::OutboxMessage;
///
/// let msg = OutboxMessage::new("orders", "order.created", "/services/orders")
///     .key("order-42")
///     .payload(br#"{"id":42}"#.to_vec())
///     .content_type("application/json")
///     .header("tenant", b"acme".to_vec());
/// assert!(msg.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub(crate) topic: String,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) event_type: String,
    pub(crate) source: String,
    pub(crate) content_type: Option<String>,
    pub(crate) traceparent: Option<String>,
    pub(crate) tracestate: Option<String>,
}

impl OutboxMessage {
    /// A message for `topic` with CloudEvents `type` and `source`, no key and no payload yet.
    pub fn new(
        topic: impl Into<String>,
        event_type: impl Into<String>,
        source: impl Into<String>,
    ) -> Self {
        Self {
            topic: topic.into(),
            key: None,
            payload: None,
            headers: Vec::new(),
            event_type: event_type.into(),
            source: source.into(),
            content_type: None,
            traceparent: None,
            tracestate: None,
        }
    }

    /// A message whose payload is `value` as JSON (`content-type: application/json`).
    pub fn json<T: Serialize + ?Sized>(
        topic: impl Into<String>,
        event_type: impl Into<String>,
        source: impl Into<String>,
        value: &T,
    ) -> Result<Self, OutboxError> {
        Ok(Self::new(topic, event_type, source)
            .payload(serde_json::to_vec(value)?)
            .content_type("application/json"))
    }

    /// The partition key (the aggregate id): events with the same key keep their order.
    #[must_use]
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(key.as_ref().to_vec());
        self
    }

    /// The payload bytes, published unchanged.
    #[must_use]
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Makes this message a tombstone (no payload).
    #[must_use]
    pub fn tombstone(mut self) -> Self {
        self.payload = None;
        self
    }

    /// Adds a binary-safe header; names may repeat.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The `content-type` header (default `application/octet-stream`).
    #[must_use]
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// An explicit W3C trace context; without it the current span's context is captured.
    #[must_use]
    pub fn trace_context(
        mut self,
        traceparent: impl Into<String>,
        tracestate: Option<String>,
    ) -> Self {
        self.traceparent = Some(traceparent.into());
        self.tracestate = tracestate;
        self
    }

    /// The destination topic.
    pub fn topic_name(&self) -> &str {
        &self.topic
    }

    /// Checks everything the broker or relay would otherwise refuse later.
    pub fn validate(&self) -> Result<(), OutboxError> {
        validate_topic(&self.topic)?;
        if self.event_type.trim().is_empty() {
            return Err(OutboxError::InvalidMessage("event type is empty".into()));
        }
        if self.source.trim().is_empty() {
            return Err(OutboxError::InvalidMessage("event source is empty".into()));
        }
        for (name, _) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if name.is_empty() {
                return Err(OutboxError::InvalidMessage("a header name is empty".into()));
            }
            if lower.starts_with("ce_") || RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(OutboxError::InvalidMessage(format!(
                    "header {name:?} is reserved: the relay sets it from the message's attributes"
                )));
            }
            if lower.starts_with(RESERVED_PREFIX) {
                return Err(OutboxError::InvalidMessage(format!(
                    "header {name:?} is reserved: `gregor-*` headers are written only by the \
                     consumer runtime on its own retry and dead-letter copies"
                )));
            }
        }
        if let Some(tp) = &self.traceparent
            && !is_traceparent(tp)
        {
            return Err(OutboxError::InvalidMessage(format!(
                "{tp:?} is not a W3C traceparent"
            )));
        }
        Ok(())
    }
}

/// Kafka's topic rules: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic(topic: &str) -> Result<(), OutboxError> {
    let invalid = |reason: String| Err(OutboxError::InvalidMessage(reason));
    if topic.is_empty() {
        return invalid("the topic name is empty".to_owned());
    }
    if topic.len() > MAX_TOPIC_LEN {
        return invalid(format!(
            "the topic name is {} characters long (at most {MAX_TOPIC_LEN})",
            topic.len()
        ));
    }
    if topic == "." || topic == ".." {
        return invalid(format!("{topic:?} is not a valid topic name"));
    }
    match topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => invalid(format!(
            "topic {topic:?} contains {c:?} (allowed: letters, digits, '.', '_', '-')"
        )),
        None => Ok(()),
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>`
pub(crate) fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_rules() {
        assert!(validate_topic("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "has space", "ünicode", &"x".repeat(250)] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserved_headers_are_refused() {
        for name in ["ce_id", "CE_TYPE", "traceparent", "content-type", ""] {
            let msg = OutboxMessage::new("t", "e", "s").header(name, b"x".to_vec());
            assert!(msg.validate().is_err(), "{name}");
        }
    }

    #[test]
    fn gregor_diagnostic_headers_are_refused() {
        // Only the consumer runtime writes them, on its own retry and DLQ copies: an event
        // carrying forged coordinates must not reach a topic through the outbox.
        for name in [
            "gregor-original-topic",
            "GREGOR-ATTEMPT",
            "gregor-not-before",
        ] {
            let msg = OutboxMessage::new("t", "e", "s").header(name, b"x".to_vec());
            assert!(msg.validate().is_err(), "{name} must be refused");
        }
    }

    #[test]
    fn missing_attributes_are_refused() {
        assert!(OutboxMessage::new("t", " ", "s").validate().is_err());
        assert!(OutboxMessage::new("t", "e", "").validate().is_err());
        let bad_trace = OutboxMessage::new("t", "e", "s").trace_context("nope", None);
        assert!(bad_trace.validate().is_err());
    }
}
