//! [`KafkaCluster`]: one fixture over every backend, with the helpers tests need.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::Mutex;

use crate::TestkitError;
use crate::kafka::{KafkaNodes, KafkaOptions};
use crate::mock::{MockFaults, MockHandle};
use crate::tansu::{TansuBroker, TansuStorage};

/// Which kind of cluster a [`KafkaCluster`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// librdkafka's in-process mock cluster.
    Mock,
    /// A tansu broker process.
    Tansu,
    /// Apache Kafka 4.1 in KRaft mode, from Maven Central jars ([`KafkaNodes`]).
    Kafka,
    /// A cluster named by `KAFKA_BOOTSTRAP_SERVERS`.
    External,
    /// Apache Kafka in a Docker container.
    Docker,
}

impl BrokerKind {
    /// Reads `WEIR_TEST_BROKER` (default `mock`).
    pub fn from_env() -> Result<Self, TestkitError> {
        Self::parse(std::env::var("WEIR_TEST_BROKER").ok().as_deref())
    }

    /// Parses a `WEIR_TEST_BROKER` value (`None` or empty: mock).
    pub fn parse(value: Option<&str>) -> Result<Self, TestkitError> {
        match value {
            None | Some("") | Some("mock") => Ok(BrokerKind::Mock),
            Some("tansu") => Ok(BrokerKind::Tansu),
            Some("kafka") => Ok(BrokerKind::Kafka),
            Some("external") => Ok(BrokerKind::External),
            Some("docker") => Ok(BrokerKind::Docker),
            Some(other) => Err(TestkitError::UnknownBroker(other.to_string())),
        }
    }

    /// Lower-case name, as `WEIR_TEST_BROKER` spells it.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Mock => "mock",
            BrokerKind::Tansu => "tansu",
            BrokerKind::Kafka => "kafka",
            BrokerKind::External => "external",
            BrokerKind::Docker => "docker",
        }
    }
}

enum Backend {
    Mock(MockHandle),
    Tansu(Mutex<TansuBroker>),
    Kafka {
        nodes: Mutex<KafkaNodes>,
        /// Node count (fixed at start), for replication factors.
        count: usize,
        /// The working directory, for log tails without the lock.
        dir: std::path::PathBuf,
    },
    External,
    /// Held so that the container lives as long as the cluster value.
    #[cfg(feature = "docker")]
    #[allow(dead_code)]
    Docker(Box<crate::docker::DockerKafka>),
}

/// A running Kafka-protocol cluster and helpers to drive it from tests.
pub struct KafkaCluster {
    kind: BrokerKind,
    bootstrap: String,
    backend: Backend,
}

impl std::fmt::Debug for KafkaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaCluster")
            .field("kind", &self.kind)
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

/// A record for [`KafkaCluster::produce`].
#[derive(Debug, Clone, Default)]
pub struct TestRecord {
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message payload.
    pub payload: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Explicit partition; `None` lets the partitioner choose by key.
    pub partition: Option<i32>,
}

impl TestRecord {
    /// A record with a key and a payload.
    pub fn keyed(key: impl AsRef<[u8]>, payload: impl AsRef<[u8]>) -> Self {
        TestRecord {
            key: Some(key.as_ref().to_vec()),
            payload: Some(payload.as_ref().to_vec()),
            ..Default::default()
        }
    }

    /// A record with a payload and no key.
    pub fn unkeyed(payload: impl AsRef<[u8]>) -> Self {
        TestRecord {
            payload: Some(payload.as_ref().to_vec()),
            ..Default::default()
        }
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((key.into(), Some(value.as_ref().to_vec())));
        self
    }

    /// Sends to this partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// A message read back by [`KafkaCluster::read_to_end`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMessage {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub payload: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl ReadMessage {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

impl KafkaCluster {
    /// Starts (or connects to) the cluster `WEIR_TEST_BROKER` names (default: mock).
    /// Tansu runs on SQLite storage so that restarts keep data.
    pub async fn from_env() -> Result<Self, TestkitError> {
        Self::start(BrokerKind::from_env()?).await
    }

    /// Starts a cluster of this kind with its defaults.
    pub async fn start(kind: BrokerKind) -> Result<Self, TestkitError> {
        match kind {
            BrokerKind::Mock => Self::mock(1),
            BrokerKind::Tansu => Self::tansu(TansuStorage::Sqlite).await,
            BrokerKind::Kafka => Self::kafka(1).await,
            BrokerKind::External => Self::external(),
            BrokerKind::Docker => Self::docker().await,
        }
    }

