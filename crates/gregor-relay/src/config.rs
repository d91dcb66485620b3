use std::net::SocketAddr;
use std::time::Duration;

use gregor_config::{ConfigError, DatabaseUrl, Env, KafkaSettings};

/// Relay settings. [`RelayConfig::from_env`] reads them from the variables in the README's
/// table; every field has a documented default except the database and broker addresses.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `DATABASE_URL`: the database holding `gregor_outbox`.
    pub database_url: DatabaseUrl,
    /// `KAFKA_BOOTSTRAP_SERVERS` plus every `KAFKA_*` pass-through property.
    pub kafka: KafkaSettings,
    /// `GREGOR_RELAY_NAME`: shown in logs and in `gregor_relay_members`.
    pub name: String,
    /// `GREGOR_RELAY_BATCH_SIZE`: rows claimed and published per round trip.
    pub batch_size: u32,
    /// `GREGOR_RELAY_POLL_INTERVAL_MS`: fallback poll when no notification arrives.
    pub poll_interval: Duration,
    /// `GREGOR_RELAY_PASS_INTERVAL_MS`: how soon rows left behind (failed, or skipped behind a
    /// failed row of their key) are retried: the scan then restarts from the oldest of them.
    pub pass_interval: Duration,
    /// `GREGOR_RELAY_LEASE_TTL_MS`: how long a shard lease lasts without renewal.
    pub lease_ttl: Duration,
    /// `GREGOR_RELAY_MAX_ATTEMPTS`: failed publish attempts (permanent errors) before a row
    /// is parked.
    pub max_attempts: i32,
    /// `GREGOR_RELAY_HTTP_ADDR`: `/healthz`, `/readyz`, `/metrics`; `off` disables.
    pub http_addr: Option<SocketAddr>,
    /// `GREGOR_RELAY_SHUTDOWN_TIMEOUT_MS`: how long in-flight publishes may take at shutdown.
    pub shutdown_timeout: Duration,
    /// `GREGOR_RELAY_DB_POOL_SIZE`: PostgreSQL connections (plus one for LISTEN).
    pub db_pool_size: u32,
}

impl RelayConfig {
    /// Defaults around the two required addresses.
    pub fn new(database_url: DatabaseUrl, kafka: KafkaSettings) -> Self {
        Self {
            database_url,
            kafka,
            name: default_name(),
            batch_size: 1000,
            poll_interval: Duration::from_millis(500),
            pass_interval: Duration::from_millis(1000),
            lease_ttl: Duration::from_secs(10),
            max_attempts: 5,
            http_addr: Some(SocketAddr::from(([0, 0, 0, 0], 9464))),
            shutdown_timeout: Duration::from_secs(10),
            db_pool_size: 4,
        }
    }

