//! # librdkafka calls that rust-rdkafka does not wrap
//!
//! The one Weir crate allowed `unsafe` code. Each call here exists because
//! an operator-facing feature needs it and rust-rdkafka 0.39 has no safe
//! wrapper for it:
//!
//! - [`membership`]: this consumer's member id, generation (the **member
//!   epoch** under the consumer protocol, KIP-848) and static instance id,
//!   from `rd_kafka_consumer_group_metadata` (rust-rdkafka returns the handle
//!   but keeps its accessors private). Weir exports the epoch as a metric.
//! - [`describe_consumer_groups`]: `rd_kafka_DescribeConsumerGroups`, which
//!   describes groups of **both** protocols: type, state, assignor, members
//!   with their current and (consumer protocol) target assignments.
//!   rust-rdkafka's `fetch_group_list` only speaks the classic DescribeGroups,
//!   which shows nothing useful for a consumer-protocol group. `weir groups`
//!   uses it.
//! - [`consumer_queue_len`]: how many events wait in a consumer's queue.
//!   rust-rdkafka's `BaseConsumer::poll` answers `None` both for an empty
//!   queue and after serving a log or statistics event (it routes
//!   librdkafka's logs into that queue), so a poll loop cannot tell "empty"
//!   from "served one, more queued". Weir's poll thread drains the queue by
//!   its length: a burst of debug logs once held rebalance events queued
//!   behind it for seconds, with every partition paused meanwhile.
//! - [`PartitionReader`]: batch consumption from a partition's own queue
//!   (`rd_kafka_consume_batch_queue`), each message lent to a closure as a
//!   [`Fetched`] view whose headers are parsed only when asked for.
//!   rust-rdkafka's `PartitionQueue::poll` pops one event per call and
//!   wraps it in an `Arc`; the poll thread spent about 1,076 instructions
//!   per message there (callgrind, `benches/README.md`).
//! - [`surely_headerless`]: whether a consumed message has no headers,
//!   without `rd_kafka_message_headers`, which allocates and frees a shadow
//!   buffer even for a record without headers (about 1,100 instructions
//!   per message). A small C function (`src/peek.c`), compiled against the
//!   private headers of the librdkafka tree rdkafka-sys built, reads the
//!   unparsed header section's first byte; with a system librdkafka it is
//!   not built and the answer is always "read them"
//!   ([`header_peek_active`]). [`Fetched::headers`] uses it too.
//!
//! Everything from the broker is copied into owned Rust values before the
//! librdkafka objects are freed; strings that are not UTF-8 are converted
//! lossily (a hostile client id cannot make a description fail). The tests
//! also run under valgrind memcheck: `scripts/memcheck`.
//!
//! ```no_run
//! use rdkafka::ClientConfig;
//! use rdkafka::admin::AdminClient;
//! use rdkafka::client::DefaultClientContext;
//! use std::time::Duration;
//!
//! let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
//!     .set("bootstrap.servers", "127.0.0.1:9092")
//!     .create()
//!     .expect("admin client");
//! for g in weir_ffi::describe_consumer_groups(admin.inner(), &["orders"], Duration::from_secs(5))
//!     .expect("describe")
//! {
//!     println!("{} {:?} {} members", g.group_id, g.group_type, g.members.len());
//! }
//! ```

use std::ffi::{CStr, CString, c_char};
use std::time::Duration;

mod fetch;
mod peek;

pub use fetch::{Fetched, PartitionReader};
pub use peek::{SWITCH as HEADER_PEEK_SWITCH, header_peek_active, surely_headerless};

use rdkafka::client::{Client, ClientContext};
use rdkafka_sys as rd;
use serde::Serialize;

/// What can go wrong in these calls.
#[derive(Debug, thiserror::Error)]
pub enum FfiError {
    /// A group name with a NUL byte cannot be passed to librdkafka.
    #[error("group name {0:?} contains a NUL byte: group names cannot contain one")]
    NulInName(String),
    /// librdkafka refused the request or the broker did not answer in time.
    #[error(
        "DescribeConsumerGroups failed: {0} (check the bootstrap servers and that the principal may describe the group)"
    )]
    Request(String),
    /// No answer within the timeout.
    #[error(
        "DescribeConsumerGroups got no answer within {0:?}: check that the brokers are reachable"
    )]
    Timeout(Duration),
}

