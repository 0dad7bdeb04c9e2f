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

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::message::RawMessage;

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

/// Why a payload could not be decoded.
///
/// Every variant but [`Unavailable`](Self::Unavailable) is terminal: the
/// message goes to the failure sink with [`class`](Self::class) as its error
/// class. Messages never quote payload bytes (they may hold personal data).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message has no payload and the codec needs one.
    #[error("message has no {0} (null key or tombstone) and the codec needs one")]
    Missing(Part),
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
    /// Schema-registry framing: the first byte is not the magic byte 0, so the
    /// bytes were not written by a schema-registry serializer (plain JSON,
    /// another format, or a producer with the wrong serializer).
    #[error(
        "{part} does not start with the schema registry magic byte 0 (found {found:#04x}): it was not written with a schema-registry serializer"
    )]
    WrongMagicByte {
        /// Key or value.
        part: Part,
        /// The first byte found.
        found: u8,
    },
    /// The bytes end before the frame or the body is complete.
    #[error("{part} is truncated: {detail}")]
    Truncated {
        /// Key or value.
        part: Part,
        /// What was cut short (never the bytes themselves).
        detail: String,
    },
    /// The registry has no schema with the id the message names (HTTP 404 with
    /// error code 40403): written against another registry, or the schema was
    /// hard-deleted.
    #[error(
        "{part} names schema id {id}, which the schema registry does not know (written against another registry, or the schema was hard-deleted)"
    )]
    UnknownSchemaId {
        /// Key or value.
        part: Part,
        /// The schema id from the frame.
        id: u32,
    },
    /// The writer's schema cannot be read with the consumer's reader schema.
    #[error(
        "{part} was written with schema id {writer_id}, which the reader schema cannot read: {detail}"
    )]
    IncompatibleSchema {
        /// Key or value.
        part: Part,
        /// Writer schema id.
        writer_id: u32,
        /// Why (field names and types, never values).
        detail: String,
    },
    /// The body is not a valid encoding for its writer schema (corrupt bytes,
    /// trailing bytes, or a schema id that does not match the body).
    #[error("{part} body is not valid for writer schema id {writer_id}: {detail}")]
    InvalidBody {
        /// Key or value.
        part: Part,
        /// Writer schema id.
        writer_id: u32,
        /// What is wrong (never the bytes).
        detail: String,
    },
    /// The decoded value does not fit the Rust type the processor asked for.
    #[error("{part} does not fit {target}: {detail}")]
    TypeMismatch {
        /// Key or value.
        part: Part,
        /// The Rust type expected.
        target: &'static str,
        /// What did not fit (field names, never values).
        detail: String,
    },
    /// A dependency of the codec (the schema registry) cannot be reached or
    /// refused the request. Not the message's fault: retried in place (see
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)), never sent to the DLQ.
    #[error("{what} is unavailable: {detail}")]
    Unavailable {
        /// What could not be reached, e.g. `schema registry http://sr:8081`.
        what: String,
        /// The error, with what to check.
        detail: String,
    },
    /// Any other codec's failure.
    #[error("{0}")]
    Other(String),
}

impl DecodeError {
    /// The error class used in metrics, logs and the `weir-error-class` header:
    /// `decode` for plain format errors, `decode_<reason>` for the
    /// schema-registry classes, `schema_registry_unavailable` for outages.
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::WrongMagicByte { .. } => "decode_wrong_magic_byte",
            DecodeError::Truncated { .. } => "decode_truncated",
            DecodeError::UnknownSchemaId { .. } => "decode_unknown_schema_id",
            DecodeError::IncompatibleSchema { .. } => "decode_incompatible_schema",
            DecodeError::InvalidBody { .. } => "decode_invalid_body",
            DecodeError::TypeMismatch { .. } => "decode_type_mismatch",
            DecodeError::Unavailable { .. } => "schema_registry_unavailable",
            _ => "decode",
        }
    }

    /// True when retrying can help ([`Unavailable`](Self::Unavailable)).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DecodeError::Unavailable { .. })
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

type BoxDecode<'a, V> = Pin<Box<dyn Future<Output = Result<V, DecodeError>> + Send + 'a>>;

