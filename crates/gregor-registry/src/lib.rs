//! A Confluent-compatible schema registry for Avro, for development and tests: the
//! `gregor-registry` binary and the library it is built from.
//!
//! It speaks the REST API Confluent's serializers, `kafka-avro-console-*`, Karapace clients
//! and `gregor-avro` use: register (`POST /subjects/{s}/versions`), look up, read by id or
//! version, soft and permanent deletes, global and per-subject compatibility levels
//! (`/config`), and compatibility checks (`/compatibility/...`). Errors carry Confluent's
//! `error_code`s. Only Avro is supported, without schema references.
//!
//! Rules, as in Confluent:
//! * A schema is identified by its canonical text (parsed, then serialized; whitespace and
//!   key order do not matter, defaults and docs do). The same schema gets the same id in
//!   every subject.
//! * Registering a schema that is already a live version of the subject returns its id;
//!   otherwise it is checked against the subject's live versions under the subject's level
//!   (else the global level, else BACKWARD) and becomes version `max + 1`.
//!
//! Data lives in memory ([`Store::memory`]) or in PostgreSQL ([`Store::postgres`], tables
//! `gregor_registry_*`, created at start). With [`RegistryConfig::tls`] it serves HTTPS
//! (rustls), with [`RegistryConfig::auth`] every request needs basic auth. Registrations are serialized with an advisory
//! lock, so several replicas can share one database.
//!
//! What one request may cost is bounded ([`RegistryConfig::limits`]): schema texts over
//! `GREGOR_REGISTRY_MAX_SCHEMA_BYTES` and compatibility checks over
//! `GREGOR_REGISTRY_MAX_CHECK_STEPS` steps of work are refused with a 422 (42201). A check
//! runs on a blocking thread against a snapshot of the subject, never under the write lock;
//! the write then goes ahead only if the subject's live versions and level are unchanged
//! (else it checks again, and answers 409 if the subject keeps changing).
//!
//! ```
//! use gregor_registry::{RegistryConfig, Storage, Store, router};
//!
//! // The routes over an in-memory store, without auth, e.g. to nest in a test server.
//! let app: axum::Router = router(Store::memory(), None);
//!
//! // The configuration the binary would use for the same.
//! let config = RegistryConfig::default();
//! assert!(matches!(config.storage, Storage::Memory));
//! assert_eq!(config.listen.to_string(), "127.0.0.1:8081");
//! # drop(app);
//! ```
//!
//! Serving on an ephemeral port until cancelled:
//!
//! ```no_run
//! use gregor_registry::{RegistryConfig, serve};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> Result<(), gregor_registry::RegistryError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
//! let url = format!("http://{}", listener.local_addr().expect("address"));
//! let cancel = CancellationToken::new();
//! let server = tokio::spawn(serve(RegistryConfig::default(), listener, cancel.clone()));
//! // ... point SCHEMA_REGISTRY_URL at `url` ...
//! cancel.cancel();
//! server.await.expect("server task")?;
//! # Ok(())
//! # }
//! ```

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod api;
mod auth;
mod canonical;
mod config;
mod error;
mod registry;
mod schema;
mod store;
mod tls;

pub use api::{CONTENT_TYPE, router};
pub use config::{
    BasicAuth, DEFAULT_LISTEN, Limits, MAX_CHECK_STEPS_VAR, MAX_SCHEMA_BYTES_VAR, RegistryConfig,
    Storage,
};
pub use error::{ApiError, RegistryError};
pub use store::{Store, StoreError};
pub use tls::TlsFiles;

/// Binds `config.listen` and serves until `cancel` fires.
pub async fn run(config: RegistryConfig, cancel: CancellationToken) -> Result<(), RegistryError> {
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| RegistryError::Bind {
                addr: config.listen,
                source,
            })?;
    serve(config, listener, cancel).await
}

/// Opens the store `config` asks for (creating the PostgreSQL tables if missing) and serves
/// the API on `listener` — over HTTPS when `config.tls` is set — until `cancel` fires;
/// in-flight requests finish first.
/// `config.listen` is not used: the listener is already bound.
pub async fn serve(
    config: RegistryConfig,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), RegistryError> {
    // Certificate problems are configuration errors: report them before opening the store.
    let tls = config
        .tls
        .as_ref()
        .map(TlsFiles::server_config)
        .transpose()?;
    let store = Store::open(&config.storage)
        .await
        .map_err(|source| match &config.storage {
            Storage::Postgres(url) => RegistryError::Database {
                url: url.redacted().to_owned(),
                source,
            },
            Storage::Memory => RegistryError::Store(source),
        })?;
    let app = router(store.clone().with_limits(config.limits), config.auth);
    let addr = listener.local_addr().map_err(RegistryError::Serve)?;
    let served = match tls {
        None => {
            tracing::info!("listening on {addr}");
            axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        }
        Some(tls) => {
            tracing::info!("listening on {addr} (HTTPS)");
            let listener = tls::TlsListener::new(listener, tls).map_err(RegistryError::Serve)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        }
    };
    store.close().await;
    served.map_err(RegistryError::Serve)
}
