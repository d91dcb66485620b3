use prometheus::core::Collector as _;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The consumer's Prometheus metrics.
#[derive(Debug, Clone)]
pub struct ConsumerMetrics {
    registry: Registry,
    pub(crate) consumed: IntCounterVec,
    pub(crate) messages: IntCounterVec,
    pub(crate) failures: IntCounterVec,
    pub(crate) dead_lettered: IntCounterVec,
    pub(crate) handle_seconds: HistogramVec,
    pub(crate) lag: IntGaugeVec,
    pub(crate) in_flight: IntGauge,
    pub(crate) paused_partitions: IntGauge,
    pub(crate) assigned_partitions: IntGauge,
    pub(crate) dlq_depth: IntGaugeVec,
    pub(crate) suspect_headers: IntCounterVec,
    pub(crate) forward_failures: IntCounterVec,
    pub(crate) producer_rebuilds: IntCounter,
}

/// Message totals since start, summed over topics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Handled successfully.
    pub handled: u64,
    /// Skipped by the dedupe inbox.
    pub duplicates: u64,
    /// Forwarded to a retry tier.
    pub retried: u64,
    /// Forwarded to the dead-letter topic.
    pub dead_lettered: u64,
    /// Failed attempts, whatever happened next.
    pub failed_attempts: u64,
}

/// The series a routed topic's every message touches, resolved once so that the per-message
/// path hashes no label values.
#[derive(Debug, Clone)]
pub(crate) struct TopicMetrics {
    /// `gregor_consumer_messages_total{outcome="handled"}`.
    pub(crate) handled: prometheus::IntCounter,
    /// `gregor_consumer_messages_total{outcome="duplicate"}`.
    pub(crate) duplicate: prometheus::IntCounter,
    /// `gregor_consumer_handle_seconds`.
    pub(crate) handle_seconds: prometheus::Histogram,
}

impl ConsumerMetrics {
    /// The per-message series of `topic`.
    pub(crate) fn topic(&self, topic: &str) -> TopicMetrics {
        TopicMetrics {
            handled: self.messages.with_label_values(&[topic, outcome::HANDLED]),
            duplicate: self
                .messages
                .with_label_values(&[topic, outcome::DUPLICATE]),
            handle_seconds: self.handle_seconds.with_label_values(&[topic]),
        }
    }
}

/// The outcome label values.
pub(crate) mod outcome {
    pub(crate) const HANDLED: &str = "handled";
    pub(crate) const DUPLICATE: &str = "duplicate";
    pub(crate) const RETRIED: &str = "retried";
    pub(crate) const DEAD_LETTERED: &str = "dead_lettered";
}

