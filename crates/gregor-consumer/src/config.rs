use std::net::SocketAddr;
use std::time::Duration;

use gregor_config::{ConfigError, DatabaseUrl, Env, KafkaSettings};

/// How a failing message is retried before it is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts on the main topic before the first retry tier (at least 1).
    pub in_place_attempts: u32,
    /// Backoff after the first failed in-place attempt; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// Longest in-place backoff.
    pub max_backoff: Duration,
    /// Delay of each retry tier `<topic>.retry.<n>`, in order; empty = straight to the DLQ.
    pub tiers: Vec<Duration>,
    /// How far a retry copy's `gregor-not-before` may lie beyond `now + the tier's delay`
    /// (clock skew between consumers) before it is taken for forged and handled at once.
    pub due_slack: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            in_place_attempts: 3,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            tiers: vec![
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60),
            ],
            due_slack: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The in-place backoff after failed attempt `attempt` (1-based).
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Consumer settings. [`ConsumerConfig::from_env`] reads the variables in the README's table.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `KAFKA_BOOTSTRAP_SERVERS` plus every `KAFKA_*` pass-through property.
    pub kafka: KafkaSettings,
    /// `GREGOR_CONSUMER_GROUP` (required): the consumer group id, also the dedupe scope.
    pub group: String,
    /// `DATABASE_URL`: where the dedupe inbox lives; without it handlers get no transaction.
    pub database_url: Option<DatabaseUrl>,
    /// `GREGOR_CONSUMER_IN_PLACE_ATTEMPTS`, `GREGOR_CONSUMER_BACKOFF_MS`,
    /// `GREGOR_CONSUMER_MAX_BACKOFF_MS`, `GREGOR_CONSUMER_RETRY_TIERS` (`1s,10s,1m`; `none`),
    /// `GREGOR_CONSUMER_RETRY_DUE_SLACK_MS`.
    pub retry: RetryPolicy,
    /// `GREGOR_CONSUMER_KEY_CONCURRENCY`: handlers running at once per partition, each key
    /// on one lane (1 = strict partition order).
    pub key_concurrency: usize,
    /// `GREGOR_CONSUMER_QUEUE_CAPACITY`: messages buffered per partition before it is paused.
    pub queue_capacity: usize,
    /// `GREGOR_CONSUMER_COMMIT_INTERVAL_MS`: how often handled offsets are committed.
    pub commit_interval: Duration,
    /// `GREGOR_CONSUMER_SHUTDOWN_TIMEOUT_MS`: how long running handlers may take to finish
    /// at shutdown or when their partition is revoked.
    pub shutdown_timeout: Duration,
    /// `GREGOR_CONSUMER_DEDUPE_RETENTION_HOURS`: how long dedupe rows are kept (must exceed
    /// the redelivery window).
    pub dedupe_retention: Duration,
    /// `GREGOR_CONSUMER_DEDUPE_CLEANUP_INTERVAL_MS`: how often expired dedupe rows are removed.
    pub dedupe_cleanup_interval: Duration,
    /// `GREGOR_CONSUMER_DB_POOL_SIZE`: PostgreSQL connections for handlers and dedupe.
    pub db_pool_size: u32,
    /// `GREGOR_CONSUMER_HTTP_ADDR`: where [`Consumer::run`](crate::Consumer::run) serves
    /// `/healthz`, `/readyz` and `/metrics`; `None` (`off`, the default: the consumer is
    /// embedded in services, several of which may share a host) serves nothing.
    pub http_addr: Option<SocketAddr>,
    /// `GREGOR_CONSUMER_DLQ_DEPTH_INTERVAL_MS`: how often `gregor_dlq_depth` is refreshed
    /// from the dead-letter topics' watermarks; zero disables it.
    pub dlq_depth_interval: Duration,
}

impl ConsumerConfig {
    /// Defaults around the broker and the group.
    pub fn new(kafka: KafkaSettings, group: impl Into<String>) -> Self {
        Self {
            kafka,
            group: group.into(),
            database_url: None,
            retry: RetryPolicy::default(),
            key_concurrency: 1,
            queue_capacity: 1000,
            commit_interval: Duration::from_millis(1000),
            shutdown_timeout: Duration::from_secs(10),
            dedupe_retention: Duration::from_secs(7 * 24 * 3600),
            dedupe_cleanup_interval: Duration::from_secs(3600),
            db_pool_size: 8,
            http_addr: None,
            dlq_depth_interval: Duration::from_secs(30),
        }
    }

