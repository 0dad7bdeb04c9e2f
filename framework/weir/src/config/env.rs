//! `WEIR_*` environment variables over a [`ConsumerConfig`].

use super::{ConsumerConfig, parse_duration, parse_num};
use crate::error::ConfigError;

impl ConsumerConfig {
    /// Applies `WEIR_*` variables from `vars` over this config. Unknown `WEIR_*`
    /// names are ignored (other tools share the prefix).
    pub fn with_env(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut vars: Vec<(String, String)> = vars.into_iter().collect();
        // The tiers create the retry-topics section the other keys adjust.
        vars.sort_by_key(|(name, _)| !name.eq_ignore_ascii_case("WEIR_RETRY_TOPICS_TIERS"));
        for (name, v) in vars {
            let Some(rest) = name.strip_prefix("WEIR_") else {
                continue;
            };
            self.set_env(&rest.to_ascii_lowercase(), v)?;
        }
        Ok(self)
    }

    /// Applies one variable, `key` lower-case without `WEIR_`.
    fn set_env(&mut self, key: &str, v: String) -> Result<(), ConfigError> {
        if let Some(k) = key.strip_prefix("retry_topics_")
            && crate::retry::apply_env(&mut self.retry_topics, k, &v)?
        {
            return Ok(());
        }
        match key {
            "brokers" => self.brokers = v,
            "group_id" => self.group_id = v,
            "topics" => {
                self.topics = v
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect()
            }
            "ordering" => {
                self.ordering = v.parse().map_err(|e| ConfigError::invalid("ordering", e))?
            }
            "max_in_flight" => self.max_in_flight = parse_num(key, &v)?,
            "max_in_flight_per_partition" => self.max_in_flight_per_partition = parse_num(key, &v)?,
            "max_buffered_per_partition" => self.max_buffered_per_partition = parse_num(key, &v)?,
            "handler_timeout" => self.handler_timeout = parse_duration(key, &v)?,
            "max_header_bytes" => self.max_header_bytes = parse_num(key, &v)?,
            "inline_first_poll" => self.inline_first_poll = parse_num(key, &v)?,
            "inline_first_poll_limit" => self.inline_first_poll_limit = parse_duration(key, &v)?,
            "partition_queues" => self.partition_queues = parse_num(key, &v)?,
            "batch_consume" => self.batch_consume = parse_num(key, &v)?,
            "commit_interval" => self.commit_interval = parse_duration(key, &v)?,
            "shutdown_deadline" => self.shutdown_deadline = parse_duration(key, &v)?,
            "revoke_deadline" => self.revoke_deadline = parse_duration(key, &v)?,
            "auto_offset_reset" => self.auto_offset_reset = v,
            "assignment" => {
                self.assignment = v
                    .parse()
                    .map_err(|e| ConfigError::invalid("assignment", e))?
            }
            "group_protocol" => {
                self.group_protocol = v
                    .parse()
                    .map_err(|e| ConfigError::invalid("group_protocol", e))?
            }
            "group_instance_id" => self.group_instance_id = Some(v).filter(|v| !v.is_empty()),
            "group_instance_id_from_hostname" => {
                self.group_instance_id_from_hostname = parse_num(key, &v)?
            }
            "retry_max_attempts" => self.retry.max_attempts = parse_num("retry.max_attempts", &v)?,
            "retry_initial_backoff" => {
                self.retry.initial_backoff = parse_duration("retry.initial_backoff", &v)?
            }
            "retry_max_backoff" => {
                self.retry.max_backoff = parse_duration("retry.max_backoff", &v)?
            }
            "dlq_limit_max_share" => {
                self.dlq_limit.max_share = Some(parse_num("dlq_limit.max_share", &v)?)
            }
            "dlq_limit_window" => self.dlq_limit.window = parse_num("dlq_limit.window", &v)?,
            "dlq_limit_max_consecutive" => {
                self.dlq_limit.max_consecutive = Some(parse_num("dlq_limit.max_consecutive", &v)?)
            }
            "retry_budget_max_share" => {
                self.retry_budget.max_share = Some(parse_num("retry_budget.max_share", &v)?)
            }
            "retry_budget_window" => {
                self.retry_budget.window = parse_duration("retry_budget.window", &v)?
            }
            "retry_budget_min_retries" => {
                self.retry_budget.min_retries = parse_num("retry_budget.min_retries", &v)?
            }
            _ => {
                if let Some(prop) = key.strip_prefix("kafka_") {
                    self.kafka.insert(prop.replace('_', "."), v);
                }
            }
        }
        Ok(())
    }
}
