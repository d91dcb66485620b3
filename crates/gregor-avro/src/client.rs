//! A Confluent Schema Registry client: timeouts, retries with backoff, failover across URLs,
//! basic auth, extra CA certificates, and a schema cache so the hot path makes no HTTP call —
//! plus a short-lived cache of ids the registry does not know, so that messages carrying
//! random ids cannot turn into one registry request each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use apache_avro::Schema;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{AvroError, CompatibilityLevel, RegistryConfig};

/// The registry's media type.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A schema as the registry holds it under a subject.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RegisteredSchema {
    /// The subject.
    pub subject: String,
    /// The version within the subject.
    pub version: i32,
    /// The global schema id.
    pub id: u32,
    /// The schema text.
    pub schema: String,
}

/// Talks to one registry (or a list of equivalent URLs) and caches schemas by id.
///
/// Cloning is cheap and shares the cache.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    config: RegistryConfig,
    by_id: RwLock<HashMap<u32, Arc<Schema>>>,
    /// Ids the registry answered "schema not found" for, and when that answer expires.
    unknown: Mutex<HashMap<u32, Instant>>,
}

/// The most unknown ids remembered at once; beyond it expired entries are dropped, then
/// new ones are not remembered until some expire (the memory stays bounded whatever ids
/// arrive).
const MAX_UNKNOWN_IDS: usize = 10_000;

#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct IdBody {
    id: u32,
}

#[derive(Deserialize)]
struct LevelBody {
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: String,
}