    /// librdkafka's in-process mock cluster with `brokers` brokers.
    pub fn mock(brokers: i32) -> Result<Self, TestkitError> {
        let handle = MockHandle::start(brokers)?;
        Ok(KafkaCluster {
            kind: BrokerKind::Mock,
            bootstrap: handle.bootstrap.clone(),
            backend: Backend::Mock(handle),
        })
    }

    /// A tansu broker process on this storage.
    pub async fn tansu(storage: TansuStorage) -> Result<Self, TestkitError> {
        Self::tansu_with_args(storage, Vec::new()).await
    }

    /// A tansu broker process with extra `tansu broker` arguments.
    pub async fn tansu_with_args(
        storage: TansuStorage,
        args: Vec<String>,
    ) -> Result<Self, TestkitError> {
        let broker = TansuBroker::start_with_args(storage, args).await?;
        Ok(KafkaCluster {
            kind: BrokerKind::Tansu,
            bootstrap: broker.bootstrap_servers(),
            backend: Backend::Tansu(Mutex::new(broker)),
        })
    }

    /// Apache Kafka with `nodes` combined broker+controller nodes (1, or 3 for
    /// failure tests: replication factor 3, `min.insync.replicas=2`).
    pub async fn kafka(nodes: usize) -> Result<Self, TestkitError> {
        Self::kafka_with(KafkaOptions::nodes(nodes)).await
    }

    /// Apache Kafka with these options (extra broker properties, SCRAM users…).
    pub async fn kafka_with(options: KafkaOptions) -> Result<Self, TestkitError> {
        let nodes = KafkaNodes::start(options).await?;
        Ok(KafkaCluster {
            kind: BrokerKind::Kafka,
            bootstrap: nodes.bootstrap_servers(),
            backend: Backend::Kafka {
                count: nodes.node_ids().len(),
                dir: nodes.work_dir().to_path_buf(),
                nodes: Mutex::new(nodes),
            },
        })
    }

    /// The cluster at `KAFKA_BOOTSTRAP_SERVERS`.
    pub fn external() -> Result<Self, TestkitError> {
        let bootstrap =
            std::env::var("KAFKA_BOOTSTRAP_SERVERS").map_err(|_| TestkitError::MissingBootstrap)?;
        Ok(KafkaCluster {
            kind: BrokerKind::External,
            bootstrap,
            backend: Backend::External,
        })
    }

    /// A handle on a cluster that is already running at `bootstrap` (no process is owned).
    pub fn external_at(bootstrap: &str) -> Self {
        KafkaCluster {
            kind: BrokerKind::External,
            bootstrap: bootstrap.to_string(),
            backend: Backend::External,
        }
    }

    /// Apache Kafka in a Docker container (feature `docker`).
    pub async fn docker() -> Result<Self, TestkitError> {
        #[cfg(feature = "docker")]
        {
            let d = crate::docker::DockerKafka::start().await?;
            Ok(KafkaCluster {
                kind: BrokerKind::Docker,
                bootstrap: d.bootstrap.clone(),
                backend: Backend::Docker(Box::new(d)),
            })
        }
        #[cfg(not(feature = "docker"))]
        Err(TestkitError::DockerFeatureOff)
    }

    /// Which backend this is.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// `host:port[,host:port]` to give clients.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// A client config with `bootstrap.servers` set (and quiet logs).
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    /// Fault injection, for the mock cluster only.
    pub fn mock_faults(&self) -> Option<&MockFaults> {
        match &self.backend {
            Backend::Mock(h) => Some(&h.faults),
            _ => None,
        }
    }

    /// The tansu process, for stop/kill/stall/restart (tansu only).
    pub fn tansu_broker(&self) -> Option<&Mutex<TansuBroker>> {
        match &self.backend {
            Backend::Tansu(b) => Some(b),
            _ => None,
        }
    }

    /// The Apache Kafka nodes, for kill/stop/stall/restart (Kafka only).
    pub fn kafka_nodes(&self) -> Option<&Mutex<KafkaNodes>> {
        match &self.backend {
            Backend::Kafka { nodes, .. } => Some(nodes),
            _ => None,
        }
    }

