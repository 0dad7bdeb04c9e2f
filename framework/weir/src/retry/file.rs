//! Retry topics from a configuration file: the `[retry_topics]` section of a
//! consumer's TOML and its `WEIR_RETRY_TOPICS_*` variables, turned into a
//! [`RetryTopics`] with the same defaults and checks as the code form.
//!
//! ```toml
//! [retry_topics]
//! tiers = ["1s", "10s", "1m"]         # or an [retry_topics.exponential] table
//! jitter = 0.1
//! in_place_attempts = 1
//! keep_key_order = false
//! retry_topic_pattern = "{topic}.retry.{delay}"
//! dlq_topic_pattern = "{topic}.dlq"
//! create_topics = true
//! replication_factor = 3
//! dlq_retention = "30days"            # or "forever"
//! dlq_cleanup_policy = "delete"
//! dlq_depth_interval = "30s"
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::{Backoff, RetryTopics};
use crate::error::ConfigError;

/// The `[retry_topics.exponential]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExponentialFile {
    #[serde(with = "humantime_serde")]
    base: Duration,
    #[serde(default = "two")]
    factor: f64,
    #[serde(with = "humantime_serde")]
    max_delay: Duration,
    max_attempts: u32,
}

fn two() -> f64 {
    2.0
}

/// `[retry_topics]` as written: every key optional but the delays.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryTopicsFile {
    tiers: Option<Vec<String>>,
    exponential: Option<ExponentialFile>,
    jitter: Option<f64>,
    in_place_attempts: Option<u32>,
    keep_key_order: Option<bool>,
    retry_topic_pattern: Option<String>,
    dlq_topic_pattern: Option<String>,
    create_topics: Option<bool>,
    replication_factor: Option<i32>,
    dlq_retention: Option<String>,
    dlq_cleanup_policy: Option<String>,
    #[serde(default, with = "humantime_serde::option")]
    dlq_depth_interval: Option<Duration>,
}

impl TryFrom<RetryTopicsFile> for RetryTopics {
    type Error = ConfigError;

    fn try_from(f: RetryTopicsFile) -> Result<Self, ConfigError> {
        let mut rt = match (f.tiers, f.exponential) {
            (Some(t), None) => RetryTopics::tiers(parse_delays(t.iter().map(String::as_str))?),
            (None, Some(e)) => {
                RetryTopics::exponential(e.base, e.factor, e.max_delay, e.max_attempts)
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "retry_topics",
                    "has both `tiers` and `exponential`: keep one",
                ));
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    "retry_topics",
                    "needs its delays: `tiers = [\"1s\", \"10s\"]` (an empty list for a \
                     DLQ only) or an `[retry_topics.exponential]` table with base, \
                     max_delay and max_attempts",
                ));
            }
        };
        if let Some(j) = f.jitter {
            if !(0.0..=1.0).contains(&j) {
                return Err(ConfigError::invalid(
                    "retry_topics.jitter",
                    format!("is {j}: a fraction of the delay from 0.0 to 1.0"),
                ));
            }
            rt.jitter = j;
        }
        set(&mut rt.in_place_attempts, f.in_place_attempts);
        set(&mut rt.keep_key_order, f.keep_key_order);
        set(&mut rt.retry_topic_pattern, f.retry_topic_pattern);
        set(&mut rt.dlq_topic_pattern, f.dlq_topic_pattern);
        set(&mut rt.create_topics, f.create_topics);
        set(&mut rt.dlq_cleanup_policy, f.dlq_cleanup_policy);
        set(&mut rt.dlq_depth_interval, f.dlq_depth_interval);
        if f.replication_factor.is_some() {
            rt.replication_factor = f.replication_factor;
        }
        if let Some(r) = f.dlq_retention {
            rt.dlq_retention = parse_retention(&r)?;
        }
        rt.validate()?;
        Ok(rt)
    }
}

