//! The smallest useful Weir consumer (quoted by the README).
//!
//! `cargo run -p weir-examples --bin minimal` runs it on librdkafka's in-process
//! mock cluster; set `KAFKA_BOOTSTRAP_SERVERS` (and create the `orders` topic)
//! to run it against a real cluster.
use weir::{Consumer, ConsumerConfig, JsonCodec, Message, ProcessError, Processor};

#[derive(serde::Deserialize)]
struct Order {
    id: u64,
    amount_cents: i64,
}

struct Billing;

impl Processor<Order> for Billing {
    async fn process(&self, msg: Message<Order>) -> Result<(), ProcessError> {
        let order = msg.value();
        if order.amount_cents < 0 {
            return Err(
                ProcessError::terminal(std::io::Error::other("negative amount"))
                    .with_class("invalid_order"),
            );
        }
        // Your idempotent effect here, keyed by the order id.
        tracing::info!(order = order.id, at = %msg.coordinates(), "billed");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("info,librdkafka=warn")
        .init();
    let (brokers, _cluster) = weir_examples::brokers_with_demo_orders("orders").await?;
    let config = ConsumerConfig::new(brokers, "billing", &["orders"]);
    let consumer = Consumer::builder(config)
        .codec(JsonCodec::<Order>::new())
        .build(Billing)?;
    let handle = consumer.handle();
    tokio::spawn(weir_examples::stop_when_idle(handle));
    let report = consumer.run_until_signal().await?;
    std::process::exit(report.exit_code());
}
