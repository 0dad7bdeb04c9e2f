//! # weir-testkit: real brokers and databases for Weir's tests, benchmarks and examples
//!
//! One fixture API picks a Kafka-protocol cluster and a database:
//!
//! | `WEIR_TEST_BROKER` | what starts |
//! |---|---|
//! | `mock` (default) | librdkafka's in-process mock cluster, with fault injection ([`MockFaults`]) |
//! | `kafka` | Apache Kafka 4.1 in KRaft mode from Maven Central jars, one node or three ([`KafkaNodes`]) |
//! | `tansu` | a [Tansu](https://tansu.io) broker process on a free loopback port ([`TansuBroker`]) |
//! | `external` | the cluster at `KAFKA_BOOTSTRAP_SERVERS` (Apache Kafka, Redpanda, a managed service) |
//! | `docker` | Apache Kafka in a Docker container (cargo feature `docker`, needs a Docker engine) |
//!
//! Databases: [`PostgresDb::fresh`] creates a uniquely named database on
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! drops it afterwards; [`SqliteDb::fresh`] is the embedded equivalent.
//!
//! ```no_run
//! # async fn demo() -> Result<(), weir_testkit::TestkitError> {
//! use weir_testkit::{KafkaCluster, TestRecord};
//! let cluster = KafkaCluster::from_env().await?;
//! cluster.create_topic("orders", 3).await?;
//! cluster
//!     .produce("orders", vec![TestRecord::keyed("k1", "hello").header("h", "v")])
//!     .await?;
//! let all = cluster.read_to_end("orders").await?;
//! assert_eq!(all.len(), 1);
//! # Ok(()) }
//! ```

mod apicurio;
mod cluster;
mod db;
pub mod dist;
#[cfg(feature = "docker")]
mod docker;
mod error;
mod kafka;
mod mock;
mod ports;
mod process;
mod proxy;
mod raw;
#[cfg(feature = "schema-registry")]
mod schema_registry;
mod tansu;
#[cfg(feature = "tls")]
mod tls;

pub use apicurio::ApicurioRegistry;
pub use cluster::{BrokerKind, KafkaCluster, ReadMessage, TestRecord, produce_with};
pub use db::{PostgresDb, SqliteDb};
pub use error::TestkitError;
pub use kafka::{KafkaNodes, KafkaOptions, cluster_id};
pub use mock::MockFaults;
pub use proxy::TcpProxy;
pub use raw::{RawRecord, produce_raw, record_batch};
#[cfg(feature = "schema-registry")]
pub use schema_registry::SchemaRegistryFixture;
pub use tansu::{TansuBroker, TansuStorage};
#[cfg(feature = "tls")]
pub use tls::TlsProxy;

/// Installs a `tracing` subscriber for tests once (honours `RUST_LOG`, default `warn`).
pub fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
