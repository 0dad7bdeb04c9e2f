//! [`JsonCodec`]: serde JSON, decoding and encoding.

use bytes::Bytes;

use super::{Codec, DecodeError, EncodeError, Encoder, Part};
use crate::message::RawMessage;

/// Decodes the payload as JSON into `T` with serde.
pub struct JsonCodec<T>(std::marker::PhantomData<fn() -> T>);

impl<T> JsonCodec<T> {
    /// A JSON codec for `T`.
    pub fn new() -> Self {
        JsonCodec(std::marker::PhantomData)
    }
}

impl<T> Default for JsonCodec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for JsonCodec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsonCodec<{}>", std::any::type_name::<T>())
    }
}

impl<T> Codec for JsonCodec<T>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    type Value = T;

    async fn decode(&self, message: &RawMessage) -> Result<T, DecodeError> {
        let p = message
            .payload
            .as_deref()
            .ok_or(DecodeError::Missing(Part::Value))?;
        serde_json::from_slice(p).map_err(|e| DecodeError::Json {
            target: std::any::type_name::<T>(),
            message: json_message(&e),
            line: e.line(),
            column: e.column(),
        })
    }
}

/// serde_json's messages can quote payload values (`invalid type: string "…"`):
/// keep only messages that name schema, never data, so errors stay PII-free.
fn json_message(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax => "syntax error".into(),
        Category::Eof => "unexpected end of input".into(),
        Category::Io => "I/O error".into(),
        Category::Data => {
            let full = e.to_string();
            if full.starts_with("missing field") {
                full.split(" at line")
                    .next()
                    .unwrap_or("missing field")
                    .to_string()
            } else {
                "value does not match the expected type".into()
            }
        }
    }
}

/// serde JSON.
impl<T> Encoder<T> for JsonCodec<T>
where
    T: serde::Serialize + Sync,
{
    async fn encode(&self, topic: &str, value: &T) -> Result<Bytes, EncodeError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| EncodeError::Invalid {
                topic: topic.to_string(),
                target: std::any::type_name::<T>(),
                detail: json_message(&e),
            })
    }
}
