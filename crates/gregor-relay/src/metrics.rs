//! Prometheus metrics of one relay process.

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// The relay's metrics, registered in their own registry.
#[derive(Debug, Clone)]
pub struct RelayMetrics {
    registry: Registry,
    pub(crate) published: IntCounter,
    pub(crate) failures: IntCounterVec,
    pub(crate) parked_now: IntCounter,
    pub(crate) backlog: IntGauge,
    pub(crate) parked: IntGauge,
    pub(crate) oldest_age: Gauge,
    pub(crate) latency: Histogram,
    pub(crate) leases: IntGauge,
    pub(crate) producer_rebuilds: IntCounter,
}

impl RelayMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let published = IntCounter::new(
            "gregor_relay_published_total",
            "Outbox rows acknowledged by the broker and deleted",
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "gregor_relay_publish_failures_total",
                "Failed publish attempts by kind",
            ),
            &["kind"],
        )?;
        let parked_now = IntCounter::new(
            "gregor_relay_parked_total",
            "Rows this relay parked after repeated failures",
        )?;
        let backlog = IntGauge::new(
            "gregor_outbox_backlog",
            "Outbox rows waiting to be published (whole table)",
        )?;
        let parked = IntGauge::new("gregor_outbox_parked", "Parked outbox rows (whole table)")?;
        let oldest_age = Gauge::new(
            "gregor_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row",
        )?;
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "gregor_relay_publish_latency_seconds",
                "Enqueue to broker acknowledgement",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )?;
        let leases = IntGauge::new(
            "gregor_relay_leases_held",
            "Shard leases held by this relay",
        )?;
        registry.register(Box::new(published.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(parked_now.clone()))?;
        registry.register(Box::new(backlog.clone()))?;
        registry.register(Box::new(parked.clone()))?;
        registry.register(Box::new(oldest_age.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        let producer_rebuilds = IntCounter::new(
            "gregor_relay_producer_rebuilds_total",
            "Producers replaced after a fatal librdkafka error or missing delivery reports",
        )?;
        registry.register(Box::new(leases.clone()))?;
        registry.register(Box::new(producer_rebuilds.clone()))?;
        Ok(Self {
            registry,
            published,
            failures,
            parked_now,
            backlog,
            parked,
            oldest_age,
            latency,
            leases,
            producer_rebuilds,
        })
    }

    /// The registry, for a `/metrics` endpoint.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        gregor_telemetry::health::render(&self.registry)
    }
}
