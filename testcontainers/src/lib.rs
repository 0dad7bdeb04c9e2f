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

/// Installs a `tracing` subscriber for tests once (honours `RUST_LOG`, default `warn`),
/// and arms [`hang_watchdog`] for the calling test.
pub fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
    hang_watchdog();
}

/// How long a test may run before [`hang_watchdog`] ends its test binary.
const DEFAULT_TEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

thread_local! {
    /// Set when the test running on this thread ends (the thread exits, or
    /// the next test on it arms its own watchdog).
    static TEST_DONE: std::cell::RefCell<Option<DoneOnDrop>> = const { std::cell::RefCell::new(None) };
    /// What the test running on this thread said it is doing, see [`stage`].
    static TEST_STAGE: std::cell::RefCell<Option<std::sync::Arc<parking_lot::Mutex<String>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Records what the calling test is doing now ("python consume", "waiting
/// for the DLQ copies"): when [`hang_watchdog`] ends a hanging test, it
/// names the last stage with the test, so a hang in CI says where it hung
/// (a test's own output is captured and lost when the binary is ended).
/// Call it on the test's own thread; without an armed watchdog it does
/// nothing.
pub fn stage(what: impl Into<String>) {
    TEST_STAGE.with(|s| {
        if let Some(s) = &*s.borrow() {
            *s.lock() = what.into();
        }
    });
}

struct DoneOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Ends the test binary, naming the test, when the calling test is still
/// running after `WEIR_TEST_TIMEOUT_S` seconds (default 600): a hang then
/// fails fast with its name, instead of holding the whole suite until CI
/// gives up on it. `cargo test --no-fail-fast` goes on with the other test
/// binaries. Call it on the test's own thread, at its start. A test run
/// on the main thread (`--test-threads 1` may do that) is not watched: the
/// end of that test could not be told from the start of the next one.
pub fn hang_watchdog() {
    let limit = std::env::var("WEIR_TEST_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_TEST_LIMIT, std::time::Duration::from_secs);
    let name = match std::thread::current().name() {
        Some(n) if n != "main" => n.to_string(),
        _ => return,
    };
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    TEST_DONE.with(|d| *d.borrow_mut() = Some(DoneOnDrop(done.clone())));
    let stage = std::sync::Arc::new(parking_lot::Mutex::new(String::from("(no stage recorded)")));
    TEST_STAGE.with(|s| *s.borrow_mut() = Some(stage.clone()));
    let started = std::time::Instant::now();
    let _ = std::thread::Builder::new()
        .name("weir-test-watchdog".into())
        .spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if started.elapsed() >= limit {
                    // Straight to stderr: `eprintln!` here would go to the
                    // test's captured output, which nobody prints after exit.
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stderr(),
                        "\nweir-testkit: test `{name}` is still running after {}s: it hangs \
                         (last stage: {}). Ending this test binary so that the suite goes on \
                         (set WEIR_TEST_TIMEOUT_S to allow longer).",
                        limit.as_secs(),
                        stage.lock()
                    );
                    std::process::exit(124);
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        });
}
