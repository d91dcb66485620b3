//! Turning outbox rows into Kafka records (CloudEvents binary mode) and producing a batch in
//! order, with per-key blocking after a failure.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use gregor_config::KafkaSettings;
use gregor_config::RebuildableProducer;
use gregor_wire::headers as h;
use gregor_wire::propagation::{self, TraceHeaders};
use prometheus::IntCounter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::store::{FailedRow, OutboxRow};
use crate::trace;

/// Producer settings the relay starts from; `KAFKA_*` variables override them, except that
/// validation refuses weakening idempotence or acks.
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("client.id", "gregor-relay"),
    ("enable.idempotence", "true"),
    ("acks", "all"),
    // Java's default partitioner: a key lands on the same partition as from a JVM producer.
    ("partitioner", "murmur2_random"),
    ("linger.ms", "5"),
    ("queue.buffering.max.messages", "200000"),
];

/// How a failed publish counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The broker or network may recover: retry without counting an attempt.
    Transient,
    /// This row will not be accepted as it is: count an attempt, park after the limit.
    Permanent,
}

/// Classifies a librdkafka error code.
pub(crate) fn classify(code: RDKafkaErrorCode) -> Failure {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge
        | C::InvalidTopic
        | C::UnknownTopic
        | C::UnknownTopicOrPartition
        | C::UnknownPartition
        | C::TopicAuthorizationFailed
        | C::InvalidRecord
        | C::InvalidMessage
        | C::InvalidMessageSize
        | C::MessageBatchTooLarge
        | C::InvalidArgument => Failure::Permanent,
        _ => Failure::Transient,
    }
}

/// What happened to one batch.
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    /// Rows the broker acknowledged, with their commit-to-ack latency in seconds.
    pub(crate) acked: Vec<(i64, f64)>,
    /// Rows that failed.
    pub(crate) failed: Vec<FailedRow>,
    /// Rows not attempted: an earlier row of their key failed in this pass, or their shard's
    /// lease would end before the producer could give up on them. They stay in the outbox.
    pub(crate) skipped: Vec<i64>,
    /// Whether some rows were held back by the lease fence (the deadline too close): a
    /// renewal makes them publishable again at once.
    pub(crate) fenced: bool,
}

/// A record handed to librdkafka.
struct Pending {
    id: i64,
    key: Option<Vec<u8>>,
    created_at: chrono::DateTime<Utc>,
    delivery: DeliveryFuture,
    /// The `publish` span of a row that carries a trace context; ends at the ack.
    span: Option<tracing::Span>,
}

/// Wraps the idempotent producer, rebuilt when it is fatal or wedged.
pub(crate) struct Publisher {
    producer: RebuildableProducer,
    /// Deliveries not reported this long after the last hand-over mean a wedged producer
    /// (librdkafka times a record out after the delivery bound; twice that plus a second).
    wedged_after: Duration,
    rebuilds: IntCounter,
    /// Whether the last rebuild (if any) succeeded.
    healthy: AtomicBool,
    /// Consecutive batches the broker refused whole for the producer's state.
    refused_batches: AtomicU32,
}

/// Whole batches refused for the producer's state before it is rebuilt.
const REFUSED_BATCHES_BEFORE_REBUILD: u32 = 3;

