//! Messages as a processor sees them.

use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`'s partition `partition`.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// One header: a name and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name (Kafka header names are strings).
    pub key: String,
    /// Header value; `None` is a null value.
    pub value: Option<Bytes>,
}

/// Message headers, in wire order (names may repeat).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

/// Stands in for a header whose name librdkafka could not hand over as UTF-8
/// (its value is the header's index): the message goes to the failure sink
/// as `invalid_header_name` (the original name's bytes are not kept).
pub const UNREADABLE_HEADER_NAME: &str = "weir-unreadable-header-name";

impl Headers {
    /// The last header called `name` (Kafka convention: the latest wins).
    ///
    /// Inlined, with an early answer for a record without headers (most
    /// records): the run asks for several Weir headers per message.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        if self.0.is_empty() {
            return None;
        }
        self.0
            .iter()
            .rev()
            .find(|h| h.key == name)
            .and_then(|h| h.value.as_deref())
    }

    /// The last header called `name` as UTF-8.
    #[inline]
    pub fn get_str(&self, name: &str) -> Result<Option<&str>, MessageError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v)
                .map(Some)
                .map_err(|_| MessageError::InvalidHeader {
                    name: name.to_string(),
                }),
        }
    }

    /// Adds a header at the end.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<Bytes>) {
        self.0.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates in wire order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// Total bytes of names and values.
    pub fn byte_size(&self) -> usize {
        self.0
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
            .sum()
    }
}

/// A message exactly as fetched: coordinates, key, payload and headers, undecoded.
///
/// The consumer copies keys, payloads and header values shorter than 2 KiB
/// into buffers of 16 KiB that consecutive messages share (one allocation
/// for many messages). A [`Bytes`] of a message keeps its whole buffer
/// alive: to keep a small part of a message for long (a cache), copy it
/// (`Bytes::copy_from_slice`) rather than cloning it.
#[derive(Debug, Clone)]
pub struct RawMessage {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Broker or producer timestamp, milliseconds since the epoch, if any.
    pub timestamp_ms: Option<i64>,
    /// Key bytes.
    pub key: Option<Bytes>,
    /// Payload bytes (`None` for a tombstone).
    pub payload: Option<Bytes>,
    /// Headers.
    pub headers: Headers,
}

impl RawMessage {
    /// `topic/partition@offset`, for logs. Never includes the payload.
    pub fn coordinates(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }

    /// The producer-assigned message ID (the [`MESSAGE_ID_HEADER`](crate::id::MESSAGE_ID_HEADER)
    /// header), if present and valid UTF-8. Every message Weir produces has one.
    pub fn message_id(&self) -> Option<&str> {
        self.headers
            .get_str(crate::id::MESSAGE_ID_HEADER)
            .ok()
            .flatten()
    }
}

/// Problems with a message's envelope (key, headers) found by the accessors.
/// All are terminal: the same bytes will fail the same way again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The processor needs a key and the message has none.
    #[error("message has no key, and this processor needs one")]
    MissingKey,
    /// The key is not valid UTF-8.
    #[error("message key is not valid UTF-8")]
    InvalidKey,
    /// A header value is not valid UTF-8.
    #[error("header `{name}` is not valid UTF-8")]
    InvalidHeader {
        /// Header name.
        name: String,
    },
    /// A header name is not valid UTF-8 (it reads as
    /// [`UNREADABLE_HEADER_NAME`] in [`RawMessage::headers`]).
    #[error("header #{index} has a name that is not valid UTF-8")]
    InvalidHeaderName {
        /// Position of the header in the message.
        index: usize,
    },
    /// The headers are larger than `max_header_bytes`.
    #[error("headers take {size} bytes, above max_header_bytes = {limit}")]
    OversizedHeaders {
        /// Bytes of header names and values.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl MessageError {
    /// Error class for metrics and failure headers.
    pub fn class(&self) -> &'static str {
        match self {
            MessageError::MissingKey => "missing_key",
            MessageError::InvalidKey => "invalid_key",
            MessageError::InvalidHeader { .. } => "invalid_header",
            MessageError::InvalidHeaderName { .. } => "invalid_header_name",
            MessageError::OversizedHeaders { .. } => "oversized_headers",
        }
    }
}

/// A message handed to a [`Processor`](crate::Processor): the decoded value,
/// the raw message, the delivery attempt and a cancellation signal.
#[derive(Debug)]
pub struct Message<T> {
    value: T,
    raw: Arc<RawMessage>,
    attempt: u32,
    // Shared: cloning a `CancellationToken` takes a lock, an `Arc` does not.
    cancel: Arc<CancellationToken>,
}

impl<T> Message<T> {
    /// Builds a message (the runtime does this; useful in unit tests of processors).
    pub fn new(value: T, raw: Arc<RawMessage>, attempt: u32, cancel: CancellationToken) -> Self {
        Self::with_shared_cancel(value, raw, attempt, Arc::new(cancel))
    }

    /// Builds a message whose cancellation signal is shared with others (the
    /// runtime's per-partition token).
    pub(crate) fn with_shared_cancel(
        value: T,
        raw: Arc<RawMessage>,
        attempt: u32,
        cancel: Arc<CancellationToken>,
    ) -> Self {
        Message {
            value,
            raw,
            attempt,
            cancel,
        }
    }

    /// A copy of this message for another delivery attempt (in-place retries).
    /// This message as delivery attempt `attempt` (moved, not copied).
    pub(crate) fn into_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    pub(crate) fn copy_for_attempt(&self, attempt: u32) -> Self
    where
        T: Clone,
    {
        Message {
            value: self.value.clone(),
            raw: self.raw.clone(),
            attempt,
            cancel: self.cancel.clone(),
        }
    }

    /// The decoded value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// Takes the decoded value.
    pub fn into_value(self) -> T {
        self.value
    }

    /// The raw message.
    pub fn raw(&self) -> &RawMessage {
        &self.raw
    }

    /// Key bytes, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.raw.key.as_deref()
    }

    /// The key as UTF-8, or a terminal [`MessageError`] (`?` turns it into a [`ProcessError`](crate::ProcessError)).
    pub fn key_str(&self) -> Result<&str, MessageError> {
        let k = self.raw.key.as_deref().ok_or(MessageError::MissingKey)?;
        std::str::from_utf8(k).map_err(|_| MessageError::InvalidKey)
    }

    /// Headers.
    pub fn headers(&self) -> &Headers {
        &self.raw.headers
    }

    /// Topic.
    pub fn topic(&self) -> &str {
        &self.raw.topic
    }

    /// Partition.
    pub fn partition(&self) -> i32 {
        self.raw.partition
    }

    /// Offset.
    pub fn offset(&self) -> i64 {
        self.raw.offset
    }

    /// Timestamp in milliseconds since the epoch, if the message has one.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.raw.timestamp_ms
    }

    /// Delivery attempt, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Fired when the runtime stops waiting for this message (revoke or shutdown
    /// deadline passed). A handler doing long work should stop when it fires;
    /// its future is dropped soon after either way.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The producer-assigned message ID, if the producer set one (Weir's
    /// producers always do). Use it as the idempotency key of outbound calls
    /// (`Idempotency-Key: <id>` on a payment API, for instance): a redelivery
    /// of the same message carries the same ID, so the third party de-duplicates it.
    pub fn message_id(&self) -> Option<&str> {
        self.raw.message_id()
    }

    /// A stable identity: `topic/partition@offset`. Weaker than a producer-assigned ID
    /// (a re-published copy gets a new identity).
    pub fn coordinates(&self) -> String {
        self.raw.coordinates()
    }
}

/// A test message on `topic` (partition 2, offset 41, key `k`, payload `p`)
/// with `headers`.
#[cfg(test)]
pub(crate) fn test_raw(topic: &str, headers: &[(&str, &str)]) -> RawMessage {
    let mut h = Headers::default();
    for (k, v) in headers {
        h.push(*k, v.to_string());
    }
    RawMessage {
        topic: topic.into(),
        partition: 2,
        offset: 41,
        timestamp_ms: Some(1_700_000_000_000),
        key: Some(bytes::Bytes::from_static(b"k")),
        payload: Some(bytes::Bytes::from_static(b"p")),
        headers: h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(key: Option<&[u8]>) -> Arc<RawMessage> {
        let mut headers = Headers::default();
        headers.push("h-bad", Bytes::from_static(b"ab\xff"));
        headers.push("h-ok", Bytes::from_static(b"fine"));
        Arc::new(RawMessage {
            topic: Arc::from("t"),
            partition: 1,
            offset: 9,
            timestamp_ms: None,
            key: key.map(Bytes::copy_from_slice),
            payload: None,
            headers,
        })
    }

    #[test]
    fn invalid_utf8_headers_and_keys_are_classified_errors() {
        let m = raw(Some(b"k\xfe"));
        let e = m.headers.get_str("h-bad").unwrap_err();
        assert_eq!(e.class(), "invalid_header");
        assert!(e.to_string().contains("h-bad"), "{e}");
        assert_eq!(m.headers.get_str("h-ok").unwrap(), Some("fine"));
        assert_eq!(m.headers.get_str("absent").unwrap(), None);
        let msg = Message::new((), m, 1, CancellationToken::new());
        let e = msg.key_str().unwrap_err();
        let pe: crate::ProcessError = e.into();
        assert!(!pe.is_retryable());
        let msg = Message::new((), raw(None), 1, CancellationToken::new());
        assert!(
            msg.key_str().is_err(),
            "a missing key is an error, not an empty string"
        );
    }
}