/// This member's view of its group, as librdkafka holds it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    /// The group id.
    pub group_id: String,
    /// The member id the coordinator gave this member (empty before it joined).
    pub member_id: String,
    /// The generation (classic protocol) or the member epoch (consumer
    /// protocol); -1 or 0 while not a member.
    pub generation: i32,
    /// The static `group.instance.id`, if set.
    pub group_instance_id: Option<String>,
}

/// This client's group membership, or `None` when the client is not a
/// consumer of a group (a producer, an admin client, a consumer without
/// `group.id`).
///
/// Asks librdkafka's group handler and waits for its answer (a queue round
/// trip on librdkafka's own thread, microseconds; no broker request).
pub fn membership<C: ClientContext>(client: &Client<C>) -> Option<Membership> {
    let rk = client.native_ptr();
    // SAFETY: `rk` is the live handle owned by `client`, borrowed for this
    // call. The function returns a new object owned by the caller (or NULL
    // for a client without a group handler), freed below.
    let md = unsafe { rd::rd_kafka_consumer_group_metadata(rk) };
    if md.is_null() {
        return None;
    }
    // SAFETY: `md` is non-null and valid until destroyed below; the strings
    // it returns live as long as it does and are copied before that.
    let out = unsafe {
        Membership {
            group_id: owned(rd::rd_kafka_consumer_group_metadata_group_id(md)).unwrap_or_default(),
            member_id: owned(rd::rd_kafka_consumer_group_metadata_member_id(md))
                .unwrap_or_default(),
            generation: rd::rd_kafka_consumer_group_metadata_generation_id(md),
            group_instance_id: owned(rd::rd_kafka_consumer_group_metadata_group_instance_id(md)),
        }
    };
    // SAFETY: `md` came from rd_kafka_consumer_group_metadata and is freed once.
    unsafe { rd::rd_kafka_consumer_group_metadata_destroy(md) };
    Some(out)
}

/// The number of events waiting in the consumer queue of `client` (fetched
/// messages of partitions without a queue of their own, rebalances, errors,
/// commit results, logs and statistics: rust-rdkafka forwards librdkafka's
/// main queue, and with it the logs, into the consumer queue), or `None`
/// for a client without one (a producer, an admin client, a consumer
/// without `group.id`).
///
/// Cheap: one queue handle taken and released, one locked read; no broker
/// request.
pub fn consumer_queue_len<C: ClientContext>(client: &Client<C>) -> Option<usize> {
    let rk = client.native_ptr();
    // SAFETY: `rk` is the live handle owned by `client`, borrowed for this
    // call. The function returns a new reference to the consumer queue (or
    // NULL when the client has no group), released below.
    let q = unsafe { rd::rd_kafka_queue_get_consumer(rk) };
    if q.is_null() {
        return None;
    }
    // SAFETY: `q` is a live, non-null queue handle.
    let len = unsafe { rd::rd_kafka_queue_length(q) };
    // SAFETY: `q` came from rd_kafka_queue_get_consumer and is released once.
    unsafe { rd::rd_kafka_queue_destroy(q) };
    Some(len)
}

/// The protocol a group runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupType {
    /// The classic protocol (JoinGroup/SyncGroup, client-side assignors).
    Classic,
    /// The consumer protocol (KIP-848, broker-side assignors).
    Consumer,
    /// The broker did not say (an old broker, or the group does not exist).
    Unknown,
}

/// One topic partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Partition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

/// A member of a described group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberDescription {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its `client.id`.
    pub client_id: String,
    /// The host it connects from.
    pub host: String,
    /// Its static `group.instance.id`, if any.
    pub group_instance_id: Option<String>,
    /// The partitions it owns now, sorted.
    pub assignment: Vec<Partition>,
    /// Consumer protocol only: the partitions the broker's assignor wants it
    /// to own (equal to `assignment` once the member has reconciled).
    pub target_assignment: Option<Vec<Partition>>,
}