/// Errors by which a broker refuses the producer itself (shared with the consumer's
/// forwarder: [`gregor_config::refuses_producer`]).
fn rejects_producer_state(error: &KafkaError) -> bool {
    error
        .rdkafka_error_code()
        .is_some_and(gregor_config::refuses_producer)
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// `delivery_bound`: the producer's `message.timeout.ms` and `request.timeout.ms` unless
    /// set explicitly (validation keeps explicit values within the lease bound).
    pub(crate) fn new(
        kafka: &KafkaSettings,
        delivery_bound: Duration,
        rebuilds: IntCounter,
    ) -> Result<Self, KafkaError> {
        let bound = delivery_bound.as_millis().to_string();
        let mut defaults = PRODUCER_DEFAULTS.to_vec();
        defaults.push(("message.timeout.ms", bound.as_str()));
        defaults.push(("request.timeout.ms", bound.as_str()));
        let producer = RebuildableProducer::new(kafka.client_config(&defaults))?;
        Ok(Self {
            producer,
            wedged_after: delivery_bound * 2 + Duration::from_secs(1),
            rebuilds,
            healthy: AtomicBool::new(true),
            refused_batches: AtomicU32::new(0),
        })
    }

    /// Checks that the broker answers a metadata request.
    pub(crate) async fn broker_reachable(&self, timeout: Duration) -> bool {
        let producer = self.producer.current();
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout).is_ok())
            .await
            .unwrap_or(false)
    }

    /// False while the producer is fatal or wedged and could not be rebuilt.
    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Waits (up to `timeout`) for everything queued to reach the broker.
    pub(crate) fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush at shutdown did not complete");
        }
    }

    /// Replaces a producer in librdkafka's fatal state or one that stopped reporting
    /// deliveries. Runs between batches: nothing this relay still waits for is in flight.
    async fn recover(&self, wedged: bool, refused: bool) {
        let fatal = self.producer.fatal_error();
        if fatal.is_none() && !wedged && !refused {
            return;
        }
        match &fatal {
            Some((code, reason)) => {
                tracing::error!(?code, %reason, "the producer hit a fatal error; rebuilding it");
            }
            None if wedged => tracing::error!(
                after = ?self.wedged_after,
                "the producer reported no delivery in time; rebuilding it"
            ),
            None => tracing::error!(
                batches = REFUSED_BATCHES_BEFORE_REBUILD,
                "the broker keeps refusing the producer's id, epoch or sequence; rebuilding it"
            ),
        }
        self.refused_batches.store(0, Ordering::Relaxed);
        match self.producer.rebuild() {
            Ok(old) => {
                self.rebuilds.inc();
                self.healthy.store(true, Ordering::Relaxed);
                // Dropping a producer blocks while it winds down.
                let _ = tokio::task::spawn_blocking(move || drop(old)).await;
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, "could not rebuild the producer; retrying after the next batch");
            }
        }
    }

    /// Produces `rows` in order and waits for every acknowledgement.
    ///
    /// `blocked` holds keys with a failed row earlier in this scan pass: their later rows are
    /// skipped (left in the outbox) so that the key's order survives the retry. `may_hand_over`
    /// is asked before each record: a record is handed to the producer only while its shard's
    /// lease outlasts the producer's delivery bound (checked again while waiting for queue
    /// space), so no record of a lost shard can reach the broker after the lease ends.
    pub(crate) async fn publish(
        &self,
        rows: Vec<OutboxRow>,
        blocked: &mut HashSet<Vec<u8>>,
        may_hand_over: &(dyn Fn(i16) -> bool + Sync),
    ) -> BatchOutcome {
        let producer = self.producer.current();
        // Whether every row that failed was refused for the producer's own state.
        let mut state_rejections_only = true;
        let mut outcome = BatchOutcome::default();
        let mut pending: Vec<Pending> = Vec::with_capacity(rows.len());
        for row in rows {
            if row.key.as_ref().is_some_and(|k| blocked.contains(k)) {
                outcome.skipped.push(row.id);
                continue;
            }
            if !may_hand_over(row.shard) {
                block(blocked, &row.key);
                outcome.skipped.push(row.id);
                outcome.fenced = true;
                continue;
            }
            if let Err(e) = gregor_outbox::validate_topic(&row.topic) {
                state_rejections_only = false;
                block(blocked, &row.key);
                outcome.failed.push(FailedRow {
                    id: row.id,
                    error: e.to_string(),
                    counts: true,
                });
                continue;
            }
            let span = row
                .traceparent
                .as_deref()
                .map(|parent| trace::publish_span(&row, parent));
            let context = span.as_ref().and_then(propagation::trace_headers);
            match enqueue(&producer, &row, context.as_ref(), || {
                may_hand_over(row.shard)
            })
            .await
            {
                Ok(None) => {
                    block(blocked, &row.key);
                    outcome.skipped.push(row.id);
                    outcome.fenced = true;
                }
                Ok(Some(delivery)) => pending.push(Pending {
                    id: row.id,
                    key: row.key,
                    created_at: row.created_at,
                    delivery,
                    span,
                }),
                Err(e) => {
                    state_rejections_only = false;
                    if let Some(span) = &span {
                        trace::record_failure(span, &e);
                    }
                    block(blocked, &row.key);
                    outcome.failed.push(failed_row(row.id, &e));
                }
            }
        }
        tracing::debug!(records = pending.len(), "records handed to the producer");
        let give_up = tokio::time::Instant::now() + self.wedged_after;
        let mut wedged = false;
        for Pending {
            id,
            key,
            created_at,
            delivery,
            span,
        } in pending
        {
            let reported = if wedged {
                None
            } else {
                tokio::time::timeout_at(give_up, delivery).await.ok()
            };
            let Some(reported) = reported else {
                wedged = true;
                block(blocked, &key);
                outcome.failed.push(FailedRow {
                    id,
                    error: "no delivery report in time: the producer is rebuilt".into(),
                    counts: false,
                });
                continue;
            };
            match reported {
                Ok(Ok(delivered)) => {
                    if let Some(span) = &span {
                        trace::record_delivery(span, delivered.partition, delivered.offset);
                    }
                    let latency = (Utc::now() - created_at).as_seconds_f64().max(0.0);
                    outcome.acked.push((id, latency));
                }
                Ok(Err((e, _))) => {
                    if !rejects_producer_state(&e) {
                        state_rejections_only = false;
                    }
                    if let Some(span) = &span {
                        trace::record_failure(span, &e);
                    }
                    block(blocked, &key);
                    outcome.failed.push(failed_row(id, &e));
                }
                Err(_cancelled) => {
                    state_rejections_only = false;
                    block(blocked, &key);
                    outcome.failed.push(FailedRow {
                        id,
                        error: "delivery was cancelled (producer closed)".into(),
                        counts: false,
                    });
                }
            }
        }
        drop(producer);
        // A broker that keeps refusing the producer's id, epoch or sequence for whole batches
        // (seen with a broker that rejects librdkafka's epoch bump after message timeouts)
        // will not recover by retrying with the same producer.
        let refused =
            outcome.acked.is_empty() && !outcome.failed.is_empty() && state_rejections_only;
        // A batch that attempted nothing (every row skipped) says nothing either way.
        let attempted = !outcome.acked.is_empty() || !outcome.failed.is_empty();
        let refusals = if refused {
            self.refused_batches.fetch_add(1, Ordering::Relaxed) + 1
        } else if attempted {
            self.refused_batches.store(0, Ordering::Relaxed);
            0
        } else {
            self.refused_batches.load(Ordering::Relaxed)
        };
        self.recover(wedged, refusals >= REFUSED_BATCHES_BEFORE_REBUILD)
            .await;
        outcome
    }
}