    /// Takes the whole cluster away: the mock's brokers refuse connections,
    /// tansu and every Kafka node are SIGKILLed (their data stays on disk).
    pub async fn kill_brokers(&self) -> Result<(), TestkitError> {
        match &self.backend {
            Backend::Mock(h) => {
                (1..=h.faults.brokers()).try_for_each(|id| h.faults.broker_down(id))
            }
            Backend::Tansu(b) => b.lock().await.kill(),
            Backend::Kafka { nodes, .. } => {
                let mut nodes = nodes.lock().await;
                nodes
                    .node_ids()
                    .into_iter()
                    .try_for_each(|id| nodes.kill(id))
            }
            _ => Err(TestkitError::Unsupported {
                what: "killing brokers",
                backend: self.kind.name(),
            }),
        }
    }

    /// Brings back what [`kill_brokers`](Self::kill_brokers) took away, on the
    /// same ports and data, and waits until the cluster answers.
    pub async fn restart_brokers(&self) -> Result<(), TestkitError> {
        match &self.backend {
            Backend::Mock(h) => (1..=h.faults.brokers()).try_for_each(|id| h.faults.broker_up(id)),
            Backend::Tansu(b) => b.lock().await.restart().await,
            Backend::Kafka { nodes, .. } => {
                let mut nodes = nodes.lock().await;
                nodes.restart_all().await
            }
            _ => Err(TestkitError::Unsupported {
                what: "restarting brokers",
                backend: self.kind.name(),
            }),
        }
    }

    /// Number of broker nodes (1 for the mock cluster, tansu and an external cluster).
    pub fn node_count(&self) -> usize {
        match &self.backend {
            Backend::Mock(h) => h.faults.brokers() as usize,
            Backend::Kafka { count, .. } => *count,
            _ => 1,
        }
    }

    /// Creates a topic with `partitions` partitions (replication: the node
    /// count, at most 3). An existing topic is not an error.
    ///
    /// A CreateTopics request that gets no answer within 15 s is sent again from a
    /// new client, up to three times in all (an existing topic is success, so
    /// resending is safe): tansu on SQLite storage once left one unanswered for
    /// 60 s in CI (docs/brokers.md). When the last try fails on tansu, the error
    /// carries the end of the broker's log.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), TestkitError> {
        self.create_topic_with(topic, partitions, &[]).await
    }

