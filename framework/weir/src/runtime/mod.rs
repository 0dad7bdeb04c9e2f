//! The consumer runtime: [`Consumer`], its builder, and what a run reports.

mod admission;
mod builder;
mod dispatch;
mod plugin;

pub use builder::ConsumerBuilder;
pub(crate) mod poller;
#[cfg(feature = "ops")]
pub(crate) mod replay;
pub(crate) mod run;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use tokio_util::sync::CancellationToken;

use crate::codec::Codec;
use crate::config::ConsumerConfig;
use crate::error::WeirError;
use crate::failure::FailureSink;
use crate::message::{RawMessage, TopicPartition};
use crate::processor::Processor;
use crate::retry::RetryTopics;
use crate::stats::ConsumerStats;

pub(crate) use dispatch::Admission;
use dispatch::{Dispatcher, Limits, RunMessage};
pub(crate) use plugin::{AttemptPlan, Extension};
use poller::WeirContext;
pub(crate) use run::panic_message;
use run::{Outcome, Runner};

/// A partition the failure sink halted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaltedPartition {
    /// The partition.
    pub partition: TopicPartition,
    /// The offset of the message that failed; nothing at or after it was committed.
    pub offset: i64,
    /// Error class.
    pub class: String,
    /// Error text.
    pub error: String,
}

/// How a run ended.
#[derive(Debug, Clone)]
#[must_use]
pub struct RunReport {
    /// True when every in-flight message finished before the shutdown deadline.
    pub drained: bool,
    /// Messages cancelled at the deadline (processed again after restart).
    pub unfinished: usize,
    /// Partitions halted by the failure sink.
    pub halted: Vec<HaltedPartition>,
}

impl RunReport {
    /// Process exit code: 0 drained cleanly, 3 drain incomplete, 4 a partition halted.
    pub fn exit_code(&self) -> i32 {
        if !self.halted.is_empty() {
            4
        } else if !self.drained {
            3
        } else {
            0
        }
    }
}

/// A handle to a consumer that is (or will be) running: shutdown and live stats.
#[derive(Debug, Clone)]
pub struct ConsumerHandle {
    shutdown: CancellationToken,
    stats: Arc<ConsumerStats>,
}

impl ConsumerHandle {
    /// Asks the consumer to stop: stop fetching, drain, commit, leave the group.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// The shutdown token.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Live counters.
    pub fn stats(&self) -> &ConsumerStats {
        &self.stats
    }

    /// What holds each assigned partition's commit ([`crate::inspect`]), as
    /// of the last commit interval; `None` before the first one.
    pub fn inspect(&self) -> Option<crate::inspect::Snapshot> {
        self.stats.inspect.latest().map(|s| (*s).clone())
    }
}

/// A member of a consumer group running one processor.
///
/// See the [crate documentation](crate) for an example.
pub struct Consumer<C, P> {
    config: ConsumerConfig,
    codec: C,
    processor: P,
    sink: Arc<dyn FailureSink>,
    shutdown: CancellationToken,
    stats: Arc<ConsumerStats>,
    retry_topics: Option<RetryTopics>,
    spans: run::Spans,
    transactions: Option<crate::producer::TransactionalProducer>,
}

impl<C, P> std::fmt::Debug for Consumer<C, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .finish()
    }
}

impl<C, P> RunMessage for Runner<C, P>
where
    C: Codec,
    P: Processor<C::Value>,
{
    fn run_message(
        self: Arc<Self>,
        raw: Arc<RawMessage>,
        cancel: Arc<CancellationToken>,
    ) -> impl Future<Output = Outcome> + Send + 'static {
        self.run(raw, cancel)
    }
}