/// Hands one record to librdkafka, waiting while its queue is full as long as `fenced_ok`
/// holds; `None` when it stopped holding before the record could be handed over.
async fn enqueue(
    producer: &FutureProducer,
    row: &OutboxRow,
    context: Option<&TraceHeaders>,
    fenced_ok: impl Fn() -> bool,
) -> Result<Option<DeliveryFuture>, KafkaError> {
    let headers = cloudevents_headers(row, context);
    let mut record = FutureRecord::<[u8], [u8]>::to(&row.topic).headers(headers);
    if let Some(key) = &row.key {
        record = record.key(key.as_slice());
    }
    if let Some(payload) = &row.payload {
        record = record.payload(payload.as_slice());
    }
    let mut backoff = Duration::from_millis(1);
    loop {
        match producer.send_result(record) {
            Ok(future) => return Ok(Some(future)),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                // librdkafka's queue drains as acknowledgements arrive.
                record = back;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(50));
                if !fenced_ok() {
                    return Ok(None);
                }
            }
            Err((e, _)) => return Err(e),
        }
    }
}

fn block(blocked: &mut HashSet<Vec<u8>>, key: &Option<Vec<u8>>) {
    if let Some(k) = key {
        blocked.insert(k.clone());
    }
}

fn failed_row(id: i64, error: &KafkaError) -> FailedRow {
    let counts = error
        .rdkafka_error_code()
        .is_some_and(|c| classify(c) == Failure::Permanent);
    FailedRow {
        id,
        error: error.to_string(),
        counts,
    }
}