    /// Reads and validates the configuration; errors name the variable at fault.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let database_url = DatabaseUrl::parse("DATABASE_URL", env.require("DATABASE_URL")?)?;
        let kafka = KafkaSettings::from_env(env)?;
        let mut config = Self::new(database_url, kafka);
        if let Some(name) = env.get("GREGOR_RELAY_NAME") {
            config.name = name.to_owned();
        }
        config.batch_size = env.parse_or("GREGOR_RELAY_BATCH_SIZE", config.batch_size)?;
        config.poll_interval =
            env.millis_or("GREGOR_RELAY_POLL_INTERVAL_MS", config.poll_interval)?;
        config.pass_interval =
            env.millis_or("GREGOR_RELAY_PASS_INTERVAL_MS", config.pass_interval)?;
        config.lease_ttl = env.millis_or("GREGOR_RELAY_LEASE_TTL_MS", config.lease_ttl)?;
        config.max_attempts = env.parse_or("GREGOR_RELAY_MAX_ATTEMPTS", config.max_attempts)?;
        config.shutdown_timeout =
            env.millis_or("GREGOR_RELAY_SHUTDOWN_TIMEOUT_MS", config.shutdown_timeout)?;
        config.db_pool_size = env.parse_or("GREGOR_RELAY_DB_POOL_SIZE", config.db_pool_size)?;
        config.http_addr = match env.get("GREGOR_RELAY_HTTP_ADDR") {
            None => config.http_addr,
            Some(v) if v.eq_ignore_ascii_case("off") => None,
            Some(v) => Some(v.trim().parse().map_err(|e| {
                ConfigError::invalid(
                    "GREGOR_RELAY_HTTP_ADDR",
                    format!("{e} (expected host:port or off)"),
                )
            })?),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and refuses settings that would break the delivery promises.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(ConfigError::invalid(
                "GREGOR_RELAY_BATCH_SIZE",
                "must be 1 to 10000",
            ));
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "GREGOR_RELAY_LEASE_TTL_MS",
                "must be at least 1000",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::invalid(
                "GREGOR_RELAY_POLL_INTERVAL_MS",
                "must be above 0",
            ));
        }
        if self.pass_interval.is_zero() {
            return Err(ConfigError::invalid(
                "GREGOR_RELAY_PASS_INTERVAL_MS",
                "must be above 0",
            ));
        }
        if self.max_attempts < 1 {
            return Err(ConfigError::invalid(
                "GREGOR_RELAY_MAX_ATTEMPTS",
                "must be at least 1",
            ));
        }
        if self.db_pool_size < 2 {
            return Err(ConfigError::invalid(
                "GREGOR_RELAY_DB_POOL_SIZE",
                "must be at least 2",
            ));
        }
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid(
                "GREGOR_RELAY_NAME",
                "must not be empty",
            ));
        }
        // Per-key order and no duplicates from retries need the idempotent producer and
        // acknowledgement by all in-sync replicas.
        let refuse = |property: &str, why: &str| {
            let var = self
                .kafka
                .source_of(property)
                .unwrap_or(property)
                .to_owned();
            ConfigError::invalid(var, why.to_owned())
        };
        if self
            .kafka
            .property("enable.idempotence")
            .is_some_and(|v| !v.trim().eq_ignore_ascii_case("true"))
        {
            return Err(refuse(
                "enable.idempotence",
                "the relay requires the idempotent producer (per-key order after retries); \
                 remove the variable or set it to true",
            ));
        }
        for property in ["acks", "request.required.acks"] {
            if self
                .kafka
                .property(property)
                .is_some_and(|v| !matches!(v.trim(), "all" | "-1"))
            {
                return Err(refuse(
                    property,
                    "the relay requires acks=all (no loss on broker failover)",
                ));
            }
        }
        // The per-record fence (ADR 0002): a record may reach the broker until the producer
        // gives up on it, so that time must fit well inside a lease.
        let bound = self.delivery_bound_ms()?;
        let limit = self.max_delivery_bound_ms();
        for property in [
            "message.timeout.ms",
            "delivery.timeout.ms",
            "request.timeout.ms",
        ] {
            if let Some(v) = self.kafka.property(property) {
                let ms: u64 = v
                    .trim()
                    .parse()
                    .map_err(|_| refuse(property, "must be a whole number of milliseconds"))?;
                if ms > limit || ms == 0 {
                    return Err(refuse(
                        property,
                        &format!(
                            "must be 1 to {limit} ms: 40% of GREGOR_RELAY_LEASE_TTL_MS, so that \
                             a record handed to the producer is delivered or failed before the \
                             shard's lease can pass to another relay (raise the lease ttl for a \
                             longer delivery timeout)"
                        ),
                    ));
                }
            }
        }
        if bound > limit {
            return Err(refuse("message.timeout.ms", "exceeds the lease bound"));
        }
        if self.kafka.property("transactional.id").is_some() {
            return Err(refuse(
                "transactional.id",
                "the relay does not use Kafka transactions",
            ));
        }
        Ok(())
    }
}

impl RelayConfig {
    /// The longest a record handed to the producer can take to be acknowledged or failed
    /// (`message.timeout.ms`, which the relay also uses as `request.timeout.ms`): 30 % of the
    /// lease ttl unless `KAFKA_MESSAGE_TIMEOUT_MS` says otherwise (at most 40 %).
    pub fn delivery_bound(&self) -> Duration {
        Duration::from_millis(
            self.delivery_bound_ms()
                .unwrap_or_else(|_| self.max_delivery_bound_ms()),
        )
    }

