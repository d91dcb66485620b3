/// The W3C `traceparent`/`tracestate` of the current `tracing` span, when an OpenTelemetry
/// layer is installed and the span belongs to a valid trace.
pub fn current_trace_context() -> Option<(String, Option<String>)> {
    gregor_wire::propagation::current_trace_headers().map(|t| (t.traceparent, t.tracestate))
}

/// The `create <topic>` span of one enqueued event: its context is what the row stores, so
/// the relay's publish span becomes its child.
pub(crate) fn create_span(topic: &str) -> tracing::Span {
    tracing::info_span!(
        "create",
        otel.name = format!("create {topic}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "create",
        messaging.operation.name = "enqueue",
        messaging.destination.name = topic,
        messaging.message.id = tracing::field::Empty,
    )
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn captures_the_span_context_when_a_tracer_is_installed() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            let _guard = span.enter();
            let (tp, _) = current_trace_context().expect("a trace context");
            assert!(crate::message::is_traceparent(&tp), "{tp}");
            assert!(tp.ends_with("-01"), "sampled: {tp}");
        });
    }

    #[test]
    fn nothing_without_a_tracer() {
        assert!(current_trace_context().is_none());
    }
}