/// The tier delays, each a duration such as `500ms`, `10s` or `1m`.
fn parse_delays<'a>(delays: impl Iterator<Item = &'a str>) -> Result<Vec<Duration>, ConfigError> {
    delays
        .map(|d| {
            humantime::parse_duration(d.trim()).map_err(|e| {
                ConfigError::invalid(
                    "retry_topics.tiers",
                    format!("`{d}` is not a duration ({e}); write e.g. `1s`, `10s`, `1m`"),
                )
            })
        })
        .collect()
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// `"forever"` (or `"infinite"`) is `None`; anything else a duration.
fn parse_retention(v: &str) -> Result<Option<Duration>, ConfigError> {
    match v.trim() {
        "forever" | "infinite" => Ok(None),
        d => humantime::parse_duration(d).map(Some).map_err(|e| {
            ConfigError::invalid(
                "retry_topics.dlq_retention",
                format!("`{v}` is neither `forever` nor a duration ({e}); write e.g. `30days`"),
            )
        }),
    }
}

impl<'de> Deserialize<'de> for RetryTopics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let file = RetryTopicsFile::deserialize(d)?;
        RetryTopics::try_from(file).map_err(serde::de::Error::custom)
    }
}

/// Applies one `WEIR_RETRY_TOPICS_<KEY>` variable (`key` lower-case, without
/// the prefix) to `rt`, creating the section from `tiers` when the file had
/// none. Returns `Ok(false)` for a key that is not a retry-topics key.
pub(crate) fn apply_env(
    rt: &mut Option<RetryTopics>,
    key: &str,
    v: &str,
) -> Result<bool, ConfigError> {
    let name = |k: &str| format!("retry_topics.{k}");
    if key == "tiers" {
        let delays = parse_delays(v.split(',').map(str::trim).filter(|d| !d.is_empty()))?;
        match rt {
            Some(r) => r.backoff = Backoff::Tiers(delays),
            None => *rt = Some(RetryTopics::tiers(delays)),
        }
        return Ok(true);
    }
    let known = [
        "jitter",
        "in_place_attempts",
        "keep_key_order",
        "retry_topic_pattern",
        "dlq_topic_pattern",
        "create_topics",
        "replication_factor",
        "dlq_retention",
    ];
    if !known.contains(&key) {
        return Ok(false);
    }
    let Some(r) = rt.as_mut() else {
        return Err(ConfigError::invalid(
            name(key),
            "is set, but no retry topics are configured: set WEIR_RETRY_TOPICS_TIERS \
             (e.g. `1s,10s`) or a [retry_topics] section in the file",
        ));
    };
    let bad = |what: &str| ConfigError::invalid(name(key), format!("`{v}` is not {what}"));
    match key {
        "jitter" => r.jitter = v.trim().parse().map_err(|_| bad("a number"))?,
        "in_place_attempts" => {
            r.in_place_attempts = v.trim().parse().map_err(|_| bad("a number"))?
        }
        "keep_key_order" => {
            r.keep_key_order = v.trim().parse().map_err(|_| bad("true or false"))?
        }
        "retry_topic_pattern" => r.retry_topic_pattern = v.to_string(),
        "dlq_topic_pattern" => r.dlq_topic_pattern = v.to_string(),
        "create_topics" => r.create_topics = v.trim().parse().map_err(|_| bad("true or false"))?,
        "replication_factor" => {
            r.replication_factor = Some(v.trim().parse().map_err(|_| bad("a number"))?)
        }
        _ => r.dlq_retention = parse_retention(v)?,
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConsumerConfig;

    #[test]
    fn a_file_section_builds_the_same_retry_topics_as_code() {
        let c = ConsumerConfig::from_toml_str(
            r#"
            topics = ["orders"]
            [retry_topics]
            tiers = ["1s", "10s"]
            jitter = 0.0
            in_place_attempts = 2
            dlq_topic_pattern = "dead.{topic}"
            dlq_retention = "forever"
            replication_factor = 3
            "#,
        )
        .unwrap();
        let rt = c.retry_topics.expect("the section is read");
        assert_eq!(
            rt.backoff,
            Backoff::Tiers(vec![Duration::from_secs(1), Duration::from_secs(10)])
        );
        assert_eq!(rt.jitter, 0.0);
        assert_eq!(rt.in_place_attempts, 2);
        assert_eq!(rt.dlq_topic("orders"), "dead.orders");
        assert_eq!(
            rt.retry_topics_of("orders"),
            ["orders.retry.1s", "orders.retry.10s"]
        );
        assert_eq!(rt.dlq_retention, None);
        assert_eq!(rt.replication_factor, Some(3));
        assert!(!rt.keep_key_order && rt.create_topics);
    }

    #[test]
    fn exponential_tables_and_defaults() {
        let c = ConsumerConfig::from_toml_str(
            r#"
            [retry_topics.exponential]
            base = "1s"
            max_delay = "4s"
            max_attempts = 5
            "#,
        )
        .unwrap();
        let rt = c.retry_topics.unwrap();
        assert_eq!(
            rt.backoff.delays(),
            [1, 2, 4, 4].map(Duration::from_secs).to_vec()
        );
        assert_eq!(rt.dlq_retention, Some(super::super::DEFAULT_DLQ_RETENTION));
        assert!(
            ConsumerConfig::default().retry_topics.is_none(),
            "off unless configured"
        );
    }

    #[test]
    fn bad_sections_say_what_to_fix() {
        for (toml, says) in [
            ("[retry_topics]\njitter = 0.1", "needs its delays"),
            (
                "[retry_topics]\ntiers = [\"1s\"]\n[retry_topics.exponential]\nbase = \"1s\"\nmax_delay = \"2s\"\nmax_attempts = 2",
                "keep one",
            ),
            ("[retry_topics]\ntiers = [\"soon\"]", "soon"),
            (
                "[retry_topics]\ntiers = [\"1s\"]\njitter = 3.0",
                "0.0 to 1.0",
            ),
            (
                "[retry_topics]\ntiers = [\"1s\"]\ndlq_topic_pattern = \"dlq\"",
                "{topic}",
            ),
            (
                "[retry_topics]\ntiers = [\"1s\"]\ndlq_retention = \"a while\"",
                "forever",
            ),
            (
                "[retry_topics]\ntiers = [\"1s\"]\nmax_tries = 3",
                "max_tries",
            ),
        ] {
            let err = ConsumerConfig::from_toml_str(toml).unwrap_err().to_string();
            assert!(err.contains(says), "{toml}: {err}");
        }
    }

    #[test]
    fn environment_variables_create_and_adjust_the_section() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let c = ConsumerConfig::default()
            .with_env(env(&[
                ("WEIR_RETRY_TOPICS_TIERS", "200ms, 1s"),
                ("WEIR_RETRY_TOPICS_KEEP_KEY_ORDER", "true"),
                ("WEIR_RETRY_TOPICS_DLQ_RETENTION", "7days"),
            ]))
            .unwrap();
        let rt = c.retry_topics.unwrap();
        assert_eq!(
            rt.backoff.delays(),
            [Duration::from_millis(200), Duration::from_secs(1)]
        );
        assert!(rt.keep_key_order);
        assert_eq!(rt.dlq_retention, Some(Duration::from_secs(7 * 86400)));
        let err = ConsumerConfig::default()
            .with_env(env(&[("WEIR_RETRY_TOPICS_JITTER", "0.2")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("WEIR_RETRY_TOPICS_TIERS"), "{err}");
        let err = ConsumerConfig::default()
            .with_env(env(&[
                ("WEIR_RETRY_TOPICS_TIERS", "1s"),
                ("WEIR_RETRY_TOPICS_IN_PLACE_ATTEMPTS", "many"),
            ]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("many"), "{err}");
    }
}
