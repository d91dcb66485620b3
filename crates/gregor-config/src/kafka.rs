use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;

use crate::redact::{is_credential_name, redact_url};
use crate::{ConfigError, Env, Secret};

/// The variable holding the broker list.
pub const BOOTSTRAP_VAR: &str = "KAFKA_BOOTSTRAP_SERVERS";

/// Variables starting with `KAFKA_` that belong to Kafka's own shell scripts, not to librdkafka.
const NOT_CLIENT_PROPERTIES: &[&str] = &[
    "KAFKA_HOME",
    "KAFKA_OPTS",
    "KAFKA_HEAP_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_LOG4J_OPTS",
];

/// Broker connection settings: the bootstrap list plus librdkafka properties passed through
/// from `KAFKA_<PROPERTY>` variables.
#[derive(Clone, Default)]
pub struct KafkaSettings {
    bootstrap_servers: String,
    /// property → (variable it came from, value)
    properties: BTreeMap<String, (String, Secret<String>)>,
}

impl KafkaSettings {
    /// Settings for a broker list, validated.
    pub fn new(bootstrap_servers: &str) -> Result<Self, ConfigError> {
        validate_bootstrap(BOOTSTRAP_VAR, bootstrap_servers)?;
        Ok(Self {
            bootstrap_servers: bootstrap_servers.trim().to_owned(),
            ..Self::default()
        })
    }

    /// Reads `KAFKA_BOOTSTRAP_SERVERS` (required) and every other `KAFKA_*` variable.
    ///
    /// `KAFKA_SECURITY_PROTOCOL=SASL_SSL` becomes `security.protocol=SASL_SSL`; a double
    /// underscore stands for a literal underscore in a property name.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut settings = Self::new(env.require(BOOTSTRAP_VAR)?)?;
        for (var, value) in env.with_prefix("KAFKA_") {
            if var == BOOTSTRAP_VAR || NOT_CLIENT_PROPERTIES.contains(&var) {
                continue;
            }
            let property = property_name(var);
            if property.is_empty() {
                return Err(ConfigError::invalid(var, "names no librdkafka property"));
            }
            settings
                .properties
                .insert(property, (var.to_owned(), Secret::new(value.to_owned())));
        }
        Ok(settings)
    }

    /// Sets a librdkafka property in code (it wins over defaults, loses to nothing).
    #[must_use]
    pub fn with_property(mut self, property: &str, value: &str) -> Self {
        self.properties.insert(
            property.to_owned(),
            (format!("(code) {property}"), Secret::new(value.to_owned())),
        );
        self
    }

    /// The bootstrap list as given.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// The value a pass-through property was given, if any.
    pub fn property(&self, property: &str) -> Option<&str> {
        self.properties
            .get(property)
            .map(|(_, v)| v.expose().as_str())
    }

    /// The variable a property came from, for error messages.
    pub fn source_of(&self, property: &str) -> Option<&str> {
        self.properties.get(property).map(|(var, _)| var.as_str())
    }

    /// The values of the secret properties (passwords, keys, tokens), for scrubbing texts
    /// that librdkafka produced. The SASL user name is not scrubbed: `Debug` hides it, as
    /// librdkafka does, but a refused login names the user on purpose (ADR 0009).
    pub(crate) fn secret_values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties
            .iter()
            .filter(|(k, _)| is_sensitive(k) && k.as_str() != "sasl.username")
            .map(|(k, (_, v))| (k.as_str(), v.expose().as_str()))
    }

    /// A librdkafka configuration: `defaults` first, then the pass-through properties.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (property, (_, value)) in &self.properties {
            config.set(property, value.expose());
        }
        config
    }
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: BTreeMap<&str, std::borrow::Cow<'_, str>> = self
            .properties
            .iter()
            .map(|(k, (_, v))| (k.as_str(), shown_value(k, v.expose())))
            .collect();
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &shown)
            .finish()
    }
}

