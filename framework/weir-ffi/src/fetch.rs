//! Batch consumption from a partition's own queue
//! (`rd_kafka_consume_batch_queue`), with headers read only when asked for.
//!
//! rust-rdkafka's `PartitionQueue::poll` takes one message per call: an
//! event popped from the queue (`rd_kafka_queue_poll`), wrapped in an `Arc`
//! and checked, then librdkafka's application-poll bookkeeping once per
//! message. [`PartitionReader::consume`] takes up to a batch per call and
//! hands each message to a closure as a [`Fetched`] view, which borrows
//! librdkafka's memory; the message is destroyed when the closure returns.
//! Nothing outlives the call, so no librdkafka object crosses a thread.
//!
//! librdkafka 2.0 listed the batch calls as unsafe to run in parallel with
//! a seek, pause, resume or rebalance (messages lost or returned wrongly);
//! 2.1.0 fixed that. Weir is on 2.12 and still keeps them apart: its poll
//! thread serves rebalances and seeks itself, between batch calls, and
//! never pauses a partition it reads this way (it withholds credit instead).

use std::ffi::{CStr, CString, c_void};
use std::marker::PhantomData;
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka_sys as rd;
use rdkafka_sys::types::RDKafkaErrorCode;

/// A handle on one partition's fetch queue, for batch reads.
///
/// Made after the partition's queue was split from the consumer queue
/// (rust-rdkafka's `split_partition_queue`, which also carries the
/// queue's wake-up callback): this is a second handle on the same queue.
/// It keeps the consumer alive, as rust-rdkafka's `PartitionQueue` does, so
/// the queue handle is always released before the client is destroyed.
pub struct PartitionReader<C: ConsumerContext + 'static> {
    queue: *mut rd::rd_kafka_queue_t,
    buf: Vec<*mut rd::rd_kafka_message_t>,
    _consumer: Arc<BaseConsumer<C>>,
}

// SAFETY: librdkafka's queue handles may be used from any thread (its
// queues are locked internally); the message pointers in `buf` are only
// live within `consume`, which takes `&mut self`.
unsafe impl<C: ConsumerContext + 'static> Send for PartitionReader<C> {}

impl<C: ConsumerContext + 'static> PartitionReader<C> {
    /// A reader for `topic`/`partition` of `consumer`. `None` when the
    /// topic name has a NUL byte. librdkafka makes the partition's queue if
    /// it does not know the partition yet; a partition that is not assigned
    /// simply has nothing to read.
    pub fn new(consumer: &Arc<BaseConsumer<C>>, topic: &str, partition: i32) -> Option<Self> {
        let topic = CString::new(topic).ok()?;
        // SAFETY: the client is live (we hold `consumer`) and `topic` is a
        // NUL-terminated string live for the call. The returned handle is a
        // new reference owned by the reader, destroyed in `drop`.
        let queue = unsafe {
            rd::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
            )
        };
        if queue.is_null() {
            return None;
        }
        Some(PartitionReader {
            queue,
            buf: Vec::new(),
            _consumer: consumer.clone(),
        })
    }

    /// How many events wait in the queue now: messages, and errors
    /// librdkafka reports on the partition.
    pub fn len(&self) -> usize {
        // SAFETY: `queue` is a live handle owned by self.
        unsafe { rd::rd_kafka_queue_length(self.queue) }
    }

    /// Whether nothing waits in the queue now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes up to `max` messages now (it never waits) and calls `f` with
    /// each, in offset order: a message, or an error librdkafka reported on
    /// this partition (an end-of-partition event is
    /// `KafkaError::PartitionEOF`, as from rust-rdkafka). Returns how many
    /// messages and errors were taken.
    ///
    /// Each message is destroyed right after `f` returns with it, and every
    /// message still in the batch is destroyed if `f` panics.
    pub fn consume<F>(&mut self, max: usize, mut f: F) -> usize
    where
        F: FnMut(Result<Fetched<'_>, KafkaError>),
    {
        if max == 0 {
            return 0;
        }
        self.buf.clear();
        self.buf.reserve(max);
        // SAFETY: `queue` is a live handle (owned by self); `buf` has room
        // for `max` pointers, which librdkafka fills from the start and
        // whose count it returns (-1 on an error, then none are set).
        let n =
            unsafe { rd::rd_kafka_consume_batch_queue(self.queue, 0, self.buf.as_mut_ptr(), max) };
        let n = usize::try_from(n).unwrap_or(0).min(max);
        // SAFETY: librdkafka initialised the first `n` elements.
        unsafe { self.buf.set_len(n) };
        // Destroys whatever `f` has not seen, even when it panics.
        let mut batch = Batch {
            msgs: &mut self.buf,
            next: 0,
        };
        while batch.next < batch.msgs.len() {
            let m = batch.msgs[batch.next];
            {
                // SAFETY: a message from the batch, not yet destroyed; the
                // view cannot outlive this block.
                let view = unsafe { Fetched::new(m) };
                // A panic here leaves `next` at this message: the guard
                // destroys it with the rest.
                f(view);
            }
            batch.next += 1;
            // SAFETY: taken from the batch above, destroyed once: the guard
            // only destroys those from `next` on, which is past it now.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
        n
    }
}

impl<C: ConsumerContext + 'static> Drop for PartitionReader<C> {
    fn drop(&mut self) {
        // SAFETY: the handle from rd_kafka_queue_get_partition, destroyed
        // once, while the client is still alive (`_consumer` is dropped
        // after this).
        unsafe { rd::rd_kafka_queue_destroy(self.queue) }
    }
}

