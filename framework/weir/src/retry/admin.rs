//! Retry-tier and DLQ topic administration: creates the missing topics with
//! explicit settings (the DLQ with `cleanup.policy=delete` and a long
//! retention, each tier with a retention well above its delay), and checks
//! existing ones: a tier whose retention is shorter than its delay would delete
//! copies before they are due (a start-up error); a compacted DLQ, or one that
//! deletes sooner than [`RetryTopics::dlq_retention`], is warned about.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::RetryTopics;

/// Makes sure every tier and DLQ topic of `sources` exists (creating missing
/// ones with the source's partition count when configured) and returns the
/// partition count of each.
pub(crate) async fn ensure_topics(
    config: &crate::ConsumerConfig,
    rt: &RetryTopics,
) -> Result<HashMap<String, i32>, crate::WeirError> {
    let admin = Admin::new(config)?;
    let mut counts = HashMap::new();
    let mut existing = Vec::new();
    for source in &config.topics {
        let n = admin
            .partitions_of(source.clone())
            .await?
            .ok_or_else(|| admin.unknown(source.clone()))?;
        let mut wanted = rt.retry_topics_of(source);
        wanted.push(rt.dlq_topic(source));
        let mut missing = Vec::new();
        for t in wanted {
            match admin.partitions_of(t.clone()).await? {
                Some(p) => {
                    existing.push((source.clone(), t.clone()));
                    counts.insert(t, p);
                }
                None => missing.push(t),
            }
        }
        if missing.is_empty() {
            continue;
        }
        if !rt.create_topics {
            return Err(admin.unknown(missing.join(", ")));
        }
        admin.create(rt, source, &missing, n).await?;
        for t in missing {
            let p = admin.wait_for(&t).await?;
            counts.insert(t, p);
        }
    }
    check_existing(&admin.cc, rt, &existing).await?;
    Ok(counts)
}

fn kafka_err(context: String) -> impl FnOnce(rdkafka::error::KafkaError) -> crate::WeirError {
    move |source| crate::WeirError::Kafka { context, source }
}

/// Metadata lookups and topic creation for [`ensure_topics`].
struct Admin {
    cc: rdkafka::ClientConfig,
    meta: Arc<rdkafka::consumer::BaseConsumer>,
    brokers: String,
}

impl Admin {
    fn new(config: &crate::ConsumerConfig) -> Result<Self, crate::WeirError> {
        let mut cc = config.client_config();
        cc.remove("group.id");
        let meta: rdkafka::consumer::BaseConsumer = cc
            .create()
            .map_err(kafka_err("creating a metadata client".into()))?;
        Ok(Admin {
            cc,
            meta: Arc::new(meta),
            brokers: config.brokers.clone(),
        })
    }

    fn unknown(&self, topic: String) -> crate::WeirError {
        crate::WeirError::UnknownTopic {
            topic,
            brokers: self.brokers.clone(),
        }
    }

