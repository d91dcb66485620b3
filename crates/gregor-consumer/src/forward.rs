//! What a retry or dead-letter copy carries, with the diagnostic headers of DESIGN §3, and
//! the smaller copies sent when a full one is too large for the producer or the broker.
//! Sending them is the [`crate::forwarder`]'s job.

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};

use gregor_wire::headers as h;
use gregor_wire::propagation::TraceHeaders;

use crate::route::ErrorKind;

/// What the copy should say about the failure.
#[derive(Debug)]
pub(crate) struct Failure<'a> {
    pub(crate) kind: ErrorKind,
    pub(crate) message: &'a str,
    pub(crate) attempts: u32,
    pub(crate) not_before: Option<DateTime<Utc>>,
}

/// How much a copy carries. A copy the producer or the broker refuses as too large is sent
/// again at the next stage, each leaving out more of what makes it large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// Key, value, the original headers and full diagnostics.
    Full,
    /// The error message cut to [`BRIEF_ERROR_MESSAGE`] bytes and no `tracestate`.
    BriefDiagnostics,
    /// As brief, the value replaced by a JSON reference to the original coordinates and the
    /// original headers left out but a short `ce_id`, marked `gregor-payload-omitted` and
    /// `gregor-headers-omitted: too-large`. Only for dead-letter copies: a retry copy must
    /// carry its payload to the handler.
    PayloadOmitted,
}

impl Stage {
    /// The next smaller stage, if any.
    pub(crate) fn smaller(self) -> Option<Self> {
        match self {
            Self::Full => Some(Self::BriefDiagnostics),
            Self::BriefDiagnostics => Some(Self::PayloadOmitted),
            Self::PayloadOmitted => None,
        }
    }
}

/// The longest error message a brief copy carries, in bytes.
pub(crate) const BRIEF_ERROR_MESSAGE: usize = 160;

/// The longest `ce_id` the smallest copy keeps.
const STUB_CE_ID_MAX: usize = 256;

/// The value of [`h::PAYLOAD_OMITTED`] on a copy whose payload was too large.
pub(crate) const OMITTED_TOO_LARGE: &str = "too-large";

