//! What the consumer reports beyond its counters: partition lag (from librdkafka's
//! statistics), dead-letter topic depth, and the checks behind `/readyz`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use gregor_telemetry::health::{Check, Readiness};
use prometheus::IntGaugeVec;
use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::error::KafkaResult;
use rdkafka::producer::Producer as _;
use rdkafka::statistics::{Partition, Statistics};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::forwarder::Forwarder;
use crate::offsets::PartKey;

/// How often the status task refreshes the database and broker checks.
pub(crate) const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How long one database or broker check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one metadata or watermark request of the DLQ depth task may take.
const DEPTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The lag of one partition: librdkafka's `consumer_lag` (high watermark minus committed
/// offset), or the same computed from its parts when librdkafka reports it unknown (-1).
/// `None` while either offset is unknown too (nothing fetched or committed yet).
pub(crate) fn lag_of(p: &Partition) -> Option<i64> {
    if p.consumer_lag >= 0 {
        return Some(p.consumer_lag);
    }
    (p.hi_offset >= 0 && p.committed_offset >= 0).then(|| (p.hi_offset - p.committed_offset).max(0))
}

/// The lag of every partition in `assigned` that the statistics know (librdkafka's internal
/// partition -1 and partitions of other topics are left out).
pub(crate) fn partition_lags(
    stats: &Statistics,
    assigned: &HashSet<PartKey>,
) -> Vec<(PartKey, i64)> {
    let mut out = Vec::new();
    for (name, topic) in &stats.topics {
        for (&id, partition) in &topic.partitions {
            if id < 0 {
                continue;
            }
            let key = (name.clone(), id);
            if !assigned.contains(&key) {
                continue;
            }
            if let Some(lag) = lag_of(partition) {
                out.push((key, lag));
            }
        }
    }
    out
}

/// The named checks behind the consumer's `/readyz`.
#[derive(Debug, Clone)]
pub(crate) struct Checks {
    pub(crate) readiness: Readiness,
    /// `database`: `SELECT 1` answers (only with a pool).
    pub(crate) database: Option<Check>,
    /// `broker`: a metadata request answers.
    pub(crate) broker: Check,
    /// `group`: the group assigned this member its partitions (possibly none).
    pub(crate) group: Check,
    /// `producer`: the forwarding producer works (down while a needed rebuild failed).
    pub(crate) producer: Check,
}

impl Checks {
    pub(crate) fn new(with_database: bool) -> Self {
        let mut readiness = Readiness::default();
        let database = with_database.then(|| readiness.check("database"));
        let broker = readiness.check("broker");
        let group = readiness.check("group");
        let producer = readiness.check("producer");
        Self {
            readiness,
            database,
            broker,
            group,
            producer,
        }
    }
}

/// Refreshes the database and broker checks every [`STATUS_INTERVAL`] until `cancel`.
/// `probe_topic` is one of the consumer's topics: asking for its metadata only keeps the
/// request small on a large cluster.
pub(crate) async fn status_task(
    pool: Option<PgPool>,
    forwarder: Arc<Forwarder>,
    probe_topic: String,
    checks: Checks,
    cancel: CancellationToken,
) {
    let probe_topic: Arc<str> = Arc::from(probe_topic);
    loop {
        let round = async {
            if let (Some(pool), Some(check)) = (&pool, &checks.database) {
                let ok = tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(pool))
                    .await
                    .is_ok_and(|r| r.is_ok());
                check.set(ok);
            }
            let producer = forwarder.producer();
            let topic = probe_topic.clone();
            let reachable = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(Some(&topic), CHECK_TIMEOUT)
                    .is_ok()
            })
            .await
            .unwrap_or(false);
            checks.broker.set(reachable);
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = round => {}
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(STATUS_INTERVAL) => {}
        }
    }
}

/// Refreshes `gregor_dlq_depth{topic}` for each dead-letter topic every `every` until
/// `cancel`. A missing topic leaves its series unset; a failed request keeps the last value.
pub(crate) async fn dlq_depth_task(
    forwarder: Arc<Forwarder>,
    topics: Vec<String>,
    gauge: IntGaugeVec,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        for topic in &topics {
            let producer = forwarder.producer();
            let name = topic.clone();
            let depth = tokio::task::spawn_blocking(move || {
                topic_depth(producer.client(), &name, DEPTH_TIMEOUT)
            });
            let depth = tokio::select! {
                () = cancel.cancelled() => return,
                d = depth => d,
            };
            match depth {
                Ok(Ok(Some(depth))) => gauge.with_label_values(&[topic.as_str()]).set(depth),
                Ok(Ok(None)) => {
                    tracing::debug!(%topic, "dead-letter topic missing; its depth is not reported");
                    let _ = gauge.remove_label_values(&[topic.as_str()]);
                }
                Ok(Err(e)) => {
                    tracing::debug!(%topic, error = %e, "dead-letter depth not refreshed")
                }
                Err(e) => tracing::debug!(%topic, error = %e, "dead-letter depth task failed"),
            }
        }
    }
}