impl<C, P> Consumer<C, P>
where
    C: Codec,
    P: Processor<C::Value>,
{
    /// Shutdown and stats, usable while [`run`](Self::run) is running.
    pub fn handle(&self) -> ConsumerHandle {
        ConsumerHandle {
            shutdown: self.shutdown.clone(),
            stats: self.stats.clone(),
        }
    }

    /// Runs until SIGTERM or SIGINT (or the shutdown token), then drains and leaves the group.
    pub async fn run_until_signal(self) -> Result<RunReport, WeirError> {
        let token = self.shutdown.clone();
        let watcher = tokio::spawn(async move {
            let term = async {
                #[cfg(unix)]
                {
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(mut s) => {
                            s.recv().await;
                        }
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
                #[cfg(not(unix))]
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                _ = term => tracing::info!("SIGTERM: shutting down"),
                _ = token.cancelled() => {}
            }
            token.cancel();
        });
        let r = self.run().await;
        watcher.abort();
        r
    }

    /// Joins the group and processes messages until the shutdown token is cancelled
    /// or a fatal error occurs; then drains in-flight messages (up to
    /// `shutdown_deadline`), commits, and leaves the group.
    pub async fn run(self) -> Result<RunReport, WeirError> {
        let Consumer {
            config,
            codec,
            processor,
            sink,
            shutdown,
            stats,
            retry_topics,
            spans,
            transactions,
        } = self;
        let group_id: Arc<str> = Arc::from(config.group_id.as_str());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let consumer = create_consumer(&config, tx, &stats)?;
        check_topics(&consumer, &config).await?;
        // Plug-ins (retry tiers) come in here: a sink, topics, an admission
        // hook, an attempt plan, a budget and a background task.
        let ext = match &retry_topics {
            Some(rt) => Some(
                crate::retry::install(
                    &config,
                    rt,
                    stats.clone(),
                    shutdown.child_token(),
                    transactions.as_ref().map(|t| t.producer().clone()),
                )
                .await?,
            ),
            None => None,
        };
        subscribe(&consumer, &config, ext.as_ref())?;
        let stop = Arc::new(AtomicBool::new(false));
        // Dropping this future (an aborted task, a lost `select!`) stops the
        // poll thread too: it would otherwise stay in the group, heartbeating,
        // holding partitions that nothing processes.
        let _stop_on_drop = StopOnDrop(stop.clone());
        let poller = spawn_poller(consumer.clone(), &group_id, stop.clone())?;

        let mut limits = Limits::from_config(&config);
        let mut runner = Runner::new(
            codec,
            processor,
            sink,
            &config,
            stats.clone(),
            metrics::histogram!("weir_processing_seconds", "group" => group_id.to_string()),
        );
        runner.spans = spans;
        let mut background = None;
        if let Some(ext) = ext {
            runner.sink = ext.sink;
            runner.set_plan(ext.plan);
            limits.admission = ext.admission;
            limits.retry_budget = ext.retry_budget;
            background = ext.background;
        }
        let publisher =
            spawn_publisher(stats.clone(), group_id.to_string(), shutdown.child_token());
        let admission_check =
            (config.group_protocol == crate::GroupProtocol::Consumer).then(|| {
                admission::spawn_check(
                    Arc::downgrade(&consumer),
                    stats.clone(),
                    group_id.to_string(),
                    shutdown.child_token(),
                )
            });
        let mut dispatcher = Dispatcher::new(
            consumer,
            Arc::new(runner),
            limits,
            stats.clone(),
            shutdown,
            stop.clone(),
            group_id.clone(),
        );
        if let Some(t) = transactions {
            dispatcher = dispatcher.with_transactions(Arc::new(t));
        }
        let result = dispatcher.run(rx).await;
        if result.is_err() {
            stats
                .run_failed
                .store(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(t) = background {
            t.abort();
        }
        publisher.abort();
        if let Some(t) = admission_check {
            t.abort();
        }
        stats.publish_metrics(&group_id);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || poller.join()).await;
        tracing::info!(group = %group_id, "consumer stopped and left the group");
        result
    }
}

/// Sets the poll thread's stop flag when dropped.
/// The librdkafka consumer with Weir's context (rebalance callbacks, events
/// to the dispatcher, statistics).
fn create_consumer(
    config: &ConsumerConfig,
    events: tokio::sync::mpsc::UnboundedSender<poller::Event>,
    stats: &Arc<ConsumerStats>,
) -> Result<Arc<BaseConsumer<WeirContext>>, WeirError> {
    let mut ctx = WeirContext::new(
        events,
        config.revoke_deadline,
        stats.clone(),
        config.group_id.clone(),
        config.partition_queues,
    );
    ctx.batch_consume = config.batch_consume;
    if !config.partition_queues {
        // What the dispatcher may have still to take from the poll thread
        // (see `WeirContext::unclaimed`): two partitions' worth, and never
        // so little that reading cannot keep pace with a quick dispatcher.
        ctx.unclaimed_limit = (2 * config.max_buffered_per_partition as u64).max(64);
    }
    if let Ok(Some(id)) = config.instance_id() {
        let _ = ctx.instance_id.set(id);
    }
    let _ = ctx
        .group_protocol
        .set(match (config.group_protocol, config.assignment) {
            (crate::GroupProtocol::Consumer, _) => "consumer",
            (_, crate::Assignment::CooperativeSticky) => "classic-cooperative",
            _ => "classic-eager",
        });
    let consumer: BaseConsumer<WeirContext> = config
        .client_config()
        .create_with_context(ctx)
        .map_err(|source| WeirError::Kafka {
            context: "creating the consumer (check the [kafka] properties)".into(),
            source,
        })?;
    let mut consumer = Arc::new(consumer);
    WeirContext::attach(&mut consumer);
    Ok(consumer)
}

/// Subscribes to the topics of `config` and of the retry tiers.
fn subscribe(
    consumer: &BaseConsumer<WeirContext>,
    config: &ConsumerConfig,
    ext: Option<&Extension>,
) -> Result<(), WeirError> {
    let mut topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    if let Some(ext) = ext {
        topics.extend(ext.topics.iter().map(String::as_str));
        if config.auto_offset_reset != "earliest" {
            let _ = consumer
                .context()
                .from_beginning
                .set(ext.topics.iter().cloned().collect());
        }
    }
    consumer
        .subscribe(&topics)
        .map_err(|source| WeirError::Kafka {
            context: format!("subscribing to {topics:?}"),
            source,
        })?;
    tracing::info!(group = %config.group_id, ?topics, ordering = ?config.ordering, "consumer started");
    Ok(())
}

/// Starts the thread that polls librdkafka until `stop`.
fn spawn_poller(
    consumer: Arc<BaseConsumer<WeirContext>>,
    group_id: &str,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, WeirError> {
    std::thread::Builder::new()
        .name(format!("weir-poll-{group_id}"))
        .spawn(move || poller::poll_thread(consumer, stop))
        .map_err(|e| WeirError::Internal(format!("spawning the poll thread: {e}")))
}

/// Publishes the consumer's statistics as metrics every second until `stop`.
fn spawn_publisher(
    stats: Arc<ConsumerStats>,
    group: String,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => stats.publish_metrics(&group),
            }
        }
        stats.publish_metrics(&group);
    })
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// After a failed request, serves the client's pending error callbacks
/// (briefly: nothing is subscribed yet, so no message can be consumed) and
/// returns a fatal error they reported, such as an authentication failure.
fn fatal_after_failure(c: &BaseConsumer<WeirContext>) -> Option<String> {
    for _ in 0..10 {
        if let Some(f) = c.context().fatal_error() {
            return Some(f);
        }
        let _ = c.poll(Duration::from_millis(20));
    }
    c.context().fatal_error()
}

/// Fails fast, naming the topic, when a subscribed topic does not exist.
async fn check_topics(
    consumer: &Arc<BaseConsumer<WeirContext>>,
    config: &ConsumerConfig,
) -> Result<(), WeirError> {
    let c = consumer.clone();
    let topics = config.topics.clone();
    let brokers = config.brokers.clone();
    tokio::task::spawn_blocking(move || {
        for topic in topics {
            let parts = crate::kafka::topic_partitions(&c, &topic, Duration::from_secs(10))
                .map_err(|source| match fatal_after_failure(&c) {
                    // An authentication or certificate failure explains the
                    // transport error better than the transport error does.
                    Some(fatal) => WeirError::Fatal(fatal),
                    None => WeirError::Kafka {
                        context: format!(
                            "fetching metadata for `{topic}` from {brokers} (are the brokers reachable?)"
                        ),
                        source,
                    },
                })?;
            if parts.is_none() {
                return Err(WeirError::UnknownTopic {
                    topic,
                    brokers: brokers.clone(),
                });
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| WeirError::Internal(e.to_string()))?
}
