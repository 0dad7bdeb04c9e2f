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
        Ok(Consumer {
            config: self.config,
            codec: self.codec,
            processor,
            sink: self.sink,
            shutdown: self.shutdown,
            stats: Arc::new(ConsumerStats::default()),
            retry_topics: self.retry_topics,
            spans: self.spans,
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