    /// Like [`create_topic`](Self::create_topic) with topic configs such as
    /// `("cleanup.policy", "compact")` (the mock cluster ignores them).
    pub async fn create_topic_with(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<(), TestkitError> {
        if let Backend::Mock(h) = &self.backend {
            return h.faults.create_topic(topic, partitions);
        }
        const TRIES: u32 = 3;
        let rf = self.node_count().min(3) as i32;
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(rf));
        for (k, v) in configs {
            new = new.set(k, v);
        }
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(15)));
        for attempt in 1..=TRIES {
            let admin: AdminClient<DefaultClientContext> = self
                .client_config()
                .create()
                .map_err(TestkitError::kafka("creating an admin client"))?;
            let results = match admin.create_topics([&new], &opts).await {
                Ok(results) => results,
                Err(e) if attempt < TRIES && is_timeout(&e) => {
                    eprintln!(
                        "weir-testkit: CreateTopics {topic} got no answer from {} in 15 s \
                         (try {attempt} of {TRIES}); sending it again",
                        self.bootstrap_servers()
                    );
                    continue;
                }
                Err(e) => {
                    return Err(TestkitError::Kafka {
                        context: format!("creating topic {topic}{}", self.broker_log_tail()),
                        source: e,
                    });
                }
            };
            for r in results {
                match r {
                    // A broker-side timeout may still create it: the metadata
                    // wait below decides.
                    Ok(_)
                    | Err((
                        _,
                        RDKafkaErrorCode::TopicAlreadyExists
                        | RDKafkaErrorCode::RequestTimedOut
                        | RDKafkaErrorCode::OperationTimedOut,
                    )) => {}
                    Err((t, code)) => {
                        return Err(TestkitError::Other(format!("creating topic {t}: {code}")));
                    }
                }
            }
            break;
        }
        self.wait_for_topic(topic, partitions).await
    }

    /// The last lines of the tansu broker's log, as a suffix for an error
    /// message (empty on other backends).
    fn broker_log_tail(&self) -> String {
        if let Backend::Kafka { dir, .. } = &self.backend {
            return format!("; Kafka logs are under {}", dir.display());
        }
        let Backend::Tansu(b) = &self.backend else {
            return String::new();
        };
        // Not waiting for the lock: a caller may hold it (stall/kill tests).
        let Ok(broker) = b.try_lock() else {
            return String::new();
        };
        let path = broker.log_path();
        drop(broker);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("; last lines of the tansu log {}:\n{tail}", path.display())
    }

    async fn wait_for_topic(&self, topic: &str, partitions: i32) -> Result<(), TestkitError> {
        let config = self.client_config();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config
                .create()
                .map_err(TestkitError::kafka("creating a client"))?;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                if let Ok(md) = consumer.fetch_metadata(Some(&topic), Duration::from_secs(2))
                    && let Some(t) = md.topics().first()
                    && t.error().is_none()
                    && t.partitions().len() as i32 >= partitions
                {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(TestkitError::Timeout {
                what: format!("topic {topic} to appear in metadata"),
                secs: 15,
            })
        })
        .await
        .map_err(|e| TestkitError::Other(e.to_string()))?
    }

    /// A producer for this cluster (`acks=all`, idempotent).
    pub fn producer(&self) -> Result<FutureProducer, TestkitError> {
        self.client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(TestkitError::kafka("creating a producer"))
    }

    /// Produces `records` and waits for every acknowledgement; returns (partition, offset) of each.
    pub async fn produce(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = TestRecord>,
    ) -> Result<Vec<(i32, i64)>, TestkitError> {
        let producer = self.producer()?;
        produce_with(&producer, topic, records).await
    }

    /// Low and high watermark of one partition.
    pub async fn watermarks(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(i64, i64), TestkitError> {
        let config = self.client_config();
        let topic = topic.to_string();
        blocking(move || {
            let c: BaseConsumer = config
                .create()
                .map_err(TestkitError::kafka("creating a client"))?;
            c.fetch_watermarks(&topic, partition, Duration::from_secs(10))
                .map_err(TestkitError::kafka(format!(
                    "watermarks of {topic}/{partition}"
                )))
        })
        .await
    }

    /// Partition count of a topic.
    pub async fn partition_count(&self, topic: &str) -> Result<i32, TestkitError> {
        let config = self.client_config();
        let topic = topic.to_string();
        blocking(move || {
            let c: BaseConsumer = config
                .create()
                .map_err(TestkitError::kafka("creating a client"))?;
            let md = c
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map_err(TestkitError::kafka(format!("metadata of {topic}")))?;
            Ok(md
                .topics()
                .first()
                .map(|t| t.partitions().len() as i32)
                .unwrap_or(0))
        })
        .await
    }

    /// Committed offsets of `group` on every partition of `topic` (`None`: nothing committed).
    pub async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<BTreeMap<i32, Option<i64>>, TestkitError> {
        let partitions = self.partition_count(topic).await?;
        let mut config = self.client_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        let topic = topic.to_string();
        blocking(move || {
            let c: BaseConsumer = config
                .create()
                .map_err(TestkitError::kafka("creating a client"))?;
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition(&topic, p);
            }
            // A group coordinator still loading (Kafka right after start-up,
            // or after a failover) answers NOT_COORDINATOR or
            // COORDINATOR_LOAD_IN_PROGRESS for a while: ask again.
            let start = Instant::now();
            let got = loop {
                match c.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                    Ok(got) => break got,
                    Err(e)
                        if is_coordinator_loading(&e)
                            && start.elapsed() < Duration::from_secs(30) =>
                    {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => {
                        return Err(TestkitError::Kafka {
                            context: format!("committed offsets of {topic}"),
                            source: e,
                        });
                    }
                }
            };
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
        })
        .await
    }

    /// Reads every partition of `topic` from its low watermark until each has reached
    /// its high watermark and nothing more arrives for 300 ms. With librdkafka's
    /// default `isolation.level` (`read_committed`): records of aborted or open
    /// transactions are not returned.
    ///
    /// The idle wait covers brokers whose high watermark lags the last message
    /// (tansu's memory engine: see `docs/brokers.md`).
    pub async fn read_to_end(&self, topic: &str) -> Result<Vec<ReadMessage>, TestkitError> {
        let partitions = self.partition_count(topic).await?;
        let config = self.client_config();
        let topic = topic.to_string();
        blocking(move || {
            let mut config = config;
            config
                .set("group.id", "weir-testkit-reader")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false");
            let c: BaseConsumer = config
                .create()
                .map_err(TestkitError::kafka("creating a reader"))?;
            let mut tpl = TopicPartitionList::new();
            let mut highs = BTreeMap::new();
            for p in 0..partitions {
                let (low, high) = c
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .map_err(TestkitError::kafka(format!("watermarks of {topic}/{p}")))?;
                tpl.add_partition_offset(&topic, p, Offset::Offset(low))
                    .map_err(TestkitError::kafka("building an assignment"))?;
                highs.insert(p, (low, high));
            }
            c.assign(&tpl).map_err(TestkitError::kafka("assigning"))?;
            let mut out = Vec::new();
            let mut next: BTreeMap<i32, i64> =
                highs.iter().map(|(p, (low, _))| (*p, *low)).collect();
            let start = Instant::now();
            let mut last_msg = Instant::now();
            let mut last_position = Instant::now();
            loop {
                // A log ending on a transaction marker (or on records of an
                // aborted transaction) has no message at `high - 1`: the
                // consumer's position, which moves past them, tells.
                if last_position.elapsed() > Duration::from_millis(200) {
                    last_position = Instant::now();
                    if let Ok(pos) = c.position() {
                        for e in pos.elements_for_topic(&topic) {
                            if let Offset::Offset(o) = e.offset()
                                && next.get(&e.partition()).is_some_and(|n| o > *n)
                            {
                                next.insert(e.partition(), o);
                            }
                        }
                    }
                }
                let reached = highs.iter().all(|(p, (_, high))| next[p] >= *high);
                if reached && last_msg.elapsed() > Duration::from_millis(300) {
                    break;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    return Err(TestkitError::Timeout {
                        what: format!("reading {topic} to its end"),
                        secs: 60,
                    });
                }
                match c.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => {
                        last_msg = Instant::now();
                        next.insert(m.partition(), m.offset() + 1);
                        out.push(ReadMessage {
                            partition: m.partition(),
                            offset: m.offset(),
                            key: m.key().map(|k| k.to_vec()),
                            payload: m.payload().map(|p| p.to_vec()),
                            headers: m
                                .headers()
                                .map(|hs| {
                                    hs.iter()
                                        .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                                        .collect()
                                })
                                .unwrap_or_default(),
                        });
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "reader poll error"),
                    None => {}
                }
            }
            out.sort_by_key(|m| (m.partition, m.offset));
            Ok(out)
        })
        .await
    }
}

