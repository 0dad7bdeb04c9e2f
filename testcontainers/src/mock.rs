//! The librdkafka mock cluster, owned by a dedicated thread.
//!
//! `rdkafka::mocking::MockCluster` holds a raw pointer and is neither `Send`
//! nor `Sync`; a thread owns it and [`MockFaults`] sends it commands, so the
//! fixture can be shared across tasks.

use std::sync::mpsc;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::TestkitError;

type Reply = mpsc::Sender<Result<(), String>>;

enum Command {
    CreateTopic(String, i32, Reply),
    BrokerDown(i32, Reply),
    BrokerUp(i32, Reply),
    RoundTripTime(i32, Duration, Reply),
    RequestErrors(RDKafkaApiKey, Vec<RDKafkaRespErr>, Reply),
    ClearRequestErrors(RDKafkaApiKey, Reply),
    GroupCoordinator(String, i32, Reply),
    PartitionLeader(String, i32, i32, Reply),
    Shutdown,
}

/// Fault injection on a running mock cluster (broker down/up, request errors, latency).
///
/// Cheap to clone; every call is carried out by the thread that owns the cluster.
#[derive(Clone)]
pub struct MockFaults {
    tx: mpsc::Sender<Command>,
    brokers: i32,
}

impl std::fmt::Debug for MockFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockFaults")
            .field("brokers", &self.brokers)
            .finish()
    }
}

pub(crate) struct MockHandle {
    pub(crate) faults: MockFaults,
    pub(crate) bootstrap: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockHandle {
    pub(crate) fn start(brokers: i32) -> Result<Self, TestkitError> {
        let (tx, rx) = mpsc::channel::<Command>();
        let (boot_tx, boot_rx) = mpsc::channel::<Result<String, String>>();
        let thread = std::thread::Builder::new()
            .name("weir-mock-cluster".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = boot_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = boot_tx.send(Ok(cluster.bootstrap_servers()));
                for cmd in rx {
                    let (res, reply) = match cmd {
                        Command::CreateTopic(t, p, r) => (cluster.create_topic(&t, p, 1), r),
                        Command::BrokerDown(b, r) => (cluster.broker_down(b), r),
                        Command::BrokerUp(b, r) => (cluster.broker_up(b), r),
                        Command::RoundTripTime(b, d, r) => {
                            (cluster.broker_round_trip_time(b, d), r)
                        }
                        Command::RequestErrors(k, errs, r) => {
                            cluster.request_errors(k, &errs);
                            (Ok(()), r)
                        }
                        Command::ClearRequestErrors(k, r) => {
                            cluster.clear_request_errors(k);
                            (Ok(()), r)
                        }
                        Command::GroupCoordinator(g, b, r) => (
                            cluster.coordinator(rdkafka::mocking::MockCoordinator::Group(g), b),
                            r,
                        ),
                        Command::PartitionLeader(t, p, b, r) => {
                            (cluster.partition_leader(&t, p, Some(b)), r)
                        }
                        Command::Shutdown => break,
                    };
                    let _ = reply.send(res.map_err(|e| e.to_string()));
                }
            })
            .map_err(TestkitError::io("spawning the mock cluster thread"))?;
        let bootstrap = boot_rx
            .recv()
            .map_err(|_| TestkitError::Other("mock cluster thread died".into()))?
            .map_err(|e| TestkitError::Other(format!("creating the mock cluster: {e}")))?;
        Ok(MockHandle {
            faults: MockFaults { tx, brokers },
            bootstrap,
            thread: Some(thread),
        })
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        let _ = self.faults.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl MockFaults {
    fn call(&self, make: impl FnOnce(Reply) -> Command) -> Result<(), TestkitError> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| TestkitError::Other("mock cluster is gone".into()))?;
        rx.recv()
            .map_err(|_| TestkitError::Other("mock cluster is gone".into()))?
            .map_err(|e| TestkitError::Other(format!("mock cluster: {e}")))
    }

    /// Number of brokers in the mock cluster (ids 1..=n).
    pub fn brokers(&self) -> i32 {
        self.brokers
    }

    pub(crate) fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), TestkitError> {
        let t = topic.to_string();
        self.call(|r| Command::CreateTopic(t, partitions, r))
    }

    /// Takes broker `id` down: its connections are closed and it refuses new ones.
    pub fn broker_down(&self, id: i32) -> Result<(), TestkitError> {
        self.call(|r| Command::BrokerDown(id, r))
    }

    /// Brings broker `id` back up.
    pub fn broker_up(&self, id: i32) -> Result<(), TestkitError> {
        self.call(|r| Command::BrokerUp(id, r))
    }

    /// Adds `delay` to every request's round-trip time on broker `id`.
    pub fn round_trip_time(&self, id: i32, delay: Duration) -> Result<(), TestkitError> {
        self.call(|r| Command::RoundTripTime(id, delay, r))
    }

    /// Makes the next requests of kind `api` fail with `errors`, one each, in order.
    pub fn request_errors(
        &self,
        api: RDKafkaApiKey,
        errors: Vec<RDKafkaRespErr>,
    ) -> Result<(), TestkitError> {
        self.call(|r| Command::RequestErrors(api, errors, r))
    }

    /// Makes broker `id` the coordinator of consumer group `group` (its
    /// joins, heartbeats and offset commits), for example so that latency
    /// added to that broker slows the group's requests and not its fetches.
    pub fn group_coordinator(&self, group: &str, id: i32) -> Result<(), TestkitError> {
        let g = group.to_string();
        self.call(|r| Command::GroupCoordinator(g, id, r))
    }

    /// Makes broker `id` the leader of `topic`'s partition `partition`.
    pub fn partition_leader(
        &self,
        topic: &str,
        partition: i32,
        id: i32,
    ) -> Result<(), TestkitError> {
        let t = topic.to_string();
        self.call(|r| Command::PartitionLeader(t, partition, id, r))
    }

    /// Clears injected request errors for `api`.
    pub fn clear_request_errors(&self, api: RDKafkaApiKey) -> Result<(), TestkitError> {
        self.call(|r| Command::ClearRequestErrors(api, r))
    }
}
