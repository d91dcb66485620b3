//! `/compatibility/subjects/{subject}/versions[/{version}]`: would this schema be accepted?

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::{ApiPath, Flags, JsonBody, ok};
use crate::error::ApiError;
use crate::schema::{SchemaRequest, VersionSelector};
use crate::store::Store;

/// `POST /compatibility/subjects/{subject}/versions/{version}[?verbose=true]`: the candidate
/// against that one version, in the direction(s) of the subject's level.
pub(crate) async fn against_version(
    State(store): State<Store>,
    ApiPath((subject, version)): ApiPath<(String, String)>,
    flags: Flags,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> Result<Response, ApiError> {
    let selector = VersionSelector::parse(&version)?;
    let candidate = request
        .parse_detached(store.limits().max_schema_bytes)
        .await?;
    let messages = store
        .check_compatibility(&subject, Some(selector), &candidate)
        .await?;
    Ok(answer(&messages, flags.is_set("verbose")))
}

/// `POST /compatibility/subjects/{subject}/versions[?verbose=true]`: the candidate against
/// the versions a registration would check (all of them for transitive levels). A subject
/// without versions accepts anything.
pub(crate) async fn against_level(
    State(store): State<Store>,
    ApiPath(subject): ApiPath<String>,
    flags: Flags,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> Result<Response, ApiError> {
    let candidate = request
        .parse_detached(store.limits().max_schema_bytes)
        .await?;
    let messages = store
        .check_compatibility(&subject, None, &candidate)
        .await?;
    Ok(answer(&messages, flags.is_set("verbose")))
}

fn answer(messages: &[String], verbose: bool) -> Response {
    if verbose {
        ok(&json!({ "is_compatible": messages.is_empty(), "messages": messages }))
    } else {
        ok(&json!({ "is_compatible": messages.is_empty() }))
    }
}
