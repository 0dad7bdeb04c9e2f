//! Retry topics with backoff tiers, and the dead-letter queue.
//!
//! A retryable failure is not retried by sleeping in the handler (which blocks
//! the partition and risks `max.poll.interval.ms`): the message is published to
//! a **tier topic** (`orders.retry.10s`) with a due time, and the source offset
//! counts as finished once the broker acknowledged that copy. The same
//! consumer also reads the tier topics; a tier partition's messages are held,
//! in offset order, until their due time (the dispatcher sleeps until the head
//! is due; the fetcher pauses only when the buffer is full), then go through the
//! same processor with [`Message::attempt`](crate::Message::attempt) counting
//! every delivery. After the last tier, on a terminal error or an undecodable
//! payload, the message goes to the **DLQ** (`orders.dlq`) with the reason.
//! Nothing loops forever: a copy whose retry headers are missing or corrupt
//! goes to the DLQ too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), weir::WeirError> {
//! use std::time::Duration;
//! use weir::retry::RetryTopics;
//! use weir::{Consumer, ConsumerConfig, processor_fn, Message, ProcessError};
//!
//! let config = ConsumerConfig::new("kafka:9092", "billing", &["orders"]);
//! let retry = RetryTopics::tiers([Duration::from_secs(1), Duration::from_secs(10), Duration::from_secs(60)]);
//! let consumer = Consumer::builder(config)
//!     .retry_topics(retry)          // subscribes to orders.retry.{1s,10s,1m}, DLQ orders.dlq
//!     .build(processor_fn(|msg: Message<Option<bytes::Bytes>>| async move {
//!         let _ = msg.attempt();    // 1 on the first delivery, 2 from orders.retry.1s, …
//!         Ok::<_, ProcessError>(())
//!     }))?;
//! consumer.run_until_signal().await?;
//! # Ok(()) }
//! ```
//!
//! **Ordering.** A retried message leaves its key's order: later messages of the
//! same key are processed while it waits in a tier. Use in-place retries
//! ([`RetryPolicy`](crate::RetryPolicy)) for keys whose order matters more than
//! the partition's progress.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

mod admin;
mod depth;
mod file;
mod plan;
mod policy;
mod sink;

pub(crate) use admin::ensure_topics;
pub(crate) use depth::spawn_dlq_depth;
pub(crate) use file::apply_env;
pub use policy::*;
pub(crate) use sink::RetrySink;

/// Creates (or checks) the tier and DLQ topics of `rt` for `config`'s
/// topics and builds what the runtime needs from them: the sink, the tier
/// topics to read, the hold of each tier's due times, the attempt plan
/// (key-order delays, rescheduling, the budget's hold) and the DLQ depth
/// gauge, refreshed until `stop`.
pub(crate) async fn install(
    config: &crate::ConsumerConfig,
    rt: &RetryTopics,
    stats: Arc<crate::stats::ConsumerStats>,
    stop: tokio_util::sync::CancellationToken,
    producer: Option<crate::producer::Producer>,
) -> Result<crate::runtime::Extension, crate::WeirError> {
    let partitions = ensure_topics(config, rt).await?;
    // In transaction mode the member's transactional producer, so that
    // tier and DLQ copies commit with the offsets they stand for.
    let producer = match producer {
        Some(p) => p,
        None => crate::producer::Producer::for_consumer(config)?,
    };
    let sink = Arc::new(RetrySink::new(
        rt.clone(),
        &config.topics,
        partitions,
        producer,
        stats.clone(),
    ));
    let background = spawn_dlq_depth(
        config,
        config.topics.iter().map(|t| rt.dlq_topic(t)).collect(),
        stats.clone(),
        rt.dlq_depth_interval,
        stop,
    );
    // The budget limits hand-offs to tier topics; key-order mode has none.
    let retry_budget =
        (!rt.keep_key_order && config.retry_budget.is_on()).then(|| config.retry_budget.clone());
    let plan = plan::TierPlan {
        policy: config.retry.clone(),
        in_place: rt.keep_key_order.then(|| Arc::from(rt.backoff.delays())),
        sink: sink.clone(),
        budget: retry_budget.is_some().then_some(stats),
    };
    Ok(crate::runtime::Extension {
        sink,
        topics: config
            .topics
            .iter()
            .flat_map(|t| rt.retry_topics_of(t))
            .collect(),
        admission: Some(Arc::new(TierHolds(rt.tier_holds(&config.topics)))),
        plan: Arc::new(plan),
        retry_budget,
        background,
    })
}

