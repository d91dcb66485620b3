//! The W3C Trace Context header format, read and written on the OpenTelemetry API's types.
//!
//! The same rules as the SDK's `TraceContextPropagator` (which the unit tests compare against),
//! without linking the SDK into every service that only carries a context along.

use std::str::FromStr;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// The only version written.
const SUPPORTED_VERSION: u8 = 0;
/// `ff` is forbidden; versions above 0 may carry more fields, which are ignored.
const MAX_VERSION: u8 = 254;

/// The remote span context of a `traceparent` (and `tracestate`); `None` when the
/// `traceparent` is malformed or names an invalid (all-zero) context. A malformed `tracestate`
/// is dropped, not a reason to refuse the parent.
pub(super) fn extract(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let parts: Vec<&str> = traceparent.trim().split_terminator('-').collect();
    if parts.len() < 4 {
        return None;
    }
    let version = u8::from_str_radix(parts[0], 16).ok()?;
    if version > MAX_VERSION || version == 0 && parts.len() != 4 {
        return None;
    }
    // Lower case only; `from_hex` alone would take upper case too.
    if parts[1].chars().any(|c| c.is_ascii_uppercase())
        || parts[2].chars().any(|c| c.is_ascii_uppercase())
    {
        return None;
    }
    let trace_id = TraceId::from_hex(parts[1]).ok()?;
    let span_id = SpanId::from_hex(parts[2]).ok()?;
    let flags = u8::from_str_radix(parts[3], 16).ok()?;
    if version == 0 && flags > 2 {
        return None;
    }
    // Only the sampled bit has a meaning.
    let flags = TraceFlags::new(flags) & TraceFlags::SAMPLED;
    let state = tracestate
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let context = SpanContext::new(trace_id, span_id, flags, true, state);
    context.is_valid().then_some(context)
}

/// The `traceparent` of a valid `context` (version 00, the sampled bit only).
pub(super) fn traceparent(context: &SpanContext) -> String {
    format!(
        "{:02x}-{}-{}-{:02x}",
        SUPPORTED_VERSION,
        context.trace_id(),
        context.span_id(),
        context.trace_flags() & TraceFlags::SAMPLED
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::Context;
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    /// The SDK's verdict on the same headers.
    fn reference(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
        let mut carrier = HashMap::new();
        carrier.insert("traceparent".to_owned(), traceparent.to_owned());
        if let Some(state) = tracestate {
            carrier.insert("tracestate".to_owned(), state.to_owned());
        }
        let cx = TraceContextPropagator::new().extract(&carrier);
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some(sc)
    }

    /// The SDK's own test vectors, valid and invalid, and a few of ours.
    const PARENTS: &[&str] = &[
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
        "02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-08",
        "02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-XYZxsf09",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-",
        "  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01  ",
        "0000-00000000000000000000000000000000-0000000000000000-01",
        "00-ab00000000000000000000000000000000-cd00000000000000-01",
        "00-ab000000000000000000000000000000-cd0000000000000000-01",
        "00-ab000000000000000000000000000000-cd00000000000000-0100",
        "qw-00000000000000000000000000000000-0000000000000000-01",
        "00-qw000000000000000000000000000000-cd00000000000000-01",
        "00-ab000000000000000000000000000000-qw00000000000000-01",
        "00-ab000000000000000000000000000000-cd00000000000000-qw",
        "A0-00000000000000000000000000000000-0000000000000000-01",
        "00-AB000000000000000000000000000000-cd00000000000000-01",
        "00-ab000000000000000000000000000000-CD00000000000000-01",
        "00-ab000000000000000000000000000000-cd00000000000000-A1",
        "00-00000000000000000000000000000000-0000000000000000-01",
        "00-ab000000000000000000000000000000-0000000000000000-01",
        "00-ab000000000000000000000000000000-cd00000000000000-09",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra-fields",
        "",
        "-",
        "----",
        "00-é-b7ad6b7169203331-01",
    ];

    const STATES: &[Option<&str>] = &[
        None,
        Some(""),
        Some("foo=bar"),
        Some("vendor=1,other=x"),
        Some("not a tracestate"),
        Some("a=1,a=2"),
    ];

    #[test]
    fn reads_what_the_sdk_reads() {
        for parent in PARENTS {
            for &state in STATES {
                assert_eq!(
                    extract(parent, state),
                    reference(parent, state),
                    "{parent:?} {state:?}"
                );
            }
        }
    }

    #[test]
    fn writes_what_the_sdk_writes() {
        let state = TraceState::from_str("foo=bar").unwrap();
        for flags in [
            TraceFlags::default(),
            TraceFlags::SAMPLED,
            TraceFlags::new(0xff),
        ] {
            let sc = SpanContext::new(
                TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
                SpanId::from(0x00f0_67aa_0ba9_02b7),
                flags,
                true,
                state.clone(),
            );
            let mut out: HashMap<String, String> = HashMap::new();
            TraceContextPropagator::new().inject_context(
                &Context::new().with_remote_span_context(sc.clone()),
                &mut out,
            );
            assert_eq!(Some(&traceparent(&sc)), out.get("traceparent"), "{flags:?}");
        }
        let sampled = SpanContext::new(
            TraceId::from(1),
            SpanId::from(2),
            TraceFlags::new(0xff),
            false,
            TraceState::default(),
        );
        assert_eq!(
            traceparent(&sampled),
            "00-00000000000000000000000000000001-0000000000000002-01"
        );
    }
}
