//! A Kafka producer that can be replaced when it is beyond repair: librdkafka's *fatal* state
//! (an idempotent producer whose sequence numbers desynchronised, or whose producer id was
//! fenced) never clears, and a producer that stopped reporting deliveries at all (seen here:
//! a broker that rejects the epoch bump librdkafka performs after message timeouts) is as
//! stuck. The relay and the consumer's forwarder both hold their producer through this type,
//! detect either state after a batch, and rebuild between batches, when nothing they still
//! need is in flight.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer, PurgeConfig};

/// Whether a send failed because the broker refuses the producer itself — its id, epoch or
/// sequence numbers — or librdkafka put it in its fatal state, rather than because of the
/// record or the connection: retrying with the same producer does not help, rebuilding does.
/// `Unknown` is what nisshi answers to librdkafka's epoch bump after message timeouts.
pub fn refuses_producer(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::Fatal
            | C::Unknown
            | C::OutOfOrderSequenceNumber
            | C::DuplicateSequenceNumber
            | C::UnknownProducerId
            | C::InvalidProducerEpoch
            | C::InvalidProducerIdMapping
            | C::ProducerFenced
    )
}

/// A [`FutureProducer`] plus the configuration to build it again.
pub struct RebuildableProducer {
    config: ClientConfig,
    current: RwLock<FutureProducer>,
    rebuilds: AtomicU64,
}

impl std::fmt::Debug for RebuildableProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration may hold credentials: never print it.
        f.debug_struct("RebuildableProducer")
            .field("rebuilds", &self.rebuilds())
            .finish_non_exhaustive()
    }
}

impl RebuildableProducer {
    /// Creates the first producer from `config`.
    pub fn new(config: ClientConfig) -> Result<Self, KafkaError> {
        let producer = config.create()?;
        Ok(Self {
            config,
            current: RwLock::new(producer),
            rebuilds: AtomicU64::new(0),
        })
    }

    /// The producer in use (a cheap handle; keep it for one batch).
    pub fn current(&self) -> FutureProducer {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// librdkafka's fatal error, if the current producer is in its fatal state.
    pub fn fatal_error(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.current().client().fatal_error()
    }

    /// Replaces the producer with a new one built from the same configuration and returns the
    /// old one with its queue and in-flight requests purged (their deliveries fail with
    /// `Purged` errors): nothing it held is sent later. Drop the old producer off the async
    /// runtime (`spawn_blocking`): dropping a producer waits up to half a second.
    pub fn rebuild(&self) -> Result<FutureProducer, KafkaError> {
        let fresh: FutureProducer = self.config.create()?;
        let old = {
            let mut current = self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::replace(&mut *current, fresh)
        };
        old.purge(PurgeConfig::default().queue().inflight());
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
        Ok(old)
    }

    /// How often the producer was rebuilt.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }

    /// Flushes the current producer (shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.current().flush(timeout)
    }
}
