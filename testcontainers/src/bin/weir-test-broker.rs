//! Starts a test broker and prints its bootstrap address until stopped
//! (Ctrl-C or SIGTERM): Apache Kafka (one node or three), librdkafka's mock
//! cluster, or tansu. Try Weir against a real Kafka on a laptop without Docker:
//!
//! ```sh
//! cargo run -p weir-testkit --bin weir-test-broker -- kafka --nodes 3
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:… cargo run --release -p weir-examples --bin clicks
//! ```

use std::time::Instant;

use weir_testkit::{ApicurioRegistry, BrokerKind, KafkaCluster, TansuStorage, TestkitError, dist};

const USAGE: &str = "usage: weir-test-broker kafka|mock|tansu [--nodes N] [--registry]
       weir-test-broker resolve

  resolve    resolve Apache Kafka's jars and Apicurio Registry into the cache
             (~/.cache/weir, or $WEIR_CACHE_DIR) with Maven, check Java, and exit

  kafka      Apache Kafka 4.1 in KRaft mode (jars resolved once with Maven)
  mock       librdkafka's in-process mock cluster (lives as long as this process)
  tansu      a tansu broker on SQLite storage (needs the tansu binary)
  --nodes N  brokers (kafka: 1 or 3 combined broker+controller nodes; mock: any)
  --registry also start Apicurio Registry and print its Confluent-compatible URL";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("weir-test-broker: {e}");
        std::process::exit(1);
    }
}

fn resolve() -> Result<(), TestkitError> {
    let start = Instant::now();
    let java17 = dist::java(17)?;
    let libs = dist::kafka_libs()?;
    println!(
        "Apache Kafka {}: {} (java: {})",
        dist::KAFKA_VERSION,
        libs.display(),
        java17.display()
    );
    let java21 = dist::java(21)?;
    let app = dist::apicurio_app()?;
    println!(
        "Apicurio Registry {}: {} (java: {})",
        dist::APICURIO_VERSION,
        app.display(),
        java21.display()
    );
    eprintln!("resolved in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

async fn run() -> Result<(), TestkitError> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("resolve") {
        return resolve();
    }
    let mut kind = None;
    let mut nodes = 1usize;
    let mut registry = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nodes" => {
                nodes = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        TestkitError::Other(format!("--nodes needs a positive number\n{USAGE}"))
                    })?;
            }
            "--registry" => registry = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other if kind.is_none() => kind = Some(BrokerKind::parse(Some(other))?),
            other => {
                return Err(TestkitError::Other(format!(
                    "unexpected argument {other:?}\n{USAGE}"
                )));
            }
        }
    }
    let kind = kind.ok_or_else(|| TestkitError::Other(USAGE.to_string()))?;
    let start = Instant::now();
    let cluster = match kind {
        BrokerKind::Kafka => KafkaCluster::kafka(nodes).await?,
        BrokerKind::Mock => KafkaCluster::mock(nodes as i32)?,
        BrokerKind::Tansu => KafkaCluster::tansu(TansuStorage::Sqlite).await?,
        other => {
            return Err(TestkitError::Other(format!(
                "{} is not started by this command\n{USAGE}",
                other.name()
            )));
        }
    };
    eprintln!(
        "{} ready in {:.1}s ({} node(s)); stop with Ctrl-C",
        kind.name(),
        start.elapsed().as_secs_f64(),
        cluster.node_count()
    );
    let reg = if registry {
        Some(ApicurioRegistry::start().await?)
    } else {
        None
    };
    println!("KAFKA_BOOTSTRAP_SERVERS={}", cluster.bootstrap_servers());
    if let Some(r) = &reg {
        println!("SCHEMA_REGISTRY_URL={}", r.url());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| TestkitError::Other(format!("installing a SIGTERM handler: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping");
    drop(reg);
    drop(cluster);
    Ok(())
}
