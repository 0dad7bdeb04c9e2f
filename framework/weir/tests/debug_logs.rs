//! librdkafka's debug logging on, as an operator turns it on to diagnose a
//! group (`RUST_LOG=librdkafka=debug` and `debug = "cgrp,topic,fetch"`):
//! the group still rebalances incrementally, on time, losing and repeating
//! nothing (the scenario of `group_protocol.rs`).
//!
//! rust-rdkafka routes librdkafka's log events into the consumer queue,
//! where the rebalance events wait behind them, and librdkafka holds every
//! partition of the member paused until the rebalance callback has run.
//! Weir's poll thread once stopped draining that queue after four events
//! in a row that were not messages: with ~100 log lines a second, a member
//! whose partitions were paused for a rebalance never served it (the
//! leave's reassignment did not come within 60 s here; on Apache Kafka a
//! revoke waited 90 s and more).
//!
//! This binary has its own subscriber: it takes `librdkafka` at debug level
//! (so that librdkafka emits the events) and writes them to a sink.

mod common;
#[path = "common/steady.rs"]
mod steady;

use weir::GroupProtocol;
use weir_testkit::BrokerKind;

use common::R;
use steady::{Debug, join_and_leave};

fn init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,librdkafka=debug"))
        .with_writer(std::io::sink)
        .try_init();
}

async fn run(kind: BrokerKind, protocol: GroupProtocol) -> R {
    init();
    join_and_leave(kind, protocol, Debug::Verbose).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_classic_cooperative_with_debug_logs() -> R {
    run(BrokerKind::Mock, GroupProtocol::Classic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_consumer_protocol_with_debug_logs() -> R {
    run(BrokerKind::Mock, GroupProtocol::Consumer).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_classic_cooperative_with_debug_logs() -> R {
    run(BrokerKind::Kafka, GroupProtocol::Classic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_protocol_with_debug_logs() -> R {
    run(BrokerKind::Kafka, GroupProtocol::Consumer).await
}
