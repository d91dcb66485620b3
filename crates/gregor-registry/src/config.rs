use std::net::SocketAddr;

use gregor_config::{ConfigError, DatabaseUrl, Env, Secret};

use crate::tls::{CERT_VAR, KEY_VAR, TlsFiles};

/// The variable bounding the size of a schema text.
pub const MAX_SCHEMA_BYTES_VAR: &str = "GREGOR_REGISTRY_MAX_SCHEMA_BYTES";
/// The variable bounding the work of one compatibility check.
pub const MAX_CHECK_STEPS_VAR: &str = "GREGOR_REGISTRY_MAX_CHECK_STEPS";

/// Registry settings. [`RegistryConfig::from_env`] reads them from the variables in the
/// README's table.
///
/// [`Default`] is an in-memory registry on `127.0.0.1:8081` without auth: the one setup that
/// needs nothing else. `from_env` defaults to PostgreSQL storage instead, because that is
/// what survives a restart.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `GREGOR_REGISTRY_LISTEN`: the address the HTTP API listens on.
    pub listen: SocketAddr,
    /// `GREGOR_REGISTRY_STORAGE` (`postgres` or `memory`) and `DATABASE_URL`.
    pub storage: Storage,
    /// `GREGOR_REGISTRY_USERNAME` and `GREGOR_REGISTRY_PASSWORD`: when set, every request
    /// must carry them as HTTP basic auth.
    pub auth: Option<BasicAuth>,
    /// `GREGOR_REGISTRY_TLS_CERT` and `GREGOR_REGISTRY_TLS_KEY`: when set, the API is served
    /// over HTTPS only.
    pub tls: Option<TlsFiles>,
    /// `GREGOR_REGISTRY_MAX_SCHEMA_BYTES` and `GREGOR_REGISTRY_MAX_CHECK_STEPS`: what one
    /// request may cost.
    pub limits: Limits,
}

/// What one request may cost; over a bound, the request is refused with a 422 (42201).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest schema text accepted, in bytes (`GREGOR_REGISTRY_MAX_SCHEMA_BYTES`,
    /// default 1 048 576 = 1 MiB).
    pub max_schema_bytes: usize,
    /// The work one compatibility check (a registration's or a `/compatibility` request's,
    /// against every version it compares with) may do, in the steps of
    /// [`gregor_avro::compat::check_within`] (`GREGOR_REGISTRY_MAX_CHECK_STEPS`, default
    /// 1 000 000: about a tenth of a second of CPU; real schemas need a few thousand).
    pub max_check_steps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_schema_bytes: 1 << 20,
            max_check_steps: gregor_avro::compat::DEFAULT_MAX_CHECK_STEPS,
        }
    }
}

impl Limits {
    /// Reads the two variables; unset ones keep their defaults, zero is refused.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let limits = Self {
            max_schema_bytes: env.parse_or(MAX_SCHEMA_BYTES_VAR, defaults.max_schema_bytes)?,
            max_check_steps: env.parse_or(MAX_CHECK_STEPS_VAR, defaults.max_check_steps)?,
        };
        if limits.max_schema_bytes == 0 {
            return Err(ConfigError::invalid(
                MAX_SCHEMA_BYTES_VAR,
                "must be at least 1",
            ));
        }
        if limits.max_check_steps == 0 {
            return Err(ConfigError::invalid(
                MAX_CHECK_STEPS_VAR,
                "must be at least 1",
            ));
        }
        Ok(limits)
    }
}

/// Where the registry keeps its data.
#[derive(Debug, Clone)]
pub enum Storage {
    /// In process memory: lost at exit. For tests.
    Memory,
    /// In PostgreSQL (`gregor_registry_*` tables, created at start).
    Postgres(DatabaseUrl),
}

/// HTTP basic auth credentials; `Debug` never shows the password.
#[derive(Debug, Clone)]
pub struct BasicAuth {
    /// The user name (no `:`).
    pub username: String,
    /// The password.
    pub password: Secret<String>,
}