    fn max_delivery_bound_ms(&self) -> u64 {
        u64::try_from(self.lease_ttl.as_millis() * 2 / 5).unwrap_or(u64::MAX)
    }

    fn default_delivery_bound_ms(&self) -> u64 {
        u64::try_from(self.lease_ttl.as_millis() * 3 / 10).unwrap_or(u64::MAX)
    }

    /// The explicit delivery timeout, the larger one if both aliases are set (librdkafka keeps
    /// whichever it applied last; the fence must assume the longer).
    fn delivery_bound_ms(&self) -> Result<u64, ConfigError> {
        let mut bound: Option<u64> = None;
        for property in ["message.timeout.ms", "delivery.timeout.ms"] {
            if let Some(v) = self.kafka.property(property) {
                let ms: u64 = v.trim().parse().map_err(|_| {
                    ConfigError::invalid(
                        self.kafka
                            .source_of(property)
                            .unwrap_or(property)
                            .to_owned(),
                        "must be a whole number of milliseconds",
                    )
                })?;
                bound = Some(bound.map_or(ms, |b| b.max(ms)));
            }
        }
        Ok(bound.unwrap_or_else(|| self.default_delivery_bound_ms()))
    }
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "relay".to_owned()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Env {
        Env::from_pairs([
            ("DATABASE_URL", "postgres://u:pw@127.0.0.1/db"),
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        ])
    }

    fn err_var(env: Env) -> String {
        RelayConfig::from_env(&env).unwrap_err().var().to_owned()
    }

    #[test]
    fn defaults_are_valid() {
        let config = RelayConfig::from_env(&base()).unwrap();
        assert_eq!(config.batch_size, 1000);
        assert_eq!(
            config.http_addr,
            Some(SocketAddr::from(([0, 0, 0, 0], 9464)))
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert_eq!(
            err_var(Env::default().with("KAFKA_BOOTSTRAP_SERVERS", "a:1")),
            "DATABASE_URL"
        );
        assert_eq!(
            err_var(base().with("KAFKA_BOOTSTRAP_SERVERS", "nope")),
            "KAFKA_BOOTSTRAP_SERVERS"
        );
        assert_eq!(
            err_var(base().with("KAFKA_ENABLE_IDEMPOTENCE", "false")),
            "KAFKA_ENABLE_IDEMPOTENCE"
        );
        assert_eq!(err_var(base().with("KAFKA_ACKS", "1")), "KAFKA_ACKS");
        assert_eq!(
            err_var(base().with("GREGOR_RELAY_BATCH_SIZE", "0")),
            "GREGOR_RELAY_BATCH_SIZE"
        );
        assert_eq!(
            err_var(base().with("GREGOR_RELAY_LEASE_TTL_MS", "10")),
            "GREGOR_RELAY_LEASE_TTL_MS"
        );
        assert_eq!(
            err_var(base().with("GREGOR_RELAY_HTTP_ADDR", "x")),
            "GREGOR_RELAY_HTTP_ADDR"
        );
        assert_eq!(
            err_var(base().with("KAFKA_TRANSACTIONAL_ID", "x")),
            "KAFKA_TRANSACTIONAL_ID"
        );
    }

    #[test]
    fn http_can_be_turned_off_and_idempotence_true_is_fine() {
        let env = base()
            .with("GREGOR_RELAY_HTTP_ADDR", "off")
            .with("KAFKA_ENABLE_IDEMPOTENCE", "true");
        assert!(RelayConfig::from_env(&env).unwrap().http_addr.is_none());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let env = Env::from_pairs([
            ("DATABASE_URL", "postgres://u:canary-db@127.0.0.1/db"),
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            ("KAFKA_SASL_PASSWORD", "canary-kafka"),
        ]);
        let shown = format!("{:?}", RelayConfig::from_env(&env).unwrap());
        assert!(!shown.contains("canary"), "{shown}");
    }
}
