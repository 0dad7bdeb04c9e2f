//! Apache Kafka in KRaft mode from Maven Central jars: one combined
//! broker+controller node, or three combined voters (replication factor 3,
//! `min.insync.replicas=2`) for failure tests.
//!
//! Each node is a `java -cp 'libs/*' kafka.Kafka` process in a process group
//! of its own, on free loopback ports, with its data and log in a temporary
//! folder. A node can be SIGKILLed, stopped with SIGTERM (controlled
//! shutdown), stalled with SIGSTOP and resumed, and restarted on the same data
//! directory. No JVM outlives its fixture: the group is killed on drop
//! (panics included), and a small watchdog process per node kills it when the
//! test process itself dies without dropping (abort, SIGKILL).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::TestkitError;
use crate::dist;
use crate::ports;
use crate::process::Supervised;

/// How to build a [`KafkaNodes`] cluster.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Number of nodes, each a broker and a KRaft voter (1 or 3 in Weir's tests).
    pub nodes: usize,
    /// Extra `server.properties` lines, applied to every node after Weir's own.
    pub properties: Vec<(String, String)>,
    /// SCRAM-SHA-512 users created at format time; when not empty, clients
    /// connect to a `SASL_PLAINTEXT` listener (the nodes talk to each other
    /// over a plaintext one).
    pub scram_users: Vec<(String, String)>,
    /// A PEM file with the private key (PKCS#8) and certificate chain that the
    /// client listener serves TLS with (`SSL`, or `SASL_SSL` with SCRAM users).
    pub tls_keystore_pem: Option<PathBuf>,
    /// The port advertised to clients for node 1 instead of its own (for a
    /// proxy in front of it, such as a TLS terminator; single node only).
    pub advertised_port: Option<u16>,
    /// The cluster id to format with (default: a random one).
    pub cluster_id: Option<String>,
    /// JVM options (default: `$WEIR_KAFKA_JVM_OPTS`, else a small heap and the
    /// serial collector, tuned for 2 cores).
    pub jvm_opts: Option<Vec<String>>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            nodes: 1,
            properties: Vec::new(),
            scram_users: Vec::new(),
            tls_keystore_pem: None,
            advertised_port: None,
            cluster_id: None,
            jvm_opts: None,
        }
    }
}

impl KafkaOptions {
    /// `nodes` nodes with Weir's defaults.
    pub fn nodes(nodes: usize) -> Self {
        KafkaOptions {
            nodes,
            ..Default::default()
        }
    }

    /// Adds a `server.properties` line.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }
}

#[derive(Debug)]
struct Node {
    id: u32,
    client_port: u16,
    internal_port: u16,
    controller_port: u16,
    dir: PathBuf,
    process: Option<Supervised>,
    stalled: bool,
}

impl Node {
    fn log_path(&self) -> PathBuf {
        self.dir.join("kafka.log")
    }
}

/// A running Apache Kafka cluster of one or more KRaft nodes.
#[derive(Debug)]
pub struct KafkaNodes {
    java: PathBuf,
    libs: PathBuf,
    jvm_opts: Vec<String>,
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    sasl: bool,
    tls: bool,
}

/// A random Kafka cluster id: 16 bytes, URL-safe base64 without padding (it
/// may start with `-`: pass it as `--cluster-id=ID`).
pub fn cluster_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

const LOG4J2: &str = "status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
";

