//! Consumer groups as operators see them (the library behind `weir groups`,
//! `weir offsets reset` and `weir console`): state, members and assignment,
//! lag and the oldest unconsumed message's age per partition, and offset
//! resets that plan first and refuse while the group has members.
//!
//! Every function blocks (librdkafka admin calls): call them from
//! `tokio::task::spawn_blocking` in async code.
//!
//! ```no_run
//! # fn demo() -> Result<(), weir::WeirError> {
//! use weir::groups::{describe_lag, list_groups};
//! let client = weir::dlq::client_config("kafka:9092");
//! for g in list_groups(&client, None)? {
//!     println!("{} {} ({} members)", g.name, g.state, g.members.len());
//! }
//! let lag: i64 = describe_lag(&client, "billing", &["orders".into()])?
//!     .iter()
//!     .map(|p| p.lag)
//!     .sum();
//! println!("billing is {lag} behind");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use crate::WeirError;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

fn kafka(context: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> WeirError {
    let context = context.into();
    move |source| WeirError::Kafka { context, source }
}

/// A group as the broker describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupInfo {
    /// The group ID.
    pub name: String,
    /// The broker's state: `Stable`, `Empty`, `PreparingRebalance`, `Dead`…
    pub state: String,
    /// `classic` or `consumer` (KIP-848); `unknown` when the broker does not say.
    #[serde(rename = "type")]
    pub group_type: String,
    /// The assignor: classic, the protocol the members agreed on
    /// (`cooperative-sticky`, `range`, …); consumer, the broker's (`uniform`, `range`).
    pub protocol: String,
    /// Its members now (none: no consumer runs in it).
    pub members: Vec<MemberInfo>,
}

/// A member of a group.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberInfo {
    /// The member ID the coordinator gave it.
    pub id: String,
    /// Its `client.id`.
    pub client_id: String,
    /// The host it connects from.
    pub host: String,
    /// Static membership: the member's `group.instance.id`.
    pub instance_id: Option<String>,
    /// topic -> partitions it owns now.
    pub assignment: BTreeMap<String, Vec<i32>>,
    /// Consumer protocol: topic -> partitions the broker wants it to own
    /// (differs from `assignment` while the member reconciles).
    pub target_assignment: Option<BTreeMap<String, Vec<i32>>>,
}

fn by_topic(parts: &[weir_ffi::Partition]) -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for p in parts {
        out.entry(p.topic.clone()).or_default().push(p.partition);
    }
    out
}

impl From<weir_ffi::GroupDescription> for GroupInfo {
    fn from(g: weir_ffi::GroupDescription) -> Self {
        GroupInfo {
            name: g.group_id,
            state: g.state,
            group_type: match g.group_type {
                weir_ffi::GroupType::Classic => "classic",
                weir_ffi::GroupType::Consumer => "consumer",
                weir_ffi::GroupType::Unknown => "unknown",
            }
            .to_string(),
            protocol: g.assignor,
            members: g
                .members
                .into_iter()
                .map(|m| MemberInfo {
                    id: m.member_id,
                    client_id: m.client_id,
                    host: m.host,
                    instance_id: m.group_instance_id,
                    assignment: by_topic(&m.assignment),
                    target_assignment: m.target_assignment.as_deref().map(by_topic),
                })
                .collect(),
        }
    }
}

/// Parses a consumer-protocol `MemberAssignment` (version, then topics with
/// partitions; later fields ignored). Malformed bytes give an empty map.
pub fn parse_assignment(b: &[u8]) -> BTreeMap<String, Vec<i32>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, r) = b.split_at(n);
        *b = r;
        Some(h)
    }
    let mut out = BTreeMap::new();
    let mut b = b;
    let parse = |b: &mut &[u8], out: &mut BTreeMap<String, Vec<i32>>| -> Option<()> {
        take(b, 2)?; // version
        let topics = i32::from_be_bytes(take(b, 4)?.try_into().ok()?);
        for _ in 0..topics.clamp(0, 10_000) {
            let len = i16::from_be_bytes(take(b, 2)?.try_into().ok()?);
            let name = String::from_utf8_lossy(take(b, len.max(0) as usize)?).into_owned();
            let n = i32::from_be_bytes(take(b, 4)?.try_into().ok()?);
            let mut parts = Vec::new();
            for _ in 0..n.clamp(0, 100_000) {
                parts.push(i32::from_be_bytes(take(b, 4)?.try_into().ok()?));
            }
            out.insert(name, parts);
        }
        Some(())
    };
    if parse(&mut b, &mut out).is_none() {
        out.clear();
    }
    out
}

