//! The failure sink of retry topics: routes a failed message to its next
//! tier or the DLQ (pure functions of its headers and the policy) and
//! publishes the copy with the failure headers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::*;
use crate::clock::now_ms;
use crate::error::{ErrorKind, ProcessError};
use crate::failure::{Disposition, Failure, FailureSink};
use crate::message::{Header, Headers, RawMessage};
use crate::producer::{Producer, Record};
use crate::wire;

/// Where a failed message goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Retry {
        topic: String,
        delay: Duration,
        next_attempt: u32,
    },
    Dlq {
        topic: String,
        reason: &'static str,
    },
}

/// Tier topic name -> source topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicMap {
    tier_sources: HashMap<String, String>,
    pub(crate) partitions: HashMap<String, i32>,
}

/// The failure sink that implements retry tiers and the DLQ.
pub(crate) struct RetrySink {
    cfg: RetryTopics,
    delays: Vec<Duration>,
    map: TopicMap,
    producer: Producer,
    stats: Arc<crate::stats::ConsumerStats>,
}

impl RetrySink {
    pub(crate) fn new(
        cfg: RetryTopics,
        sources: &[String],
        partitions: HashMap<String, i32>,
        producer: Producer,
        stats: Arc<crate::stats::ConsumerStats>,
    ) -> Self {
        let mut tier_sources = HashMap::new();
        for s in sources {
            for t in cfg.retry_topics_of(s) {
                tier_sources.insert(t, s.clone());
            }
        }
        RetrySink {
            delays: cfg.backoff.delays(),
            cfg,
            map: TopicMap {
                tier_sources,
                partitions,
            },
            producer,
            stats,
        }
    }

    /// Decides the next hop of a failed delivery.
    pub(crate) fn route(&self, msg: &RawMessage, error: &ProcessError, attempt: u32) -> Route {
        let in_tier = self.map.tier_sources.get(&*msg.topic);
        let source = match in_tier {
            Some(s) => s.clone(),
            None => msg.topic.to_string(),
        };
        let dlq = |reason| Route::Dlq {
            topic: self.cfg.dlq_topic(&source),
            reason,
        };
        // A copy from a tier must say which attempt it is; otherwise it could
        // loop through the tiers forever.
        let scheduled = msg.headers.get(headers::NOT_BEFORE_MS).is_some();
        let min_attempt = if scheduled { 1 } else { 2 };
        let attempt_header = wire::header_i64(&msg.headers, headers::ATTEMPT);
        let valid = if scheduled {
            attempt_header.is_none_or(|a| a >= min_attempt)
        } else {
            attempt_header.is_some_and(|a| a >= min_attempt)
        };
        if in_tier.is_some() && !valid {
            return dlq("invalid_retry_headers");
        }
        match error.kind() {
            ErrorKind::Terminal => dlq("terminal"),
            // Never routed here (the runner waits), but be safe.
            ErrorKind::Unavailable | ErrorKind::Retryable => {
                let idx = attempt.saturating_sub(1) as usize;
                match self.delays.get(idx) {
                    Some(&delay) => Route::Retry {
                        topic: self.cfg.retry_topic(&source, delay),
                        delay,
                        next_attempt: attempt.saturating_add(1),
                    },
                    None => dlq("retries_exhausted"),
                }
            }
        }
    }

    /// Forwards a scheduled message that is not due yet to its next delay tier.
    pub(crate) async fn reschedule(&self, m: &RawMessage) -> Disposition {
        let source = self
            .map
            .tier_sources
            .get(&*m.topic)
            .cloned()
            .unwrap_or_else(|| m.topic.to_string());
        let mut backoff = Duration::from_millis(100);
        loop {
            let now = now_ms();
            let nb = wire::header_i64(&m.headers, headers::NOT_BEFORE_MS).unwrap_or(now);
            let remaining = Duration::from_millis((nb - now).max(0) as u64);
            let Some(delay) = pick_tier(&self.delays, remaining) else {
                return Disposition::Stop;
            };
            let topic = self.cfg.retry_topic(&source, delay);
            let mut hs: Vec<Header> = m
                .headers
                .iter()
                .filter(|h| h.key != headers::DUE_MS)
                .cloned()
                .collect();
            hs.push(Header {
                key: headers::DUE_MS.into(),
                value: Some(Bytes::from(
                    (now + delay.min(remaining).as_millis() as i64).to_string(),
                )),
            });
            let mut r = Record::to(topic.clone());
            r.key = m.key.clone();
            r.payload = m.payload.clone();
            r.headers = Headers(hs);
            if let Some(&n) = self.map.partitions.get(&topic)
                && n > 0
            {
                r.partition = Some(m.partition.rem_euclid(n));
            }
            match self.producer.send(r).await {
                Ok(_) => return Disposition::Handled,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(topic = %m.topic, partition = m.partition, offset = m.offset, error = %e, "forwarding a scheduled message failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::error!(topic = %m.topic, partition = m.partition, offset = m.offset, error = %e, "cannot forward a scheduled message; partition halted");
                    return Disposition::Stop;
                }
            }
        }
    }

