//! Spans of the consumer: one `process <topic>` span per message that continues the trace
//! in its `traceparent` header (a replayed message starts a new trace linked to it), and one
//! `publish <topic>` span per retry or dead-letter copy, whose context the copy carries on.

use gregor_wire::headers as h;
use gregor_wire::propagation::{self, TraceHeaders};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tracing::Span;
use tracing::field::Empty;

use crate::retry_headers;
use crate::route::ErrorKind;
use crate::worker::Outcome;

/// The longest `tracestate` continued (W3C Trace Context: 512 characters).
const MAX_TRACESTATE: usize = 512;
/// A version-00 `traceparent` is 55 characters; later versions may append fields. Anything
/// longer than this is not parsed (its parse would split the whole header per message).
const MAX_TRACEPARENT: usize = 256;

/// The handling span of `msg`, with the OpenTelemetry messaging attributes.
pub(crate) fn process_span(msg: &OwnedMessage, group: &str, main_topic: bool) -> Span {
    let headers = msg.headers();
    // Field expressions are evaluated only when the span is enabled; the name is formatted
    // lazily (no `String` unless a layer records it). Everything is set at creation: each
    // later `record` costs a JSON log layer a re-parse of the span's fields.
    let span = tracing::info_span!(
        "process",
        otel.name = %format_args!("process {}", msg.topic()),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = msg.topic(),
        messaging.destination.partition.id = msg.partition(),
        messaging.kafka.offset = msg.offset(),
        messaging.consumer.group.name = group,
        messaging.message.id = retry_headers::logged(headers, h::CE_ID),
        gregor.attempt = retry_headers::logged(headers, h::ATTEMPT),
        gregor.outcome = Empty,
        error.type = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(parent) = h::get_str(headers, h::TRACEPARENT).filter(|p| p.len() <= MAX_TRACEPARENT)
    {
        // W3C caps tracestate at 512 characters; a longer one is dropped, not carried on.
        let state = h::get_str(headers, h::TRACESTATE).filter(|s| s.len() <= MAX_TRACESTATE);
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

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const SPAN: &str = "b7ad6b7169203331";

    fn message(topic: &str, replayed: bool) -> OwnedMessage {
        let parent = format!("00-{TRACE}-{SPAN}-01");
        let mut headers = OwnedHeaders::new().insert(Header {
            key: h::TRACEPARENT,
            value: Some(parent.as_str()),
        });
        if replayed {
            headers = headers.insert(Header {
                key: h::REPLAYED_AT,
                value: Some("2026-11-30T00:00:00Z"),
            });
        }
        OwnedMessage::new(
            None,
            None,
            topic.into(),
            Timestamp::CreateTime(1),
            0,
            3,
            Some(headers),
        )
    }

    #[test]
    fn a_message_continues_its_trace_and_a_replayed_one_links_to_it() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            drop(process_span(&message("orders", false), "g", true));
            drop(process_span(&message("orders", true), "g", true));
            // A replayed copy that failed again continues on its retry topic.
            drop(process_span(&message("orders.retry.1", true), "g", false));
        });
        let spans = exporter.get_finished_spans().expect("spans");
        assert_eq!(spans.len(), 3);
        let trace = |i: usize| spans[i].span_context.trace_id().to_string();
        let parent = |i: usize| spans[i].parent_span_id.to_string();
        assert_eq!((trace(0), parent(0)), (TRACE.to_owned(), SPAN.to_owned()));
        assert_ne!(trace(1), TRACE, "a replay starts a new trace");
        let links: Vec<String> = spans[1]
            .links
            .iter()
            .map(|l| format!("{}-{}", l.span_context.trace_id(), l.span_context.span_id()))
            .collect();
        assert_eq!(links, [format!("{TRACE}-{SPAN}")]);
        assert_eq!((trace(2), parent(2)), (TRACE.to_owned(), SPAN.to_owned()));
        assert_eq!(spans[0].name, "process orders");
        assert!(spans[0].attributes.iter().any(|kv| kv.key.as_str()
            == "messaging.consumer.group.name"
            && kv.value.as_str() == "g"));
    }
}
