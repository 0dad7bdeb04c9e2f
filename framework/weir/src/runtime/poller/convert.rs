//! A fetched librdkafka message as a [`RawMessage`]: one conversion, headers
//! read defensively, bytes copied into shared chunks ([`Arena`]).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
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

/// Where the poll thread copies keys, payloads and header values: small
/// copies are carved out of one [`CHUNK`](Arena::CHUNK)-byte buffer shared by
/// consecutive messages, so a message costs no allocation of its own for its
/// bytes (two or three per message before, each made on the poll thread and
/// freed on a worker, the slowest way to use the system allocator), and a
/// [`Bytes`] clone (a codec handing the payload to the processor) is a count,
/// not an allocation.
///
/// The price: a message's bytes keep their chunk alive, so a processor that
/// holds a small message (or a `Bytes` of it) for long holds up to
/// `CHUNK` bytes with it. Copies of [`OWN_FROM`](Arena::OWN_FROM) bytes or
/// more get an allocation of their own and pin nothing else. When every copy
/// of the current chunk has been dropped, the chunk is used again from its
/// start.
pub(crate) struct Arena {
    buf: BytesMut,
}

impl Default for Arena {
    fn default() -> Self {
        Arena {
            buf: BytesMut::with_capacity(Self::CHUNK),
        }
    }
}

impl Arena {
    /// The size of a shared buffer.
    pub(crate) const CHUNK: usize = 16 * 1024;
    /// Copies at least this long are allocated on their own.
    pub(crate) const OWN_FROM: usize = 2 * 1024;

    /// `b`, copied.
    pub(crate) fn copy(&mut self, b: &[u8]) -> Bytes {
        if b.is_empty() {
            return Bytes::new();
        }
        if b.len() >= Self::OWN_FROM {
            return Bytes::copy_from_slice(b);
        }
        // Out of room: `reserve` takes the chunk back from its start when
        // nothing else holds it, and otherwise starts a new one of `CHUNK`
        // bytes (the old one lives on while its copies do).
        self.buf.extend_from_slice(b);
        self.buf.split().freeze()
    }
}

/// The poll thread's copying room, owned by its loop (`poll_loop`).
pub(crate) struct Copies {
    pub(crate) arena: Arena,
    /// One partition's messages while they are taken, sent on as one batch;
    /// kept so that its room is not grown again for every partition.
    pub(crate) taken: Vec<RawMessage>,
}

impl Default for Copies {
    fn default() -> Self {
        Copies {
            arena: Arena::default(),
            taken: Vec::with_capacity(super::BATCH),
        }
    }
}

pub(crate) fn convert(
    topics: &mut Topics,
    arena: &mut Arena,
    m: &BorrowedMessage<'_>,
) -> RawMessage {
    convert_with(topics.intern(m.topic()), m.partition(), arena, m)
}

/// The header that stands in for header `index`, whose name is not UTF-8
/// (the runner sends its message to the failure sink as `invalid_header_name`).
fn unreadable_header(index: usize, topic: &str, partition: i32, offset: i64) -> Header {
    tracing::warn!(
        topic,
        partition,
        offset,
        index,
        "a header name is not valid UTF-8; the message goes to the failure sink"
    );
    Header {
        key: UNREADABLE_HEADER_NAME.to_string(),
        value: Some(Bytes::from(index.to_string())),
    }
}

/// Copies a message's headers out of librdkafka, never panicking on what a
/// producer sent: rust-rdkafka's accessor unwraps every header name as UTF-8
/// (`BorrowedHeaders::try_get`), so a name that is not UTF-8 panics inside
/// it. Such a header is replaced by [`UNREADABLE_HEADER_NAME`] with the
/// header's index as its value, and the runner sends the message to the
/// failure sink as `invalid_header_name`. The panic stays inside this call.
#[cfg(feature = "ops")]
pub(crate) fn read_headers(m: &BorrowedMessage<'_>) -> Headers {
    read_headers_with(m, &mut Bytes::copy_from_slice)
}

/// [`read_headers`], with values copied by `copy`.
fn read_headers_with(m: &BorrowedMessage<'_>, copy: &mut dyn FnMut(&[u8]) -> Bytes) -> Headers {
    // librdkafka's parse allocates even for a record without headers.
    if weir_ffi::surely_headerless(m) {
        return Headers::default();
    }
    let Some(hs) = m.headers() else {
        return Headers::default();
    };
    let mut out = Vec::with_capacity(hs.count());
    for i in 0..hs.count() {
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            hs.try_get(i).map(|h| Header {
                key: h.key.to_string(),
                value: h.value.map(&mut *copy),
            })
        }));
        match got {
            Ok(Some(h)) => out.push(h),
            Ok(None) => {}
            Err(_) => out.push(unreadable_header(i, m.topic(), m.partition(), m.offset())),
        }
    }
    Headers(out)
}