/// A described consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// Set when the broker could not describe this group (the others may
    /// still be described).
    pub error: Option<String>,
    /// The protocol it runs.
    pub group_type: GroupType,
    /// Its state as the broker names it (`Stable`, `PreparingRebalance`,
    /// `CompletingRebalance`, `Empty`, `Dead`, `Assigning`, `Reconciling`, …).
    pub state: String,
    /// The partition assignor (classic: the protocol the members agreed on;
    /// consumer: the broker-side assignor, `uniform` or `range`).
    pub assignor: String,
    /// A group of `assign()`-only consumers (no membership).
    pub simple: bool,
    /// The coordinator broker, `id@host:port`.
    pub coordinator: Option<String>,
    /// Its members, by member id.
    pub members: Vec<MemberDescription>,
}

/// Describes `groups` (both protocols: librdkafka asks ConsumerGroupDescribe
/// first and falls back to the classic DescribeGroups). A group that does
/// not exist comes back with state `Dead` (classic) or an `error`; a failure
/// of the whole request is an `Err`.
///
/// Blocks for up to `timeout`: call it from a blocking context.
pub fn describe_consumer_groups<C: ClientContext>(
    client: &Client<C>,
    groups: &[&str],
    timeout: Duration,
) -> Result<Vec<GroupDescription>, FfiError> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<CString> = groups
        .iter()
        .map(|g| CString::new(*g).map_err(|_| FfiError::NulInName((*g).to_string())))
        .collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let rk = client.native_ptr();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let request_ms = timeout_ms.saturating_sub(100).max(1);

    let queue = Queue::new(rk);
    let options = Options::new(
        rk,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
    );
    let mut errstr = [0 as c_char; 512];
    // SAFETY: `options` is live; `errstr` is a writable buffer of the size passed.
    let err = unsafe {
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options.0,
            request_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: librdkafka wrote a NUL-terminated message into `errstr`.
        let msg = unsafe { owned(errstr.as_ptr()) }.unwrap_or_default();
        return Err(FfiError::Request(msg));
    }
    // SAFETY: `rk`, `options` and `queue` are live; `ptrs` points at
    // `names.len()` NUL-terminated strings that outlive the call (librdkafka
    // copies them before returning).
    unsafe {
        rd::rd_kafka_DescribeConsumerGroups(rk, ptrs.as_mut_ptr(), ptrs.len(), options.0, queue.0)
    };
    // SAFETY: `queue` is live; the event returned (or NULL on timeout) is
    // owned by `Event`, which destroys it.
    let event = Event(unsafe { rd::rd_kafka_queue_poll(queue.0, timeout_ms) });
    if event.0.is_null() {
        return Err(FfiError::Timeout(timeout));
    }
    // SAFETY: `event.0` is a live, non-null event.
    let code = unsafe { rd::rd_kafka_event_error(event.0) };
    if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: as above; the string lives as long as the event.
        let msg = unsafe { owned(rd::rd_kafka_event_error_string(event.0)) };
        return Err(FfiError::Request(
            msg.unwrap_or_else(|| format!("{code:?}")),
        ));
    }
    // SAFETY: a live event; NULL unless it is a DescribeConsumerGroups result.
    let result = unsafe { rd::rd_kafka_event_DescribeConsumerGroups_result(event.0) };
    if result.is_null() {
        return Err(FfiError::Request("unexpected event type".into()));
    }
    let mut cnt = 0usize;
    // SAFETY: `result` lives as long as the event; the array has `cnt` entries.
    let arr = unsafe { rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut cnt) };
    let mut out = Vec::with_capacity(cnt);
    for i in 0..cnt {
        // SAFETY: `i < cnt` and `arr` holds `cnt` valid pointers, alive with the event.
        let g = unsafe { *arr.add(i) };
        // SAFETY: `g` is a valid description owned by the event, read before it is destroyed.
        out.push(unsafe { read_group(g) });
    }
    drop(event);
    drop(names);
    Ok(out)
}

