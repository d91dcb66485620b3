//! Durable forwarding of retry and dead-letter copies: a copy counts as forwarded only once
//! the broker acknowledged it (P6), and whatever goes wrong ends in one of three ways —
//! acknowledged (maybe as a smaller copy), cancelled (revoke or shutdown: the message is
//! consumed again), or a [`Stop`] the worker turns into a stopped consumer with a clear error.
//!
//! The producer is a [`RebuildableProducer`] (as the relay's): after a failed send it is
//! rebuilt when librdkafka put it in its fatal state, when the broker keeps refusing its id,
//! epoch or sequence numbers, or when a delivery report never came. Nothing is lost or
//! reordered by a rebuild: each lane waits for its one copy's acknowledgement, and a copy not
//! acknowledged is simply sent again with the new producer.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gregor_config::RebuildableProducer;
use gregor_telemetry::health::Check;
use prometheus::{IntCounter, IntCounterVec};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::forward::Stage;
use crate::forward_error::{SendFailure, classify};

/// Sends to a topic that cannot be written before the consumer stops.
const UNWRITABLE_ATTEMPTS: u32 = 3;
/// Consecutive sends refused for the producer's own state before it is rebuilt.
const REFUSED_SENDS_BEFORE_REBUILD: u32 = 3;
/// librdkafka's `message.timeout.ms` default.
const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a copy was not forwarded.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Revoke or shutdown came first; nothing was acknowledged.
    Cancelled,
    /// Too large even at the smallest stage the target allows (the last error).
    TooLarge(KafkaError),
    /// The topic cannot be written (the last error).
    Unwritable(KafkaError),
}

/// How one send ended.
enum Sent {
    Acked,
    Cancelled,
    Failed(SendFailure, KafkaError),
}

/// The forwarding producer and what it reports.
pub(crate) struct Forwarder {
    producer: RebuildableProducer,
    /// A delivery not reported this long after the hand-over means a wedged producer
    /// (librdkafka reports every record within `message.timeout.ms`).
    wedged_after: Duration,
    refused_sends: AtomicU32,
    /// One rebuild at a time: lanes failing together rebuild once.
    recovering: tokio::sync::Mutex<()>,
    rebuilds: IntCounter,
    failures: IntCounterVec,
    /// Readiness `producer`: down while a needed rebuild failed.
    healthy: Check,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("rebuilds", &self.producer.rebuilds())
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// `message_timeout`: the producer's `message.timeout.ms` (librdkafka's default when
    /// `None`). Sets `healthy` up.
    pub(crate) fn new(
        config: ClientConfig,
        message_timeout: Option<Duration>,
        rebuilds: IntCounter,
        failures: IntCounterVec,
        healthy: Check,
    ) -> Result<Self, KafkaError> {
        let producer = RebuildableProducer::new(config)?;
        healthy.set(true);
        Ok(Self {
            producer,
            wedged_after: message_timeout.unwrap_or(DEFAULT_MESSAGE_TIMEOUT) * 2
                + Duration::from_secs(1),
            refused_sends: AtomicU32::new(0),
            recovering: tokio::sync::Mutex::new(()),
            rebuilds,
            failures,
            healthy,
        })
    }

    /// The producer in use (metadata requests of the status and DLQ depth tasks).
    pub(crate) fn producer(&self) -> FutureProducer {
        self.producer.current()
    }