/// Copies a message out of librdkafka whose topic and partition are known.
pub(super) fn convert_with(
    topic: Arc<str>,
    partition: i32,
    arena: &mut Arena,
    m: &BorrowedMessage<'_>,
) -> RawMessage {
    let headers = read_headers_with(m, &mut |b| arena.copy(b));
    RawMessage {
        topic,
        partition,
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis(),
        key: m.key().map(|k| arena.copy(k)),
        payload: m.payload().map(|p| arena.copy(p)),
        headers,
    }
}

/// Copies a message lent by [`weir_ffi::PartitionReader`]; the same
/// [`RawMessage`] as [`convert_with`] makes of the same message. Header
/// names arrive as bytes, so one that is not UTF-8 needs no panic to catch.
pub(super) fn convert_fetched(
    topic: Arc<str>,
    arena: &mut Arena,
    m: &weir_ffi::Fetched<'_>,
) -> RawMessage {
    let mut headers = Vec::new();
    m.headers(|i, name, value| {
        headers.push(match std::str::from_utf8(name) {
            Ok(k) => Header {
                key: k.to_string(),
                value: value.map(|v| arena.copy(v)),
            },
            Err(_) => unreadable_header(i, &topic, m.partition(), m.offset()),
        })
    });
    RawMessage {
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp_ms(),
        key: m.key().map(|k| arena.copy(k)),
        payload: m.payload().map(|p| arena.copy(p)),
        headers: Headers(headers),
        topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn filled(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn small_copies_share_one_chunk() {
        let mut a = Arena::default();
        let key = a.copy(b"key-1");
        let payload = a.copy(&filled(100, 7));
        assert_eq!(&key[..], b"key-1");
        assert_eq!(&payload[..], &filled(100, 7)[..]);
        // Carved one after the other out of the same buffer: no allocation each.
        assert_eq!(payload.as_ptr() as usize, key.as_ptr() as usize + key.len());
        // A clone counts; it copies nothing.
        assert_eq!(payload.clone().as_ptr(), payload.as_ptr());
        assert!(a.copy(b"").is_empty());
    }

    #[test]
    fn large_copies_are_allocated_alone_and_leave_the_chunk_alone() {
        let mut a = Arena::default();
        let small = a.copy(b"small");
        let large = a.copy(&filled(Arena::OWN_FROM, 1));
        let next = a.copy(b"next");
        assert_eq!(&large[..], &filled(Arena::OWN_FROM, 1)[..]);
        assert_eq!(
            next.as_ptr() as usize,
            small.as_ptr() as usize + small.len()
        );
        let chunk = small.as_ptr() as usize..small.as_ptr() as usize + Arena::CHUNK;
        assert!(!chunk.contains(&(large.as_ptr() as usize)));
    }

    #[test]
    fn the_chunk_is_used_again_only_when_nothing_holds_it() {
        let per = 1000;
        let fits = Arena::CHUNK / per;
        // Nothing held: the copy that does not fit starts the same chunk over.
        let mut a = Arena::default();
        let start = a.copy(&filled(per, 0)).as_ptr();
        for i in 1..fits {
            drop(a.copy(&filled(per, i as u8)));
        }
        let again = a.copy(&filled(per, 9));
        assert_eq!(again.as_ptr(), start, "the free chunk is used again");
        assert_eq!(&again[..], &filled(per, 9)[..]);
        // One copy held: a new chunk, and the held copy is untouched.
        let mut a = Arena::default();
        let held = a.copy(&filled(per, 3));
        for i in 1..fits {
            drop(a.copy(&filled(per, i as u8)));
        }
        let next = a.copy(&filled(per, 9));
        let chunk = held.as_ptr() as usize..held.as_ptr() as usize + Arena::CHUNK;
        assert!(!chunk.contains(&(next.as_ptr() as usize)));
        assert_eq!(&held[..], &filled(per, 3)[..]);
    }

    proptest! {
        /// Whatever is copied, held, dropped and copied again, every copy
        /// still held reads what was copied.
        #[test]
        fn held_copies_keep_their_bytes(
            steps in proptest::collection::vec((0usize..3000, any::<u8>(), any::<bool>()), 1..400)
        ) {
            let mut a = Arena::default();
            let mut held: Vec<(Bytes, Vec<u8>)> = Vec::new();
            for (len, seed, drop_one) in steps {
                let src = filled(len, seed);
                let copy = a.copy(&src);
                prop_assert_eq!(&copy[..], &src[..]);
                held.push((copy, src));
                if drop_one && held.len() > 1 {
                    let i = seed as usize % held.len();
                    held.swap_remove(i);
                }
                for (c, s) in &held {
                    prop_assert_eq!(&c[..], &s[..]);
                }
            }
        }
    }
}