trait DynCodec<V>: Send + Sync {
    fn decode_boxed<'a>(&'a self, message: &'a RawMessage) -> BoxDecode<'a, V>;
}

impl<C: Codec> DynCodec<C::Value> for C {
    fn decode_boxed<'a>(&'a self, message: &'a RawMessage) -> BoxDecode<'a, C::Value> {
        Box::pin(self.decode(message))
    }
}

/// Selects the codec by topic, for a consumer subscribed to topics of
/// different formats (raw bytes on one, JSON on another, Avro on a third).
/// All codecs produce the same type: map them into an enum with [`CodecExt::map`].
///
/// A message from a topic with no codec and no default is a terminal `decode`
/// error (it goes to the DLQ), never a panic.
///
/// ```
/// use weir::codec::{ByTopic, CodecExt};
/// use weir::{JsonCodec, StringCodec};
///
/// #[derive(serde::Deserialize)]
/// struct Click { link: String }
/// enum Event { Click(Click), Note(String) }
///
/// let codec = ByTopic::new()
///     .topic("clicks", JsonCodec::<Click>::new().map(Event::Click))
///     .default(StringCodec.map(Event::Note));
/// # let _ = codec;
/// ```
pub struct ByTopic<V> {
    topics: HashMap<String, Arc<dyn DynCodec<V>>>,
    default: Option<Arc<dyn DynCodec<V>>>,
}

impl<V: Send + 'static> ByTopic<V> {
    /// No topics yet.
    pub fn new() -> Self {
        ByTopic {
            topics: HashMap::new(),
            default: None,
        }
    }

    /// Decodes messages of `topic` (retry and DLQ copies included: they keep
    /// the original topic in `weir-original-topic`) with `codec`.
    pub fn topic<C: Codec<Value = V>>(mut self, topic: impl Into<String>, codec: C) -> Self {
        self.topics.insert(topic.into(), Arc::new(codec));
        self
    }

    /// Decodes messages of every other topic with `codec`.
    pub fn default<C: Codec<Value = V>>(mut self, codec: C) -> Self {
        self.default = Some(Arc::new(codec));
        self
    }

    fn pick(&self, message: &RawMessage) -> Option<&Arc<dyn DynCodec<V>>> {
        if let Some(c) = self.topics.get(&*message.topic) {
            return Some(c);
        }
        // Retry-tier copies live on `<topic>.retry.<delay>`: use the source topic's codec.
        if let Some(orig) = crate::wire::original_topic(&message.headers)
            && let Some(c) = self.topics.get(orig)
        {
            return Some(c);
        }
        self.default.as_ref()
    }
}

impl<V: Send + 'static> Default for ByTopic<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> std::fmt::Debug for ByTopic<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut topics: Vec<&String> = self.topics.keys().collect();
        topics.sort();
        f.debug_struct("ByTopic")
            .field("topics", &topics)
            .field("default", &self.default.is_some())
            .finish()
    }
}

impl<V: Send + 'static> Codec for ByTopic<V> {
    type Value = V;

    async fn decode(&self, message: &RawMessage) -> Result<V, DecodeError> {
        match self.pick(message) {
            Some(c) => c.decode_boxed(message).await,
            None => Err(DecodeError::Other(format!(
                "no codec for topic `{}` (add it with ByTopic::topic or set a default)",
                message.topic
            ))),
        }
    }
}

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The value does not fit the schema or format.
    #[error("cannot encode {target} for topic `{topic}`: {detail}")]
    Invalid {
        /// Topic the bytes were for.
        topic: String,
        /// The Rust type encoded.
        target: &'static str,
        /// What did not fit (field names, never values).
        detail: String,
    },
    /// The schema registry refused the schema (incompatible with the subject's
    /// compatibility rules, or not registered while auto-registration is off).
    #[error("schema registry refused the schema for subject `{subject}`: {detail}")]
    SchemaRejected {
        /// The subject.
        subject: String,
        /// The registry's answer and what to do.
        detail: String,
    },
    /// A dependency (the schema registry) cannot be reached: retry later.
    #[error("{what} is unavailable: {detail}")]
    Unavailable {
        /// What could not be reached.
        what: String,
        /// The error.
        detail: String,
    },
}