/// CloudEvents Kafka binding, binary mode, plus W3C trace context and the row's own headers.
///
/// `context` is the trace context of the row's `publish` span (a child of the one captured at
/// enqueue); without it the captured context travels unchanged.
pub(crate) fn cloudevents_headers(row: &OutboxRow, context: Option<&TraceHeaders>) -> OwnedHeaders {
    let time = row.created_at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let event_id = row.event_id.to_string();
    let content_type = row
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    let mut headers = OwnedHeaders::new_with_capacity(8 + row.header_names.len())
        .insert(Header {
            key: h::CE_SPECVERSION,
            value: Some("1.0"),
        })
        .insert(Header {
            key: h::CE_ID,
            value: Some(event_id.as_str()),
        })
        .insert(Header {
            key: h::CE_TYPE,
            value: Some(row.event_type.as_str()),
        })
        .insert(Header {
            key: h::CE_SOURCE,
            value: Some(row.event_source.as_str()),
        })
        .insert(Header {
            key: h::CE_TIME,
            value: Some(time.as_str()),
        })
        .insert(Header {
            key: h::CONTENT_TYPE,
            value: Some(content_type),
        });
    let (traceparent, tracestate) = match context {
        Some(c) => (Some(&c.traceparent), c.tracestate.as_ref()),
        None => (row.traceparent.as_ref(), row.tracestate.as_ref()),
    };
    if let Some(tp) = traceparent {
        headers = headers.insert(Header {
            key: h::TRACEPARENT,
            value: Some(tp.as_str()),
        });
    }
    if let Some(ts) = tracestate {
        headers = headers.insert(Header {
            key: h::TRACESTATE,
            value: Some(ts.as_str()),
        });
    }
    for (name, value) in row.header_names.iter().zip(&row.header_values) {
        headers = headers.insert(Header {
            key: name.as_str(),
            value: Some(value.as_slice()),
        });
    }
    headers
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn headers_follow_the_wire_contract() {
        let row = OutboxRow {
            id: 1,
            shard: 0,
            event_id: uuid::Uuid::now_v7(),
            topic: "orders".into(),
            key: Some(b"k".to_vec()),
            payload: None,
            header_names: vec!["tenant".into()],
            header_values: vec![vec![0, 159, 146, 150]],
            event_type: "order.placed".into(),
            event_source: "/orders".into(),
            content_type: None,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: None,
            created_at: Utc::now(),
        };
        let headers = cloudevents_headers(&row, None);
        let names: Vec<&str> = headers.iter().map(|h| h.key).collect();
        assert_eq!(
            names,
            [
                "ce_specversion",
                "ce_id",
                "ce_type",
                "ce_source",
                "ce_time",
                "content-type",
                "traceparent",
                "tenant"
            ]
        );
        let tenant = headers
            .iter()
            .find(|h| h.key == "tenant")
            .and_then(|h| h.value);
        assert_eq!(
            tenant,
            Some(&[0u8, 159, 146, 150][..]),
            "binary header values survive"
        );
    }

    #[test]
    fn size_and_topic_errors_are_permanent_broker_trouble_is_not() {
        assert_eq!(
            classify(RDKafkaErrorCode::MessageSizeTooLarge),
            Failure::Permanent
        );
        assert_eq!(classify(RDKafkaErrorCode::InvalidTopic), Failure::Permanent);
        assert_eq!(
            classify(RDKafkaErrorCode::MessageTimedOut),
            Failure::Transient
        );
        assert_eq!(
            classify(RDKafkaErrorCode::BrokerTransportFailure),
            Failure::Transient
        );
    }
}