    /// The partition count of `topic`, `None` when it does not exist.
    async fn partitions_of(&self, topic: String) -> Result<Option<i32>, crate::WeirError> {
        let c = self.meta.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<i32>, rdkafka::error::KafkaError> {
            Ok(
                crate::kafka::topic_partitions(&c, &topic, Duration::from_secs(10))?
                    .map(|p| p.len() as i32),
            )
        })
        .await
        .map_err(|e| crate::WeirError::Internal(e.to_string()))?
        .map_err(kafka_err("fetching topic metadata".into()))
    }

    /// Creates the `missing` tier and DLQ topics of `source` with `n` partitions.
    async fn create(
        &self,
        rt: &RetryTopics,
        source: &str,
        missing: &[String],
        n: i32,
    ) -> Result<(), crate::WeirError> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = self
            .cc
            .create()
            .map_err(kafka_err("creating an admin client".into()))?;
        let rf = rt.replication_factor.unwrap_or(-1);
        let configs: Vec<Vec<(&str, String)>> = missing
            .iter()
            .map(|t| topic_configs(rt, source, t))
            .collect();
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&configs)
            .map(|(t, cfg)| {
                cfg.iter().fold(
                    NewTopic::new(t, n, TopicReplication::Fixed(rf)),
                    |nt, (k, v)| nt.set(k, v),
                )
            })
            .collect();
        let results = admin
            .create_topics(
                &new,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .map_err(kafka_err(format!("creating retry/DLQ topics {missing:?}")))?;
        for r in results {
            match r {
                Ok(t) => tracing::info!(topic = %t, partitions = n, "created retry/DLQ topic"),
                Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::debug!(topic = %t, "retry/DLQ topic created concurrently")
                }
                Err((t, code)) => {
                    return Err(crate::WeirError::Kafka {
                        context: format!(
                            "creating retry/DLQ topic `{t}` with {n} partitions (create it yourself, or grant CREATE and set replication_factor)"
                        ),
                        source: rdkafka::error::KafkaError::AdminOp(code),
                    });
                }
            }
        }
        Ok(())
    }

    /// Waits (up to 15 s) until the metadata shows a created topic.
    async fn wait_for(&self, topic: &str) -> Result<i32, crate::WeirError> {
        let start = std::time::Instant::now();
        loop {
            if let Some(p) = self.partitions_of(topic.to_string()).await? {
                return Ok(p);
            }
            if start.elapsed() > Duration::from_secs(15) {
                return Err(self.unknown(topic.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The delay of a tier topic of `source`, `None` for the DLQ.
fn tier_delay(rt: &RetryTopics, source: &str, topic: &str) -> Option<Duration> {
    rt.backoff
        .delays()
        .into_iter()
        .filter(|d| rt.retry_topic(source, *d) == topic)
        .max()
}

/// `retention.ms` of a tier topic Weir creates: ten times its delay, at least 7 days.
pub(crate) fn tier_retention(delay: Duration) -> Duration {
    (delay * 10).max(Duration::from_secs(7 * 24 * 3600))
}

fn millis(d: Duration) -> String {
    d.as_millis().min(i64::MAX as u128).to_string()
}

/// The settings a created tier or DLQ topic gets.
fn topic_configs(rt: &RetryTopics, source: &str, topic: &str) -> Vec<(&'static str, String)> {
    match tier_delay(rt, source, topic) {
        Some(delay) => vec![
            ("cleanup.policy", "delete".into()),
            ("retention.ms", millis(tier_retention(delay))),
        ],
        None => vec![
            ("cleanup.policy", rt.dlq_cleanup_policy.clone()),
            (
                "retention.ms",
                rt.dlq_retention.map_or_else(|| "-1".to_string(), millis),
            ),
        ],
    }
}

/// What is wrong with an existing tier or DLQ topic's settings: an error for a
/// tier that deletes copies before they are due, warnings for the DLQ.
#[derive(Debug, PartialEq)]
pub(crate) enum Finding {
    Error(String),
    Warning(String),
}

pub(crate) fn judge(
    rt: &RetryTopics,
    source: &str,
    topic: &str,
    cleanup_policy: Option<&str>,
    retention_ms: Option<i64>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let compact = cleanup_policy.is_some_and(|p| p.contains("compact"));
    let deletes = cleanup_policy.is_none_or(|p| p.contains("delete"));
    let retention = retention_ms
        .filter(|r| *r >= 0 && deletes)
        .map(|r| Duration::from_millis(r as u64));
    match tier_delay(rt, source, topic) {
        Some(delay) => {
            if let Some(r) = retention
                && r <= delay.mul_f64(1.0 + rt.jitter.clamp(0.0, 1.0)) + super::HOLD_SKEW_ALLOWANCE
            {
                out.push(Finding::Error(format!(
                    "retry tier `{topic}` keeps messages {r:?} (retention.ms), not longer than its delay {delay:?}: \
                     copies would be deleted before they are due. Raise its retention.ms (Weir creates tiers with {:?})",
                    tier_retention(delay)
                )));
            }
            if compact {
                out.push(Finding::Warning(format!(
                    "retry tier `{topic}` is compacted (cleanup.policy={}): copies of one key replace each other; use cleanup.policy=delete",
                    cleanup_policy.unwrap_or_default()
                )));
            }
        }
        None => {
            if compact {
                out.push(Finding::Warning(format!(
                    "DLQ `{topic}` is compacted (cleanup.policy={}): it keeps one entry per key and refuses keyless copies (the partition then halts); use cleanup.policy=delete",
                    cleanup_policy.unwrap_or_default()
                )));
            }
            if let (Some(r), Some(want)) = (retention, rt.dlq_retention)
                && r < want
            {
                out.push(Finding::Warning(format!(
                    "DLQ `{topic}` deletes entries after {r:?} (retention.ms), before the {want:?} Weir is set to keep them: unreplayed entries will be lost"
                )));
            }
        }
    }
    out
}

/// Reads `cleanup.policy` and `retention.ms` of the existing tier and DLQ
/// topics and judges them. Brokers that do not answer DescribeConfigs (the
/// mock cluster) are skipped with a debug line.
async fn check_existing(
    cc: &rdkafka::ClientConfig,
    rt: &RetryTopics,
    topics: &[(String, String)],
) -> Result<(), crate::WeirError> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = match cc.create() {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(error = %e, "cannot check retry/DLQ topic settings");
            return Ok(());
        }
    };
    let specs: Vec<ResourceSpecifier<'_>> = topics
        .iter()
        .map(|(_, t)| ResourceSpecifier::Topic(t))
        .collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = match admin.describe_configs(&specs, &opts).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "the brokers did not describe the retry/DLQ topics' settings; not checked");
            return Ok(());
        }
    };
    let mut errors = Vec::new();
    for ((source, topic), result) in topics.iter().zip(results) {
        let Ok(res) = result else { continue };
        let entries = res.entry_map();
        let value = |k: &str| entries.get(k).and_then(|e| e.value.clone());
        let policy = value("cleanup.policy");
        let retention = value("retention.ms").and_then(|v| v.parse().ok());
        for f in judge(rt, source, topic, policy.as_deref(), retention) {
            match f {
                Finding::Warning(w) => tracing::warn!(topic = %topic, "{w}"),
                Finding::Error(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(crate::WeirError::Config(crate::ConfigError::invalid(
            "retry_topics",
            errors.join("; "),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_topics_get_explicit_settings() {
        let rt = RetryTopics::tiers([Duration::from_secs(1), Duration::from_secs(30 * 24 * 3600)]);
        let tier = topic_configs(&rt, "o", "o.retry.1s");
        assert_eq!(tier[0], ("cleanup.policy", "delete".to_string()));
        assert_eq!(
            tier[1],
            ("retention.ms", (7u64 * 24 * 3600 * 1000).to_string())
        );
        let long = topic_configs(
            &rt,
            "o",
            &rt.retry_topic("o", Duration::from_secs(30 * 24 * 3600)),
        );
        assert_eq!(
            long[1].1,
            (300u64 * 24 * 3600 * 1000).to_string(),
            "ten times a long delay"
        );
        let dlq = topic_configs(&rt, "o", "o.dlq");
        assert_eq!(dlq[0], ("cleanup.policy", "delete".to_string()));
        assert_eq!(
            dlq[1],
            ("retention.ms", (30u64 * 24 * 3600 * 1000).to_string())
        );
        let forever = topic_configs(&rt.clone().dlq_retention(None), "o", "o.dlq");
        assert_eq!(forever[1].1, "-1");
    }

    #[test]
    fn existing_topics_are_judged() {
        let rt = RetryTopics::tiers([Duration::from_secs(60)]).jitter(0.0);
        assert!(matches!(
            judge(&rt, "o", "o.retry.1m", Some("delete"), Some(30_000))[..],
            [Finding::Error(_)]
        ));
        assert!(judge(&rt, "o", "o.retry.1m", Some("delete"), Some(86_400_000)).is_empty());
        assert!(judge(&rt, "o", "o.retry.1m", Some("delete"), Some(-1)).is_empty());
        assert!(
            judge(&rt, "o", "o.retry.1m", Some("compact"), Some(30_000))
                .iter()
                .all(|f| matches!(f, Finding::Warning(_))),
            "compaction deletes nothing by age"
        );
        assert_eq!(judge(&rt, "o", "o.dlq", Some("compact"), Some(-1)).len(), 1);
        assert_eq!(
            judge(&rt, "o", "o.dlq", Some("delete"), Some(86_400_000)).len(),
            1,
            "a day is short"
        );
        assert!(judge(&rt, "o", "o.dlq", Some("delete"), Some(-1)).is_empty());
    }
}
