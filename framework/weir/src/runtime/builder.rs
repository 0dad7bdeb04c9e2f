//! [`ConsumerBuilder`]: the codec, failure sink, retry tiers and span options
//! of a consumer, checked when it is built.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Consumer, run};
use crate::codec::{BytesCodec, Codec};
use crate::config::ConsumerConfig;
use crate::error::WeirError;
use crate::failure::{FailureSink, StopPartition};
use crate::processor::Processor;
use crate::retry::RetryTopics;
use crate::stats::ConsumerStats;

/// Builds a [`Consumer`]: pick a codec and a failure sink, then give it a processor.
pub struct ConsumerBuilder<C> {
    config: ConsumerConfig,
    codec: C,
    sink: Arc<dyn FailureSink>,
    shutdown: CancellationToken,
    retry_topics: Option<RetryTopics>,
    spans: run::Spans,
    transactions: Option<crate::producer::TransactionalProducer>,
}

impl<C> std::fmt::Debug for ConsumerBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("config", &self.config)
            .finish()
    }
}

impl<C: Codec> ConsumerBuilder<C> {
    /// Decodes payloads with `codec`; the processor receives `C2::Value`.
    pub fn codec<C2: Codec>(self, codec: C2) -> ConsumerBuilder<C2> {
        ConsumerBuilder {
            config: self.config,
            codec,
            sink: self.sink,
            shutdown: self.shutdown,
            retry_topics: self.retry_topics,
            spans: self.spans,
            transactions: self.transactions,
        }
    }

    /// Opt-in: records each message's key (UTF-8, lossy) as
    /// `messaging.kafka.message.key` in its span. Off by default: keys are often
    /// user or account IDs.
    pub fn key_in_spans(mut self, on: bool) -> Self {
        self.spans.key = on;
        self
    }

    /// Opt-in: records `redact(payload)` as the `weir.payload` field of each
    /// message's span. Payloads are never recorded otherwise (they may hold
    /// personal data); make `redact` drop or mask what must not leave the process.
    pub fn payload_in_spans(
        mut self,
        redact: impl Fn(&[u8]) -> String + Send + Sync + 'static,
    ) -> Self {
        self.spans.payload = Some(Arc::new(redact));
        self
    }

    /// Retry tiers and a DLQ ([`crate::retry`]): subscribes to the tier topics
    /// too, creates missing tier/DLQ topics at start (unless told not to), and
    /// replaces the failure sink. In-place attempts per delivery come from
    /// [`RetryTopics::in_place_attempts`] (default 1). A config that has its
    /// own `[retry_topics]` section (or `WEIR_RETRY_TOPICS_*`) is refused at
    /// [`build`](Self::build): say it in one place.
    pub fn retry_topics(mut self, retry: RetryTopics) -> Self {
        self.retry_topics = Some(retry);
        self
    }

    /// Where messages that failed for good go (default [`StopPartition`]).
    pub fn failure_sink(mut self, sink: impl FailureSink) -> Self {
        self.sink = Arc::new(sink);
        self
    }

    /// Runs in Kafka transactions through `producer` (exactly once inside
    /// Kafka, for consume-transform-produce): the processor sends its
    /// outputs with this same producer (clone it into the processor), retry
    /// tier and DLQ copies go through it too, and each commit interval ends
    /// with one transaction holding the outputs of the messages finished in
    /// it and their offsets. At a commit tick nothing new starts until every
    /// message up to the highest one started has finished (so a transaction
    /// never holds the outputs of a message whose offset it does not
    /// commit): a handler that waits long (in-place retry backoff, a slow
    /// call) holds the commit that long. A transaction that cannot commit
    /// (a fenced producer, a group that moved past this member, a revoke
    /// whose deadline passed first) ends `run` with an error after aborting
    /// it; the partitions' next owner processes its messages again.
    /// Downstream consumers read with `isolation.level=read_committed`.
    ///
    /// Keep `commit_interval` well below the producer's
    /// `transaction.timeout.ms` (60 s by default) and `revoke_deadline`
    /// above the time one interval's messages take. A partition halted by
    /// the failure sink keeps its uncommitted messages (send failures to a
    /// DLQ with [`retry_topics`](Self::retry_topics) instead).
    pub fn transactions(mut self, producer: crate::producer::TransactionalProducer) -> Self {
        self.transactions = Some(producer);
        self
    }