impl EncodeError {
    /// True when retrying can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, EncodeError::Unavailable { .. })
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

/// serde JSON.
#[cfg(feature = "json")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

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
        let e = block_on(StringCodec.decode(&raw(Some(b"ab\xffcd")))).unwrap_err();
        assert!(matches!(e, DecodeError::InvalidUtf8 { valid_up_to: 2 }));
        assert_eq!(
            block_on(StringCodec.decode(&raw(Some(b"ok")))).unwrap(),
            "ok"
        );
        assert!(matches!(
            block_on(StringCodec.decode(&raw(None))),
            Err(DecodeError::Missing(Part::Value))
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
            block_on(c.decode(&raw(Some(br#"{"id":3}"#)))).unwrap(),
            Click { id: 3 }
        );
        let e = block_on(c.decode(&raw(Some(b"{\"id\":\"secret-pii\"}")))).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("not valid JSON"), "{msg}");
        assert!(
            !msg.contains("secret-pii"),
            "payload leaked into the error: {msg}"
        );
        let e = block_on(c.decode(&raw(Some(b"{}")))).unwrap_err();
        assert!(e.to_string().contains("missing field `id`"), "{e}");
        let pe: crate::ProcessError = e.into();
        assert_eq!(pe.class(), "decode");
        assert!(!pe.is_retryable());
    }

    #[cfg(feature = "json")]
    #[test]
    fn key_and_value_codecs_are_independent() {
        #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
        struct Click {
            id: u32,
        }
        let mut m = raw(Some(br#"{"id":9}"#));
        m.key = Some(Bytes::from_static(b"link-1"));
        let c = (Key(StringCodec), JsonCodec::<Click>::new());
        assert_eq!(
            block_on(c.decode(&m)).unwrap(),
            ("link-1".to_string(), Click { id: 9 })
        );
        m.key = None;
        assert!(matches!(
            block_on(c.decode(&m)),
            Err(DecodeError::Missing(Part::Key))
        ));
        let bytes = block_on(JsonCodec::<Click>::new().encode("t", &Click { id: 4 })).unwrap();
        assert_eq!(&bytes[..], br#"{"id":4}"#);
    }

    #[test]
    fn by_topic_picks_codec_and_follows_retry_copies() {
        let c = ByTopic::new()
            .topic("a", StringCodec.map(|s| format!("a:{s}")))
            .topic(
                "b",
                BytesCodec.map(|b| format!("b:{}", b.map_or(0, |b| b.len()))),
            );
        let mut m = raw(Some(b"xyz"));
        m.topic = Arc::from("a");
        assert_eq!(block_on(c.decode(&m)).unwrap(), "a:xyz");
        m.topic = Arc::from("b");
        assert_eq!(block_on(c.decode(&m)).unwrap(), "b:3");
        m.topic = Arc::from("b.retry.1s");
        m.headers.push(crate::wire::headers::ORIGINAL_TOPIC, "a");
        assert_eq!(block_on(c.decode(&m)).unwrap(), "a:xyz");
        m.topic = Arc::from("zzz");
        m.headers = Default::default();
        let e = block_on(c.decode(&m)).unwrap_err();
        assert!(e.to_string().contains("no codec for topic `zzz`"), "{e}");
    }

    #[test]
    fn classes_and_kinds() {
        let e = DecodeError::WrongMagicByte {
            part: Part::Value,
            found: 0x7b,
        };
        assert_eq!(e.class(), "decode_wrong_magic_byte");
        assert!(e.to_string().contains("0x7b"), "{e}");
        let pe: crate::ProcessError = e.into();
        assert_eq!(pe.kind(), crate::ErrorKind::Terminal);
        assert_eq!(pe.class(), "decode_wrong_magic_byte");
        let pe: crate::ProcessError = DecodeError::Unavailable {
            what: "schema registry http://x".into(),
            detail: "connection refused".into(),
        }
        .into();
        assert!(pe.is_unavailable());
        assert_eq!(pe.class(), "schema_registry_unavailable");
    }
}
