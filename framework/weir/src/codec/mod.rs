//! Codecs turn a [`RawMessage`] into the value a processor receives, and
//! encoders turn values into the bytes a [`Record`](crate::Record) or an
//! outbox row carries.
//!
//! The same layer serves consumers (a [`Codec`] per consumer, or per topic with
//! [`ByTopic`]), the [`Producer`](crate::Producer) helper and the outbox
//! (an [`Encoder`] produces the bytes). Retry and DLQ copies re-publish the
//! original bytes verbatim, so a copy decodes exactly like the original
//! (an Avro copy keeps its schema id).
//!
//! Keys and values have independent codecs: every built-in codec reads the
//! value unless built with `for_key()`, and a pair `(key_codec, value_codec)`
//! is itself a codec whose value is the pair of both results.
//!
//! A decoding failure is a terminal, classified error ([`DecodeError::class`]):
//! the message goes to the failure sink (the DLQ when configured), never a
//! panic or a stuck partition. [`DecodeError::Unavailable`] (a schema registry
//! that cannot be reached) is the exception: it is retried in place and never
//! reaches the DLQ, because it is not the message's fault.

use std::future::Future;

use bytes::Bytes;

use crate::message::RawMessage;

mod by_topic;
mod error;
#[cfg(feature = "json")]
mod json;
#[cfg(test)]
mod tests;

pub use by_topic::ByTopic;
pub use error::{DecodeError, EncodeError};
#[cfg(feature = "json")]
pub use json::JsonCodec;

/// Which part of a Kafka message a codec reads or an encoder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Part {
    /// The message key.
    Key,
    /// The message value (payload).
    #[default]
    Value,
}

impl Part {
    /// The bytes of this part of `message` (`None` for a null key or a tombstone).
    pub fn bytes(self, message: &RawMessage) -> Option<&Bytes> {
        match self {
            Part::Key => message.key.as_ref(),
            Part::Value => message.payload.as_ref(),
        }
    }

    /// `"key"` or `"value"`, as used in subject names (`<topic>-value`).
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Key => "key",
            Part::Value => "value",
        }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decodes raw messages into `Self::Value`.
///
/// Implement it with an `async fn`; codecs that need no I/O simply never await.
///
/// ```
/// use weir::{Codec, DecodeError, RawMessage};
///
/// struct Upper;
/// impl Codec for Upper {
///     type Value = String;
///     async fn decode(&self, m: &RawMessage) -> Result<String, DecodeError> {
///         let p = m.payload.as_deref().ok_or(DecodeError::Missing(weir::codec::Part::Value))?;
///         Ok(String::from_utf8_lossy(p).to_uppercase())
///     }
/// }
/// ```
pub trait Codec: Send + Sync + 'static {
    /// The decoded type.
    type Value: Send + 'static;

    /// Decodes one message. Must not panic on any input.
    fn decode(
        &self,
        message: &RawMessage,
    ) -> impl Future<Output = Result<Self::Value, DecodeError>> + Send;
}

/// A pair of codecs decodes key and value independently:
/// `(JsonCodec::<K>::for_key(), avro_value_codec)`.
impl<A: Codec, B: Codec> Codec for (A, B) {
    type Value = (A::Value, B::Value);

    async fn decode(&self, message: &RawMessage) -> Result<Self::Value, DecodeError> {
        let a = self.0.decode(message).await?;
        let b = self.1.decode(message).await?;
        Ok((a, b))
    }
}

/// Adapters for codecs.
pub trait CodecExt: Codec + Sized {
    /// Maps the decoded value, e.g. into an enum shared by several topics for [`ByTopic`].
    fn map<F, U>(self, f: F) -> Map<Self, F>
    where
        F: Fn(Self::Value) -> U + Send + Sync + 'static,
        U: Send + 'static,
    {
        Map { codec: self, f }
    }
}

impl<C: Codec> CodecExt for C {}

/// A codec whose value is mapped by a function (see [`CodecExt::map`]).
#[derive(Debug, Clone)]
pub struct Map<C, F> {
    codec: C,
    f: F,
}

impl<C, F, U> Codec for Map<C, F>
where
    C: Codec,
    F: Fn(C::Value) -> U + Send + Sync + 'static,
    U: Send + 'static,
{
    type Value = U;

    async fn decode(&self, message: &RawMessage) -> Result<U, DecodeError> {
        self.codec.decode(message).await.map(&self.f)
    }
}

/// Encodes values of type `T` into message bytes for a topic. Used with the
/// [`Producer`](crate::Producer) (`Record::payload(encoder.encode(..).await?)`)
/// and the outbox (encode, then enqueue the bytes in the same transaction as
/// the business write).
pub trait Encoder<T: ?Sized>: Send + Sync {
    /// Encodes `value` for `topic` (schema-registry encoders derive the subject from it).
    fn encode(
        &self,
        topic: &str,
        value: &T,
    ) -> impl Future<Output = Result<Bytes, EncodeError>> + Send;
}

/// Passes the payload through as [`Bytes`] (`None` for a tombstone).
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Value = Option<Bytes>;

    async fn decode(&self, message: &RawMessage) -> Result<Self::Value, DecodeError> {
        Ok(message.payload.clone())
    }
}

/// Decodes the payload as UTF-8 text.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringCodec;

impl Codec for StringCodec {
    type Value = String;

    async fn decode(&self, message: &RawMessage) -> Result<Self::Value, DecodeError> {
        let p = message
            .payload
            .as_deref()
            .ok_or(DecodeError::Missing(Part::Value))?;
        std::str::from_utf8(p)
            .map(str::to_owned)
            .map_err(|e| DecodeError::InvalidUtf8 {
                valid_up_to: e.valid_up_to(),
            })
    }
}

/// Decodes the message **key** with codec `C` (which reads the value):
/// `(Key(StringCodec), JsonCodec::<Click>::new())` gives `(String, Click)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Key<C>(pub C);

impl<C: Codec> Codec for Key<C> {
    type Value = C::Value;

    async fn decode(&self, message: &RawMessage) -> Result<C::Value, DecodeError> {
        let view = RawMessage {
            topic: message.topic.clone(),
            partition: message.partition,
            offset: message.offset,
            timestamp_ms: message.timestamp_ms,
            key: message.key.clone(),
            payload: message.key.clone(),
            headers: message.headers.clone(),
        };
        self.0.decode(&view).await.map_err(|e| match e {
            DecodeError::Missing(_) => DecodeError::Missing(Part::Key),
            e => e,
        })
    }
}

/// Bytes pass through unchanged.
impl Encoder<[u8]> for BytesCodec {
    async fn encode(&self, _topic: &str, value: &[u8]) -> Result<Bytes, EncodeError> {
        Ok(Bytes::copy_from_slice(value))
    }
}

/// UTF-8 text.
impl Encoder<str> for StringCodec {
    async fn encode(&self, _topic: &str, value: &str) -> Result<Bytes, EncodeError> {
        Ok(Bytes::copy_from_slice(value.as_bytes()))
    }
}
