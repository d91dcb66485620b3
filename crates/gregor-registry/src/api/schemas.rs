//! `/schemas/ids/{id}...`: schemas by their global id.

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::subjects::raw_schema;
use super::{ApiPath, Flags, ok};
use crate::error::ApiError;
use crate::store::Store;

/// `GET /schemas/ids/{id}` → `{"schema": "..."}`
pub(crate) async fn by_id(
    State(store): State<Store>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let schema = store.schema_by_id(parse_id(&id)?).await?;
    Ok(ok(&json!({ "schema": schema })))
}

/// `GET /schemas/ids/{id}/schema`: the schema document itself.
pub(crate) async fn raw_by_id(
    State(store): State<Store>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let schema = store.schema_by_id(parse_id(&id)?).await?;
    Ok(raw_schema(schema))
}

/// `GET /schemas/ids/{id}/versions[?deleted=true]` → `[{"subject": "s", "version": 1}]`
pub(crate) async fn versions_by_id(
    State(store): State<Store>,
    ApiPath(id): ApiPath<String>,
    flags: Flags,
) -> Result<Response, ApiError> {
    let refs = store
        .schema_versions(parse_id(&id)?, flags.is_set("deleted"))
        .await?;
    let body: Vec<_> = refs
        .iter()
        .map(|r| json!({ "subject": r.subject, "version": r.version }))
        .collect();
    Ok(ok(&json!(body)))
}

/// An id that is not a positive 32-bit number names no schema (40403), as in Confluent.
fn parse_id(raw: &str) -> Result<i32, ApiError> {
    raw.parse::<i32>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(ApiError::SchemaNotFound(None))
}