pub use crate::wire::headers;

/// Tier topics and the longest hold a due time gets on each: a copy on a
/// tier waits until its due time (clamped to the hold); a due time on any
/// other topic is not honoured.
pub(crate) struct TierHolds(pub(crate) HashMap<String, Duration>);

impl crate::runtime::Admission for TierHolds {
    fn hold_until(&self, m: &crate::message::RawMessage) -> Option<tokio::time::Instant> {
        let max = self.0.get(&*m.topic)?;
        crate::wire::due_at(m, *max)
    }
}

/// Longest error message copied into [`headers::ERROR_MESSAGE`].
pub const MAX_ERROR_MESSAGE_BYTES: usize = 512;

/// `s` cut to [`MAX_ERROR_MESSAGE_BYTES`] on a character boundary.
#[cfg(feature = "ops")]
pub(crate) fn truncate_error_message(s: &str) -> String {
    sink::truncate(s, MAX_ERROR_MESSAGE_BYTES)
}

/// Clock skew allowed between the member that stamped a due time and the one
/// holding the copy, on top of the tier's delay and jitter.
pub const HOLD_SKEW_ALLOWANCE: Duration = Duration::from_secs(5);

/// Default `retention.ms` of created DLQ topics: 30 days.
pub const DEFAULT_DLQ_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

