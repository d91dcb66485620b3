//! Registry client settings, read from `SCHEMA_REGISTRY_*` variables, and the decoding limits
//! every deserializer built on the client starts from (`GREGOR_AVRO_MAX_*`).

use std::time::Duration;

use gregor_config::{ConfigError, Env, Secret};

use crate::DecodeLimits;

/// Where the registry is and how to talk to it.
///
/// ```
/// use gregor_avro::RegistryConfig;
/// use gregor_config::Env;
///
/// let env = Env::from_pairs([
///     ("SCHEMA_REGISTRY_URL", "https://registry.example:8081"),
///     ("SCHEMA_REGISTRY_USERNAME", "svc"),
///     ("SCHEMA_REGISTRY_PASSWORD", "hunter2"),
/// ]);
/// let config = RegistryConfig::from_env(&env).expect("valid");
/// assert!(!format!("{config:?}").contains("hunter2"));
/// ```
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Registry base URLs, tried in order (`SCHEMA_REGISTRY_URL`, comma-separated).
    pub urls: Vec<String>,
    /// Basic-auth user (`SCHEMA_REGISTRY_USERNAME`).
    pub username: Option<String>,
    /// Basic-auth password (`SCHEMA_REGISTRY_PASSWORD`).
    pub password: Option<Secret<String>>,
    /// PEM file with extra CA certificates to trust (`SCHEMA_REGISTRY_CA_LOCATION`).
    pub ca_location: Option<String>,
    /// Per-request timeout (`SCHEMA_REGISTRY_TIMEOUT_MS`, default 5000).
    pub timeout: Duration,
    /// Extra attempts after a retryable failure (`SCHEMA_REGISTRY_RETRIES`, default 2).
    pub retries: u32,
    /// First pause between attempts, doubled each time (`SCHEMA_REGISTRY_RETRY_BACKOFF_MS`,
    /// default 100).
    pub retry_backoff: Duration,
    /// Bounds on decoding one message (`GREGOR_AVRO_MAX_ITEMS`, `GREGOR_AVRO_MAX_DECODED_BYTES`,
    /// `GREGOR_AVRO_MAX_DEPTH`): every [`AvroDeserializer`](crate::AvroDeserializer) built on
    /// a client with this configuration starts from them.
    pub decode_limits: DecodeLimits,
    /// How long a "schema not found" answer for an id is remembered, so that a flood of
    /// messages with random unknown ids costs one registry request per id and period, not
    /// one per message (`SCHEMA_REGISTRY_NOT_FOUND_TTL_MS`, default 5000; 0 = off).
    pub not_found_ttl: Duration,
}

/// The variable naming the registry.
pub const URL_VAR: &str = "SCHEMA_REGISTRY_URL";

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            urls: vec!["http://127.0.0.1:8081".to_owned()],
            username: None,
            password: None,
            ca_location: None,
            timeout: Duration::from_secs(5),
            retries: 2,
            retry_backoff: Duration::from_millis(100),
            decode_limits: DecodeLimits::default(),
            not_found_ttl: Duration::from_secs(5),
        }
    }
}

impl RegistryConfig {
    /// A configuration for one registry URL, other settings at their defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            ..Self::default()
        }
    }

    /// Reads `SCHEMA_REGISTRY_*` (`SCHEMA_REGISTRY_URL` is required) and the decoding limits
    /// `GREGOR_AVRO_MAX_*`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let urls = env
            .require(URL_VAR)?
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        let config = Self {
            urls,
            username: env.get("SCHEMA_REGISTRY_USERNAME").map(str::to_owned),
            password: env
                .get("SCHEMA_REGISTRY_PASSWORD")
                .map(|p| Secret::new(p.to_owned())),
            ca_location: env.get("SCHEMA_REGISTRY_CA_LOCATION").map(str::to_owned),
            timeout: env.millis_or("SCHEMA_REGISTRY_TIMEOUT_MS", defaults.timeout)?,
            retries: env.parse_or("SCHEMA_REGISTRY_RETRIES", defaults.retries)?,
            retry_backoff: env
                .millis_or("SCHEMA_REGISTRY_RETRY_BACKOFF_MS", defaults.retry_backoff)?,
            decode_limits: DecodeLimits::from_env(env)?,
            not_found_ttl: env
                .millis_or("SCHEMA_REGISTRY_NOT_FOUND_TTL_MS", defaults.not_found_ttl)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.urls.is_empty() {
            return Err(ConfigError::Missing {
                var: URL_VAR.into(),
            });
        }
        for url in &self.urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    URL_VAR,
                    "each URL must start with http:// or https://",
                ));
            }
            if url.contains('@') {
                return Err(ConfigError::invalid(
                    URL_VAR,
                    "put credentials in SCHEMA_REGISTRY_USERNAME/SCHEMA_REGISTRY_PASSWORD, not in the URL",
                ));
            }
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(ConfigError::invalid(
                if self.username.is_some() {
                    "SCHEMA_REGISTRY_PASSWORD"
                } else {
                    "SCHEMA_REGISTRY_USERNAME"
                },
                "basic auth needs both SCHEMA_REGISTRY_USERNAME and SCHEMA_REGISTRY_PASSWORD",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(
                "SCHEMA_REGISTRY_TIMEOUT_MS",
                "must be greater than 0",
            ));
        }
        self.decode_limits.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_name_their_variable() {
        let err = RegistryConfig::from_env(&Env::default()).unwrap_err();
        assert_eq!(err.var(), URL_VAR);
        let err =
            RegistryConfig::from_env(&Env::from_pairs([(URL_VAR, "registry:8081")])).unwrap_err();
        assert_eq!(err.var(), URL_VAR);
        let err = RegistryConfig::from_env(&Env::from_pairs([
            (URL_VAR, "http://registry:8081"),
            ("SCHEMA_REGISTRY_USERNAME", "svc"),
        ]))
        .unwrap_err();
        assert_eq!(err.var(), "SCHEMA_REGISTRY_PASSWORD");
        let err = RegistryConfig::from_env(&Env::from_pairs([
            (URL_VAR, "http://registry:8081"),
            ("SCHEMA_REGISTRY_TIMEOUT_MS", "soon"),
        ]))
        .unwrap_err();
        assert_eq!(err.var(), "SCHEMA_REGISTRY_TIMEOUT_MS");
    }

    #[test]
    fn urls_split_and_trim() {
        let config = RegistryConfig::from_env(&Env::from_pairs([(
            URL_VAR,
            "http://a:8081/, https://b:8081",
        )]))
        .expect("valid");
        assert_eq!(config.urls, ["http://a:8081", "https://b:8081"]);
    }

    #[test]
    fn decode_limits_come_with_the_client_settings() {
        let env = Env::from_pairs([
            (URL_VAR, "http://registry:8081"),
            ("GREGOR_AVRO_MAX_ITEMS", "1234"),
        ]);
        let config = RegistryConfig::from_env(&env).expect("valid");
        assert_eq!(config.decode_limits.max_items, 1234);
        assert_eq!(
            config.decode_limits.max_depth,
            DecodeLimits::default().max_depth
        );
        let err =
            RegistryConfig::from_env(&env.with("GREGOR_AVRO_MAX_DEPTH", "100000")).unwrap_err();
        assert_eq!(err.var(), "GREGOR_AVRO_MAX_DEPTH");
    }
}