/// Produces `records` on a producer of your own (for custom batching) and waits for every acknowledgement.
pub async fn produce_with(
    producer: &FutureProducer,
    topic: &str,
    records: impl IntoIterator<Item = TestRecord>,
) -> Result<Vec<(i32, i64)>, TestkitError> {
    let records: Vec<TestRecord> = records.into_iter().collect();
    let mut futures = Vec::with_capacity(records.len());
    for r in &records {
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(p) = &r.payload {
            rec = rec.payload(p.as_slice());
        }
        if let Some(p) = r.partition {
            rec = rec.partition(p);
        }
        if !r.headers.is_empty() {
            let mut hs = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                hs = hs.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            rec = rec.headers(hs);
        }
        futures.push(producer.send(rec, Duration::from_secs(30)));
    }
    let mut out = Vec::with_capacity(futures.len());
    for f in futures::future::join_all(futures).await {
        let d = f.map_err(|(e, _)| TestkitError::Kafka {
            context: format!("producing to {topic}"),
            source: e,
        })?;
        out.push((d.partition, d.offset));
    }
    Ok(out)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TestkitError> + Send + 'static,
) -> Result<T, TestkitError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TestkitError::Other(format!("blocking task failed: {e}")))?
}

/// The group coordinator is not ready yet (it moves, or its log loads).
fn is_coordinator_loading(e: &rdkafka::error::KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::WaitingForCoordinator
        )
    )
}

/// A client-side or broker-side timeout of an admin request (rust-rdkafka
/// reports admin errors as `AdminOp`, which has no `rdkafka_error_code`).
fn is_timeout(e: &rdkafka::error::KafkaError) -> bool {
    let code = match e {
        rdkafka::error::KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    matches!(
        code,
        Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut)
    )
}