pub use crate::wire::MAX_DELIVERY_ATTEMPT;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use std::time::SystemTime;

    use crate::clock::now_ms;
    use crate::error::ProcessError;
    use crate::failure::Failure;

    use crate::producer::{Producer, Record};

    use super::policy::pick_tier;
    use super::sink::{Route, truncate};
    use super::*;
    use crate::id::MESSAGE_ID_HEADER;
    use crate::wire::not_yet;

    use crate::message::test_raw as raw;

    fn sink(cfg: RetryTopics) -> RetrySink {
        let producer = Producer::new("127.0.0.1:1").unwrap();
        let mut parts = HashMap::new();
        for t in cfg.retry_topics_of("orders") {
            parts.insert(t, 4);
        }
        parts.insert(cfg.dlq_topic("orders"), 4);
        RetrySink::new(
            cfg,
            &["orders".to_string()],
            parts,
            producer,
            Default::default(),
        )
    }

    #[test]
    fn labels_and_names() {
        assert_eq!(delay_label(Duration::from_millis(500)), "500ms");
        assert_eq!(delay_label(Duration::from_secs(1)), "1s");
        assert_eq!(delay_label(Duration::from_secs(90)), "90s");
        assert_eq!(delay_label(Duration::from_secs(600)), "10m");
        assert_eq!(delay_label(Duration::from_secs(7200)), "2h");
        let r = RetryTopics::tiers([Duration::from_secs(1), Duration::from_secs(10)]);
        assert_eq!(
            r.retry_topics_of("orders"),
            ["orders.retry.1s", "orders.retry.10s"]
        );
        assert_eq!(r.dlq_topic("orders"), "orders.dlq");
    }

    #[test]
    fn exponential_delays_cap_and_share_topics() {
        let r = RetryTopics::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(5), 6);
        assert_eq!(
            r.backoff.delays(),
            [1, 2, 4, 5, 5].map(Duration::from_secs).to_vec()
        );
        assert_eq!(
            r.retry_topics_of("o").len(),
            4,
            "capped delays share a topic"
        );
    }

    #[test]
    fn routes_through_tiers_then_dlq() {
        let s = sink(RetryTopics::tiers([
            Duration::from_secs(1),
            Duration::from_secs(10),
        ]));
        let e = ProcessError::retryable(std::io::Error::other("503"));
        let m = raw("orders", &[]);
        assert_eq!(
            s.route(&m, &e, 1),
            Route::Retry {
                topic: "orders.retry.1s".into(),
                delay: Duration::from_secs(1),
                next_attempt: 2
            }
        );
        let m2 = raw("orders.retry.1s", &[(headers::ATTEMPT, "2")]);
        assert_eq!(
            s.route(&m2, &e, 2),
            Route::Retry {
                topic: "orders.retry.10s".into(),
                delay: Duration::from_secs(10),
                next_attempt: 3
            }
        );
        let m3 = raw("orders.retry.10s", &[(headers::ATTEMPT, "3")]);
        assert_eq!(
            s.route(&m3, &e, 3),
            Route::Dlq {
                topic: "orders.dlq".into(),
                reason: "retries_exhausted"
            }
        );
        let t = ProcessError::terminal(std::io::Error::other("bad"));
        assert_eq!(
            s.route(&m, &t, 1),
            Route::Dlq {
                topic: "orders.dlq".into(),
                reason: "terminal"
            }
        );
        // A tier copy without a valid attempt header cannot loop.
        for bad in [
            vec![],
            vec![(headers::ATTEMPT, "x")],
            vec![(headers::ATTEMPT, "1")],
        ] {
            let m = raw("orders.retry.1s", &bad);
            assert_eq!(
                s.route(&m, &e, 1),
                Route::Dlq {
                    topic: "orders.dlq".into(),
                    reason: "invalid_retry_headers"
                }
            );
        }
    }

    #[test]
    fn copies_carry_origin_and_failure_headers() {
        let s = sink(RetryTopics::tiers([Duration::from_secs(1)]).jitter(0.0));
        let e =
            ProcessError::retryable(std::io::Error::other("x".repeat(2000))).with_class("http_503");
        let m = raw("orders", &[("traceparent", "00-abc-def-01")]);
        let f = Failure {
            message: &m,
            error: &e,
            attempts: 1,
            group_id: "g",
        };
        let route = s.route(&m, &e, 1);
        let r = s.record(&f, &route, 1000);
        assert_eq!(r.topic, "orders.retry.1s");
        assert_eq!(r.partition, Some(2));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        let h = &r.headers;
        assert_eq!(h.get_str("traceparent").unwrap(), Some("00-abc-def-01"));
        assert_eq!(h.get_str(MESSAGE_ID_HEADER).unwrap(), Some("orders/2@41"));
        assert_eq!(h.get_str(headers::ORIGINAL_TOPIC).unwrap(), Some("orders"));
        assert_eq!(h.get_str(headers::ORIGINAL_PARTITION).unwrap(), Some("2"));
        assert_eq!(h.get_str(headers::ORIGINAL_OFFSET).unwrap(), Some("41"));
        assert_eq!(
            h.get_str(headers::ORIGINAL_TIMESTAMP).unwrap(),
            Some("1700000000000")
        );
        assert_eq!(h.get_str(headers::ATTEMPT).unwrap(), Some("2"));
        assert_eq!(h.get_str(headers::DUE_MS).unwrap(), Some("2000"));
        assert_eq!(h.get_str(headers::ERROR_CLASS).unwrap(), Some("http_503"));
        assert!(h.get(headers::ERROR_MESSAGE).unwrap().len() <= MAX_ERROR_MESSAGE_BYTES + 3);
        assert_eq!(h.get_str(headers::FIRST_FAILURE_MS).unwrap(), Some("1000"));

        // The next hop keeps origin and first failure, replaces the failure state.
        let mut m2 = raw("orders.retry.1s", &[]);
        m2.headers = r.headers.clone();
        m2.partition = 2;
        let f2 = Failure {
            message: &m2,
            error: &e,
            attempts: 2,
            group_id: "g",
        };
        let route2 = s.route(&m2, &e, 2);
        let r2 = s.record(&f2, &route2, 5000);
        assert_eq!(r2.topic, "orders.dlq");
        let h2 = &r2.headers;
        assert_eq!(h2.get_str(headers::ORIGINAL_OFFSET).unwrap(), Some("41"));
        assert_eq!(h2.get_str(headers::FIRST_FAILURE_MS).unwrap(), Some("1000"));
        assert_eq!(
            h2.get_str(headers::DLQ_REASON).unwrap(),
            Some("retries_exhausted")
        );
        assert_eq!(h2.get_str(headers::FAILED_GROUP).unwrap(), Some("g"));
        assert_eq!(h2.iter().filter(|h| h.key == headers::ATTEMPT).count(), 1);
        assert_eq!(h2.iter().filter(|h| h.key == headers::DUE_MS).count(), 0);
        assert_eq!(h2.iter().filter(|h| h.key == MESSAGE_ID_HEADER).count(), 1);
    }

    #[test]
    fn picks_the_longest_fitting_tier() {
        let d = [1, 10, 60].map(Duration::from_secs);
        assert_eq!(
            pick_tier(&d, Duration::from_secs(30)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            pick_tier(&d, Duration::from_secs(3600)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            pick_tier(&d, Duration::from_millis(300)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(pick_tier(&[], Duration::from_secs(1)), None);
    }

    #[test]
    fn a_scheduled_copy_in_a_tier_is_valid_at_attempt_one() {
        let s = sink(RetryTopics::tiers([
            Duration::from_secs(1),
            Duration::from_secs(10),
        ]));
        let e = ProcessError::retryable(std::io::Error::other("503"));
        let m = raw("orders.retry.1s", &[(headers::NOT_BEFORE_MS, "5")]);
        assert_eq!(
            s.route(&m, &e, 1),
            Route::Retry {
                topic: "orders.retry.1s".into(),
                delay: Duration::from_secs(1),
                next_attempt: 2
            }
        );
        assert!(!not_yet(&m), "a past not-before is due");
        let future = (now_ms() + 60_000).to_string();
        assert!(not_yet(&raw(
            "orders.retry.1s",
            &[(headers::NOT_BEFORE_MS, &future)]
        )));
    }

    #[test]
    fn truncates_on_char_boundaries() {
        let s = "é".repeat(400);
        let t = truncate(&s, 511);
        assert!(t.len() <= 514);
        assert!(t.ends_with('…'));
    }

    #[tokio::test]
    async fn scheduling_without_tiers_is_an_error_not_a_send() {
        // An address nothing listens on: a send would wait, an error returns at once.
        let cfg = crate::ConsumerConfig::new("127.0.0.1:9", "g", &["t"]);
        let producer = Producer::for_consumer(&cfg).unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        for rt in [
            RetryTopics::dlq_only(),
            RetryTopics::tiers([Duration::from_secs(1)]).keep_key_order(),
        ] {
            let err = tokio::time::timeout(
                Duration::from_secs(5),
                rt.schedule(&producer, Record::to("t").payload("x"), later),
            )
            .await
            .expect("answers at once")
            .unwrap_err();
            assert!(
                matches!(err, crate::producer::ProduceError::Unschedulable { .. }),
                "{err}"
            );
            assert!(!err.is_retryable());
        }
    }

    #[test]
    fn tier_holds_cover_each_tier_with_jitter_and_skew() {
        let rt = RetryTopics::tiers([Duration::from_secs(1), Duration::from_secs(10)]).jitter(0.5);
        let holds = rt.tier_holds(&["orders".to_string()]);
        assert_eq!(holds.len(), 2);
        assert_eq!(
            holds["orders.retry.1s"],
            Duration::from_millis(1500) + HOLD_SKEW_ALLOWANCE
        );
        assert_eq!(
            holds["orders.retry.10s"],
            Duration::from_secs(15) + HOLD_SKEW_ALLOWANCE
        );
        assert!(
            !holds.contains_key("orders"),
            "the source topic holds nothing"
        );
        assert!(
            rt.keep_key_order()
                .tier_holds(&["orders".to_string()])
                .is_empty()
        );
    }
}
