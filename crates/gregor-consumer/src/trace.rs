//! Spans of the consumer: one `process <topic>` span per message that continues the trace
//! in its `traceparent` header (a replayed message starts a new trace linked to it), and one
//! `publish <topic>` span per retry or dead-letter copy, whose context the copy carries on.

use gregor_telemetry::propagation::{self, TraceHeaders};
use gregor_wire::headers as h;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tracing::Span;
use tracing::field::Empty;

use crate::route::ErrorKind;
use crate::worker::Outcome;

/// The handling span of `msg`, with the OpenTelemetry messaging attributes.
pub(crate) fn process_span(msg: &OwnedMessage, group: &str, main_topic: bool) -> Span {
    let headers = msg.headers();
    let span = tracing::info_span!(
        "process",
        otel.name = format!("process {}", msg.topic()),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = msg.topic(),
        messaging.destination.partition.id = msg.partition(),
        messaging.kafka.offset = msg.offset(),
        messaging.consumer.group.name = group,
        messaging.message.id = h::get_str(headers, h::CE_ID),
        gregor.attempt = h::get_str(headers, h::ATTEMPT),
        gregor.outcome = Empty,
        error.type = Empty,
    );
    if let Some(parent) = h::get_str(headers, h::TRACEPARENT) {
        let state = h::get_str(headers, h::TRACESTATE);
        if main_topic && h::get_str(headers, h::REPLAYED_AT).is_some() {
            propagation::link_remote(&span, parent, state);
        } else {
            propagation::set_remote_parent(&span, parent, state);
        }
    }
    span
}

/// Records how handling ended on the process span.
pub(crate) fn record_outcome(span: &Span, outcome: Outcome, failure: Option<ErrorKind>) {
    let label = match outcome {
        Outcome::Handled => "handled",
        Outcome::Duplicate => "duplicate",
        Outcome::Retried => "retried",
        Outcome::DeadLettered => "dead_lettered",
        Outcome::Abandoned => "abandoned",
    };
    span.record("gregor.outcome", label);
    if let Some(kind) = failure {
        span.record("error.type", kind.as_str());
        if matches!(outcome, Outcome::DeadLettered) {
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The span of forwarding a copy to `topic`, and the trace context the copy carries.
pub(crate) fn forward_span(topic: &str) -> (Span, Option<TraceHeaders>) {
    let span = tracing::info_span!(
        "publish",
        otel.name = format!("publish {topic}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = topic,
    );
    let headers = propagation::trace_headers(&span);
    (span, headers)
}
