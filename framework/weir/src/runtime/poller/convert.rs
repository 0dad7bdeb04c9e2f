//! A fetched librdkafka message as a [`RawMessage`]: one conversion, headers
//! read defensively.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};

use crate::message::{Header, Headers, RawMessage, UNREADABLE_HEADER_NAME};

/// Topic names shared as `Arc<str>`; owned by the poll thread, so no lock.
/// Consecutive messages usually share a topic: that case is a string compare.
#[derive(Default)]
pub(crate) struct Topics {
    last: Option<Arc<str>>,
    all: HashMap<String, Arc<str>>,
}

impl Topics {
    pub(crate) fn intern(&mut self, topic: &str) -> Arc<str> {
        if let Some(last) = &self.last
            && &**last == topic
        {
            return last.clone();
        }
        let a = match self.all.get(topic) {
            Some(a) => a.clone(),
            None => {
                let a: Arc<str> = Arc::from(topic);
                self.all.insert(topic.to_string(), a.clone());
                a
            }
        };
        self.last = Some(a.clone());
        a
    }
}

pub(crate) fn convert(topics: &mut Topics, m: &BorrowedMessage<'_>) -> RawMessage {
    convert_with(topics.intern(m.topic()), m.partition(), m)
}

/// Copies a message's headers out of librdkafka, never panicking on what a
/// producer sent: rust-rdkafka's accessor unwraps every header name as UTF-8
/// (`BorrowedHeaders::try_get`), so a name that is not UTF-8 panics inside
/// it. Such a header is replaced by [`UNREADABLE_HEADER_NAME`] with the
/// header's index as its value, and the runner sends the message to the
/// failure sink as `invalid_header_name`. The panic stays inside this call.
pub(crate) fn read_headers(m: &BorrowedMessage<'_>) -> Headers {
    let Some(hs) = m.headers() else {
        return Headers::default();
    };
    let mut out = Vec::with_capacity(hs.count());
    for i in 0..hs.count() {
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            hs.try_get(i).map(|h| Header {
                key: h.key.to_string(),
                value: h.value.map(Bytes::copy_from_slice),
            })
        }));
        match got {
            Ok(Some(h)) => out.push(h),
            Ok(None) => {}
            Err(_) => {
                tracing::warn!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    index = i,
                    "a header name is not valid UTF-8; the message goes to the failure sink"
                );
                out.push(Header {
                    key: UNREADABLE_HEADER_NAME.to_string(),
                    value: Some(Bytes::from(i.to_string())),
                });
            }
        }
    }
    Headers(out)
}

/// Copies a message out of librdkafka whose topic and partition are known.
pub(super) fn convert_with(topic: Arc<str>, partition: i32, m: &BorrowedMessage<'_>) -> RawMessage {
    let headers = read_headers(m);
    RawMessage {
        topic,
        partition,
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis(),
        key: m.key().map(Bytes::copy_from_slice),
        payload: m.payload().map(Bytes::copy_from_slice),
        headers,
    }
}

/// Copies a message lent by [`weir_ffi::PartitionReader`]; the same
/// [`RawMessage`] as [`convert_with`] makes of the same message. Header
/// names arrive as bytes, so one that is not UTF-8 needs no panic to catch.
pub(super) fn convert_fetched(topic: Arc<str>, m: &weir_ffi::Fetched<'_>) -> RawMessage {
    let mut headers = Vec::new();
    m.headers(|i, name, value| {
        let key = match std::str::from_utf8(name) {
            Ok(k) => k.to_string(),
            Err(_) => {
                tracing::warn!(
                    topic = &*topic,
                    partition = m.partition(),
                    offset = m.offset(),
                    index = i,
                    "a header name is not valid UTF-8; the message goes to the failure sink"
                );
                return headers.push(Header {
                    key: UNREADABLE_HEADER_NAME.to_string(),
                    value: Some(Bytes::from(i.to_string())),
                });
            }
        };
        headers.push(Header {
            key,
            value: value.map(Bytes::copy_from_slice),
        });
    });
    RawMessage {
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp_ms(),
        key: m.key().map(Bytes::copy_from_slice),
        payload: m.payload().map(Bytes::copy_from_slice),
        headers: Headers(headers),
        topic,
    }
}