/// `message` cut to at most `max` bytes on a character boundary.
fn cut(message: &str, max: usize) -> &str {
    if message.len() <= max {
        return message;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Builds the headers of a retry or dead-letter copy: the original headers without earlier
/// diagnostics, then fresh diagnostics (original coordinates survive every hop).
///
/// With `trace`, the copy carries that context (the forwarding span's) instead of the
/// original `traceparent`/`tracestate`, so the next hop continues the same trace.
pub(crate) fn copy_headers(
    msg: &OwnedMessage,
    group: &str,
    failure: &Failure<'_>,
    trace: Option<&TraceHeaders>,
    stage: Stage,
) -> OwnedHeaders {
    let old = msg.headers();
    let keep = |name: &str| h::get_str(old, name).map(str::to_owned);
    // Earlier coordinates count only on this group's own copies (P10); anything else is
    // forwarded with its own coordinates, as a first failure.
    let trusted = crate::origin::trusted(msg, group);
    let carried = |name: &str| trusted.as_ref().and_then(|_| keep(name));
    let origin = trusted
        .clone()
        .unwrap_or_else(|| crate::origin::Origin::own(msg));
    let original_topic = origin.topic;
    let original_partition = origin.partition.to_string();
    let original_offset = origin.offset.to_string();
    let original_timestamp = carried(h::ORIGINAL_TIMESTAMP)
        .or_else(|| msg.timestamp().to_millis().map(|ms| ms.to_string()));
    let first_failure = carried(h::FIRST_FAILURE_AT).unwrap_or_else(|| h::format_time(Utc::now()));
    let brief = stage >= Stage::BriefDiagnostics;

    let mut out = OwnedHeaders::new();
    // The smallest copy carries none of the original headers but a short `ce_id`: a producer
    // can make headers alone larger than `message.max.bytes`, and such a copy must still reach
    // the DLQ rather than stop the consumer on every restart (it is never replayed as it is).
    let stub = stage == Stage::PayloadOmitted;
    if let (true, Some(id)) = (stub, keep(h::CE_ID).filter(|id| id.len() <= STUB_CE_ID_MAX)) {
        out = out.insert(Header {
            key: h::CE_ID,
            value: Some(id.as_str()),
        });
    }
    if let (false, Some(old)) = (stub, old) {
        for header in old.iter() {
            let replaced_trace =
                trace.is_some() && (header.key == h::TRACEPARENT || header.key == h::TRACESTATE);
            let dropped = brief && header.key == h::TRACESTATE;
            if !h::DIAGNOSTIC_HEADERS.contains(&header.key) && !replaced_trace && !dropped {
                out = out.insert(header);
            }
        }
    }
    let attempts = failure.attempts.to_string();
    let mut add = |key: &str, value: &str| {
        out = std::mem::replace(&mut out, OwnedHeaders::new()).insert(Header {
            key,
            value: Some(value),
        });
    };
    if let Some(trace) = trace {
        add(h::TRACEPARENT, &trace.traceparent);
        if let Some(state) = trace.tracestate.as_ref().filter(|_| !brief) {
            add(h::TRACESTATE, state);
        }
    }
    add(h::ORIGINAL_TOPIC, &original_topic);
    add(h::ORIGINAL_PARTITION, &original_partition);
    add(h::ORIGINAL_OFFSET, &original_offset);
    if let Some(ts) = &original_timestamp {
        add(h::ORIGINAL_TIMESTAMP, ts);
    }
    add(h::CONSUMER_GROUP, group);
    add(h::ATTEMPT, &attempts);
    add(h::ERROR_KIND, failure.kind.as_str());
    let message = if brief {
        cut(failure.message, BRIEF_ERROR_MESSAGE)
    } else {
        h::bounded_message(failure.message)
    };
    add(h::ERROR_MESSAGE, message);
    add(h::FIRST_FAILURE_AT, &first_failure);
    if let Some(due) = failure.not_before {
        add(h::NOT_BEFORE, &h::format_time(due));
    }
    if stage == Stage::PayloadOmitted {
        add(h::PAYLOAD_OMITTED, OMITTED_TOO_LARGE);
        add(h::HEADERS_OMITTED, OMITTED_TOO_LARGE);
    }
    out
}

/// The value of a copy at `stage`: the original payload, or (payload omitted) a JSON
/// reference to the original coordinates as `headers` (from [`copy_headers`]) name them.
pub(crate) fn copy_value(
    msg: &OwnedMessage,
    headers: &OwnedHeaders,
    stage: Stage,
) -> Option<Vec<u8>> {
    if stage != Stage::PayloadOmitted {
        return msg.payload().map(<[u8]>::to_vec);
    }
    let coordinate = |name: &str| {
        h::get_str(Some(headers), name)
            .unwrap_or_default()
            .to_owned()
    };
    let reference = serde_json::json!({
        "gregor-payload-omitted": OMITTED_TOO_LARGE,
        "topic": coordinate(h::ORIGINAL_TOPIC),
        "partition": coordinate(h::ORIGINAL_PARTITION).parse::<i64>().ok(),
        "offset": coordinate(h::ORIGINAL_OFFSET).parse::<i64>().ok(),
        "bytes": msg.payload().map_or(0, <[u8]>::len),
    });
    Some(reference.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    #[test]
    fn copies_keep_original_headers_and_coordinates() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: h::CE_ID,
                value: Some("id-1"),
            })
            .insert(Header {
                key: h::ATTEMPT,
                value: Some("1"),
            })
            .insert(Header {
                key: h::ORIGINAL_TOPIC,
                value: Some("orders"),
            })
            .insert(Header {
                key: h::ORIGINAL_PARTITION,
                value: Some("2"),
            })
            .insert(Header {
                key: h::ORIGINAL_OFFSET,
                value: Some("40"),
            })
            .insert(Header {
                key: h::CONSUMER_GROUP,
                value: Some("g"),
            });
        let msg = OwnedMessage::new(
            Some(b"v".to_vec()),
            Some(b"k".to_vec()),
            "orders.retry.1".into(),
            Timestamp::CreateTime(1000),
            0,
            7,
            Some(headers),
        );
        let failure = Failure {
            kind: ErrorKind::Retryable,
            message: "boom",
            attempts: 2,
            not_before: None,
        };
        let out = copy_headers(&msg, "g", &failure, None, Stage::Full);
        assert_eq!(h::get_str(Some(&out), h::CE_ID), Some("id-1"));
        assert_eq!(h::get_str(Some(&out), h::ORIGINAL_TOPIC), Some("orders"));
        assert_eq!(h::get_str(Some(&out), h::ORIGINAL_OFFSET), Some("40"));
        assert_eq!(h::get_str(Some(&out), h::ATTEMPT), Some("2"));
        assert_eq!(out.iter().filter(|x| x.key == h::ATTEMPT).count(), 1);
        assert!(h::get_str(Some(&out), h::NOT_BEFORE).is_none());
    }

    #[test]
    fn a_copy_carries_the_forwarding_trace_context_once() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: h::TRACEPARENT,
                value: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            })
            .insert(Header {
                key: h::TRACESTATE,
                value: Some("old=1"),
            });
        let msg = OwnedMessage::new(
            None,
            None,
            "orders".into(),
            Timestamp::CreateTime(1000),
            0,
            1,
            Some(headers),
        );
        let failure = Failure {
            kind: ErrorKind::Permanent,
            message: "no",
            attempts: 1,
            not_before: None,
        };
        let next = TraceHeaders {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01".into(),
            tracestate: None,
        };
        let out = copy_headers(&msg, "g", &failure, Some(&next), Stage::Full);
        assert_eq!(
            h::get_str(Some(&out), h::TRACEPARENT),
            Some(next.traceparent.as_str())
        );
        assert_eq!(out.iter().filter(|x| x.key == h::TRACEPARENT).count(), 1);
        assert!(h::get_str(Some(&out), h::TRACESTATE).is_none());
        let kept = copy_headers(&msg, "g", &failure, None, Stage::Full);
        assert_eq!(h::get_str(Some(&kept), h::TRACESTATE), Some("old=1"));
    }

    #[test]
    fn smaller_copies_cut_diagnostics_then_replace_the_payload_by_a_reference() {
        let headers = OwnedHeaders::new().insert(Header {
            key: h::TRACESTATE,
            value: Some("vendor=long"),
        });
        let msg = OwnedMessage::new(
            Some(vec![b'x'; 5000]),
            Some(b"k".to_vec()),
            "orders.retry.1".into(),
            Timestamp::CreateTime(1000),
            3,
            9,
            Some(
                headers
                    .insert(Header {
                        key: h::ORIGINAL_TOPIC,
                        value: Some("orders"),
                    })
                    .insert(Header {
                        key: h::ORIGINAL_PARTITION,
                        value: Some("3"),
                    })
                    .insert(Header {
                        key: h::ORIGINAL_OFFSET,
                        value: Some("41"),
                    })
                    .insert(Header {
                        key: h::CONSUMER_GROUP,
                        value: Some("g"),
                    }),
            ),
        );
        let long = "e".repeat(900);
        let failure = Failure {
            kind: ErrorKind::Permanent,
            message: &long,
            attempts: 4,
            not_before: None,
        };
        let full = copy_headers(&msg, "g", &failure, None, Stage::Full);
        assert_eq!(
            h::get_str(Some(&full), h::ERROR_MESSAGE).map(str::len),
            Some(900)
        );
        assert!(h::get_str(Some(&full), h::PAYLOAD_OMITTED).is_none());
        assert_eq!(
            copy_value(&msg, &full, Stage::Full).map(|v| v.len()),
            Some(5000)
        );

        let brief = copy_headers(&msg, "g", &failure, None, Stage::BriefDiagnostics);
        assert_eq!(
            h::get_str(Some(&brief), h::ERROR_MESSAGE).map(str::len),
            Some(BRIEF_ERROR_MESSAGE)
        );
        assert!(h::get_str(Some(&brief), h::TRACESTATE).is_none());
        assert_eq!(
            copy_value(&msg, &brief, Stage::BriefDiagnostics).map(|v| v.len()),
            Some(5000)
        );

        let stub = copy_headers(&msg, "g", &failure, None, Stage::PayloadOmitted);
        assert_eq!(
            h::get_str(Some(&stub), h::PAYLOAD_OMITTED),
            Some(OMITTED_TOO_LARGE)
        );
        let value = copy_value(&msg, &stub, Stage::PayloadOmitted).unwrap();
        let reference: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(reference["topic"], "orders");
        assert_eq!(reference["partition"], 3);
        assert_eq!(reference["offset"], 41, "the first hop's coordinates");
        assert_eq!(reference["bytes"], 5000);
        assert_eq!(Stage::PayloadOmitted.smaller(), None);

        // A hostile producer's own omitted mark never survives a copy.
        let marked = OwnedMessage::new(
            Some(b"v".to_vec()),
            None,
            "orders".into(),
            Timestamp::CreateTime(1000),
            0,
            1,
            Some(OwnedHeaders::new().insert(Header {
                key: h::PAYLOAD_OMITTED,
                value: Some("too-large"),
            })),
        );
        let copy = copy_headers(&marked, "g", &failure, None, Stage::Full);
        assert!(h::get_str(Some(&copy), h::PAYLOAD_OMITTED).is_none());
    }
}
