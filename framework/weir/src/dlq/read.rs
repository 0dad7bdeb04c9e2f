//! Reading a DLQ: from its low to its high watermark as of the call, without
//! a consumer group, in constant memory ([`DlqStream`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::{DlqFilter, DlqMessage};
use crate::error::WeirError;
use crate::message::RawMessage;

/// Messages the DLQ reader keeps ready ahead of the one being handled: the
/// memory a [`DlqStream`] holds, however long the DLQ is.
pub const DLQ_STREAM_AHEAD: usize = 64;

/// The messages of a DLQ as they are read, in partition-offset order within
/// each partition. The reader thread stays at most [`DLQ_STREAM_AHEAD`]
/// selected messages ahead of the consumer of the stream, so a DLQ of any
/// length is read in constant memory; dropping the stream stops the reader.
pub struct DlqStream {
    rx: tokio::sync::mpsc::Receiver<Result<DlqMessage, WeirError>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for DlqStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlqStream")
            .field("read", &self.read())
            .finish()
    }
}

impl DlqStream {
    /// Messages the reader has fetched from the DLQ so far (selected or not).
    pub fn read(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl futures::Stream for DlqStream {
    type Item = Result<DlqMessage, WeirError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for DlqStream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads `dlq_topic` from its low to its high watermark (as of the call) and
/// returns the messages `filter` selects, at most `limit`, all in memory.
/// Uses no consumer group: it commits nothing and disturbs no one. For a DLQ
/// that may be large, [`stream_dlq`] reads it in constant memory.
pub async fn read_dlq(
    client: &ClientConfig,
    dlq_topic: &str,
    filter: &DlqFilter,
    limit: Option<usize>,
) -> Result<Vec<DlqMessage>, WeirError> {
    use futures::StreamExt as _;
    let mut stream = stream_dlq(client, dlq_topic, filter, limit)?;
    let mut out = Vec::new();
    while let Some(m) = stream.next().await {
        out.push(m?);
    }
    Ok(out)
}

/// Like [`read_dlq`], as a [`DlqStream`]: messages arrive as they are read,
/// at most [`DLQ_STREAM_AHEAD`] of them held at a time. Errors (unreachable
/// brokers, an unknown topic, a stalled read) arrive as the stream's last item.
pub fn stream_dlq(
    client: &ClientConfig,
    dlq_topic: &str,
    filter: &DlqFilter,
    limit: Option<usize>,
) -> Result<DlqStream, WeirError> {
    let mut c = client.clone();
    c.set("group.id", "weir-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = c.create().map_err(|source| WeirError::Kafka {
        context: "creating the DLQ reader".into(),
        source,
    })?;
    let reader = Reader {
        brokers: c.get("bootstrap.servers").unwrap_or_default().to_string(),
        consumer,
        topic: dlq_topic.to_string(),
        filter: filter.clone(),
        limit,
        stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        read: Arc::new(std::sync::atomic::AtomicU64::new(0)),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(DLQ_STREAM_AHEAD);
    let (stop, read) = (reader.stop.clone(), reader.read.clone());
    std::thread::Builder::new()
        .name("weir-dlq-reader".into())
        .spawn(move || {
            if let Err(e) = reader.read_all(&tx) {
                let _ = tx.blocking_send(Err(e));
            }
        })
        .map_err(|e| WeirError::Internal(format!("spawning the DLQ reader thread: {e}")))?;
    Ok(DlqStream { rx, stop, read })
}

/// The reader thread of a [`DlqStream`].
struct Reader {
    brokers: String,
    consumer: BaseConsumer,
    topic: String,
    filter: DlqFilter,
    limit: Option<usize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    read: Arc<std::sync::atomic::AtomicU64>,
}

type Sender = tokio::sync::mpsc::Sender<Result<DlqMessage, WeirError>>;

impl Reader {
    const TIMEOUT: Duration = Duration::from_secs(10);

    /// Assigns the selected partitions from their start and reads them to
    /// their end offsets as of now, sending the selected messages.
    fn read_all(&self, tx: &Sender) -> Result<(), WeirError> {
        let Some(mut ends) = self.assign()? else {
            return Ok(());
        };
        let topic_arc: Arc<str> = Arc::from(self.topic.as_str());
        let mut sent = 0usize;
        let mut idle = std::time::Instant::now();
        while !ends.is_empty() && !self.stop.load(std::sync::atomic::Ordering::Relaxed) {
            if self.limit.is_some_and(|l| sent >= l) {
                break;
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                None => {
                    if idle.elapsed() > Duration::from_secs(30) {
                        return Err(WeirError::Internal(format!(
                            "reading `{}` stalled: no message for 30 s before the end offsets {ends:?}",
                            self.topic
                        )));
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "reading the DLQ"),
                Some(Ok(m)) => {
                    idle = std::time::Instant::now();
                    self.read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some(&end) = ends.get(&m.partition())
                        && m.offset() + 1 >= end
                    {
                        ends.remove(&m.partition());
                    }
                    let dm = DlqMessage::from_raw(to_raw(&m, &topic_arc));
                    if self.filter.matches(&dm) {
                        // Waits while the stream's reader is DLQ_STREAM_AHEAD
                        // behind; a dropped stream ends the read.
                        if tx.blocking_send(Ok(dm)).is_err() {
                            return Ok(());
                        }
                        sent += 1;
                        if self.filter.at.is_some() {
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Assigns each selected partition from its start (its low watermark, or
    /// the offset asked for) and returns its end (the high watermark);
    /// `None` when the one message asked for is not there.
    fn assign(&self) -> Result<Option<BTreeMap<i32, i64>>, WeirError> {
        let (topic, filter) = (&self.topic, &self.filter);
        let parts = crate::kafka::topic_partitions(&self.consumer, topic, Self::TIMEOUT)
            .map_err(|source| WeirError::Kafka {
                context: format!(
                    "fetching metadata of `{topic}` from {} (are the brokers reachable?)",
                    self.brokers
                ),
                source,
            })?
            .ok_or_else(|| WeirError::UnknownTopic {
                topic: topic.clone(),
                brokers: self.brokers.clone(),
            })?;
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in parts {
            if filter
                .partitions
                .as_ref()
                .is_some_and(|ps| !ps.contains(&p))
            {
                continue;
            }
            let (low, high) = self
                .consumer
                .fetch_watermarks(topic, p, Self::TIMEOUT)
                .map_err(|source| WeirError::Kafka {
                    context: format!("fetching watermarks of {topic}/{p}"),
                    source,
                })?;
            let start = match filter.at {
                Some((ap, ao)) if ap == p => ao.max(low),
                Some(_) => continue,
                None => low,
            };
            if high > start {
                ends.insert(p, high);
                tpl.add_partition_offset(topic, p, Offset::Offset(start))
                    .map_err(|source| WeirError::Kafka {
                        context: "building the assignment".into(),
                        source,
                    })?;
            }
        }
        if let Some((ap, _)) = filter.at
            && !ends.contains_key(&ap)
        {
            return Ok(None);
        }
        self.consumer
            .assign(&tpl)
            .map_err(|source| WeirError::Kafka {
                context: format!("reading `{topic}`"),
                source,
            })?;
        Ok(Some(ends))
    }
}

/// A DLQ record as a [`RawMessage`] (copied: the stream outlives the poll).
fn to_raw(m: &rdkafka::message::BorrowedMessage<'_>, topic: &Arc<str>) -> RawMessage {
    RawMessage {
        topic: topic.clone(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis(),
        key: m.key().map(Bytes::copy_from_slice),
        payload: m.payload().map(Bytes::copy_from_slice),
        headers: crate::runtime::poller::read_headers(m),
    }
}