fn client(cfg: &ClientConfig, group: Option<&str>) -> Result<BaseConsumer, WeirError> {
    let mut c = cfg.clone();
    c.set("group.id", group.unwrap_or("weir-cli"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    c.create().map_err(kafka("creating a client"))
}

/// Lists groups (all, or one), described under their own protocol: classic
/// groups and consumer-protocol (KIP-848) groups alike, through librdkafka's
/// DescribeConsumerGroups ([`weir_ffi`]). Brokers that do not answer it (old
/// brokers; the mock cluster) fall back to the classic DescribeGroups.
pub fn list_groups(cfg: &ClientConfig, group: Option<&str>) -> Result<Vec<GroupInfo>, WeirError> {
    let c = client(cfg, None)?;
    let brokers = cfg.get("bootstrap.servers").unwrap_or_default().to_string();
    let names: Vec<String> = match group {
        Some(g) => vec![g.to_string()],
        None => c
            .fetch_group_list(None, TIMEOUT)
            .map_err(kafka(format!(
                "listing consumer groups on {brokers} (are the brokers reachable?)"
            )))?
            .groups()
            .iter()
            .map(|g| g.name().to_string())
            .collect(),
    };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    match weir_ffi::describe_consumer_groups(c.client(), &refs, TIMEOUT) {
        // A group the broker could not describe (the mock cluster answers
        // neither describe request): the classic path reports why.
        Ok(described) if described.iter().any(|g| g.error.is_some()) => {
            tracing::debug!(
                ?described,
                "DescribeConsumerGroups failed for some groups; falling back to DescribeGroups"
            );
            classic_groups(&c, group, &brokers)
        }
        Ok(described) => Ok(described
            .into_iter()
            .filter(|g| g.state != "Dead" || group.is_none())
            .map(GroupInfo::from)
            .collect()),
        Err(e) => {
            tracing::debug!(error = %e, "DescribeConsumerGroups failed; falling back to DescribeGroups");
            classic_groups(&c, group, &brokers)
        }
    }
}

/// Groups through the classic DescribeGroups only.
fn classic_groups(
    c: &BaseConsumer,
    group: Option<&str>,
    brokers: &str,
) -> Result<Vec<GroupInfo>, WeirError> {
    let list = c.fetch_group_list(group, TIMEOUT).map_err(kafka(format!(
        "listing consumer groups on {brokers} (are the brokers reachable?)"
    )))?;
    Ok(list
        .groups()
        .iter()
        .filter(|g| g.state() != "Dead" || group.is_none())
        .map(|g| GroupInfo {
            name: g.name().to_string(),
            state: g.state().to_string(),
            group_type: "classic".into(),
            protocol: g.protocol().to_string(),
            members: g
                .members()
                .iter()
                .map(|m| MemberInfo {
                    id: m.id().to_string(),
                    client_id: m.client_id().to_string(),
                    host: m.client_host().to_string(),
                    instance_id: None,
                    assignment: m.assignment().map(parse_assignment).unwrap_or_default(),
                    target_assignment: None,
                })
                .collect(),
        })
        .collect())
}

/// One partition of a group: position, end, lag, and the oldest unconsumed message's age.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The group's committed offset (`None`: it never committed here).
    pub committed: Option<i64>,
    /// The low watermark (earliest retained offset).
    pub low: i64,
    /// The high watermark (log end).
    pub high: i64,
    /// Messages between the committed offset (or the low watermark) and the end.
    pub lag: i64,
    /// Age of the first unconsumed message (ms since its timestamp), when there is one.
    pub oldest_unconsumed_age_ms: Option<i64>,
}

fn partitions_of(c: &BaseConsumer, topic: &str, brokers: &str) -> Result<Vec<i32>, WeirError> {
    let md = c
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(kafka(format!("fetching metadata of `{topic}`")))?;
    match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().iter().map(|p| p.id()).collect())
        }
        _ => Err(WeirError::UnknownTopic {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
        }),
    }
}

fn committed(
    c: &BaseConsumer,
    topic: &str,
    parts: &[i32],
) -> Result<BTreeMap<i32, Option<i64>>, WeirError> {
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition(topic, *p);
    }
    let got = c
        .committed_offsets(tpl, TIMEOUT)
        .map_err(kafka(format!("fetching committed offsets of `{topic}`")))?;
    Ok(got
        .elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), o)
        })
        .collect())
}

use crate::clock::now_ms;