/// The messages of one batch that still need destroying.
struct Batch<'a> {
    msgs: &'a mut Vec<*mut rd::rd_kafka_message_t>,
    next: usize,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        for &m in &self.msgs[self.next..] {
            // SAFETY: returned by the batch call, not yet destroyed.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
        self.msgs.clear();
    }
}

/// A fetched message, borrowed from librdkafka for the length of the
/// [`PartitionReader::consume`] callback.
pub struct Fetched<'a> {
    m: *const rd::rd_kafka_message_t,
    _life: PhantomData<&'a ()>,
}

impl<'a> Fetched<'a> {
    /// # Safety
    /// `m` is a live consumed message, not destroyed during `'a`.
    unsafe fn new(m: *const rd::rd_kafka_message_t) -> Result<Self, KafkaError> {
        // SAFETY: live message (the caller's guarantee).
        let (err, partition) = unsafe { ((*m).err, (*m).partition) };
        match err {
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(Fetched {
                m,
                _life: PhantomData,
            }),
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                Err(KafkaError::PartitionEOF(partition))
            }
            e => Err(KafkaError::MessageConsumption(RDKafkaErrorCode::from(e))),
        }
    }

    fn raw(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: live for 'a (see `new`).
        unsafe { &*self.m }
    }

    /// The message's offset.
    pub fn offset(&self) -> i64 {
        self.raw().offset
    }

    /// The message's partition.
    pub fn partition(&self) -> i32 {
        self.raw().partition
    }

    /// The create or log-append time in milliseconds since the epoch;
    /// `None` when the message has none.
    pub fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: live message; `kind` is a valid out-pointer.
        let ts = unsafe { rd::rd_kafka_message_timestamp(self.m, &mut kind) };
        match kind {
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => None,
            _ if ts == -1 => None,
            _ => Some(ts),
        }
    }

    /// The key; `None` for a null key.
    pub fn key(&self) -> Option<&'a [u8]> {
        let r = self.raw();
        // SAFETY: librdkafka's key pointer and length describe one buffer
        // that lives as long as the message.
        unsafe { bytes(r.key, r.key_len) }
    }

    /// The payload; `None` for a null value (a tombstone).
    pub fn payload(&self) -> Option<&'a [u8]> {
        let r = self.raw();
        // SAFETY: as for the key.
        unsafe { bytes(r.payload, r.len) }
    }

    /// `true` when the message surely has no headers (see
    /// [`crate::surely_headerless`]); [`Self::headers`] then returns 0
    /// without asking librdkafka to parse anything.
    pub fn surely_headerless(&self) -> bool {
        // SAFETY: live for 'a (see `new`).
        unsafe { crate::peek::headerless_raw(self.m) }
    }

    /// Calls `f` with each header's name and value, in wire order; returns
    /// how many there were. Only this call parses the headers (librdkafka
    /// builds its header list on first access).
    ///
    /// Names are bytes: a producer can send a name that is not UTF-8. A
    /// header section librdkafka cannot parse (a hostile or broken
    /// producer) reads as no headers, as it does in rust-rdkafka.
    pub fn headers(&self, mut f: impl FnMut(usize, &'a [u8], Option<&'a [u8]>)) -> usize {
        if self.surely_headerless() {
            return 0;
        }
        let mut hdrs: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: live message; `hdrs` is a valid out-pointer. The list is
        // owned by the message and freed with it.
        let err = unsafe { rd::rd_kafka_message_headers(self.m, &mut hdrs) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
            return 0;
        }
        // SAFETY: a live header list.
        let count = unsafe { rd::rd_kafka_header_cnt(hdrs) };
        for i in 0..count {
            let mut name = std::ptr::null();
            let mut value: *const c_void = std::ptr::null();
            let mut size = 0usize;
            // SAFETY: `i` is below the count; the out-pointers are valid.
            let err =
                unsafe { rd::rd_kafka_header_get_all(hdrs, i, &mut name, &mut value, &mut size) };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                continue;
            }
            // SAFETY: librdkafka NUL-terminates every header name it
            // stores; the name lives as long as the message.
            let name: &'a [u8] = unsafe { CStr::from_ptr(name) }.to_bytes();
            // SAFETY: value and size describe one buffer owned by the list.
            let value = unsafe { bytes(value.cast_mut(), size) };
            f(i, name, value);
        }
        count
    }
}

/// `len` bytes at `p`; `None` when `p` is NULL.
///
/// # Safety
/// A non-null `p` points to `len` readable bytes that live for `'a`.
unsafe fn bytes<'a>(p: *mut c_void, len: usize) -> Option<&'a [u8]> {
    if p.is_null() {
        None
    } else {
        // SAFETY: the caller's guarantee.
        Some(unsafe { std::slice::from_raw_parts(p.cast::<u8>().cast_const(), len) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_maps_null_to_none_and_keeps_empty_buffers() {
        // SAFETY: NULL is allowed.
        assert_eq!(unsafe { bytes(std::ptr::null_mut(), 5) }, None);
        let mut b = *b"abc";
        // SAFETY: `b` is live and 3 bytes long.
        let all = unsafe { bytes(b.as_mut_ptr().cast(), 3) };
        assert_eq!(all, Some(&b"abc"[..]));
        // SAFETY: zero bytes of a live buffer.
        let none = unsafe { bytes(b.as_mut_ptr().cast(), 0) };
        assert_eq!(none, Some(&b""[..]));
    }
}