    /// Reads and validates the configuration; errors name the variable at fault.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let kafka = KafkaSettings::from_env(env)?;
        let group = env.require("GREGOR_CONSUMER_GROUP")?.trim().to_owned();
        let mut config = Self::new(kafka, group);
        config.database_url = env
            .get("DATABASE_URL")
            .map(|url| DatabaseUrl::parse("DATABASE_URL", url))
            .transpose()?;
        let retry = &mut config.retry;
        retry.in_place_attempts =
            env.parse_or("GREGOR_CONSUMER_IN_PLACE_ATTEMPTS", retry.in_place_attempts)?;
        retry.backoff = env.millis_or("GREGOR_CONSUMER_BACKOFF_MS", retry.backoff)?;
        retry.max_backoff = env.millis_or("GREGOR_CONSUMER_MAX_BACKOFF_MS", retry.max_backoff)?;
        if let Some(raw) = env.get("GREGOR_CONSUMER_RETRY_TIERS") {
            retry.tiers = parse_tiers(raw)
                .map_err(|why| ConfigError::invalid("GREGOR_CONSUMER_RETRY_TIERS", why))?;
        }
        retry.due_slack = env.millis_or("GREGOR_CONSUMER_RETRY_DUE_SLACK_MS", retry.due_slack)?;
        config.key_concurrency =
            env.parse_or("GREGOR_CONSUMER_KEY_CONCURRENCY", config.key_concurrency)?;
        config.queue_capacity =
            env.parse_or("GREGOR_CONSUMER_QUEUE_CAPACITY", config.queue_capacity)?;
        config.commit_interval =
            env.millis_or("GREGOR_CONSUMER_COMMIT_INTERVAL_MS", config.commit_interval)?;
        config.shutdown_timeout = env.millis_or(
            "GREGOR_CONSUMER_SHUTDOWN_TIMEOUT_MS",
            config.shutdown_timeout,
        )?;
        let hours: u64 = env.parse_or(
            "GREGOR_CONSUMER_DEDUPE_RETENTION_HOURS",
            config.dedupe_retention.as_secs() / 3600,
        )?;
        config.dedupe_retention = Duration::from_secs(hours.saturating_mul(3600));
        config.dedupe_cleanup_interval = env.millis_or(
            "GREGOR_CONSUMER_DEDUPE_CLEANUP_INTERVAL_MS",
            config.dedupe_cleanup_interval,
        )?;
        config.db_pool_size = env.parse_or("GREGOR_CONSUMER_DB_POOL_SIZE", config.db_pool_size)?;
        config.http_addr = match env.get("GREGOR_CONSUMER_HTTP_ADDR") {
            None => config.http_addr,
            Some(v) if v.trim().eq_ignore_ascii_case("off") => None,
            Some(v) => Some(v.trim().parse().map_err(|e| {
                ConfigError::invalid(
                    "GREGOR_CONSUMER_HTTP_ADDR",
                    format!("{e} (expected host:port, e.g. 0.0.0.0:9465, or off)"),
                )
            })?),
        };
        config.dlq_depth_interval = env.millis_or(
            "GREGOR_CONSUMER_DLQ_DEPTH_INTERVAL_MS",
            config.dlq_depth_interval,
        )?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and refuses settings that would break the delivery promises.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |var: &str, why: &str| Err(ConfigError::invalid(var, why.to_owned()));
        if self.group.is_empty() {
            return invalid("GREGOR_CONSUMER_GROUP", "must not be empty");
        }
        if self.retry.in_place_attempts == 0 {
            return invalid("GREGOR_CONSUMER_IN_PLACE_ATTEMPTS", "must be at least 1");
        }
        if self.retry.max_backoff < self.retry.backoff {
            return invalid(
                "GREGOR_CONSUMER_MAX_BACKOFF_MS",
                "must not be below GREGOR_CONSUMER_BACKOFF_MS",
            );
        }
        if self.retry.tiers.len() > 20 {
            return invalid("GREGOR_CONSUMER_RETRY_TIERS", "at most 20 tiers");
        }
        if self
            .retry
            .tiers
            .iter()
            .any(|d| *d > Duration::from_secs(7 * 24 * 3600))
        {
            return invalid(
                "GREGOR_CONSUMER_RETRY_TIERS",
                "a retry delay must be at most 7 days",
            );
        }
        if !(1..=256).contains(&self.key_concurrency) {
            return invalid("GREGOR_CONSUMER_KEY_CONCURRENCY", "must be 1 to 256");
        }
        if !(1..=100_000).contains(&self.queue_capacity) {
            return invalid("GREGOR_CONSUMER_QUEUE_CAPACITY", "must be 1 to 100000");
        }
        if self.commit_interval.is_zero() {
            return invalid("GREGOR_CONSUMER_COMMIT_INTERVAL_MS", "must be above 0");
        }
        if self.dedupe_retention < Duration::from_secs(3600) {
            return invalid(
                "GREGOR_CONSUMER_DEDUPE_RETENTION_HOURS",
                "must be at least 1 (rows must outlive the redelivery window)",
            );
        }
        if self.dedupe_cleanup_interval.is_zero() {
            return invalid(
                "GREGOR_CONSUMER_DEDUPE_CLEANUP_INTERVAL_MS",
                "must be above 0",
            );
        }
        if self.db_pool_size == 0 {
            return invalid("GREGOR_CONSUMER_DB_POOL_SIZE", "must be at least 1");
        }
        if !self.dlq_depth_interval.is_zero()
            && self.dlq_depth_interval < Duration::from_millis(100)
        {
            return invalid(
                "GREGOR_CONSUMER_DLQ_DEPTH_INTERVAL_MS",
                "must be 0 (off) or at least 100",
            );
        }
        // Offsets are ours to commit, after handling (P6); auto-commit would run ahead.
        for (property, safe) in [
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
        ] {
            if let Some(v) = self.kafka.property(property)
                && !v.trim().eq_ignore_ascii_case(safe)
            {
                let var = self
                    .kafka
                    .source_of(property)
                    .unwrap_or(property)
                    .to_owned();
                return Err(ConfigError::invalid(
                    var,
                    format!(
                        "the consumer commits offsets itself after handling; remove the \
                         variable or set it to {safe}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Parses `1s,10s,1m` (units ms, s, m, h; a bare number is milliseconds); `none` = no tiers.
pub fn parse_tiers(raw: &str) -> Result<Vec<Duration>, String> {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    raw.split(',')
        .map(|part| parse_duration(part.trim()))
        .collect()
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 10s, 5m or 1h"))?;
    let millis = match unit {
        "" | "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(format!("{text:?} has an unknown unit (use ms, s, m or h)")),
    };
    if millis == 0 {
        return Err(format!("{text:?}: a retry delay must be above zero"));
    }
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env::from_pairs([
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            ("GREGOR_CONSUMER_GROUP", "shipping"),
        ])
    }

    #[test]
    fn defaults_are_valid() {
        let config = ConsumerConfig::from_env(&env()).unwrap();
        assert_eq!(config.group, "shipping");
        assert_eq!(config.retry.tiers.len(), 3);
    }

    #[test]
    fn tiers_parse_with_units() {
        let tiers = parse_tiers("500ms, 2s,1m,1h,250").unwrap();
        assert_eq!(
            tiers,
            [500, 2000, 60_000, 3_600_000, 250].map(Duration::from_millis)
        );
        assert!(parse_tiers("none").unwrap().is_empty());
    }

    #[test]
    fn malformed_tiers_name_the_variable() {
        for bad in ["1x", "abc", "1s,,2s", "0s", "200h", ""] {
            let err = ConsumerConfig::from_env(&env().with("GREGOR_CONSUMER_RETRY_TIERS", bad));
            if bad.is_empty() {
                assert!(err.is_ok(), "empty means unset");
                continue;
            }
            let err = err.unwrap_err();
            assert_eq!(err.var(), "GREGOR_CONSUMER_RETRY_TIERS", "{bad}: {err}");
        }
    }

    #[test]
    fn missing_group_is_named() {
        let env = Env::from_pairs([("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")]);
        let err = ConsumerConfig::from_env(&env).unwrap_err();
        assert_eq!(err.var(), "GREGOR_CONSUMER_GROUP");
    }

    #[test]
    fn auto_commit_is_refused() {
        let err =
            ConsumerConfig::from_env(&env().with("KAFKA_ENABLE_AUTO_COMMIT", "true")).unwrap_err();
        assert_eq!(err.var(), "KAFKA_ENABLE_AUTO_COMMIT");
    }

    #[test]
    fn http_addr_is_off_by_default_and_parsed() {
        let config = ConsumerConfig::from_env(&env()).unwrap();
        assert_eq!(config.http_addr, None);
        assert_eq!(config.dlq_depth_interval, Duration::from_secs(30));
        let config =
            ConsumerConfig::from_env(&env().with("GREGOR_CONSUMER_HTTP_ADDR", " 127.0.0.1:9465 "))
                .unwrap();
        assert_eq!(
            config.http_addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 9465)))
        );
        let config =
            ConsumerConfig::from_env(&env().with("GREGOR_CONSUMER_HTTP_ADDR", "OFF")).unwrap();
        assert_eq!(config.http_addr, None);
        for bad in ["9465", "localhost", "1.2.3.4:99999"] {
            let err = ConsumerConfig::from_env(&env().with("GREGOR_CONSUMER_HTTP_ADDR", bad))
                .unwrap_err();
            assert_eq!(err.var(), "GREGOR_CONSUMER_HTTP_ADDR", "{bad}: {err}");
        }
    }

    #[test]
    fn dlq_depth_interval_zero_disables_and_bad_values_are_named() {
        let config =
            ConsumerConfig::from_env(&env().with("GREGOR_CONSUMER_DLQ_DEPTH_INTERVAL_MS", "0"))
                .unwrap();
        assert!(config.dlq_depth_interval.is_zero());
        for bad in ["soon", "-1", "50"] {
            let err =
                ConsumerConfig::from_env(&env().with("GREGOR_CONSUMER_DLQ_DEPTH_INTERVAL_MS", bad))
                    .unwrap_err();
            assert_eq!(
                err.var(),
                "GREGOR_CONSUMER_DLQ_DEPTH_INTERVAL_MS",
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_after(1), Duration::from_millis(200));
        assert_eq!(p.backoff_after(2), Duration::from_millis(400));
        assert_eq!(p.backoff_after(40), Duration::from_secs(5));
    }
}
