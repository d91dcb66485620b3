//! The decoding seam: every route turns payload bytes into its handler's type through a
//! [`Decoder`]. Raw bytes and JSON live here; Avro joins through the same trait.

use std::future::Future;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::DecodeError;

/// Turns a payload into a value. Tombstones (no payload) never reach a decoder.
pub trait Decoder: Send + Sync + 'static {
    /// The decoded type handlers receive.
    type Value: Send + 'static;

    /// Decodes one payload.
    fn decode(
        &self,
        payload: &[u8],
    ) -> impl Future<Output = Result<Self::Value, DecodeError>> + Send;
}

/// Hands the payload over as bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Decoder for Raw {
    type Value = Vec<u8>;

    async fn decode(&self, payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(payload.to_vec())
    }
}

/// Deserializes JSON with serde.
#[derive(Debug)]
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Json<T> {
    /// A JSON decoder for `T`.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T: DeserializeOwned + Send + 'static> Decoder for Json<T> {
    type Value = T;

    async fn decode(&self, payload: &[u8]) -> Result<T, DecodeError> {
        serde_json::from_slice(payload).map_err(|e| DecodeError::malformed("json", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Order {
        id: u64,
    }

    #[tokio::test]
    async fn json_decodes_and_rejects() {
        let d = Json::<Order>::new();
        assert_eq!(d.decode(br#"{"id":7}"#).await.unwrap(), Order { id: 7 });
        let err = d.decode(b"\x00\xff").await.unwrap_err();
        assert!(matches!(err, DecodeError::Malformed { .. }), "{err}");
        assert!(err.reason().starts_with("json: "), "{}", err.reason());
    }
}
