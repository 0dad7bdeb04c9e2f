//! Counters a running consumer keeps; the telemetry layer exports them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters of one consumer. All loads are relaxed snapshots.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub(crate) received: AtomicU64,
    pub(crate) processed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) delayed: AtomicU64,
    pub(crate) retry_published: AtomicU64,
    pub(crate) in_place_retry_waits: AtomicU64,
    pub(crate) dlq_published: AtomicU64,
    pub(crate) dlq_depth: AtomicU64,
    pub(crate) max_in_flight: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_failures: AtomicU64,
    pub(crate) rebalances: AtomicU64,
    pub(crate) assigned_partitions: AtomicU64,
    pub(crate) paused_partitions: AtomicU64,
    pub(crate) halted_partitions: AtomicU64,
    pub(crate) refetched_duplicates: AtomicU64,
    pub(crate) dropped_on_revoke: AtomicU64,
}

macro_rules! getters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        impl ConsumerStats {
            $(
                #[doc = $doc]
                pub fn $name(&self) -> u64 { self.$name.load(Relaxed) }
            )*
        }
    };
}

getters! {
    received: "Messages received from the broker.",
    processed: "Messages processed successfully.",
    failed: "Messages that failed for good and went to the failure sink.",
    retries: "In-process retry attempts.",
    unavailable: "In-place waits because a dependency was unavailable (`ProcessError::unavailable`).",
    timeouts: "Handler runs cancelled by `handler_timeout`.",
    panics: "Handler panics caught.",
    decode_errors: "Payloads the codec could not decode.",
    in_flight: "Messages being processed now.",
    delayed: "Messages from retry tiers held until their due time.",
    retry_published: "Messages this member published to a retry tier.",
    in_place_retry_waits: "Messages waiting now for an in-place retry (their key's later messages wait behind them).",
    dlq_published: "Messages this member published to a DLQ.",
    dlq_depth: "Messages in this consumer's DLQ topics (high minus low watermark), refreshed every 30 s.",
    max_in_flight: "Highest in-flight count seen.",
    commits: "Offset commits that succeeded.",
    commit_failures: "Offset commits that failed.",
    rebalances: "Rebalance callbacks served.",
    assigned_partitions: "Partitions assigned now.",
    paused_partitions: "Partitions paused now by backpressure or a halt.",
    halted_partitions: "Partitions halted by the failure sink.",
    refetched_duplicates: "Messages fetched again below the tracked position and ignored.",
    dropped_on_revoke: "Buffered messages dropped because their partition was revoked (the new owner gets them).",
}

impl ConsumerStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }

    pub(crate) fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Relaxed);
    }

    pub(crate) fn in_flight_now(&self, n: u64) {
        self.in_flight.store(n, Relaxed);
        self.max_in_flight.fetch_max(n, Relaxed);
    }
}
