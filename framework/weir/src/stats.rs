//! Counters a running consumer keeps; the telemetry layer exports them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

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
    pub(crate) lag: AtomicU64,
    pub(crate) oldest_unprocessed_age_ms: AtomicU64,
    pub(crate) loop_heartbeat_ms: AtomicU64,
    pub(crate) max_in_flight: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_failures: AtomicU64,
    pub(crate) rebalances: AtomicU64,
    pub(crate) rebalancing_since_ms: AtomicU64,
    pub(crate) member_epoch: AtomicI64,
    pub(crate) group_upgrade_refused: AtomicU64,
    pub(crate) assigned_partitions: AtomicU64,
    pub(crate) paused_partitions: AtomicU64,
    pub(crate) own_queue_partitions: AtomicU64,
    pub(crate) halted_partitions: AtomicU64,
    pub(crate) refetched_duplicates: AtomicU64,
    pub(crate) dropped_on_revoke: AtomicU64,
    pub(crate) run_failed: AtomicU64,
    pub(crate) other_group_skipped: AtomicU64,
    pub(crate) position_resets: AtomicU64,
    pub(crate) transactions_aborted: AtomicU64,
    pub(crate) dlq_limit_trips: AtomicU64,
    pub(crate) retry_budget_spent: AtomicU64,
    pub(crate) retry_budget_waits: AtomicU64,
    /// The latest per-partition view ([`crate::inspect`]), refreshed every commit interval.
    pub(crate) inspect: crate::inspect::Board,
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
    failed: "Deliveries whose in-process attempts ran out and went to the failure sink: a hand-off to a retry tier, a DLQ copy or a halt. With retry topics one message counts once per tier it fails in; `dlq_published` counts the messages that failed for good.",
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
    lag: "Consumer lag over the assigned partitions: high watermark minus committed offset (librdkafka statistics, every `statistics.interval.ms`, default 5 s).",
    oldest_unprocessed_age_ms: "Age of the oldest fetched, unfinished message over the assigned partitions (ms; 0 when none), refreshed every commit interval.",
    loop_heartbeat_ms: "When the dispatcher loop last ran (epoch ms): a wedged consumer stops updating it.",
    other_group_skipped: "Retry-tier copies and DLQ replays skipped because another consumer group's `weir-for-group` is on them.",
    run_failed: "1 once `run()` has ended with an error (a fatal client error, a dead poll thread): health checks turn red at once.",
    max_in_flight: "Highest in-flight count seen.",
    commits: "Offset commits that succeeded.",
    commit_failures: "Offset commits that failed.",
    rebalances: "Rebalance callbacks served.",
    group_upgrade_refused: "1 while this member runs the consumer protocol, has no partitions, and its group is still a live classic group: the broker refused to upgrade it (docs/group-protocols.md).",
    rebalancing_since_ms: "When this member's current revoke began (epoch ms; 0 when none is under way): its partitions are held while it drains and commits them.",
    assigned_partitions: "Partitions assigned now.",
    paused_partitions: "Partitions held back now by backpressure (out of credit or paused) or a halt.",
    own_queue_partitions: "Assigned partitions read from their own librdkafka queue (`partition_queues`): backpressure stops reading them instead of pausing them.",
    halted_partitions: "Partitions halted by the failure sink.",
    refetched_duplicates: "Messages fetched again below the tracked position and ignored (copies of offsets this member already tracked, after its own seek on resume), or fetched before a partition moved back after an aborted transaction (they come again from the new position).",
    transactions_aborted: "Transactions (`ConsumerBuilder::transactions`) whose commit was refused for a passing reason (the group moved to a new generation while the commit was on its way) and that were aborted: their partitions moved back to the last commit, and their input was processed again.",
    position_resets: "Times a partition's position moved backwards below what this member tracked (topic deleted and re-created, log truncated, offset reset while assigned): the partition's state was started over from the new position.",
    dropped_on_revoke: "Buffered messages dropped because their partition was revoked (the new owner gets them).",
    dlq_limit_trips: "Partitions halted by the DLQ limit (`dlq_limit`): too large a share, or too long a run, of their messages went to the DLQ.",
    retry_budget_spent: "1 while the retry budget (`retry_budget`) is spent: no new message starts, and failures wait in place instead of going to a retry tier.",
    retry_budget_waits: "In-place waits of failed messages held back from a retry tier by the spent retry budget.",
}

impl ConsumerStats {
    /// This member's generation (classic protocol) or member epoch (consumer
    /// protocol) as librdkafka last reported it after a rebalance; 0 before
    /// the first, -1 while it is not a member.
    pub fn member_epoch(&self) -> i64 {
        self.member_epoch.load(Relaxed)
    }

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

impl ConsumerStats {
    /// Copies the counters into the `metrics` facade (label `group`):
    /// `weir_<name>_total` counters and gauges. The runtime calls it every
    /// second, so exporting costs nothing per message.
    pub fn publish_metrics(&self, group: &str) {
        let g = group.to_string();
        let counters: [(&'static str, u64); 16] = [
            ("weir_dlq_limit_trips_total", self.dlq_limit_trips()),
            ("weir_retry_budget_waits_total", self.retry_budget_waits()),
            ("weir_messages_received_total", self.received()),
            ("weir_messages_processed_total", self.processed()),
            ("weir_messages_failed_total", self.failed()),
            ("weir_retries_in_place_total", self.retries()),
            ("weir_unavailable_waits_total", self.unavailable()),
            ("weir_handler_timeouts_total", self.timeouts()),
            ("weir_handler_panics_total", self.panics()),
            ("weir_decode_errors_total", self.decode_errors()),
            ("weir_commits_total", self.commits()),
            ("weir_commit_failures_total", self.commit_failures()),
            ("weir_rebalances_total", self.rebalances()),
            (
                "weir_refetched_duplicates_total",
                self.refetched_duplicates(),
            ),
            ("weir_position_resets_total", self.position_resets()),
            (
                "weir_transactions_aborted_total",
                self.transactions_aborted(),
            ),
        ];
        for (name, v) in counters {
            metrics::counter!(name, "group" => g.clone()).absolute(v);
        }
        metrics::gauge!("weir_member_epoch", "group" => g.clone()).set(self.member_epoch() as f64);
        metrics::gauge!("weir_group_upgrade_refused", "group" => g.clone())
            .set(self.group_upgrade_refused() as f64);
        metrics::gauge!("weir_rebalancing", "group" => g.clone()).set(
            if self.rebalancing_since_ms() > 0 {
                1.0
            } else {
                0.0
            },
        );
        let gauges: [(&'static str, u64); 11] = [
            ("weir_retry_budget_spent", self.retry_budget_spent()),
            ("weir_in_flight", self.in_flight()),
            ("weir_assigned_partitions", self.assigned_partitions()),
            ("weir_paused_partitions", self.paused_partitions()),
            ("weir_halted_partitions", self.halted_partitions()),
            ("weir_own_queue_partitions", self.own_queue_partitions()),
            ("weir_delayed_messages", self.delayed()),
            ("weir_in_place_retry_waits", self.in_place_retry_waits()),
            ("weir_dlq_depth_total", self.dlq_depth()),
            ("weir_consumer_lag_total", self.lag()),
            (
                "weir_oldest_unprocessed_age_ms",
                self.oldest_unprocessed_age_ms(),
            ),
        ];
        for (name, v) in gauges {
            metrics::gauge!(name, "group" => g.clone()).set(v as f64);
        }
    }
}
