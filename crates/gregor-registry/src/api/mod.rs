//! The HTTP API: Confluent Schema Registry's REST endpoints, answering
//! `application/vnd.schemaregistry.v1+json`.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::BasicAuth;
use crate::error::ApiError;
use crate::store::Store;

mod compatibility;
mod config;
mod schemas;
mod subjects;

/// The content type of every answer.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The registry's routes over `store`, with basic auth when `auth` is given.
pub fn router(store: Store, auth: Option<BasicAuth>) -> Router {
    let body_limit = body_limit(store.limits().max_schema_bytes);
    let app = Router::new()
        .route("/", get(|| async { ok(&json!({})) }))
        .route("/schemas/types", get(|| async { ok(&json!(["AVRO"])) }))
        .route("/mode", get(|| async { ok(&json!({"mode": "READWRITE"})) }))
        .route("/schemas/ids/{id}", get(schemas::by_id))
        .route("/schemas/ids/{id}/schema", get(schemas::raw_by_id))
        .route("/schemas/ids/{id}/versions", get(schemas::versions_by_id))
        .route("/subjects", get(subjects::list))
        .route(
            "/subjects/{subject}",
            post(subjects::lookup).delete(subjects::delete_subject),
        )
        .route(
            "/subjects/{subject}/versions",
            get(subjects::versions).post(subjects::register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(subjects::version).delete(subjects::delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(subjects::raw_version),
        )
        .route(
            "/config",
            get(config::get_global)
                .put(config::put_global)
                .delete(config::delete_global),
        )
        .route(
            "/config/{subject}",
            get(config::get_subject)
                .put(config::put_subject)
                .delete(config::delete_subject),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility::against_level),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility::against_version),
        )
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(store);
    match auth {
        Some(auth) => crate::auth::require(app, &auth),
        None => app,
    }
}

/// The largest request body read: room for a schema of `max_schema_bytes` escaped in JSON,
/// and never less than axum's default of 2 MiB.
fn body_limit(max_schema_bytes: usize) -> usize {
    max_schema_bytes
        .saturating_mul(2)
        .saturating_add(64 << 10)
        .max(2 << 20)
}

/// A JSON answer with the registry's content type.
pub(crate) fn reply(status: StatusCode, body: &Value) -> Response {
    reply_text(status, body.to_string())
}

/// An answer whose body is JSON text already (a stored schema, kept in its key order).
pub(crate) fn reply_text(status: StatusCode, json: String) -> Response {
    let mut response = Response::new(Body::from(json));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// A 200 JSON answer.
pub(crate) fn ok(body: &Value) -> Response {
    reply(StatusCode::OK, body)
}

/// Path parameters; a malformed one, or one holding a NUL, is a 400 in the registry's error
/// format.
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // PostgreSQL cannot store a NUL in `text` (the PostgreSQL store answered 500): refuse
        // it in every path parameter (subjects, versions), for both stores alike.
        if parts.uri.path().to_ascii_lowercase().contains("%00") {
            return Err(ApiError::BadRequest(
                "a path parameter holds a NUL character (%00)".to_owned(),
            ));
        }
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Boolean query flags (`?deleted=true`): a flag is set when its value is `true` in any case,
/// as Confluent's Java server parses them.
pub(crate) struct Flags(Vec<(String, String)>);

impl Flags {
    pub(crate) fn is_set(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|(k, v)| k == name && v.eq_ignore_ascii_case("true"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Flags {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let pairs = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        Ok(Self(pairs))
    }
}

/// A JSON request body. Any content type is accepted (Confluent's clients send
/// `application/vnd.schemaregistry.v1+json`, `application/vnd.schemaregistry+json` or
/// `application/json`; curl users often send none or a form type); malformed JSON is a 400.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest(
                "the request has no body (expected JSON)".to_owned(),
            ));
        }
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
    }
}
