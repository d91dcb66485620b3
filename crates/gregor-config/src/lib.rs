//! Configuration pieces shared by every gregor binary and library.
//!
//! * [`Secret`] keeps a value out of `Debug`/`Display` output (promise P8).
//! * [`DatabaseUrl`] is a PostgreSQL URL whose password never prints.
//! * [`KafkaSettings`] holds `bootstrap.servers` plus every `KAFKA_<PROPERTY>` variable passed
//!   through to librdkafka (`KAFKA_SECURITY_PROTOCOL` → `security.protocol`), redacting the
//!   sensitive ones; [`KafkaSettings::check_broker`] tells refused credentials and TLS
//!   failures (stop, [`ConfigError::BrokerAuthentication`] / [`ConfigError::BrokerTls`]) from
//!   an unreachable broker (wait).
//! * [`RebuildableProducer`] replaces a producer stuck in librdkafka's fatal state (or one that
//!   stopped reporting deliveries) between batches; the relay and the consumer share it.
//! * [`Env`] reads variables from the process or from a map, so tests never touch the process
//!   environment, and names the variable in every error.
//!
//! ```
//! use gregor_config::{Env, KafkaSettings};
//!
//! let env = Env::from_pairs([
//!     ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
//!     ("KAFKA_SASL_PASSWORD", "hunter2"),
//! ]);
//! let kafka = KafkaSettings::from_env(&env).expect("valid");
//! assert_eq!(kafka.bootstrap_servers(), "127.0.0.1:9092");
//! assert!(!format!("{kafka:?}").contains("hunter2"));
//! ```

mod env;
mod error;
mod kafka;
mod probe;
mod producer;
mod redact;
mod secret;

pub use env::Env;
pub use error::ConfigError;
pub use kafka::{BOOTSTRAP_VAR, KafkaSettings};
pub use probe::BrokerStatus;
pub use producer::{RebuildableProducer, refuses_producer};
pub use secret::{DatabaseUrl, Secret};
