//! Header names, and (feature `kafka`) helpers for reading them from rdkafka messages.

use chrono::{DateTime, Utc};

#[cfg(feature = "kafka")]
mod read;

#[cfg(feature = "kafka")]
pub use read::{get_str, get_time};

/// CloudEvents spec version (`1.0`).
pub const CE_SPECVERSION: &str = "ce_specversion";
/// The stable event id (UUID); the default dedupe key.
pub const CE_ID: &str = "ce_id";
/// The event type.
pub const CE_TYPE: &str = "ce_type";
/// The event source.
pub const CE_SOURCE: &str = "ce_source";
/// When the event was enqueued (RFC 3339).
pub const CE_TIME: &str = "ce_time";
/// The payload's media type.
pub const CONTENT_TYPE: &str = "content-type";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state.
pub const TRACESTATE: &str = "tracestate";

/// Topic the message was first consumed from.
pub const ORIGINAL_TOPIC: &str = "gregor-original-topic";
/// Partition the message was first consumed from.
pub const ORIGINAL_PARTITION: &str = "gregor-original-partition";
/// Offset the message had in its original topic.
pub const ORIGINAL_OFFSET: &str = "gregor-original-offset";
/// Timestamp (ms since the epoch) the message had in its original topic.
pub const ORIGINAL_TIMESTAMP: &str = "gregor-original-timestamp";
/// Consumer group that failed to handle it.
pub const CONSUMER_GROUP: &str = "gregor-consumer-group";
/// Attempts made so far (decimal).
pub const ATTEMPT: &str = "gregor-attempt";
/// `retryable`, `permanent`, `decode` or `panic`.
pub const ERROR_KIND: &str = "gregor-error-kind";
/// The last error, bounded to [`MAX_ERROR_MESSAGE`] bytes.
pub const ERROR_MESSAGE: &str = "gregor-error-message";
/// When the first attempt failed (RFC 3339).
pub const FIRST_FAILURE_AT: &str = "gregor-first-failure-at";
/// On retry copies: when the retry is due (RFC 3339, millisecond precision).
pub const NOT_BEFORE: &str = "gregor-not-before";
/// On dead-letter copies too large to carry their payload: `too-large`. The value of such a
/// copy is a JSON reference to the original coordinates, not the payload, so replay refuses
/// it (the original is read from those coordinates while the topic retains it).
pub const PAYLOAD_OMITTED: &str = "gregor-payload-omitted";
/// On a dead-letter copy sent without its payload: the original headers were left out too
/// (only a short `ce_id` is kept), because they alone made the copy too large.
pub const HEADERS_OMITTED: &str = "gregor-headers-omitted";
/// On replayed copies: when `gregor dlq replay` republished it (RFC 3339).
pub const REPLAYED_AT: &str = "gregor-replayed-at";

/// Every header the consumer runtime adds; replaced (not duplicated) on each forward.
pub const DIAGNOSTIC_HEADERS: &[&str] = &[
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    ORIGINAL_TIMESTAMP,
    CONSUMER_GROUP,
    ATTEMPT,
    ERROR_KIND,
    ERROR_MESSAGE,
    FIRST_FAILURE_AT,
    NOT_BEFORE,
    PAYLOAD_OMITTED,
    HEADERS_OMITTED,
];

/// Longest error message carried in [`ERROR_MESSAGE`], in bytes.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// Formats a timestamp the way the headers carry it.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `message` cut to at most [`MAX_ERROR_MESSAGE`] bytes on a character boundary.
pub fn bounded_message(message: &str) -> &str {
    if message.len() <= MAX_ERROR_MESSAGE {
        return message;
    }
    let mut end = MAX_ERROR_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_bounded_on_char_boundaries() {
        let long = "é".repeat(MAX_ERROR_MESSAGE);
        let cut = bounded_message(&long);
        assert!(cut.len() <= MAX_ERROR_MESSAGE);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
