//! The relay's `publish <topic>` span: a child of the trace context captured at enqueue, so
//! the consumer that continues the `traceparent` the relay sends becomes its child.

use gregor_wire::propagation;
use rdkafka::error::KafkaError;
use tracing::Span;
use tracing::field::Empty;

use crate::store::OutboxRow;

/// The producer span of `row`, with the OpenTelemetry messaging attributes. Partition and
/// offset are recorded at the acknowledgement.
pub(crate) fn publish_span(row: &OutboxRow, traceparent: &str) -> Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = format!("publish {}", row.topic),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = row.topic.as_str(),
        messaging.destination.partition.id = Empty,
        messaging.kafka.offset = Empty,
        messaging.message.id = %row.event_id,
        gregor.outbox.id = row.id,
        error.type = Empty,
    );
    propagation::set_remote_parent(&span, traceparent, row.tracestate.as_deref());
    span
}

/// Records where the broker put the record.
pub(crate) fn record_delivery(span: &Span, partition: i32, offset: i64) {
    span.record("messaging.destination.partition.id", partition);
    span.record("messaging.kafka.offset", offset);
}

/// Marks the span failed.
pub(crate) fn record_failure(span: &Span, error: &KafkaError) {
    span.record("otel.status_code", "ERROR");
    match error.rdkafka_error_code() {
        Some(code) => span.record("error.type", tracing::field::debug(code)),
        None => span.record("error.type", "kafka"),
    };
}