/// Copies one group description.
///
/// # Safety
/// `g` must point at a live `rd_kafka_ConsumerGroupDescription_t`.
unsafe fn read_group(g: *const rd::rd_kafka_ConsumerGroupDescription_t) -> GroupDescription {
    // SAFETY: the caller guarantees `g`; every string and object read here
    // lives as long as `g` and is copied.
    unsafe {
        let err = rd::rd_kafka_ConsumerGroupDescription_error(g);
        let error = if err.is_null() {
            None
        } else {
            owned(rd::rd_kafka_error_string(err))
        };
        let group_type = match rd::rd_kafka_ConsumerGroupDescription_type(g) {
            rd::rd_kafka_consumer_group_type_t::RD_KAFKA_CONSUMER_GROUP_TYPE_CLASSIC => {
                GroupType::Classic
            }
            rd::rd_kafka_consumer_group_type_t::RD_KAFKA_CONSUMER_GROUP_TYPE_CONSUMER => {
                GroupType::Consumer
            }
            _ => GroupType::Unknown,
        };
        let state = owned(rd::rd_kafka_consumer_group_state_name(
            rd::rd_kafka_ConsumerGroupDescription_state(g),
        ))
        .unwrap_or_default();
        let node = rd::rd_kafka_ConsumerGroupDescription_coordinator(g);
        let coordinator = if node.is_null() {
            None
        } else {
            Some(format!(
                "{}@{}:{}",
                rd::rd_kafka_Node_id(node),
                owned(rd::rd_kafka_Node_host(node)).unwrap_or_default(),
                rd::rd_kafka_Node_port(node)
            ))
        };
        let n = rd::rd_kafka_ConsumerGroupDescription_member_count(g);
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let m = rd::rd_kafka_ConsumerGroupDescription_member(g, i);
            if m.is_null() {
                continue;
            }
            let target = rd::rd_kafka_MemberDescription_target_assignment(m);
            members.push(MemberDescription {
                member_id: owned(rd::rd_kafka_MemberDescription_consumer_id(m)).unwrap_or_default(),
                client_id: owned(rd::rd_kafka_MemberDescription_client_id(m)).unwrap_or_default(),
                host: owned(rd::rd_kafka_MemberDescription_host(m)).unwrap_or_default(),
                group_instance_id: owned(rd::rd_kafka_MemberDescription_group_instance_id(m)),
                assignment: read_assignment(rd::rd_kafka_MemberDescription_assignment(m))
                    .unwrap_or_default(),
                target_assignment: if target.is_null() {
                    None
                } else {
                    read_assignment(target)
                },
            });
        }
        members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        GroupDescription {
            group_id: owned(rd::rd_kafka_ConsumerGroupDescription_group_id(g)).unwrap_or_default(),
            error,
            group_type,
            state,
            assignor: owned(rd::rd_kafka_ConsumerGroupDescription_partition_assignor(g))
                .unwrap_or_default(),
            simple: rd::rd_kafka_ConsumerGroupDescription_is_simple_consumer_group(g) != 0,
            coordinator,
            members,
        }
    }
}

/// Copies a member assignment's partitions (sorted), or `None` for NULL.
///
/// # Safety
/// `a` must be NULL or point at a live `rd_kafka_MemberAssignment_t`.
unsafe fn read_assignment(a: *const rd::rd_kafka_MemberAssignment_t) -> Option<Vec<Partition>> {
    if a.is_null() {
        return None;
    }
    // SAFETY: `a` is live (the caller's guarantee); the list lives with it.
    let list = unsafe { rd::rd_kafka_MemberAssignment_partitions(a) };
    // SAFETY: the list is NULL or live, as `read_list` requires.
    Some(unsafe { read_list(list) })
}

/// Copies a partition list (sorted; empty for NULL).
///
/// # Safety
/// `list` must be NULL or point at a live `rd_kafka_topic_partition_list_t`.
unsafe fn read_list(list: *const rd::rd_kafka_topic_partition_list_t) -> Vec<Partition> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: `list` is live; `elems` holds `cnt` initialised entries.
    let (elems, cnt) = unsafe { ((*list).elems, (*list).cnt) };
    let cnt = usize::try_from(cnt).unwrap_or(0);
    if elems.is_null() || cnt == 0 {
        return Vec::new();
    }
    // SAFETY: `elems` points at `cnt` initialised entries that live with `list`.
    let elems = unsafe { std::slice::from_raw_parts(elems, cnt) };
    let mut out: Vec<Partition> = elems
        .iter()
        .map(|e| Partition {
            // SAFETY: an element's topic is NULL or a NUL-terminated string living with the list.
            topic: unsafe { owned(e.topic) }.unwrap_or_default(),
            partition: e.partition,
        })
        .collect();
    out.sort();
    out
}

