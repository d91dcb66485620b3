use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

/// The consumer's Prometheus metrics.
#[derive(Debug, Clone)]
pub struct ConsumerMetrics {
    registry: Registry,
    pub(crate) messages: IntCounterVec,
    pub(crate) failures: IntCounterVec,
    pub(crate) handle_seconds: Histogram,
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
        let handle_seconds = Histogram::with_opts(HistogramOpts::new(
            "gregor_consumer_handle_seconds",
            "Time from taking a message to finishing it (handled, duplicate or forwarded)",
        ))?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(handle_seconds.clone()))?;
        Ok(Self {
            registry,
            messages,
            failures,
            handle_seconds,
        })
    }

    /// The registry, for a `/metrics` endpoint.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Totals since start.
    pub fn stats(&self) -> ConsumerStats {
        let mut stats = ConsumerStats::default();
        for family in self.registry.gather() {
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
