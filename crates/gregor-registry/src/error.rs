//! The two error types: [`ApiError`] (what a request can fail with, answered as Confluent's
//! `{"error_code", "message"}`) and [`RegistryError`] (why the server cannot start or run).

use std::net::SocketAddr;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::reply;
use crate::store::StoreError;

/// A request the registry refuses, with Confluent's HTTP status and `error_code`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 40401: no subject of that name (or only soft-deleted versions of it).
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 40402: the subject has no such version.
    #[error("Version {0} not found.")]
    VersionNotFound(i32),
    /// 40403: no schema with this id, or the looked-up schema is not under the subject.
    #[error("{}", match .0 { Some(id) => format!("Schema {id} not found"), None => "Schema not found".to_owned() })]
    SchemaNotFound(Option<i32>),
    /// 40404: soft-deleting a subject that is already soft-deleted.
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// 40405: permanently deleting a subject that was not soft-deleted first.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// 40406: soft-deleting a version that is already soft-deleted.
    #[error(
        "Subject '{subject}' Version {version} was soft deleted. Set permanent=true to delete permanently"
    )]
    VersionSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: i32,
    },
    /// 40407: permanently deleting a version that was not soft-deleted first.
    #[error(
        "Subject '{subject}' Version {version} was not deleted first before being permanently deleted"
    )]
    VersionNotSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: i32,
    },
    /// 40408: `GET /config/{subject}` for a subject without its own level.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    /// 42201: the schema does not parse, is not Avro or uses references.
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// 42202: a version that is neither 1..2^31-1 nor `latest`.
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    /// 42203: a compatibility level that is not one of the seven.
    #[error(
        "Invalid compatibility level {0:?}. Valid values are none, backward, backward_transitive, forward, forward_transitive, full, and full_transitive"
    )]
    InvalidCompatibilityLevel(String),
    /// 409: the schema breaks the subject's compatibility level.
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{reason}]"
    )]
    Incompatible {
        /// The subject.
        subject: String,
        /// What [`gregor_avro::compat::check`] reported.
        reason: String,
    },
    /// 422 (42201): the schema text is longer than `GREGOR_REGISTRY_MAX_SCHEMA_BYTES`.
    #[error(
        "Invalid schema: the schema text is {bytes} bytes, more than this registry accepts ({max} bytes, GREGOR_REGISTRY_MAX_SCHEMA_BYTES)"
    )]
    SchemaTooLarge {
        /// The length of the schema text.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// 422 (42201): checking compatibility would take more than
    /// `GREGOR_REGISTRY_MAX_CHECK_STEPS` steps of work; refused unfinished.
    #[error(
        "Invalid schema: checking its compatibility with subject \"{subject}\" takes more than {max_steps} steps of work (GREGOR_REGISTRY_MAX_CHECK_STEPS); simplify the schema (unions of many records, very wide records)"
    )]
    CheckTooCostly {
        /// The subject.
        subject: String,
        /// The budget that ran out.
        max_steps: u64,
    },
    /// 409: the subject kept changing while the schema was being checked.
    #[error(
        "Subject \"{0}\" changed while the schema was being checked for compatibility; try again"
    )]
    SubjectChanged(String),
    /// 400: the body is not JSON of the expected shape, or a path/query part is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401 (40101): basic auth is configured and the request does not carry it.
    #[error("Unauthorized")]
    Unauthorized,
    /// 404: no such endpoint.
    #[error("HTTP 404 Not Found")]
    NoRoute,
    /// 405: the endpoint exists, the method does not.
    #[error("HTTP 405 Method Not Allowed")]
    MethodNotAllowed,
    /// 50001: the database failed; the details go to the log, not to the client.
    #[error("Error in the backend data store")]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The HTTP status and Confluent `error_code` this error is answered with.
    pub fn status_and_code(&self) -> (StatusCode, u32) {
        match self {
            Self::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            Self::VersionNotFound(_) => (StatusCode::NOT_FOUND, 40402),
            Self::SchemaNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            Self::SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
            Self::SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            Self::VersionSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40406),
            Self::VersionNotSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40407),
            Self::SubjectConfigNotFound(_) => (StatusCode::NOT_FOUND, 40408),
            Self::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            Self::InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            Self::InvalidCompatibilityLevel(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            Self::SchemaTooLarge { .. } | Self::CheckTooCostly { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, 42201)
            }
            Self::Incompatible { .. } | Self::SubjectChanged(_) => (StatusCode::CONFLICT, 409),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, 400),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, 40101),
            Self::NoRoute => (StatusCode::NOT_FOUND, 404),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, 405),
            Self::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Store(source) = &self {
            tracing::error!(error = %source, "request failed in the data store");
        } else {
            tracing::debug!(error_code = code, message = %self, "request refused");
        }
        let body = serde_json::json!({ "error_code": code, "message": self.to_string() });
        let mut response = reply(status, &body);
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"gregor-registry\""),
            );
        }
        response
    }
}

/// Why the registry cannot start or stopped serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The configuration cannot be used (a TLS certificate or key that does not load).
    #[error(transparent)]
    Config(#[from] gregor_config::ConfigError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from `GREGOR_REGISTRY_LISTEN`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving HTTP failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The PostgreSQL store cannot be opened or its tables created.
    #[error("cannot use the database DATABASE_URL={url}: {source}")]
    Database {
        /// The URL with its password masked.
        url: String,
        /// Why.
        source: StoreError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// Whether trying again later can succeed (the database may come back; a taken port or a
    /// bad address will not).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config(_) | Self::Bind { .. } | Self::Serve(_) => false,
            Self::Database { source: e, .. } | Self::Store(e) => e.is_retryable(),
        }
    }
}
