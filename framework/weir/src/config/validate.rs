//! [`ConsumerConfig::validate`]: every value checked, the error naming the key and what to fix.

use std::time::Duration;

use super::{Assignment, CLASSIC_ONLY_KEYS, ConsumerConfig, GroupProtocol, OWNED_KEYS, parse_num};
use crate::error::ConfigError;

impl ConsumerConfig {
    /// Checks every value; the error names the key and says what to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_subscription()?;
        self.validate_limits()?;
        self.validate_timing()?;
        if self.retry.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "retry.max_attempts",
                "must be at least 1 (1 means no retry)",
            ));
        }
        if !(self.retry.multiplier.is_finite() && self.retry.multiplier >= 1.0) {
            return Err(ConfigError::invalid(
                "retry.multiplier",
                "must be a finite number >= 1.0",
            ));
        }
        self.dlq_limit.validate()?;
        self.retry_budget.validate()?;
        if let Some(rt) = &self.retry_topics {
            rt.validate()?;
        }
        for (k, why) in OWNED_KEYS {
            if self.kafka.contains_key(*k) {
                return Err(ConfigError::invalid(
                    format!("kafka.{k}"),
                    format!("remove it: {why}"),
                ));
            }
        }
        self.validate_group()
    }

    /// The group protocol's rules and the static member id.
    fn validate_group(&self) -> Result<(), ConfigError> {
        if self.group_protocol == GroupProtocol::Consumer {
            for (k, why) in CLASSIC_ONLY_KEYS {
                if self.kafka.contains_key(*k) {
                    return Err(ConfigError::invalid(
                        format!("kafka.{k}"),
                        format!("remove it: {why}"),
                    ));
                }
            }
            if self.assignment != Assignment::CooperativeSticky {
                return Err(ConfigError::invalid(
                    "assignment",
                    "under group_protocol = \"consumer\" the broker assigns partitions: remove `assignment` and choose the broker's assignor with `group.remote.assignor` (`uniform` or `range`) in [kafka]",
                ));
            }
        }
        if let Some(id) = self.instance_id()? {
            let valid = !id.is_empty()
                && id.len() <= 249
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                return Err(ConfigError::invalid(
                    "group_instance_id",
                    format!("`{id}` is not a valid instance id (1-249 of [a-zA-Z0-9._-])"),
                ));
            }
        }
        Ok(())
    }

    /// Brokers, group and topics.
    fn validate_subscription(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "brokers",
                "missing: set `brokers = \"host:9092\"` or WEIR_BROKERS",
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "group_id",
                "missing: set `group_id` or WEIR_GROUP_ID",
            ));
        }
        if self.topics.is_empty() {
            return Err(ConfigError::invalid(
                "topics",
                "no topics: set `topics = [\"…\"]` or WEIR_TOPICS=a,b",
            ));
        }
        for t in &self.topics {
            let valid = !t.is_empty()
                && t.len() <= 249
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                return Err(ConfigError::invalid(
                    "topics",
                    format!("`{t}` is not a valid topic name (1-249 of [a-zA-Z0-9._-])"),
                ));
            }
        }
        Ok(())
    }

    /// The in-flight, buffer and header caps.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let at_least_one = |key: &str, v: usize| {
            if v == 0 {
                Err(ConfigError::invalid(key, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        at_least_one("max_in_flight", self.max_in_flight)?;
        at_least_one(
            "max_in_flight_per_partition",
            self.max_in_flight_per_partition,
        )?;
        at_least_one("max_header_bytes", self.max_header_bytes)?;
        if self.max_buffered_per_partition < self.max_in_flight_per_partition {
            return Err(ConfigError::invalid(
                "max_buffered_per_partition",
                format!(
                    "{} is below max_in_flight_per_partition ({}): the buffer must hold at least what can run",
                    self.max_buffered_per_partition, self.max_in_flight_per_partition
                ),
            ));
        }
        Ok(())
    }

    /// Timeouts, intervals and deadlines, and where a new group starts.
    fn validate_timing(&self) -> Result<(), ConfigError> {
        if self.inline_first_poll_limit.is_zero() {
            return Err(ConfigError::invalid(
                "inline_first_poll_limit",
                "must be above zero (set inline_first_poll = false to spawn every message)",
            ));
        }
        if self.handler_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "handler_timeout",
                "must be above zero",
            ));
        }
        if self.commit_interval < Duration::from_millis(10) {
            return Err(ConfigError::invalid(
                "commit_interval",
                "must be at least 10ms (commits are batched; per-message commits are ~25x slower)",
            ));
        }
        let max_poll_ms: u64 = match self.kafka.get("max.poll.interval.ms") {
            Some(v) => parse_num("kafka.max.poll.interval.ms", v)?,
            None => 300_000,
        };
        if self.revoke_deadline.as_millis() as u64 >= max_poll_ms {
            return Err(ConfigError::invalid(
                "revoke_deadline",
                format!(
                    "{:?} must be below max.poll.interval.ms ({max_poll_ms} ms)",
                    self.revoke_deadline
                ),
            ));
        }
        if !matches!(
            self.auto_offset_reset.as_str(),
            "earliest" | "latest" | "error"
        ) {
            return Err(ConfigError::invalid(
                "auto_offset_reset",
                format!(
                    "`{}` is not one of earliest, latest, error",
                    self.auto_offset_reset
                ),
            ));
        }
        Ok(())
    }
}
