//! Durable forwarding to retry tiers and the dead-letter topic, with the diagnostic headers
//! of DESIGN §3. A message's offset is released only after the broker acknowledged its copy.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use gregor_telemetry::propagation::TraceHeaders;
use gregor_wire::headers as h;

use crate::route::ErrorKind;

/// What the copy should say about the failure.
#[derive(Debug)]
pub(crate) struct Failure<'a> {
    pub(crate) kind: ErrorKind,
    pub(crate) message: &'a str,
    pub(crate) attempts: u32,
    pub(crate) not_before: Option<DateTime<Utc>>,
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
) -> OwnedHeaders {
    let old = msg.headers();
    let keep = |name: &str| h::get_str(old, name).map(str::to_owned);
    let original_topic = keep(h::ORIGINAL_TOPIC).unwrap_or_else(|| msg.topic().to_owned());
    let original_partition =
        keep(h::ORIGINAL_PARTITION).unwrap_or_else(|| msg.partition().to_string());
    let original_offset = keep(h::ORIGINAL_OFFSET).unwrap_or_else(|| msg.offset().to_string());
    let original_timestamp = keep(h::ORIGINAL_TIMESTAMP)
        .or_else(|| msg.timestamp().to_millis().map(|ms| ms.to_string()));
    let first_failure = keep(h::FIRST_FAILURE_AT).unwrap_or_else(|| h::format_time(Utc::now()));

    let mut out = OwnedHeaders::new();
    if let Some(old) = old {
        for header in old.iter() {
            let replaced_trace =
                trace.is_some() && (header.key == h::TRACEPARENT || header.key == h::TRACESTATE);
            if !h::DIAGNOSTIC_HEADERS.contains(&header.key) && !replaced_trace {
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
        if let Some(state) = &trace.tracestate {
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
    add(h::ERROR_MESSAGE, h::bounded_message(failure.message));
    add(h::FIRST_FAILURE_AT, &first_failure);
    if let Some(due) = failure.not_before {
        add(h::NOT_BEFORE, &h::format_time(due));
    }
    out
}

/// Produces the copy and waits for the broker's acknowledgement, retrying transient
/// failures until `token` is cancelled. Returns false when cancelled before success.
pub(crate) async fn forward(
    producer: &FutureProducer,
    msg: &OwnedMessage,
    topic: &str,
    headers: OwnedHeaders,
    token: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers.clone());
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        if let Some(payload) = msg.payload() {
            record = record.payload(payload);
        }
        let sent = tokio::select! {
            biased;
            r = producer.send(record, Duration::from_secs(30)) => r,
            () = token.cancelled() => return false,
        };
        match sent {
            Ok(_) => return true,
            Err((e, _)) => {
                tracing::warn!(topic, error = %e, "forwarding failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = token.cancelled() => return false,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
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
        let out = copy_headers(&msg, "g", &failure, None);
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
        let out = copy_headers(&msg, "g", &failure, Some(&next));
        assert_eq!(
            h::get_str(Some(&out), h::TRACEPARENT),
            Some(next.traceparent.as_str())
        );
        assert_eq!(out.iter().filter(|x| x.key == h::TRACEPARENT).count(), 1);
        assert!(h::get_str(Some(&out), h::TRACESTATE).is_none());
        let kept = copy_headers(&msg, "g", &failure, None);
        assert_eq!(h::get_str(Some(&kept), h::TRACESTATE), Some("old=1"));
    }
}
