//! `/config` and `/config/{subject}`: compatibility levels.

use axum::extract::State;
use axum::response::Response;
use gregor_avro::CompatibilityLevel;
use serde::Deserialize;
use serde_json::json;

use super::{ApiPath, Flags, JsonBody, ok};
use crate::error::ApiError;
use crate::store::Store;

/// The body of `PUT /config[/{subject}]`. Newer Confluent versions also accept
/// `compatibilityLevel`; both spellings work here.
#[derive(Debug, Deserialize)]
pub(crate) struct ConfigRequest {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

impl ConfigRequest {
    fn level(&self) -> Result<CompatibilityLevel, ApiError> {
        let raw = self
            .compatibility
            .as_deref()
            .or(self.compatibility_level.as_deref())
            .unwrap_or("");
        raw.parse()
            .map_err(|_| ApiError::InvalidCompatibilityLevel(raw.to_owned()))
    }
}

/// `GET /config` → `{"compatibilityLevel": "BACKWARD"}`
pub(crate) async fn get_global(State(store): State<Store>) -> Result<Response, ApiError> {
    let level = store.level(None, false).await?.unwrap_or_default();
    Ok(ok(&json!({ "compatibilityLevel": level.as_str() })))
}

/// `PUT /config` `{"compatibility": "FULL"}` → `{"compatibility": "FULL"}`
pub(crate) async fn put_global(
    State(store): State<Store>,
    JsonBody(request): JsonBody<ConfigRequest>,
) -> Result<Response, ApiError> {
    let level = request.level()?;
    store.set_level(None, level).await?;
    Ok(ok(&json!({ "compatibility": level.as_str() })))
}

/// `DELETE /config` → the level before, which is reset to the default (BACKWARD).
pub(crate) async fn delete_global(State(store): State<Store>) -> Result<Response, ApiError> {
    let before = store.reset_global_level().await?;
    Ok(ok(&json!({ "compatibilityLevel": before.as_str() })))
}

/// `GET /config/{subject}[?defaultToGlobal=true]`
pub(crate) async fn get_subject(
    State(store): State<Store>,
    ApiPath(subject): ApiPath<String>,
    flags: Flags,
) -> Result<Response, ApiError> {
    let fallback = flags.is_set("defaultToGlobal");
    let level = match store.level(Some(&subject), fallback).await? {
        Some(level) => level,
        None if fallback => CompatibilityLevel::default(),
        None => return Err(ApiError::SubjectConfigNotFound(subject)),
    };
    Ok(ok(&json!({ "compatibilityLevel": level.as_str() })))
}

/// `PUT /config/{subject}`: allowed before the subject has any version.
pub(crate) async fn put_subject(
    State(store): State<Store>,
    ApiPath(subject): ApiPath<String>,
    JsonBody(request): JsonBody<ConfigRequest>,
) -> Result<Response, ApiError> {
    let level = request.level()?;
    store.set_level(Some(&subject), level).await?;
    Ok(ok(&json!({ "compatibility": level.as_str() })))
}

/// `DELETE /config/{subject}` → the subject's level before; the subject then follows the
/// global level.
pub(crate) async fn delete_subject(
    State(store): State<Store>,
    ApiPath(subject): ApiPath<String>,
) -> Result<Response, ApiError> {
    let before = store.reset_subject_level(&subject).await?;
    Ok(ok(&json!({ "compatibilityLevel": before.as_str() })))
}