    /// The copy to publish for `route`.
    pub(crate) fn record(&self, f: &Failure<'_>, route: &Route, now: i64) -> Record {
        let m = f.message;
        let mut hs: Vec<Header> = m
            .headers
            .iter()
            .filter(|h| !headers::FAILURE_STATE.contains(&h.key.as_str()))
            .cloned()
            .collect();
        let mut out = Headers(Vec::new());
        std::mem::swap(&mut out.0, &mut hs);
        // The identity the idempotency layer gave the original (its id, else
        // its coordinates) stays its identity on every copy; an invalid id is
        // kept aside so that the copy can be sent.
        crate::id::repair_message_id(&mut out, || m.coordinates());
        let has = |name: &str| out.get(name).is_some();
        let mut add: Vec<(&str, String)> = Vec::new();
        if !has(headers::ORIGINAL_TOPIC) {
            add.push((headers::ORIGINAL_TOPIC, m.topic.to_string()));
            add.push((headers::ORIGINAL_PARTITION, m.partition.to_string()));
            add.push((headers::ORIGINAL_OFFSET, m.offset.to_string()));
            if let Some(ts) = m.timestamp_ms {
                add.push((headers::ORIGINAL_TIMESTAMP, ts.to_string()));
            }
        }
        if !has(headers::FIRST_FAILURE_MS) {
            add.push((headers::FIRST_FAILURE_MS, now.to_string()));
        }
        if let Some(tp) = crate::trace::current_traceparent() {
            out.0.retain(|h| h.key != crate::trace::LINK_TRACEPARENT);
            add.push((crate::trace::LINK_TRACEPARENT, tp));
        }
        add.push((headers::ERROR_CLASS, f.error.class().to_string()));
        add.push((
            headers::ERROR_MESSAGE,
            truncate(&f.error.to_string(), MAX_ERROR_MESSAGE_BYTES),
        ));
        let topic = match route {
            Route::Retry {
                topic,
                delay,
                next_attempt,
            } => {
                let jitter = if self.cfg.jitter > 0.0 {
                    delay.as_secs_f64() * self.cfg.jitter * rand::random_range(0.0..1.0)
                } else {
                    0.0
                };
                let due = now + delay.as_millis() as i64 + (jitter * 1000.0) as i64;
                add.push((headers::ATTEMPT, next_attempt.to_string()));
                add.push((headers::DUE_MS, due.to_string()));
                add.push((headers::FOR_GROUP, f.group_id.to_string()));
                topic
            }
            Route::Dlq { topic, reason } => {
                add.push((headers::ATTEMPT, f.attempts.to_string()));
                add.push((headers::DLQ_REASON, (*reason).to_string()));
                add.push((headers::FAILED_GROUP, f.group_id.to_string()));
                add.push((headers::DLQ_AT_MS, now.to_string()));
                topic
            }
        };
        for (k, v) in add {
            out.push(k, Bytes::from(v));
        }
        let mut r = Record::to(topic.clone());
        r.key = m.key.clone();
        r.payload = m.payload.clone();
        r.headers = out;
        // Same partition number as the source keeps a key's copies together.
        let original_partition = wire::header_i64(&m.headers, headers::ORIGINAL_PARTITION)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(m.partition);
        if let Some(&n) = self.map.partitions.get(topic)
            && n > 0
        {
            r.partition = Some(original_partition.rem_euclid(n));
        }
        r
    }
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl FailureSink for RetrySink {
    fn on_failure<'a>(&'a self, f: Failure<'a>) -> BoxFuture<'a, Disposition> {
        Box::pin(async move {
            let route = self.route(f.message, f.error, f.attempts);
            let mut backoff = Duration::from_millis(100);
            loop {
                let record = self.record(&f, &route, now_ms());
                match self.producer.send(record).await {
                    Ok(d) => {
                        match &route {
                            Route::Retry { .. } => {
                                crate::stats::ConsumerStats::add(&self.stats.retry_published, 1);
                                metrics::counter!("weir_retry_published_total", "group" => f.group_id.to_string(), "topic" => d.topic.clone()).increment(1);
                            }
                            Route::Dlq { reason, .. } => {
                                crate::stats::ConsumerStats::add(&self.stats.dlq_published, 1);
                                metrics::counter!("weir_dlq_published_total", "group" => f.group_id.to_string(), "topic" => d.topic.clone(), "reason" => *reason).increment(1);
                            }
                        }
                        match &route {
                            Route::Retry {
                                delay,
                                next_attempt,
                                ..
                            } => tracing::debug!(
                                group = f.group_id, topic = %f.message.topic, partition = f.message.partition,
                                offset = f.message.offset, to = %d.topic, to_partition = d.partition, to_offset = d.offset,
                                ?delay, next_attempt, class = f.error.class(), "sent to retry tier"
                            ),
                            Route::Dlq { reason, .. } => tracing::warn!(
                                group = f.group_id, topic = %f.message.topic, partition = f.message.partition,
                                offset = f.message.offset, to = %d.topic, to_partition = d.partition, to_offset = d.offset,
                                reason, attempts = f.attempts, class = f.error.class(), error = %f.error,
                                "sent to the DLQ"
                            ),
                        }
                        return match route {
                            Route::Retry { .. } => Disposition::Retried,
                            Route::Dlq { .. } => Disposition::DeadLettered,
                        };
                    }
                    Err(e) if e.is_retryable() => {
                        // The broker is unwell: keep the message (its offset stays
                        // unfinished) and try again; revoke/shutdown deadlines
                        // cancel this wait.
                        tracing::warn!(
                            group = f.group_id, topic = %f.message.topic, partition = f.message.partition,
                            offset = f.message.offset, error = %e, ?backoff,
                            "publishing to the retry tier / DLQ failed; retrying"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                    Err(e) => {
                        tracing::error!(
                            group = f.group_id, topic = %f.message.topic, partition = f.message.partition,
                            offset = f.message.offset, error = %e,
                            "cannot publish to the retry tier / DLQ; partition halted at this message"
                        );
                        return Disposition::Stop;
                    }
                }
            }
        })
    }
}
