//! The start-up broker check: one metadata request with the client's own settings, telling a
//! broker that refuses the credentials or the TLS handshake (never worth retrying: stop with
//! a clear message) from one that is only unreachable (wait for it).
//!
//! librdkafka retries a refused login forever and reports it only through its error callback,
//! so without this check a wrong password looks like an outage: `/readyz` stays down and
//! nothing says why.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};

use crate::{ConfigError, KafkaSettings};

/// What [`KafkaSettings::check_broker`] found when the broker did not refuse the client.
#[derive(Debug, Clone)]
pub enum BrokerStatus {
    /// The broker answered a metadata request: credentials and TLS are accepted.
    Reachable,
    /// No answer within the time given, and no authentication or TLS failure either: the
    /// broker is down or unreachable (retry later). Holds the last metadata error, if any.
    Unreachable(Option<KafkaError>),
}

/// Longest single metadata request: the error callback is served between requests.
const STEP: Duration = Duration::from_millis(300);
/// How long the error callback is served after each request (every queued event is
/// handled: several arrive per failed connection).
const SERVE: Duration = Duration::from_millis(50);

/// Longest reason kept from librdkafka.
const MAX_REASON: usize = 600;

impl KafkaSettings {
    /// Connects to the broker with these settings and asks it for metadata, for at most
    /// `timeout`. An authentication failure (wrong user, password or SASL mechanism) or a
    /// TLS failure (untrusted certificate, wrong host name, TLS against a plaintext port)
    /// returns [`ConfigError::BrokerAuthentication`] or [`ConfigError::BrokerTls`] as soon as
    /// librdkafka reports it, with a reason from which every secret property's value has
    /// been removed.
    ///
    /// Blocking (librdkafka calls): run it on a blocking thread.
    pub fn check_broker(&self, timeout: Duration) -> Result<BrokerStatus, ConfigError> {
        self.check_broker_while(timeout, || true)
    }

    /// [`check_broker`](Self::check_broker) that also gives up (as unreachable) once
    /// `keep_going` returns false, checked at least every half second.
    pub fn check_broker_while(
        &self,
        timeout: Duration,
        keep_going: impl Fn() -> bool,
    ) -> Result<BrokerStatus, ConfigError> {
        let context = ProbeContext::default();
        let producer: BaseProducer<ProbeContext> = self
            .client_config(&[("client.id", "gregor-broker-check")])
            // A producer that never produces: no idempotence handshake, no statistics.
            .set("enable.idempotence", "false")
            .set("statistics.interval.ms", "0")
            .set_log_level(RDKafkaLogLevel::Error)
            .create_with_context(context.clone())
            .map_err(|e| self.config_error(e))?;
        let deadline = Instant::now() + timeout;
        loop {
            let step = deadline.saturating_duration_since(Instant::now()).min(STEP);
            let error = match producer.client().fetch_metadata(None, step) {
                Ok(_) => return Ok(BrokerStatus::Reachable),
                Err(e) => e,
            };
            context.record(&error, &error.to_string());
            // Serves the error callback, for every event queued meanwhile.
            producer.poll(SERVE);
            if let Some(refusal) = context.refusal() {
                return Err(self.refusal_error(refusal));
            }
            if Instant::now() >= deadline || !keep_going() {
                return Ok(BrokerStatus::Unreachable(Some(error)));
            }
        }
    }

    fn refusal_error(&self, refusal: Refusal) -> ConfigError {
        let reason = self.scrub(&refusal.reason);
        match refusal.kind {
            RefusalKind::Authentication => ConfigError::BrokerAuthentication {
                bootstrap: self.bootstrap_servers().to_owned(),
                mechanism: self
                    .property("sasl.mechanisms")
                    .or_else(|| self.property("sasl.mechanism"))
                    .unwrap_or("GSSAPI (librdkafka's default)")
                    .to_owned(),
                username: self.property("sasl.username").map(str::to_owned),
                reason,
            },
            RefusalKind::Tls => ConfigError::BrokerTls {
                bootstrap: self.bootstrap_servers().to_owned(),
                reason,
            },
        }
    }