/// The default listen address, Confluent's port on the loopback interface.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8081,
));

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            storage: Storage::Memory,
            auth: None,
            tls: None,
            limits: Limits::default(),
        }
    }
}

impl RegistryConfig {
    /// Reads and validates the configuration; errors name the variable at fault.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let listen = match env.get("GREGOR_REGISTRY_LISTEN") {
            None => DEFAULT_LISTEN,
            Some(raw) => raw.trim().parse().map_err(|e| {
                ConfigError::invalid(
                    "GREGOR_REGISTRY_LISTEN",
                    format!("{e} (expected host:port, e.g. 127.0.0.1:8081; got {raw:?})"),
                )
            })?,
        };
        let storage = match env
            .get("GREGOR_REGISTRY_STORAGE")
            .map(|s| s.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("postgres" | "postgresql") => Storage::Postgres(DatabaseUrl::parse(
                "DATABASE_URL",
                env.require("DATABASE_URL")?,
            )?),
            Some("memory") => Storage::Memory,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "GREGOR_REGISTRY_STORAGE",
                    format!("expected postgres or memory, got {other:?}"),
                ));
            }
        };
        let auth = match (
            env.get("GREGOR_REGISTRY_USERNAME"),
            env.get("GREGOR_REGISTRY_PASSWORD"),
        ) {
            (None, None) => None,
            (Some(username), Some(password)) => Some(BasicAuth {
                username: username.to_owned(),
                password: Secret::new(password.to_owned()),
            }),
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "GREGOR_REGISTRY_PASSWORD",
                    "must be set when GREGOR_REGISTRY_USERNAME is (basic auth needs both)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "GREGOR_REGISTRY_USERNAME",
                    "must be set when GREGOR_REGISTRY_PASSWORD is (basic auth needs both)",
                ));
            }
        };
        let tls = match (env.get(CERT_VAR), env.get(KEY_VAR)) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.trim().into(),
                key: key.trim().into(),
            }),
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    KEY_VAR,
                    format!("must be set when {CERT_VAR} is (HTTPS needs both)"),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    CERT_VAR,
                    format!("must be set when {KEY_VAR} is (HTTPS needs both)"),
                ));
            }
        };
        let config = Self {
            listen,
            storage,
            auth,
            tls,
            limits: Limits::from_env(env)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses credentials basic auth cannot carry.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(auth) = &self.auth {
            if auth.username.is_empty() || auth.username.contains(':') {
                return Err(ConfigError::invalid(
                    "GREGOR_REGISTRY_USERNAME",
                    "must be non-empty and must not contain ':'",
                ));
            }
            if auth.password.expose().is_empty() {
                return Err(ConfigError::invalid(
                    "GREGOR_REGISTRY_PASSWORD",
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_var(env: &Env) -> String {
        RegistryConfig::from_env(env).unwrap_err().var().to_owned()
    }

    #[test]
    fn defaults() {
        let config = RegistryConfig::from_env(&Env::from_pairs([(
            "DATABASE_URL",
            "postgres://u:pw@127.0.0.1/db",
        )]))
        .unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN);
        assert_eq!(config.listen.to_string(), "127.0.0.1:8081");
        assert!(matches!(config.storage, Storage::Postgres(_)));
        assert!(config.auth.is_none());
        assert!(matches!(RegistryConfig::default().storage, Storage::Memory));
    }

    #[test]
    fn memory_storage_needs_no_database() {
        let env = Env::from_pairs([
            ("GREGOR_REGISTRY_STORAGE", "memory"),
            ("GREGOR_REGISTRY_LISTEN", "0.0.0.0:18081"),
        ]);
        let config = RegistryConfig::from_env(&env).unwrap();
        assert!(matches!(config.storage, Storage::Memory));
        assert_eq!(config.listen.port(), 18081);
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert_eq!(err_var(&Env::default()), "DATABASE_URL");
        let err = RegistryConfig::from_env(&Env::default()).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
        assert_eq!(
            err_var(&Env::from_pairs([("DATABASE_URL", "mysql://x")])),
            "DATABASE_URL"
        );
        let memory = Env::from_pairs([("GREGOR_REGISTRY_STORAGE", "memory")]);
        assert_eq!(
            err_var(&memory.clone().with("GREGOR_REGISTRY_STORAGE", "disk")),
            "GREGOR_REGISTRY_STORAGE"
        );
        assert_eq!(
            err_var(&memory.clone().with("GREGOR_REGISTRY_LISTEN", "8081")),
            "GREGOR_REGISTRY_LISTEN"
        );
        assert_eq!(
            err_var(&memory.clone().with("GREGOR_REGISTRY_USERNAME", "ci")),
            "GREGOR_REGISTRY_PASSWORD"
        );
        assert_eq!(
            err_var(&memory.clone().with("GREGOR_REGISTRY_PASSWORD", "pw")),
            "GREGOR_REGISTRY_USERNAME"
        );
        assert_eq!(
            err_var(
                &memory
                    .with("GREGOR_REGISTRY_USERNAME", "a:b")
                    .with("GREGOR_REGISTRY_PASSWORD", "pw")
            ),
            "GREGOR_REGISTRY_USERNAME"
        );
    }

    #[test]
    fn limits_have_safe_defaults_and_name_their_variable() {
        let memory = Env::from_pairs([("GREGOR_REGISTRY_STORAGE", "memory")]);
        let config = RegistryConfig::from_env(&memory).unwrap();
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.limits.max_schema_bytes, 1 << 20);
        assert_eq!(config.limits.max_check_steps, 1_000_000);
        let config = RegistryConfig::from_env(
            &memory
                .clone()
                .with(MAX_SCHEMA_BYTES_VAR, "4096")
                .with(MAX_CHECK_STEPS_VAR, "50000"),
        )
        .unwrap();
        assert_eq!(
            config.limits,
            Limits {
                max_schema_bytes: 4096,
                max_check_steps: 50_000
            }
        );
        for (var, raw) in [
            (MAX_SCHEMA_BYTES_VAR, "0"),
            (MAX_SCHEMA_BYTES_VAR, "1MiB"),
            (MAX_CHECK_STEPS_VAR, "0"),
            (MAX_CHECK_STEPS_VAR, "-5"),
        ] {
            assert_eq!(err_var(&memory.clone().with(var, raw)), var, "{var}={raw}");
        }
    }

    #[test]
    fn tls_needs_both_files() {
        let memory = Env::from_pairs([("GREGOR_REGISTRY_STORAGE", "memory")]);
        assert_eq!(
            err_var(&memory.clone().with(CERT_VAR, "/tls/cert.pem")),
            KEY_VAR
        );
        assert_eq!(
            err_var(&memory.clone().with(KEY_VAR, "/tls/key.pem")),
            CERT_VAR
        );
        let config = RegistryConfig::from_env(
            &memory
                .with(CERT_VAR, "/tls/cert.pem")
                .with(KEY_VAR, "/tls/key.pem"),
        )
        .unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(tls.cert.to_str(), Some("/tls/cert.pem"));
        // Files that do not exist fail when loaded, naming the variable.
        assert_eq!(tls.server_config().unwrap_err().var(), CERT_VAR);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let env = Env::from_pairs([
            ("DATABASE_URL", "postgres://u:canary-db@127.0.0.1/db"),
            ("GREGOR_REGISTRY_USERNAME", "ci"),
            ("GREGOR_REGISTRY_PASSWORD", "canary-pw"),
        ]);
        let shown = format!("{:?}", RegistryConfig::from_env(&env).unwrap());
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("ci"), "{shown}");
    }
}