    /// Uses this token for shutdown (cancel it to stop the consumer).
    pub fn shutdown_token(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Validates the config and returns a consumer ready to [`run`](Consumer::run).
    pub fn build<P: Processor<C::Value>>(
        mut self,
        processor: P,
    ) -> Result<Consumer<C, P>, WeirError> {
        self.config.validate()?;
        match (self.config.retry_topics.take(), &self.retry_topics) {
            (Some(_), Some(_)) => {
                return Err(crate::ConfigError::invalid(
                    "retry_topics",
                    "are configured twice: in the config ([retry_topics] or \
                     WEIR_RETRY_TOPICS_*) and by ConsumerBuilder::retry_topics; keep one",
                )
                .into());
            }
            (Some(from_config), None) => self.retry_topics = Some(from_config),
            (None, _) => {}
        }
        if let Some(rt) = &self.retry_topics {
            rt.validate()?;
            if !rt.keep_key_order {
                self.config.retry.max_attempts = in_place_attempts(&self.config, rt)?;
            }
        }
        if self.config.retry_budget.is_on()
            && self
                .retry_topics
                .as_ref()
                .is_none_or(|rt| rt.keep_key_order)
        {
            return Err(crate::ConfigError::invalid(
                "retry_budget",
                "the retry budget limits hand-offs to retry tier topics: configure \
                 `retry_topics` (without keep_key_order, which retries in place), or remove \
                 `retry_budget`",
            )
            .into());
        }
        if let Some(advice) =
            in_flight_advice(self.config.max_in_flight, processor.wants_in_flight())
        {
            tracing::warn!(group = %self.config.group_id, "{advice}");
        }
        Ok(Consumer {
            config: self.config,
            codec: self.codec,
            processor,
            sink: self.sink,
            shutdown: self.shutdown,
            stats: Arc::new(ConsumerStats::default()),
            retry_topics: self.retry_topics,
            spans: self.spans,
            transactions: self.transactions,
        })
    }
}

impl Consumer<BytesCodec, ()> {
    /// Starts building a consumer from `config` (payloads as bytes until a codec is set).
    pub fn builder(config: ConsumerConfig) -> ConsumerBuilder<BytesCodec> {
        ConsumerBuilder {
            config,
            codec: BytesCodec,
            sink: Arc::new(StopPartition),
            shutdown: CancellationToken::new(),
            retry_topics: None,
            spans: run::Spans::default(),
            transactions: None,
        }
    }
}

/// The in-place attempts per delivery with retry tiers: those of `rt`. A
/// `retry.max_attempts` of the config's own that says otherwise is an error,
/// not silently replaced (the tiers do the retrying; the config's default is
/// replaced without a word).
fn in_place_attempts(config: &ConsumerConfig, rt: &RetryTopics) -> Result<u32, WeirError> {
    let set = config.retry.max_attempts;
    if set != crate::RetryPolicy::default().max_attempts && set != rt.in_place_attempts {
        return Err(crate::ConfigError::invalid(
            "retry.max_attempts",
            format!(
                "is {set}, but with retry topics the attempts per delivery come from \
                 RetryTopics::in_place_attempts ({}): set that instead, or leave \
                 retry.max_attempts at its default",
                rt.in_place_attempts
            ),
        )
        .into());
    }
    Ok(rt.in_place_attempts)
}

/// What to change when `max_in_flight` is below what the processor needs in
/// flight (see [`Processor::wants_in_flight`]); `None` when it is enough.
fn in_flight_advice(max_in_flight: usize, wants: usize) -> Option<String> {
    (max_in_flight < wants).then(|| {
        format!(
            "max_in_flight is {max_in_flight} but the processor works on {wants} messages at \
             once (a batch processor: max_batch x max_batches_in_flight): batches cannot fill \
             and run smaller than configured; raise max_in_flight to at least {wants} \
             (twice that lets the next batches fill while these run)"
        )
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn noop() -> impl Processor<Option<bytes::Bytes>> {
        crate::processor_fn(|_m: crate::Message<Option<bytes::Bytes>>| async {
            Ok::<_, crate::ProcessError>(())
        })
    }

    #[test]
    fn too_few_in_flight_for_whole_batches_is_advised() {
        use crate::batch::{BatchConfig, BatchProcessor, Batched, Outcomes};
        use crate::processor::{CatchPanicLayer, ProcessorExt as _, TimeoutLayer};
        struct Sink;
        impl BatchProcessor<Option<bytes::Bytes>> for Sink {
            async fn process_batch(
                &self,
                batch: Vec<crate::Message<Option<bytes::Bytes>>>,
            ) -> Result<Outcomes, crate::ProcessError> {
                Ok(Outcomes::all_ok(batch.len()))
            }
        }
        let batched = Batched::new(
            Sink,
            BatchConfig {
                max_batch: 300,
                max_batches_in_flight: 3,
                ..BatchConfig::default()
            },
        )
        .unwrap()
        .with(TimeoutLayer::new(Duration::from_secs(1)))
        .with(CatchPanicLayer);
        assert_eq!(batched.wants_in_flight(), 900, "layers forward the need");
        assert_eq!(noop().wants_in_flight(), 1);
        let advice = in_flight_advice(512, 900).expect("512 < 900");
        assert!(advice.contains("at least 900"), "{advice}");
        assert_eq!(in_flight_advice(900, 900), None);
        assert_eq!(in_flight_advice(256, 1), None);
    }

    #[test]
    fn retry_topics_take_the_in_place_attempts_and_refuse_a_conflicting_max_attempts() {
        let cfg = ConsumerConfig::new("localhost:9092", "g", &["t"]);
        let rt = RetryTopics::tiers([Duration::from_secs(1)]);
        let c = Consumer::builder(cfg.clone())
            .retry_topics(rt.clone())
            .build(noop())
            .unwrap();
        assert_eq!(c.config.retry.max_attempts, 1, "the default gives way");
        let mut five = cfg.clone();
        five.retry.max_attempts = 5;
        let err = Consumer::builder(five.clone())
            .retry_topics(rt.clone())
            .build(noop())
            .unwrap_err();
        assert!(err.to_string().contains("in_place_attempts"), "{err}");
        let mut agreed = rt.clone();
        agreed.in_place_attempts = 5;
        let c = Consumer::builder(five.clone())
            .retry_topics(agreed)
            .build(noop())
            .unwrap();
        assert_eq!(c.config.retry.max_attempts, 5);
        let c = Consumer::builder(five)
            .retry_topics(rt.keep_key_order())
            .build(noop())
            .unwrap();
        assert_eq!(
            c.config.retry.max_attempts, 5,
            "key order keeps the config's"
        );
    }

    #[test]
    fn retry_topics_come_from_the_config_or_the_builder_but_not_both() {
        let mut cfg = ConsumerConfig::new("localhost:9092", "g", &["t"]);
        cfg.retry_topics = Some(RetryTopics::tiers([Duration::from_secs(1)]));
        let c = Consumer::builder(cfg.clone()).build(noop()).unwrap();
        assert_eq!(
            c.retry_topics.map(|r| r.retry_topics_of("t")),
            Some(vec!["t.retry.1s".to_string()]),
            "the config's section is used"
        );
        assert_eq!(c.config.retry.max_attempts, 1, "and its in-place attempts");
        let err = Consumer::builder(cfg)
            .retry_topics(RetryTopics::dlq_only())
            .build(noop())
            .unwrap_err();
        assert!(err.to_string().contains("configured twice"), "{err}");
    }
}