/// Lag of `group` on `topics`, with the age of each partition's oldest
/// unconsumed message (read from the partition: up to 3 s per lagging
/// partition).
pub fn describe_lag(
    cfg: &ClientConfig,
    group: &str,
    topics: &[String],
) -> Result<Vec<PartitionLag>, WeirError> {
    lag_of(cfg, group, topics, true)
}

/// Lag of `group` on `topics` without the oldest message's age (no message
/// is read): cheap enough to sample every group often.
pub fn lag(
    cfg: &ClientConfig,
    group: &str,
    topics: &[String],
) -> Result<Vec<PartitionLag>, WeirError> {
    lag_of(cfg, group, topics, false)
}

fn lag_of(
    cfg: &ClientConfig,
    group: &str,
    topics: &[String],
    with_age: bool,
) -> Result<Vec<PartitionLag>, WeirError> {
    let brokers = cfg.get("bootstrap.servers").unwrap_or_default().to_string();
    let c = client(cfg, Some(group))?;
    let reader = if with_age {
        Some(client(cfg, None)?)
    } else {
        None
    };
    let mut out = Vec::new();
    for t in topics {
        let parts = partitions_of(&c, t, &brokers)?;
        let com = committed(&c, t, &parts)?;
        for p in parts {
            let (low, high) = c
                .fetch_watermarks(t, p, TIMEOUT)
                .map_err(kafka(format!("fetching watermarks of {t}/{p}")))?;
            let pos = com.get(&p).copied().flatten();
            let from = pos.unwrap_or(low).clamp(low, high);
            let lag = high - from;
            let mut age = None;
            if lag > 0
                && let Some(reader) = &reader
            {
                let mut tpl = TopicPartitionList::new();
                let _ = tpl.add_partition_offset(t, p, Offset::Offset(from));
                if reader.assign(&tpl).is_ok() {
                    let deadline = std::time::Instant::now() + Duration::from_secs(3);
                    while std::time::Instant::now() < deadline {
                        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
                            age = m.timestamp().to_millis().map(|ts| (now_ms() - ts).max(0));
                            break;
                        }
                    }
                }
            }
            out.push(PartitionLag {
                topic: t.clone(),
                partition: p,
                committed: pos,
                low,
                high,
                lag,
                oldest_unconsumed_age_ms: age,
            });
        }
    }
    Ok(out)
}

/// The topics on which `group` has committed offsets (internal topics left
/// out): what an empty group (no members, so no assignment) consumed.
pub fn committed_topics(cfg: &ClientConfig, group: &str) -> Result<Vec<String>, WeirError> {
    let c = client(cfg, Some(group))?;
    let md = c
        .fetch_metadata(None, TIMEOUT)
        .map_err(kafka("fetching the cluster's topics"))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        if t.name().starts_with("__") || t.error().is_some() {
            continue;
        }
        for p in t.partitions() {
            tpl.add_partition(t.name(), p.id());
        }
    }
    if tpl.count() == 0 {
        return Ok(Vec::new());
    }
    let got = c.committed_offsets(tpl, TIMEOUT).map_err(kafka(format!(
        "fetching the committed offsets of `{group}`"
    )))?;
    let mut topics: Vec<String> = got
        .elements()
        .iter()
        .filter(|e| matches!(e.offset(), Offset::Offset(_)))
        .map(|e| e.topic().to_string())
        .collect();
    topics.sort();
    topics.dedup();
    Ok(topics)
}

/// Where to move a group's offsets.
#[derive(Debug, Clone)]
pub enum ResetTo {
    /// The earliest retained offset.
    Earliest,
    /// The log end (skip everything not yet consumed).
    Latest,
    /// The first message at or after this time (epoch ms).
    Datetime(i64),
    /// This offset, clamped to the retained range.
    Offset(i64),
    /// Move by this many messages (negative: process again).
    ShiftBy(i64),
}

/// One partition of a reset plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResetLine {
    /// Partition.
    pub partition: i32,
    /// The committed offset before (`None`: nothing committed).
    pub old: Option<i64>,
    /// The offset the reset commits.
    pub new: i64,
    /// Messages processed again (new below old).
    pub reprocessed: i64,
    /// Messages skipped (new above old).
    pub skipped: i64,
    /// A note, e.g. the datetime is before the earliest retained message.
    pub note: Option<String>,
}

