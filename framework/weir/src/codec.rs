//! Codecs turn a [`RawMessage`] into the value a processor receives.
//!
//! A decoding failure is a terminal, classified error: the message goes to the
//! failure sink (the DLQ when configured), never a panic or a stuck partition.

use bytes::Bytes;

use crate::message::RawMessage;

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message has no payload and the codec needs one.
    #[error("message has no payload (tombstone) and the codec needs one")]
    MissingPayload,
    /// The payload is not valid UTF-8.
    #[error("payload is not valid UTF-8 at byte {valid_up_to}")]
    InvalidUtf8 {
        /// Bytes that were valid.
        valid_up_to: usize,
    },
    /// JSON could not be parsed into the target type.
    #[cfg(feature = "json")]
    #[error("payload is not valid JSON for {target}: {message} (line {line}, column {column})")]
    Json {
        /// The Rust type expected.
        target: &'static str,
        /// The parser's message (never the payload).
        message: String,
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
    },
    /// Any other codec's failure.
    #[error("{0}")]
    Other(String),
}

/// Decodes raw messages into `Self::Value`.
pub trait Codec: Send + Sync + 'static {
    /// The decoded type.
    type Value: Send + 'static;

    /// Decodes one message. Must not panic on any input.
    fn decode(&self, message: &RawMessage) -> Result<Self::Value, DecodeError>;
}

/// Passes the payload through as [`Bytes`] (`None` for a tombstone).
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Value = Option<Bytes>;

    fn decode(&self, message: &RawMessage) -> Result<Self::Value, DecodeError> {
        Ok(message.payload.clone())
    }
}

/// Decodes the payload as UTF-8 text.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringCodec;

impl Codec for StringCodec {
    type Value = String;

    fn decode(&self, message: &RawMessage) -> Result<Self::Value, DecodeError> {
        let p = message
            .payload
            .as_deref()
            .ok_or(DecodeError::MissingPayload)?;
        std::str::from_utf8(p)
            .map(str::to_owned)
            .map_err(|e| DecodeError::InvalidUtf8 {
                valid_up_to: e.valid_up_to(),
            })
    }
}

/// Decodes the payload as JSON into `T` with serde.
#[cfg(feature = "json")]
pub struct JsonCodec<T>(std::marker::PhantomData<fn() -> T>);

#[cfg(feature = "json")]
impl<T> JsonCodec<T> {
    /// A JSON codec for `T`.
    pub fn new() -> Self {
        JsonCodec(std::marker::PhantomData)
    }
}

#[cfg(feature = "json")]
impl<T> Default for JsonCodec<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "json")]
impl<T> std::fmt::Debug for JsonCodec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsonCodec<{}>", std::any::type_name::<T>())
    }
}

#[cfg(feature = "json")]
impl<T> Codec for JsonCodec<T>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    type Value = T;

    fn decode(&self, message: &RawMessage) -> Result<T, DecodeError> {
        let p = message
            .payload
            .as_deref()
            .ok_or(DecodeError::MissingPayload)?;
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
#[cfg(feature = "json")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn raw(payload: Option<&[u8]>) -> RawMessage {
        RawMessage {
            topic: Arc::from("t"),
            partition: 0,
            offset: 7,
            timestamp_ms: None,
            key: None,
            payload: payload.map(Bytes::copy_from_slice),
            headers: Default::default(),
        }
    }

    #[test]
    fn string_codec_rejects_invalid_utf8() {
        let e = StringCodec.decode(&raw(Some(b"ab\xffcd"))).unwrap_err();
        assert!(matches!(e, DecodeError::InvalidUtf8 { valid_up_to: 2 }));
        assert_eq!(StringCodec.decode(&raw(Some(b"ok"))).unwrap(), "ok");
        assert!(matches!(
            StringCodec.decode(&raw(None)),
            Err(DecodeError::MissingPayload)
        ));
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_codec_decodes_and_classifies() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Click {
            id: u32,
        }
        let c = JsonCodec::<Click>::new();
        assert_eq!(
            c.decode(&raw(Some(br#"{"id":3}"#))).unwrap(),
            Click { id: 3 }
        );
        let e = c
            .decode(&raw(Some(b"{\"id\":\"secret-pii\"}")))
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("not valid JSON"), "{msg}");
        assert!(
            !msg.contains("secret-pii"),
            "payload leaked into the error: {msg}"
        );
        let e = c.decode(&raw(Some(b"{}"))).unwrap_err();
        assert!(e.to_string().contains("missing field `id`"), "{e}");
        let pe: crate::ProcessError = e.into();
        assert_eq!(pe.class(), "decode");
        assert!(!pe.is_retryable());
    }
}
