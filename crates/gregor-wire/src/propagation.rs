//! W3C trace context (`traceparent`/`tracestate`) in and out of `tracing` spans (feature
//! `otel`).
//!
//! Everything here is a no-op without an OpenTelemetry layer in the subscriber: spans then
//! carry no OpenTelemetry context, and callers fall back to forwarding the headers they got.
//! Only the OpenTelemetry API and `tracing-opentelemetry` are linked; the SDK (and its
//! exporters) belongs to binaries (`gregor-telemetry`'s `init`).

mod w3c;

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use crate::headers::{TRACEPARENT, TRACESTATE};

/// A W3C trace context as it travels in headers or outbox columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    /// `00-<trace id>-<span id>-<flags>`.
    pub traceparent: String,
    /// Vendor state, when there is any.
    pub tracestate: Option<String>,
}

/// The remote span context a `traceparent` (and optional `tracestate`) names; `None` when the
/// header is malformed.
pub fn span_context(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    w3c::extract(traceparent, tracestate)
}

/// Makes `span` a child of the remote context in the headers. Returns false when the header
/// is malformed or no OpenTelemetry layer is installed (the span then keeps its own parent).
pub fn set_remote_parent(
    span: &tracing::Span,
    traceparent: &str,
    tracestate: Option<&str>,
) -> bool {
    let Some(sc) = span_context(traceparent, tracestate) else {
        return false;
    };
    span.set_parent(Context::new().with_remote_span_context(sc))
        .is_ok()
}

/// Starts `span` as a new trace root that links to the remote context in the headers (for
/// replayed messages: the replay is its own operation, caused by the original trace).
pub fn link_remote(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) -> bool {
    let Some(sc) = span_context(traceparent, tracestate) else {
        return false;
    };
    if span.set_parent(Context::new()).is_err() {
        return false;
    }
    span.add_link(sc);
    true
}

/// The trace context to send downstream from inside `span`; `None` without an OpenTelemetry
/// layer or when the span is not part of a valid trace.
pub fn trace_headers(span: &tracing::Span) -> Option<TraceHeaders> {
    let cx = span.context();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let state = sc.trace_state().header();
    Some(TraceHeaders {
        traceparent: w3c::traceparent(sc),
        tracestate: (!state.is_empty()).then_some(state),
    })
}

/// [`trace_headers`] of the current span.
pub fn current_trace_headers() -> Option<TraceHeaders> {
    trace_headers(&tracing::Span::current())
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn with_tracer(f: impl FnOnce()) {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn a_child_keeps_the_trace_id_and_gets_its_own_span_id() {
        with_tracer(|| {
            let span = tracing::info_span!("process");
            assert!(set_remote_parent(&span, PARENT, Some("vendor=1")));
            let out = trace_headers(&span).expect("a context");
            assert!(
                out.traceparent
                    .starts_with("00-0af7651916cd43dd8448eb211c80319c-")
            );
            assert!(!out.traceparent.contains("b7ad6b7169203331"), "{out:?}");
            assert!(out.traceparent.ends_with("-01"));
            assert_eq!(out.tracestate.as_deref(), Some("vendor=1"));
        });
    }

    #[test]
    fn no_tracestate_when_the_parent_had_none() {
        with_tracer(|| {
            let span = tracing::info_span!("process");
            assert!(set_remote_parent(&span, PARENT, None));
            let out = trace_headers(&span).expect("a context");
            assert_eq!(out.tracestate, None);
        });
    }

    #[test]
    fn a_linked_span_starts_a_new_trace() {
        with_tracer(|| {
            let span = tracing::info_span!("replay");
            assert!(link_remote(&span, PARENT, None));
            let out = trace_headers(&span).expect("a context");
            assert!(!out.traceparent.contains("0af7651916cd43dd8448eb211c80319c"));
        });
    }

    #[test]
    fn malformed_headers_are_refused() {
        with_tracer(|| {
            let span = tracing::info_span!("process");
            for bad in [
                "",
                "00-zz-b7ad6b7169203331-01",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            ] {
                assert!(!set_remote_parent(&span, bad, None), "{bad}");
            }
        });
    }

    #[test]
    fn nothing_without_an_opentelemetry_layer() {
        let span = tracing::info_span!("process");
        assert!(!set_remote_parent(&span, PARENT, None));
        assert!(trace_headers(&span).is_none());
    }
}