impl RegistryClient {
    /// A client for `config`; fails on an unreadable CA file.
    pub fn new(config: RegistryConfig) -> Result<Self, AvroError> {
        config.validate()?;
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout);
        if let Some(path) = &config.ca_location {
            let pem = std::fs::read(path).map_err(|e| {
                gregor_config::ConfigError::invalid(
                    "SCHEMA_REGISTRY_CA_LOCATION",
                    format!("cannot read {path}: {e}"),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                gregor_config::ConfigError::invalid(
                    "SCHEMA_REGISTRY_CA_LOCATION",
                    format!("{path} is not a PEM certificate bundle: {e}"),
                )
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| {
            gregor_config::ConfigError::invalid("SCHEMA_REGISTRY_URL", e.to_string())
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                by_id: RwLock::new(HashMap::new()),
                unknown: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// A client configured from `SCHEMA_REGISTRY_*` variables.
    pub fn from_env(env: &gregor_config::Env) -> Result<Self, AvroError> {
        Self::new(RegistryConfig::from_env(env)?)
    }

    /// The client's settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// The schema with `id`, from the cache or fetched once (ids are immutable).
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, AvroError> {
        if let Some(schema) = self.cached(id) {
            return Ok(schema);
        }
        if self.known_unknown(id) {
            return Err(AvroError::UnknownSchemaId { id });
        }
        let body: SchemaBody = match self
            .call(Method::GET, &format!("/schemas/ids/{id}"), None)
            .await
        {
            // Only the registry's own "schema not found" — a proxy's 404 or a wrong base
            // path is a configuration problem, retried rather than dead-lettered.
            Err(AvroError::Registry {
                status: 404,
                error_code: SCHEMA_NOT_FOUND,
                ..
            }) => {
                self.remember_unknown(id);
                return Err(AvroError::UnknownSchemaId { id });
            }
            other => other?,
        };
        if let Some(kind) = body.schema_type.filter(|t| t != "AVRO") {
            return Err(AvroError::UnsupportedWriterSchema {
                id,
                reason: format!("a {kind} schema, not Avro"),
            });
        }
        let schema = Arc::new(Schema::parse_str(&body.schema).map_err(|e| {
            AvroError::UnsupportedWriterSchema {
                id,
                reason: format!(
                    "not parsable on its own (schema references are not supported): {e}"
                ),
            }
        })?);
        if let Ok(mut cache) = self.inner.by_id.write() {
            cache.insert(id, Arc::clone(&schema));
        }
        Ok(schema)
    }

    /// Seeds the cache with a schema the registry is known to hold under `id` — for offline
    /// tools, tests and fuzzing, where no registry call should happen.
    pub fn insert_schema(&self, id: u32, schema: Schema) {
        if let Ok(mut cache) = self.inner.by_id.write() {
            cache.insert(id, Arc::new(schema));
        }
        if let Ok(mut unknown) = self.inner.unknown.lock() {
            unknown.remove(&id);
        }
    }

    fn cached(&self, id: u32) -> Option<Arc<Schema>> {
        self.inner.by_id.read().ok()?.get(&id).cloned()
    }

    /// Whether the registry said "not found" for `id` less than the TTL ago.
    fn known_unknown(&self, id: u32) -> bool {
        let Ok(mut unknown) = self.inner.unknown.lock() else {
            return false;
        };
        match unknown.get(&id) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                unknown.remove(&id);
                false
            }
            None => false,
        }
    }

    fn remember_unknown(&self, id: u32) {
        let ttl = self.inner.config.not_found_ttl;
        if ttl.is_zero() {
            return;
        }
        let Ok(mut unknown) = self.inner.unknown.lock() else {
            return;
        };
        let now = Instant::now();
        if unknown.len() >= MAX_UNKNOWN_IDS {
            unknown.retain(|_, until| *until > now);
        }
        if unknown.len() < MAX_UNKNOWN_IDS {
            unknown.insert(id, now + ttl);
        }
    }

    /// Registers `schema` under `subject` (or finds it already there) and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, AvroError> {
        let body = serde_json::json!({ "schema": schema });
        let IdBody { id } = self
            .call(
                Method::POST,
                &format!("/subjects/{}/versions", encode(subject)),
                Some(body),
            )
            .await?;
        Ok(id)
    }

    /// The version of `schema` under `subject`, or `None` when it is not registered there.
    pub async fn lookup(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Option<RegisteredSchema>, AvroError> {
        let body = serde_json::json!({ "schema": schema });
        match self
            .call(
                Method::POST,
                &format!("/subjects/{}", encode(subject)),
                Some(body),
            )
            .await
        {
            Ok(found) => Ok(Some(found)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The latest version under `subject`, or `None` when the subject does not exist.
    pub async fn latest(&self, subject: &str) -> Result<Option<RegisteredSchema>, AvroError> {
        self.version(subject, "latest").await
    }

    /// One version (`"3"` or `"latest"`) under `subject`, or `None` when absent.
    pub async fn version(
        &self,
        subject: &str,
        version: &str,
    ) -> Result<Option<RegisteredSchema>, AvroError> {
        match self
            .call(
                Method::GET,
                &format!("/subjects/{}/versions/{}", encode(subject), encode(version)),
                None,
            )
            .await
        {
            Ok(found) => Ok(Some(found)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every live version number under `subject` (empty when the subject does not exist).
    pub async fn versions(&self, subject: &str) -> Result<Vec<i32>, AvroError> {
        match self
            .call(
                Method::GET,
                &format!("/subjects/{}/versions", encode(subject)),
                None,
            )
            .await
        {
            Ok(found) => Ok(found),
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The compatibility level that applies to `subject` (its own, else the global one).
    pub async fn compatibility_level(
        &self,
        subject: &str,
    ) -> Result<CompatibilityLevel, AvroError> {
        let body: LevelBody = self
            .call(
                Method::GET,
                &format!("/config/{}?defaultToGlobal=true", encode(subject)),
                None,
            )
            .await?;
        body.compatibility_level
            .parse()
            .map_err(|e| AvroError::Registry {
                status: 200,
                error_code: 0,
                message: format!("unexpected compatibility level: {e}"),
            })
    }

    /// Sets `subject`'s compatibility level.
    pub async fn set_compatibility_level(
        &self,
        subject: &str,
        level: CompatibilityLevel,
    ) -> Result<(), AvroError> {
        let body = serde_json::json!({ "compatibility": level.as_str() });
        let _: serde_json::Value = self
            .call(
                Method::PUT,
                &format!("/config/{}", encode(subject)),
                Some(body),
            )
            .await?;
        Ok(())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, AvroError> {
        let config = &self.inner.config;
        let mut backoff = config.retry_backoff;
        let mut last = None;
        for attempt in 0..=config.retries {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            for base in &config.urls {
                match self.once(method.clone(), base, path, body.as_ref()).await {
                    Ok(value) => return Ok(value),
                    Err(e) if e.is_retryable() => {
                        tracing::debug!(error = %e, attempt, "schema registry call failed");
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(last.unwrap_or_else(|| AvroError::Unreachable {
            url: config.urls.join(","),
            reason: "no registry URL configured".into(),
        }))
    }

    async fn once<T: DeserializeOwned>(
        &self,
        method: Method,
        base: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, AvroError> {
        let config = &self.inner.config;
        let mut request = self
            .inner
            .http
            .request(method, format!("{base}{path}"))
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            request = request.basic_auth(user, Some(password.expose()));
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(body.to_string());
        }
        let unreachable = |e: reqwest::Error| {
            let mut reason = describe(&e);
            if reason.contains("certificate") {
                reason.push_str(
                    " (TLS: check SCHEMA_REGISTRY_CA_LOCATION, the CA that signed the \
                     registry's certificate, and the host name in SCHEMA_REGISTRY_URL)",
                );
            }
            AvroError::Unreachable {
                url: base.to_owned(),
                reason,
            }
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| AvroError::Registry {
                status: status.as_u16(),
                error_code: 0,
                message: format!("unexpected response body: {e}"),
            });
        }
        let (error_code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody {
                error_code,
                message,
            }) => (
                error_code.unwrap_or(i64::from(status.as_u16())),
                message.unwrap_or_default(),
            ),
            Err(_) => (
                i64::from(status.as_u16()),
                String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            ),
        };
        let message = if status == StatusCode::UNAUTHORIZED {
            format!("{message} (check SCHEMA_REGISTRY_USERNAME/SCHEMA_REGISTRY_PASSWORD)")
        } else {
            message
        };
        Err(AvroError::Registry {
            status: status.as_u16(),
            error_code,
            message,
        })
    }
}

/// Confluent's "schema not found".
const SCHEMA_NOT_FOUND: i64 = 40403;

/// The registry's own "subject / version / schema not found" (40401, 40402, 40403) — not any
/// 404, which may come from a proxy or a wrong base path.
fn is_not_found(error: &AvroError) -> bool {
    matches!(
        error,
        AvroError::Registry { status: 404, error_code, .. } if (40401..=40403).contains(error_code)
    )
}

/// reqwest's Display hides the cause chain; walk it so "connection refused" shows.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Percent-encodes a path segment (subjects may hold `/`, `:` or spaces).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_percent_encoded() {
        assert_eq!(encode("orders-value"), "orders-value");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }

    /// A 404 that is not the registry's own "schema not found" (a proxy, a wrong base path)
    /// must not dead-letter messages: it is neither "unknown id" nor the payload's fault.
    #[tokio::test]
    async fn a_foreign_404_is_not_an_unknown_schema_id() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 2048];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot found")
                    .await;
            }
        });
        let client = RegistryClient::new(RegistryConfig::new(format!("http://127.0.0.1:{port}")))
            .expect("client");
        let err = client.schema_by_id(7).await.unwrap_err();
        assert!(
            matches!(
                err,
                AvroError::Registry {
                    status: 404,
                    error_code: 404,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.is_payload_fault(), "{err}");
    }

    /// A registry that answers every request with Confluent's "schema not found", counting
    /// the requests.
    async fn not_found_registry() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let body = br#"{"error_code":40403,"message":"Schema not found"}"#;
                    let mut buf = [0u8; 2048];
                    // One request per read is enough for these small GETs (keep-alive).
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                        let head = format!(
                            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if socket.write_all(head.as_bytes()).await.is_err()
                            || socket.write_all(body).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        (format!("http://127.0.0.1:{port}"), requests)
    }

    /// Each message with a random unknown id must not cost a registry request: "not found"
    /// is remembered for a short while.
    #[tokio::test]
    async fn unknown_schema_ids_are_cached_briefly() {
        use std::sync::atomic::Ordering;
        let (url, requests) = not_found_registry().await;
        let client = RegistryClient::new(RegistryConfig::new(url)).expect("client");
        for _ in 0..20 {
            let err = client.schema_by_id(424_242).await.unwrap_err();
            assert!(
                matches!(err, AvroError::UnknownSchemaId { id: 424_242 }),
                "{err}"
            );
        }
        assert_eq!(
            requests.load(Ordering::SeqCst),
            1,
            "one request for 20 lookups"
        );
    }

    #[tokio::test]
    async fn the_not_found_cache_expires_and_can_be_turned_off() {
        use std::sync::atomic::Ordering;
        let (url, requests) = not_found_registry().await;
        let mut config = RegistryConfig::new(url.clone());
        config.not_found_ttl = std::time::Duration::from_millis(200);
        let client = RegistryClient::new(config).expect("client");
        assert!(client.schema_by_id(1).await.is_err());
        assert!(client.schema_by_id(1).await.is_err());
        assert!(client.schema_by_id(2).await.is_err());
        assert_eq!(requests.load(Ordering::SeqCst), 2, "one per id");
        // Until the TTL passes every lookup is answered from the cache; the first one after
        // it asks the registry again.
        let asked_again = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                assert!(client.schema_by_id(1).await.is_err());
                if requests.load(Ordering::SeqCst) > 2 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(asked_again.is_ok(), "asked again after the TTL");
        assert_eq!(requests.load(Ordering::SeqCst), 3, "exactly once more");

        let (url, requests) = not_found_registry().await;
        let mut config = RegistryConfig::new(url);
        config.not_found_ttl = std::time::Duration::ZERO;
        let client = RegistryClient::new(config).expect("client");
        for _ in 0..3 {
            assert!(client.schema_by_id(1).await.is_err());
        }
        assert_eq!(requests.load(Ordering::SeqCst), 3, "0 turns the cache off");
    }

    #[test]
    fn the_not_found_cache_is_bounded() {
        let client = RegistryClient::new(RegistryConfig::default()).expect("client");
        for id in 0..u32::try_from(MAX_UNKNOWN_IDS * 2).unwrap_or(u32::MAX) {
            client.remember_unknown(id);
        }
        let len = client.inner.unknown.lock().map(|u| u.len()).unwrap_or(0);
        assert_eq!(len, MAX_UNKNOWN_IDS);
        client.insert_schema(0, Schema::Null);
        assert!(
            !client.known_unknown(0),
            "a seeded schema is no longer unknown"
        );
    }

    #[tokio::test]
    async fn unreachable_registry_is_retryable_and_names_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let mut config = RegistryConfig::new(format!("http://127.0.0.1:{port}"));
        config.retries = 1;
        config.retry_backoff = std::time::Duration::from_millis(1);
        let client = RegistryClient::new(config).expect("client");
        let err = client.schema_by_id(1).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
