//! `/subjects/...`: register, look up, list, read and delete.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{ApiPath, Flags, JsonBody, ok, reply_text};
use crate::error::ApiError;
use crate::registry::SubjectVersion;
use crate::schema::{SchemaRequest, VersionSelector};
use crate::store::Store;

/// `GET /subjects[?deleted=true]`
pub(crate) async fn list(State(store): State<Store>, flags: Flags) -> Result<Response, ApiError> {
    let subjects = store.subjects(flags.is_set("deleted")).await?;
    Ok(ok(&json!(subjects)))
}

/// `POST /subjects/{subject}/versions` → `{"id": N}`
pub(crate) async fn register(
    State(store): State<Store>,
    ApiPath(subject): ApiPath<String>,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> Result<Response, ApiError> {
    let schema = request
        .parse_detached(store.limits().max_schema_bytes)
        .await?;
    let id = store.register(&subject, &schema).await?;
    Ok(ok(&json!({ "id": id })))
}

/// `POST /subjects/{subject}[?deleted=true]`: which version of the subject holds a schema.
pub(crate) async fn lookup(
    State(store): State<Store>,
    ApiPath(subject): ApiPath<String>,
    flags: Flags,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> Result<Response, ApiError> {
    let schema = request
        .parse_detached(store.limits().max_schema_bytes)
        .await?;
    let found = store
        .lookup(&subject, &schema, flags.is_set("deleted"))
        .await?;
    Ok(ok(&version_json(&found)))
}

/// `GET /subjects/{subject}/versions[?deleted=true]` → `[1, 2, 3]`
pub(crate) async fn versions(
    State(store): State<Store>,
    ApiPath(subject): ApiPath<String>,
    flags: Flags,
) -> Result<Response, ApiError> {
    let numbers = store
        .version_numbers(&subject, flags.is_set("deleted"))
        .await?;
    Ok(ok(&json!(numbers)))
}

/// `GET /subjects/{subject}/versions/{version}[?deleted=true]`
pub(crate) async fn version(
    State(store): State<Store>,
    ApiPath((subject, version)): ApiPath<(String, String)>,
    flags: Flags,
) -> Result<Response, ApiError> {
    let selector = VersionSelector::parse(&version)?;
    let found = store
        .version(&subject, selector, flags.is_set("deleted"))
        .await?;
    Ok(ok(&version_json(&found)))
}

/// `GET /subjects/{subject}/versions/{version}/schema`: the schema document itself.
pub(crate) async fn raw_version(
    State(store): State<Store>,
    ApiPath((subject, version)): ApiPath<(String, String)>,
    flags: Flags,
) -> Result<Response, ApiError> {
    let selector = VersionSelector::parse(&version)?;
    let found = store
        .version(&subject, selector, flags.is_set("deleted"))
        .await?;
    Ok(raw_schema(found.schema))
}

/// `DELETE /subjects/{subject}[?permanent=true]` → the versions deleted
pub(crate) async fn delete_subject(
    State(store): State<Store>,
    ApiPath(subject): ApiPath<String>,
    flags: Flags,
) -> Result<Response, ApiError> {
    let deleted = store
        .delete_subject(&subject, flags.is_set("permanent"))
        .await?;
    Ok(ok(&json!(deleted)))
}

/// `DELETE /subjects/{subject}/versions/{version}[?permanent=true]` → the version deleted
pub(crate) async fn delete_version(
    State(store): State<Store>,
    ApiPath((subject, version)): ApiPath<(String, String)>,
    flags: Flags,
) -> Result<Response, ApiError> {
    let selector = VersionSelector::parse(&version)?;
    let deleted = store
        .delete_version(&subject, selector, flags.is_set("permanent"))
        .await?;
    Ok(ok(&json!(deleted)))
}

fn version_json(found: &SubjectVersion) -> Value {
    // Confluent leaves `schemaType` out for Avro.
    json!({
        "subject": found.subject,
        "version": found.version,
        "id": found.id,
        "schema": found.schema,
    })
}

/// A stored canonical text as the answer's JSON document, in its own key order.
pub(super) fn raw_schema(canonical: String) -> Response {
    reply_text(StatusCode::OK, canonical)
}