/// Computes the plan (and commits it when `execute`; refusing while the group has members).
///
/// The outer error is a Kafka failure; the inner `Err` is a refusal with its
/// reason (an unknown partition, active members, membership that cannot be
/// checked without `force`).
pub fn reset_offsets(
    cfg: &ClientConfig,
    group: &str,
    topic: &str,
    only: Option<&[i32]>,
    to: &ResetTo,
    execute: bool,
    force: bool,
) -> Result<Result<Vec<ResetLine>, String>, WeirError> {
    let brokers = cfg.get("bootstrap.servers").unwrap_or_default().to_string();
    let c = client(cfg, Some(group))?;
    let all = partitions_of(&c, topic, &brokers)?;
    if let Some(ps) = only
        && let Some(bad) = ps.iter().find(|p| !all.contains(p))
    {
        return Ok(Err(format!(
            "partition {bad} does not exist in `{topic}` (it has {} partitions)",
            all.len()
        )));
    }
    let parts: Vec<i32> = all
        .into_iter()
        .filter(|p| only.is_none_or(|o| o.contains(p)))
        .collect();
    let com = committed(&c, topic, &parts)?;
    let times: BTreeMap<i32, i64> = match to {
        ResetTo::Datetime(ts) => {
            let mut tpl = TopicPartitionList::new();
            for p in &parts {
                let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*ts));
            }
            c.offsets_for_times(tpl, TIMEOUT)
                .map_err(kafka("looking up offsets by time"))?
                .elements()
                .iter()
                .map(|e| {
                    let o = match e.offset() {
                        Offset::Offset(o) => o,
                        _ => -1,
                    };
                    (e.partition(), o)
                })
                .collect()
        }
        _ => BTreeMap::new(),
    };
    let mut plan = Vec::new();
    for p in &parts {
        let (low, high) = c
            .fetch_watermarks(topic, *p, TIMEOUT)
            .map_err(kafka(format!("fetching watermarks of {topic}/{p}")))?;
        let old = com.get(p).copied().flatten();
        let mut note = None;
        let raw = match to {
            ResetTo::Earliest => low,
            ResetTo::Latest => high,
            ResetTo::Offset(o) => *o,
            ResetTo::ShiftBy(d) => old.unwrap_or(high) + d,
            ResetTo::Datetime(_) => match times.get(p).copied().unwrap_or(-1) {
                -1 => {
                    note = Some("no message at or after that time: moves to the end".to_string());
                    high
                }
                o if o <= low => {
                    note = Some(format!(
                        "the time is at or before the earliest retained message: moves to the earliest ({low})"
                    ));
                    low
                }
                o => o,
            },
        };
        let new = raw.clamp(low, high);
        if new != raw && note.is_none() {
            note = Some(format!("clamped to the retained range [{low}, {high}]"));
        }
        let base = old.unwrap_or(low);
        plan.push(ResetLine {
            partition: *p,
            old,
            new,
            reprocessed: (base - new).max(0),
            skipped: (new - base).max(0),
            note,
        });
    }
    if !execute {
        return Ok(Ok(plan));
    }
    let groups = match list_groups(cfg, Some(group)) {
        Ok(g) => g,
        Err(e) if force => {
            tracing::warn!(error = %e, "cannot check the group's members; --force given, committing anyway");
            Vec::new()
        }
        Err(e) => {
            return Ok(Err(format!(
                "cannot check whether group `{group}` has active members ({e}); some brokers do not answer ListGroups/DescribeGroups. Stop its consumers, then run again with --force"
            )));
        }
    };
    if let Some(g) = groups.iter().find(|g| g.name == group)
        && !g.members.is_empty()
    {
        return Ok(Err(format!(
            "group `{group}` has {} active member(s) ({}): stop its consumers first (scale the deployment to 0, or SIGTERM the processes; Weir commits and leaves the group on shutdown), then run this again",
            g.members.len(),
            g.members
                .iter()
                .map(|m| format!("{}@{}", m.client_id, m.host))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut tpl = TopicPartitionList::new();
    for l in &plan {
        tpl.add_partition_offset(topic, l.partition, Offset::Offset(l.new))
            .map_err(kafka("building the commit"))?;
    }
    c.commit(&tpl, CommitMode::Sync)
        .map_err(kafka(format!("committing the new offsets of `{group}`")))?;
    Ok(Ok(plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_member_assignments_and_survives_garbage() {
        let mut b = vec![0, 1]; // version
        b.extend(1i32.to_be_bytes());
        b.extend(6i16.to_be_bytes());
        b.extend(b"orders");
        b.extend(2i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(3i32.to_be_bytes());
        b.extend((-1i32).to_be_bytes()); // user data: null
        let a = parse_assignment(&b);
        assert_eq!(a.get("orders"), Some(&vec![0, 3]));
        assert!(parse_assignment(&b[..9]).is_empty(), "truncated");
        assert!(parse_assignment(&[0xff; 3]).is_empty());
        assert!(parse_assignment(&[]).is_empty());
    }
}