    /// librdkafka's config errors carry the value, which may be a secret: keep the property
    /// and the reason, name the variable.
    fn config_error(&self, error: KafkaError) -> ConfigError {
        match error {
            KafkaError::ClientConfig(_, description, property, _value) => {
                let var = self.source_of(&property).map_or_else(
                    || format!("KAFKA_{}", property.to_ascii_uppercase().replace('.', "_")),
                    str::to_owned,
                );
                ConfigError::invalid(var, self.scrub(&description))
            }
            other => ConfigError::invalid(
                crate::BOOTSTRAP_VAR,
                format!(
                    "cannot create a Kafka client: {}",
                    self.scrub(&other.to_string())
                ),
            ),
        }
    }

    /// `text` with the value of every secret property replaced.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (property, value) in self.secret_values() {
            if value.len() >= 3 && out.contains(value) {
                out = out.replace(value, &format!("<{property} redacted>"));
            }
        }
        if out.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefusalKind {
    Authentication,
    Tls,
}

#[derive(Debug, Clone)]
struct Refusal {
    kind: RefusalKind,
    reason: String,
}

/// Which librdkafka errors mean "this client's credentials or TLS settings are refused".
fn refusal_kind(code: RDKafkaErrorCode, reason: &str) -> Option<RefusalKind> {
    use RDKafkaErrorCode as C;
    match code {
        C::Authentication
        | C::SaslAuthenticationFailed
        | C::UnsupportedSASLMechanism
        | C::IllegalSASLState => Some(RefusalKind::Authentication),
        C::SSL => Some(RefusalKind::Tls),
        _ if reason.contains("SSL handshake failed") || reason.contains("certificate verify") => {
            Some(RefusalKind::Tls)
        }
        _ => None,
    }
}

/// Records the first refusal librdkafka reports; logs nothing itself (the check's result
/// says everything, and the real clients log as usual).
#[derive(Clone, Default)]
struct ProbeContext {
    refusal: Arc<Mutex<Option<Refusal>>>,
}

impl ProbeContext {
    fn record(&self, error: &KafkaError, reason: &str) {
        let Some(code) = error.rdkafka_error_code() else {
            return;
        };
        let Some(kind) = refusal_kind(code, reason) else {
            return;
        };
        let mut slot = self.refusal.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(Refusal {
                kind,
                reason: reason.to_owned(),
            });
        }
    }

    fn refusal(&self) -> Option<Refusal> {
        self.refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ClientContext for ProbeContext {
    fn log(&self, _level: RDKafkaLogLevel, _fac: &str, _message: &str) {}

    fn error(&self, error: KafkaError, reason: &str) {
        self.record(&error, reason);
    }
}

impl ProducerContext for ProbeContext {
    type DeliveryOpaque = ();

    /// The probe never produces.
    fn delivery(&self, _result: &DeliveryResult<'_>, _opaque: ()) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Env;

    #[test]
    fn refusals_are_told_from_outages() {
        assert_eq!(
            refusal_kind(
                RDKafkaErrorCode::Authentication,
                "SASL authentication error"
            ),
            Some(RefusalKind::Authentication)
        );
        assert_eq!(
            refusal_kind(RDKafkaErrorCode::SSL, "SSL handshake failed"),
            Some(RefusalKind::Tls)
        );
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::OperationTimedOut,
        ] {
            assert_eq!(refusal_kind(code, "Connection refused"), None, "{code:?}");
        }
    }

    #[test]
    fn reasons_lose_secret_values() {
        let kafka = KafkaSettings::from_env(&Env::from_pairs([
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            ("KAFKA_SASL_USERNAME", "app"),
            ("KAFKA_SASL_PASSWORD", "canary-pw"),
        ]))
        .unwrap();
        let scrubbed = kafka.scrub("failed for app with canary-pw");
        assert!(!scrubbed.contains("canary"), "{scrubbed}");
        assert!(scrubbed.contains("app"), "{scrubbed}");
    }

    #[test]
    fn an_unreachable_broker_is_not_a_refusal() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let kafka = KafkaSettings::new(&format!("127.0.0.1:{port}")).unwrap();
        let status = kafka.check_broker(Duration::from_millis(1200)).unwrap();
        assert!(matches!(status, BrokerStatus::Unreachable(_)), "{status:?}");
    }
}