/// Every property librdkafka flags `_RK_SENSITIVE` (librdkafka 2.12.1, `src/rdkafka_conf.c`;
/// librdkafka itself redacts these when it dumps its configuration).
const LIBRDKAFKA_SENSITIVE: &[&str] = &[
    "ssl.key.location",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.ca.pem",
    "ssl.keystore.password",
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
];

/// Whether a librdkafka property holds a secret: librdkafka's own list, plus any name that
/// looks like a credential (a property of a newer librdkafka, a Java client's name pasted
/// in), except URLs (`sasl.oauthbearer.token.endpoint.url`), whose values are shown
/// redacted instead.
pub(crate) fn is_sensitive(property: &str) -> bool {
    LIBRDKAFKA_SENSITIVE.contains(&property)
        || (!property.ends_with(".url")
            && (is_credential_name(property)
                || ["keystore", "key.pem", "private.key"]
                    .iter()
                    .any(|needle| property.contains(needle))))
}

/// How a property's value is shown in `Debug`: secrets not at all, URLs redacted.
fn shown_value<'a>(property: &str, value: &'a str) -> std::borrow::Cow<'a, str> {
    if is_sensitive(property) {
        "<redacted>".into()
    } else if value.contains("://") || value.contains('@') {
        redact_url(value).into()
    } else {
        value.into()
    }
}

fn property_name(var: &str) -> String {
    var.trim_start_matches("KAFKA_")
        .to_ascii_lowercase()
        .replace("__", "\u{0}")
        .replace('_', ".")
        .replace('\u{0}', "_")
}

/// `host:port[,host:port…]` with a numeric port.
fn validate_bootstrap(var: &str, raw: &str) -> Result<(), ConfigError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ConfigError::Missing {
            var: var.to_owned(),
        });
    }
    for entry in raw.split(',') {
        let entry = entry.trim();
        let entry = entry.split_once("://").map_or(entry, |(_, rest)| rest);
        let (host, port) = entry.rsplit_once(':').ok_or_else(|| {
            ConfigError::invalid(
                var,
                format!("{entry:?} is not host:port (expected e.g. 127.0.0.1:9092)"),
            )
        })?;
        if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
            return Err(ConfigError::invalid(
                var,
                format!("{entry:?} has no valid host"),
            ));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => {
                return Err(ConfigError::invalid(
                    var,
                    format!("{entry:?} has no valid port"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_through_maps_names() {
        let env = Env::from_pairs([
            ("KAFKA_BOOTSTRAP_SERVERS", "a:9092,b:9093"),
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_MECHANISMS", "SCRAM-SHA-512"),
            ("KAFKA_HOME", "/opt/kafka"),
        ]);
        let s = KafkaSettings::from_env(&env).unwrap();
        assert_eq!(s.property("security.protocol"), Some("SASL_SSL"));
        assert_eq!(s.property("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(
            s.source_of("security.protocol"),
            Some("KAFKA_SECURITY_PROTOCOL")
        );
        assert!(s.property("home").is_none());
        let config = s.client_config(&[("linger.ms", "5")]);
        assert_eq!(config.get("bootstrap.servers"), Some("a:9092,b:9093"));
    }

    #[test]
    fn malformed_bootstrap_lists_are_refused() {
        for bad in [
            "localhost",
            "host:port",
            ":9092",
            "a:9092,,b:1",
            "a:0",
            "a b:1",
        ] {
            let err = KafkaSettings::new(bad).unwrap_err();
            assert_eq!(err.var(), BOOTSTRAP_VAR, "{bad}");
        }
        assert!(KafkaSettings::new("PLAINTEXT://broker-1:9092, broker-2:19092").is_ok());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let env = Env::from_pairs([
            ("KAFKA_BOOTSTRAP_SERVERS", "a:9092"),
            ("KAFKA_SASL_PASSWORD", "canary-pw"),
            ("KAFKA_SSL_KEY_PASSWORD", "canary-key"),
        ]);
        let shown = format!("{:?}", KafkaSettings::from_env(&env).unwrap());
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("sasl.password"));
    }
}