/// Messages in `topic`: the sum over its partitions of high minus low watermark. `None`
/// when the topic does not exist.
fn topic_depth<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<Option<i64>> {
    let metadata = client.fetch_metadata(Some(topic), timeout)?;
    let Some(found) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    else {
        return Ok(None);
    };
    let mut depth = 0;
    for partition in found.partitions() {
        let (low, high) = client.fetch_watermarks(topic, partition.id(), timeout)?;
        depth += (high - low).max(0);
    }
    Ok(Some(depth))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(id: i32, consumer_lag: i64, hi: i64, committed: i64) -> Partition {
        Partition {
            partition: id,
            consumer_lag,
            hi_offset: hi,
            committed_offset: committed,
            fetch_state: "active".to_owned(),
            ..Partition::default()
        }
    }

    /// Statistics as librdkafka would send them: a JSON document.
    fn stats(topics: &[(&str, Vec<Partition>)]) -> Statistics {
        let mut value = serde_json::to_value(Statistics::default()).unwrap();
        for (name, partitions) in topics {
            let mut topic = serde_json::to_value(rdkafka::statistics::Topic {
                topic: (*name).to_owned(),
                ..Default::default()
            })
            .unwrap();
            for p in partitions {
                topic["partitions"][p.partition.to_string()] = serde_json::to_value(p).unwrap();
            }
            value["topics"][*name] = topic;
        }
        serde_json::from_value(value).unwrap()
    }

    fn key(topic: &str, partition: i32) -> PartKey {
        (topic.to_owned(), partition)
    }

    #[test]
    fn lag_prefers_librdkafka_and_falls_back_to_the_offsets() {
        assert_eq!(lag_of(&partition(0, 7, 100, 90)), Some(7));
        assert_eq!(lag_of(&partition(0, -1, 100, 90)), Some(10));
        assert_eq!(
            lag_of(&partition(0, -1, 100, -1)),
            None,
            "nothing committed yet"
        );
        assert_eq!(
            lag_of(&partition(0, -1, -1, 5)),
            None,
            "nothing fetched yet"
        );
        assert_eq!(lag_of(&partition(0, -1, 5, 9)), Some(0), "never negative");
    }

    #[test]
    fn only_assigned_real_partitions_report_lag() {
        let stats = stats(&[
            (
                "orders",
                vec![
                    partition(-1, -1, -1, -1),
                    partition(0, 3, 10, 7),
                    partition(1, -1, 20, 20),
                    partition(2, 9, 9, 0),
                ],
            ),
            ("other", vec![partition(0, 5, 5, 0)]),
        ]);
        let assigned: HashSet<PartKey> = [key("orders", 0), key("orders", 1), key("orders", -1)]
            .into_iter()
            .collect();
        let mut lags = partition_lags(&stats, &assigned);
        lags.sort();
        assert_eq!(lags, vec![(key("orders", 0), 3), (key("orders", 1), 0)]);
        assert!(partition_lags(&stats, &HashSet::new()).is_empty());
    }

    #[test]
    fn readiness_has_a_database_check_only_with_a_pool() {
        let with = Checks::new(true);
        with.database.as_ref().unwrap().set(true);
        with.broker.set(true);
        with.group.set(true);
        assert!(!with.readiness.is_ready(), "the producer is not up yet");
        with.producer.set(true);
        assert!(with.readiness.is_ready());
        assert_eq!(
            with.readiness.report(),
            "database: up\nbroker: up\ngroup: up\nproducer: up\n"
        );
        let without = Checks::new(false);
        assert!(without.database.is_none());
        without.broker.set(true);
        assert!(!without.readiness.is_ready(), "no assignment yet");
        without.group.set(true);
        without.producer.set(true);
        assert_eq!(
            without.readiness.report(),
            "broker: up\ngroup: up\nproducer: up\n"
        );
    }
}