    /// Sends a copy of `msg` to `topic` and waits for the broker's acknowledgement. Starts
    /// with [`Stage::Full`]; a copy refused as too large is sent again at the next stage, down
    /// to `smallest`. Transient and producer failures are retried (rebuilding the producer
    /// when it is fatal, refused or wedged) until `token` is cancelled; a topic that cannot be
    /// written is tried [`UNWRITABLE_ATTEMPTS`] times. Returns the stage acknowledged.
    pub(crate) async fn send(
        &self,
        msg: &OwnedMessage,
        topic: &str,
        build: impl Fn(Stage) -> (OwnedHeaders, Option<Vec<u8>>),
        smallest: Stage,
        token: &CancellationToken,
    ) -> Result<Stage, Stop> {
        let mut stage = Stage::Full;
        let (mut headers, mut value) = build(stage);
        let mut backoff = Duration::from_millis(100);
        let mut unwritable = 0;
        loop {
            // Read before the producer: a rebuild in between only skips one rebuild here.
            let generation = self.producer.rebuilds();
            let producer = self.producer.current();
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers.clone());
            if let Some(key) = msg.key() {
                record = record.key(key);
            }
            if let Some(value) = &value {
                record = record.payload(value.as_slice());
            }
            let (kind, error) = match self.send_once(&producer, record, token).await {
                Sent::Acked => {
                    self.refused_sends.store(0, Ordering::Relaxed);
                    return Ok(stage);
                }
                Sent::Cancelled => return Err(Stop::Cancelled),
                Sent::Failed(kind, error) => (kind, error),
            };
            drop(producer);
            self.failures.with_label_values(&[kind.label()]).inc();
            match kind {
                SendFailure::TooLarge => match stage.smaller().filter(|s| *s <= smallest) {
                    Some(next) => {
                        tracing::warn!(topic, error = %error, from = ?stage, to = ?next,
                            "the copy is too large; sending a smaller one");
                        stage = next;
                        (headers, value) = build(stage);
                        continue;
                    }
                    None => return Err(Stop::TooLarge(error)),
                },
                SendFailure::Unwritable => {
                    unwritable += 1;
                    if unwritable >= UNWRITABLE_ATTEMPTS {
                        return Err(Stop::Unwritable(error));
                    }
                    tracing::warn!(topic, error = %error, attempt = unwritable,
                        "the topic refused the copy; trying again before stopping");
                }
                SendFailure::Transient | SendFailure::Producer | SendFailure::Wedged => {
                    tracing::warn!(topic, error = %error, kind = kind.label(),
                        "forwarding failed; retrying");
                }
            }
            self.recover(generation, kind).await;
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = token.cancelled() => return Err(Stop::Cancelled),
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Hands one record over (waiting while librdkafka's queue is full) and waits for its
    /// delivery report, at most [`Self::wedged_after`].
    async fn send_once(
        &self,
        producer: &FutureProducer,
        mut record: FutureRecord<'_, [u8], [u8]>,
        token: &CancellationToken,
    ) -> Sent {
        let delivery = loop {
            match producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(20)) => {}
                        () = token.cancelled() => return Sent::Cancelled,
                    }
                }
                Err((e, _)) => return Sent::Failed(classify(&e), e),
            }
        };
        let reported = tokio::select! {
            biased;
            r = tokio::time::timeout(self.wedged_after, delivery) => r,
            () = token.cancelled() => return Sent::Cancelled,
        };
        match reported {
            Ok(Ok(Ok(_))) => Sent::Acked,
            Ok(Ok(Err((e, _)))) => Sent::Failed(classify(&e), e),
            // The producer went away (a rebuild purged it): send again.
            Ok(Err(_cancelled)) => Sent::Failed(SendFailure::Transient, KafkaError::Canceled),
            Err(_elapsed) => Sent::Failed(
                SendFailure::Wedged,
                KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            ),
        }
    }

    /// Rebuilds the producer after a failed send when it is fatal, wedged, or refused for
    /// its own state several sends in a row — unless another lane already rebuilt it since
    /// `generation`.
    async fn recover(&self, generation: u64, kind: SendFailure) {
        let refusals = if kind == SendFailure::Producer {
            self.refused_sends.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        };
        let _one = self.recovering.lock().await;
        if self.producer.rebuilds() != generation {
            return;
        }
        let fatal = self.producer.fatal_error();
        let wedged = kind == SendFailure::Wedged;
        let refused = refusals >= REFUSED_SENDS_BEFORE_REBUILD;
        if fatal.is_none() && !wedged && !refused {
            return;
        }
        match &fatal {
            Some((code, reason)) => tracing::error!(?code, %reason,
                "the forwarding producer hit a fatal error; rebuilding it"),
            None if wedged => tracing::error!(after = ?self.wedged_after,
                "the forwarding producer reported no delivery in time; rebuilding it"),
            None => tracing::error!(
                sends = refusals,
                "the broker keeps refusing the forwarding producer's id, epoch or sequence; \
                 rebuilding it"
            ),
        }
        self.refused_sends.store(0, Ordering::Relaxed);
        match self.producer.rebuild() {
            Ok(old) => {
                self.rebuilds.inc();
                self.healthy.set(true);
                // Dropping a producer blocks while it winds down.
                let _ = tokio::task::spawn_blocking(move || drop(old)).await;
            }
            Err(e) => {
                self.healthy.set(false);
                tracing::error!(error = %e,
                    "could not rebuild the forwarding producer; trying again after the next failure");
            }
        }
    }
}