fn default_jvm_opts() -> Vec<String> {
    if let Ok(opts) = std::env::var("WEIR_KAFKA_JVM_OPTS") {
        return opts.split_whitespace().map(String::from).collect();
    }
    [
        "-Xms128m",
        "-Xmx512m",
        "-XX:+UseSerialGC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

impl KafkaNodes {
    /// Resolves Kafka's jars (once), formats each node's storage and starts
    /// them; returns when every node is a broker in the cluster's metadata. A
    /// port taken between choosing it and binding it (tests start clusters in
    /// parallel) is retried on new ports, up to three times.
    pub async fn start(options: KafkaOptions) -> Result<Self, TestkitError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::start_once(options.clone()).await {
                Err(e)
                    // Another process may bind a port between the allocator's
                    // check and Kafka's bind; the allocator never hands out
                    // one port twice, so only that race is retried.
                    if tries < 3 && e.to_string().contains("Address already in use") =>
                {
                    eprintln!("weir-testkit: a Kafka port was taken; starting on new ports");
                }
                other => return other,
            }
        }
    }

    async fn start_once(options: KafkaOptions) -> Result<Self, TestkitError> {
        let opts = options;
        if opts.nodes == 0 {
            return Err(TestkitError::Other(
                "a Kafka cluster needs at least one node".into(),
            ));
        }
        if opts.advertised_port.is_some() && opts.nodes != 1 {
            return Err(TestkitError::Other(
                "an advertised proxy port needs a single-node cluster".into(),
            ));
        }
        let (java, libs) = tokio::task::spawn_blocking(|| {
            Ok::<_, TestkitError>((dist::java(17)?, dist::kafka_libs()?))
        })
        .await
        .map_err(|e| TestkitError::Other(e.to_string()))??;
        let dir = tempfile::Builder::new()
            .prefix("weir-kafka-")
            .tempdir()
            .map_err(TestkitError::io("creating the Kafka working directory"))?;
        let mut nodes = Vec::with_capacity(opts.nodes);
        for i in 0..opts.nodes {
            let id = i as u32 + 1;
            let node_dir = dir.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&node_dir)
                .map_err(TestkitError::io("creating a node directory"))?;
            let [client_port, internal_port, controller_port] = ports::free_ports(3)?[..] else {
                unreachable!("free_ports(3) returns three ports")
            };
            nodes.push(Node {
                id,
                client_port,
                internal_port,
                controller_port,
                dir: node_dir,
                process: None,
                stalled: false,
            });
        }
        std::fs::write(dir.path().join("log4j2.properties"), LOG4J2)
            .map_err(TestkitError::io("writing log4j2.properties"))?;
        let mut cluster = KafkaNodes {
            java,
            libs,
            jvm_opts: opts.jvm_opts.clone().unwrap_or_else(default_jvm_opts),
            dir,
            nodes,
            sasl: !opts.scram_users.is_empty(),
            tls: opts.tls_keystore_pem.is_some(),
        };
        let voters = cluster
            .nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..cluster.nodes.len() {
            let text = cluster.properties(i, &voters, &opts);
            std::fs::write(cluster.nodes[i].dir.join("server.properties"), text)
                .map_err(TestkitError::io("writing server.properties"))?;
        }
        let id = opts.cluster_id.clone().unwrap_or_else(cluster_id);
        let formats = (0..cluster.nodes.len())
            .map(|i| cluster.format(i, &id, &opts.scram_users))
            .collect::<Vec<_>>();
        for f in futures::future::join_all(formats).await {
            f?;
        }
        let started = Instant::now();
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(Duration::from_secs(90)).await?;
        tracing::info!(
            nodes = cluster.nodes.len(),
            bootstrap = %cluster.bootstrap_servers(),
            secs = started.elapsed().as_secs_f64(),
            "Apache Kafka ready"
        );
        Ok(cluster)
    }

    fn properties(&self, i: usize, voters: &str, opts: &KafkaOptions) -> String {
        let n = &self.nodes[i];
        let count = self.nodes.len();
        let rf = count.min(3);
        let min_isr = if rf >= 3 { 2 } else { 1 };
        let client_proto = self.security_protocol();
        let advertised = opts.advertised_port.unwrap_or(n.client_port);
        let mut p = vec![
            ("process.roles".to_string(), "broker,controller".to_string()),
            ("node.id".into(), n.id.to_string()),
            ("controller.quorum.voters".into(), voters.to_string()),
            (
                "listeners".into(),
                format!(
                    "CLIENT://127.0.0.1:{},INTERNAL://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                    n.client_port, n.internal_port, n.controller_port
                ),
            ),
            (
                "advertised.listeners".into(),
                format!(
                    "CLIENT://127.0.0.1:{advertised},INTERNAL://127.0.0.1:{}",
                    n.internal_port
                ),
            ),
            ("controller.listener.names".into(), "CONTROLLER".into()),
            ("inter.broker.listener.name".into(), "INTERNAL".into()),
            (
                "listener.security.protocol.map".into(),
                format!("CLIENT:{client_proto},INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"),
            ),
            ("log.dirs".into(), n.dir.join("data").display().to_string()),
            // Two cores: few threads, small buffers and internal topics.
            ("num.network.threads".into(), "2".into()),
            ("num.io.threads".into(), "2".into()),
            ("background.threads".into(), "2".into()),
            ("num.replica.fetchers".into(), "1".into()),
            ("num.recovery.threads.per.data.dir".into(), "1".into()),
            ("log.cleaner.threads".into(), "1".into()),
            ("log.cleaner.dedupe.buffer.size".into(), "4194304".into()),
            ("group.initial.rebalance.delay.ms".into(), "0".into()),
            ("group.min.session.timeout.ms".into(), "1000".into()),
            // The consumer protocol (KIP-848) keeps its timeouts on the
            // broker: 45 s sessions and 5 s heartbeats by default, which
            // would make every membership change in a test take seconds.
            (
                "group.consumer.min.session.timeout.ms".into(),
                "1000".into(),
            ),
            ("group.consumer.session.timeout.ms".into(), "6000".into()),
            (
                "group.consumer.min.heartbeat.interval.ms".into(),
                "100".into(),
            ),
            ("group.consumer.heartbeat.interval.ms".into(), "500".into()),
            ("offsets.topic.num.partitions".into(), "4".into()),
            ("offsets.topic.replication.factor".into(), rf.to_string()),
            ("transaction.state.log.num.partitions".into(), "2".into()),
            (
                "transaction.state.log.replication.factor".into(),
                rf.to_string(),
            ),
            ("transaction.state.log.min.isr".into(), min_isr.to_string()),
            (
                "share.coordinator.state.topic.num.partitions".into(),
                "1".into(),
            ),
            (
                "share.coordinator.state.topic.replication.factor".into(),
                rf.to_string(),
            ),
            (
                "share.coordinator.state.topic.min.isr".into(),
                min_isr.to_string(),
            ),
            ("default.replication.factor".into(), rf.to_string()),
            ("min.insync.replicas".into(), min_isr.to_string()),
            ("auto.create.topics.enable".into(), "true".into()),
            ("delete.topic.enable".into(), "true".into()),
            // A restarted node rejoins quickly.
            ("controlled.shutdown.enable".into(), "true".into()),
            ("unclean.leader.election.enable".into(), "false".into()),
        ];
        if let Some(pem) = &opts.tls_keystore_pem {
            p.push((
                "listener.name.client.ssl.keystore.type".into(),
                "PEM".into(),
            ));
            p.push((
                "listener.name.client.ssl.keystore.location".into(),
                pem.display().to_string(),
            ));
        }
        if self.sasl {
            p.push(("sasl.enabled.mechanisms".into(), "SCRAM-SHA-512".into()));
            p.push((
                "listener.name.client.scram-sha-512.sasl.jaas.config".into(),
                "org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
            ));
        }
        for (k, v) in &opts.properties {
            p.retain(|(key, _)| key != k);
            p.push((k.clone(), v.clone()));
        }
        p.into_iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }

    fn java_command(&self, i: usize) -> Command {
        let mut cmd = Command::new(&self.java);
        cmd.args(&self.jvm_opts)
            .arg(format!(
                "-Dlog4j2.configurationFile=file:{}",
                self.dir.path().join("log4j2.properties").display()
            ))
            .arg(format!("-Dkafka.logs.dir={}", self.nodes[i].dir.display()))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            .current_dir(&self.nodes[i].dir)
            .env_remove("KAFKA_HEAP_OPTS")
            .env_remove("KAFKA_OPTS")
            .env_remove("JAVA_TOOL_OPTIONS")
            .stdin(Stdio::null());
        cmd
    }

    async fn format(
        &self,
        i: usize,
        cluster_id: &str,
        scram_users: &[(String, String)],
    ) -> Result<(), TestkitError> {
        let mut cmd = self.java_command(i);
        cmd.arg("kafka.tools.StorageTool")
            .arg("format")
            // One argument: an id starting with `-` (URL-safe base64 can)
            // would otherwise be read as an option.
            .arg(format!("--cluster-id={cluster_id}"))
            .arg("-c")
            .arg(self.nodes[i].dir.join("server.properties"));
        for (user, password) in scram_users {
            cmd.arg("--add-scram")
                .arg(format!("SCRAM-SHA-512=[name={user},password={password}]"));
        }
        let out = tokio::process::Command::from(cmd)
            .output()
            .await
            .map_err(TestkitError::io(format!("running {}", self.java.display())))?;
        if !out.status.success() {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            for (_, password) in scram_users {
                text = text.replace(password.as_str(), "***");
            }
            return Err(TestkitError::Other(format!(
                "kafka.tools.StorageTool format failed for node {}: {}",
                self.nodes[i].id,
                tail(&text, 20)
            )));
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) -> Result<(), TestkitError> {
        let log_path = self.nodes[i].log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(TestkitError::io("opening the Kafka log"))?;
        let mut cmd = self.java_command(i);
        cmd.arg("kafka.Kafka")
            .arg(self.nodes[i].dir.join("server.properties"))
            .stdout(log.try_clone().map_err(TestkitError::io("Kafka log"))?)
            .stderr(log);
        let what = format!("Kafka node {}", self.nodes[i].id);
        let node = &mut self.nodes[i];
        node.process = Some(Supervised::spawn(cmd, &what)?);
        node.stalled = false;
        Ok(())
    }

    /// `127.0.0.1:PORT,…` of every node's client listener.
    pub fn bootstrap_servers(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client listener's security protocol: `PLAINTEXT`, `SSL`,
    /// `SASL_PLAINTEXT` or `SASL_SSL`.
    pub fn security_protocol(&self) -> &'static str {
        match (self.sasl, self.tls) {
            (false, false) => "PLAINTEXT",
            (false, true) => "SSL",
            (true, false) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }

    /// `127.0.0.1:PORT,…` of the nodes' internal plaintext listener, for
    /// setting up a cluster whose client listener needs credentials.
    pub fn internal_bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.internal_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node ids (1-based), in order.
    pub fn node_ids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The client port of one node.
    pub fn port(&self, node: u32) -> Result<u16, TestkitError> {
        Ok(self.node(node)?.client_port)
    }

    /// Operating-system process id of a node's JVM, while it runs.
    pub fn pid(&self, node: u32) -> Option<u32> {
        self.node(node)
            .ok()
            .and_then(|n| n.process.as_ref().map(Supervised::pid))
    }

    /// The node's log file (stdout and stderr of its JVM).
    pub fn log_path(&self, node: u32) -> Result<PathBuf, TestkitError> {
        Ok(self.node(node)?.log_path())
    }

    /// The working directory of the whole cluster.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of every node's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(n.log_path()).unwrap_or_default();
                format!(
                    "--- node {} ({}):\n{}",
                    n.id,
                    n.log_path().display(),
                    tail(&text, lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn node(&self, id: u32) -> Result<&Node, TestkitError> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| TestkitError::Other(format!("no Kafka node {id}")))
    }

    fn index(&self, id: u32) -> Result<usize, TestkitError> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| TestkitError::Other(format!("no Kafka node {id}")))
    }

    fn signal(&self, id: u32, sig: Signal) -> Result<(), TestkitError> {
        match &self.node(id)?.process {
            Some(p) => p.signal(sig),
            None => Ok(()),
        }
    }

    fn reap(&mut self, id: u32, limit: Duration) -> Result<(), TestkitError> {
        let i = self.index(id)?;
        self.nodes[i].stalled = false;
        match self.nodes[i].process.take() {
            Some(p) => p.reap(limit),
            None => Ok(()),
        }
    }

    /// Kills a node at once (SIGKILL to its process group): a crash.
    pub fn kill(&mut self, node: u32) -> Result<(), TestkitError> {
        self.signal(node, Signal::SIGKILL)?;
        self.reap(node, Duration::from_secs(10))
    }

    /// Stops a node gracefully: SIGTERM, which makes Kafka move leadership away
    /// (controlled shutdown); SIGKILL after 60 s.
    pub fn stop(&mut self, node: u32) -> Result<(), TestkitError> {
        if self.node(node)?.stalled {
            self.unstall(node)?;
        }
        self.signal(node, Signal::SIGTERM)?;
        self.reap(node, Duration::from_secs(60))
    }

    /// Stalls a node (SIGSTOP): it keeps its sockets and answers nothing.
    pub fn stall(&mut self, node: u32) -> Result<(), TestkitError> {
        self.signal(node, Signal::SIGSTOP)?;
        let i = self.index(node)?;
        self.nodes[i].stalled = true;
        Ok(())
    }

    /// Resumes a stalled node (SIGCONT).
    pub fn unstall(&mut self, node: u32) -> Result<(), TestkitError> {
        self.signal(node, Signal::SIGCONT)?;
        let i = self.index(node)?;
        self.nodes[i].stalled = false;
        Ok(())
    }

    /// Whether a node's process is running (not killed or stopped; a stalled
    /// node counts as running).
    pub fn is_running(&self, node: u32) -> bool {
        self.node(node)
            .map(|n| n.process.is_some())
            .unwrap_or(false)
    }

    /// Starts a node again on the same ports and data directory (a running node
    /// is killed first) and waits until it is a broker in the metadata again.
    pub async fn restart(&mut self, node: u32) -> Result<(), TestkitError> {
        if self.is_running(node) {
            self.kill(node)?;
        }
        let i = self.index(node)?;
        self.spawn(i)?;
        self.wait_ready(Duration::from_secs(90)).await
    }

    /// Starts every node that is not running (after [`kill`](Self::kill) or
    /// [`stop`](Self::stop)) and waits until all are brokers again. A KRaft
    /// quorum needs a majority of voters, so the nodes start together.
    pub async fn restart_all(&mut self) -> Result<(), TestkitError> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].process.is_none() {
                self.spawn(i)?;
            }
        }
        self.wait_ready(Duration::from_secs(90)).await
    }

    /// The leader of one partition, by node id (`None` while it has none).
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<Option<u32>, TestkitError> {
        let config = self.client_config();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = config
                .create()
                .map_err(TestkitError::kafka("creating a client"))?;
            let md = c
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map_err(TestkitError::kafka(format!("metadata of {topic}")))?;
            Ok(md
                .topics()
                .first()
                .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
                .and_then(|p| u32::try_from(p.leader()).ok()))
        })
        .await
        .map_err(|e| TestkitError::Other(e.to_string()))?
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        let running: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.process.is_some() && !n.stalled)
            .map(|n| format!("127.0.0.1:{}", n.internal_port))
            .collect();
        // The internal (plaintext) listener: works with and without SASL on
        // the client one.
        c.set("bootstrap.servers", running.join(","))
            .set("log_level", "0");
        c
    }

    /// Waits until every running node is a broker in the metadata and has
    /// its client listener open.
    async fn wait_ready(&mut self, limit: Duration) -> Result<(), TestkitError> {
        let expected: BTreeSet<i32> = self
            .nodes
            .iter()
            .filter(|n| n.process.is_some())
            .map(|n| n.id as i32)
            .collect();
        let config = self.client_config();
        let start = Instant::now();
        let ok = tokio::task::spawn_blocking(move || {
            let Ok(c) = config.create::<BaseConsumer>() else {
                return false;
            };
            while start.elapsed() < limit {
                if let Ok(md) = c.fetch_metadata(None, Duration::from_secs(2)) {
                    let brokers: BTreeSet<i32> = md.brokers().iter().map(|b| b.id()).collect();
                    if expected.is_subset(&brokers) {
                        return true;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })
        .await
        .unwrap_or(false);
        // A node that exited during start-up: say so with its log.
        for n in &mut self.nodes {
            if let Some(p) = &mut n.process
                && let Some(status) = p.exited()
            {
                let text = std::fs::read_to_string(n.log_path()).unwrap_or_default();
                return Err(TestkitError::Other(format!(
                    "Kafka node {} exited during start-up ({status}); last lines of {}:\n{}",
                    n.id,
                    n.log_path().display(),
                    tail(&text, 30)
                )));
            }
        }
        if !ok {
            return Err(TestkitError::Other(format!(
                "Apache Kafka on {} did not list every node within {}s; logs:\n{}",
                self.bootstrap_servers(),
                limit.as_secs(),
                self.log_tail(20)
            )));
        }
        for n in self.nodes.iter().filter(|n| n.process.is_some()) {
            while tokio::net::TcpStream::connect(("127.0.0.1", n.client_port))
                .await
                .is_err()
            {
                if start.elapsed() > limit {
                    return Err(TestkitError::Timeout {
                        what: format!("node {}'s client port {}", n.id, n.client_port),
                        secs: limit.as_secs(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for KafkaNodes {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            drop(n.process.take()); // kills the node's process group
        }
        if std::thread::panicking() || std::env::var_os("WEIR_KEEP_KAFKA_DIR").is_some() {
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::TempDir::new().expect("temporary directory"),
            );
            eprintln!("Kafka working directory kept at {}", dir.keep().display());
        }
    }
}