impl ConsumerMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let consumed = IntCounterVec::new(
            Opts::new(
                "gregor_consumer_consumed_total",
                "Messages received from the broker, by the topic they were read from \
                 (a main topic or one of its <topic>.retry.<n> tiers)",
            ),
            &["topic"],
        )?;
        let messages = IntCounterVec::new(
            Opts::new(
                "gregor_consumer_messages_total",
                "Messages finished, by main topic and outcome (handled, duplicate, retried, dead_lettered)",
            ),
            &["topic", "outcome"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "gregor_consumer_failed_attempts_total",
                "Failed handling attempts, by main topic and error kind",
            ),
            &["topic", "kind"],
        )?;
        let dead_lettered = IntCounterVec::new(
            Opts::new(
                "gregor_consumer_dead_lettered_total",
                "Messages forwarded to <topic>.dlq, by main topic and the error kind of the last attempt",
            ),
            &["topic", "kind"],
        )?;
        let handle_seconds = HistogramVec::new(
            HistogramOpts::new(
                "gregor_consumer_handle_seconds",
                "Time from taking a message to finishing it (handled, duplicate or forwarded), by main topic",
            ),
            &["topic"],
        )?;
        let lag = IntGaugeVec::new(
            Opts::new(
                "gregor_consumer_lag",
                "High watermark minus committed offset of each partition assigned to this \
                 consumer (from librdkafka statistics, every statistics.interval.ms)",
            ),
            &["group", "topic", "partition"],
        )?;
        let in_flight = IntGauge::new(
            "gregor_consumer_in_flight",
            "Messages taken from the broker and not finished yet (queued for a lane or being handled)",
        )?;
        let paused_partitions = IntGauge::new(
            "gregor_consumer_paused_partitions",
            "Partitions this consumer paused because their queues are full",
        )?;
        let assigned_partitions = IntGauge::new(
            "gregor_consumer_assigned_partitions",
            "Partitions currently assigned to this consumer by its group",
        )?;
        let dlq_depth = IntGaugeVec::new(
            Opts::new(
                "gregor_dlq_depth",
                "Messages in each dead-letter topic of this consumer's routes \
                 (high minus low watermark, summed over partitions)",
            ),
            &["topic"],
        )?;
        let suspect_headers = IntCounterVec::new(
            Opts::new(
                "gregor_consumer_suspect_headers_total",
                "Retry headers that no consumer could have written (a gregor-not-before beyond \
                 the tier's delay plus slack), ignored; by main topic and header",
            ),
            &["topic", "header"],
        )?;
        let forward_failures = IntCounterVec::new(
            Opts::new(
                "gregor_consumer_forward_failures_total",
                "Failed sends of retry and dead-letter copies, by kind: transient (retried), \
                 too_large (sent again smaller), unwritable (the topic refuses it; the consumer \
                 stops after a few tries), producer and wedged (the producer is rebuilt)",
            ),
            &["kind"],
        )?;
        let producer_rebuilds = IntCounter::new(
            "gregor_consumer_producer_rebuilds_total",
            "Times the forwarding producer was rebuilt (fatal, refused by the broker, or wedged)",
        )?;
        registry.register(Box::new(forward_failures.clone()))?;
        registry.register(Box::new(producer_rebuilds.clone()))?;
        registry.register(Box::new(suspect_headers.clone()))?;
        registry.register(Box::new(consumed.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(dead_lettered.clone()))?;
        registry.register(Box::new(handle_seconds.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(paused_partitions.clone()))?;
        registry.register(Box::new(assigned_partitions.clone()))?;
        registry.register(Box::new(dlq_depth.clone()))?;
        Ok(Self {
            registry,
            consumed,
            messages,
            failures,
            dead_lettered,
            handle_seconds,
            lag,
            in_flight,
            paused_partitions,
            assigned_partitions,
            dlq_depth,
            suspect_headers,
            forward_failures,
            producer_rebuilds,
        })
    }

    /// The registry, for a `/metrics` endpoint.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Totals since start.
    pub fn stats(&self) -> ConsumerStats {
        let mut stats = ConsumerStats::default();
        // Only the two counter families it reads: gathering the whole registry would also
        // copy every histogram bucket, and callers poll this often.
        let families = self
            .messages
            .collect()
            .into_iter()
            .chain(self.failures.collect());
        for family in families {
            for metric in family.get_metric() {
                // Counter values are whole numbers stored as f64.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let value = metric.get_counter().get_value() as u64;
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                };
                match family.name() {
                    "gregor_consumer_messages_total" => match label("outcome").as_deref() {
                        Some(outcome::HANDLED) => stats.handled += value,
                        Some(outcome::DUPLICATE) => stats.duplicates += value,
                        Some(outcome::RETRIED) => stats.retried += value,
                        Some(outcome::DEAD_LETTERED) => stats.dead_lettered += value,
                        _ => {}
                    },
                    "gregor_consumer_failed_attempts_total" => stats.failed_attempts += value,
                    _ => {}
                }
            }
        }
        stats
    }
}

/// A message taken from the broker and not finished yet: counted in
/// `gregor_consumer_in_flight` from creation until dropped. It travels with its message
/// (waiting queue, lane channel, lane batch), so every way a message leaves — finished,
/// abandoned, or dropped with a revoked partition's queue — uncounts it.
#[derive(Debug)]
pub(crate) struct InFlight(IntGauge);

impl InFlight {
    pub(crate) fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_returns_to_zero_however_messages_leave() {
        let metrics = ConsumerMetrics::new().unwrap();
        let gauge = &metrics.in_flight;
        let a = InFlight::new(gauge);
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(InFlight::new(gauge)).unwrap();
        tx.try_send(InFlight::new(gauge)).unwrap();
        let mut waiting = std::collections::VecDeque::from([InFlight::new(gauge)]);
        assert_eq!(gauge.get(), 4);
        // Finished in a lane.
        let taken = rx.try_recv().unwrap();
        drop(taken);
        assert_eq!(gauge.get(), 3);
        // Still queued in a channel whose lane stopped.
        drop(rx);
        assert_eq!(gauge.get(), 2);
        // A revoked partition's waiting queue.
        waiting.clear();
        drop(a);
        assert_eq!(gauge.get(), 0);
        drop(tx);
    }

    #[test]
    fn stats_ignore_the_new_families() {
        let metrics = ConsumerMetrics::new().unwrap();
        metrics.consumed.with_label_values(&["t"]).inc();
        metrics
            .messages
            .with_label_values(&["t", outcome::DEAD_LETTERED])
            .inc();
        metrics
            .dead_lettered
            .with_label_values(&["t", "permanent"])
            .inc();
        metrics
            .handle_seconds
            .with_label_values(&["t"])
            .observe(0.1);
        metrics.lag.with_label_values(&["g", "t", "0"]).set(7);
        let stats = metrics.stats();
        assert_eq!(stats.dead_lettered, 1);
        assert_eq!(stats.handled + stats.failed_attempts, 0);
    }
}