/// Copies a C string (lossily: bytes that are not UTF-8 become U+FFFD), or
/// `None` for NULL.
///
/// # Safety
/// `p` must be NULL or point at a NUL-terminated string that stays valid for
/// the call.
unsafe fn owned(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated (the caller's guarantee).
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// A reply queue, destroyed on drop.
struct Queue(*mut rd::rd_kafka_queue_t);

impl Queue {
    fn new(rk: *mut rd::rd_kafka_t) -> Self {
        // SAFETY: `rk` is a live handle; the new queue is owned by `Queue`.
        Queue(unsafe { rd::rd_kafka_queue_new(rk) })
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_queue_new, destroyed once.
        unsafe { rd::rd_kafka_queue_destroy(self.0) }
    }
}

/// Admin options, destroyed on drop.
struct Options(*mut rd::rd_kafka_AdminOptions_t);

impl Options {
    fn new(rk: *mut rd::rd_kafka_t, op: rd::rd_kafka_admin_op_t) -> Self {
        // SAFETY: `rk` is a live handle; the options are owned by `Options`.
        Options(unsafe { rd::rd_kafka_AdminOptions_new(rk, op) })
    }
}

impl Drop for Options {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_AdminOptions_new, destroyed once.
        unsafe { rd::rd_kafka_AdminOptions_destroy(self.0) }
    }
}

/// An event, destroyed on drop (NULL allowed).
struct Event(*mut rd::rd_kafka_event_t);

impl Drop for Event {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: an event from rd_kafka_queue_poll, destroyed once.
            unsafe { rd::rd_kafka_event_destroy(self.0) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::TopicPartitionList;
    use rdkafka::producer::Producer;

    #[test]
    fn owned_copies_strings_and_tolerates_null_and_bad_utf8() {
        // SAFETY: NULL is allowed.
        assert_eq!(unsafe { owned(std::ptr::null()) }, None);
        let s = CString::new("orders").expect("no NUL");
        // SAFETY: a live NUL-terminated string.
        assert_eq!(unsafe { owned(s.as_ptr()) }.as_deref(), Some("orders"));
        let bad = CString::new(vec![b'a', 0xff, b'b']).expect("no NUL");
        // SAFETY: a live NUL-terminated string.
        let lossy = unsafe { owned(bad.as_ptr()) };
        assert_eq!(lossy.as_deref(), Some("a\u{fffd}b"));
    }

    #[test]
    fn read_list_copies_and_sorts_partitions() {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("b", 1);
        tpl.add_partition("a", 2);
        tpl.add_partition("a", 0);
        // SAFETY: `tpl` is live for the call.
        let got = unsafe { read_list(tpl.ptr()) };
        let want: Vec<Partition> = [("a", 0), ("a", 2), ("b", 1)]
            .iter()
            .map(|(t, p)| Partition {
                topic: t.to_string(),
                partition: *p,
            })
            .collect();
        assert_eq!(got, want);
        // SAFETY: NULL is allowed.
        assert!(unsafe { read_list(std::ptr::null()) }.is_empty());
        // SAFETY: NULL is allowed.
        assert!(unsafe { read_assignment(std::ptr::null()) }.is_none());
    }

    #[test]
    fn a_nul_in_a_group_name_is_refused_before_any_call() {
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:1")
                .create()
                .expect("admin client");
        let e = describe_consumer_groups(admin.inner(), &["a\0b"], Duration::from_millis(10))
            .expect_err("refused");
        assert!(matches!(e, FfiError::NulInName(_)), "{e}");
        assert!(
            describe_consumer_groups(admin.inner(), &[], Duration::from_millis(10))
                .expect("nothing to do")
                .is_empty()
        );
    }

    #[test]
    fn no_broker_gives_the_group_a_timeout_error() {
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:1")
                .create()
                .expect("admin client");
        // The request's own timeout fires first: the group comes back with
        // its error, the call itself succeeds.
        let got = describe_consumer_groups(admin.inner(), &["g"], Duration::from_millis(500))
            .expect("a per-group error, not a failed call");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].group_id, "g");
        assert!(
            got[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("Timed out")),
            "{got:?}"
        );
        assert!(got[0].members.is_empty());
    }

    #[test]
    fn membership_is_none_for_a_producer() {
        let p: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create()
            .expect("producer");
        assert_eq!(membership(p.client()), None);
    }
}
