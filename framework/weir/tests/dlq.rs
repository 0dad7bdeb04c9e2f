//! `weir::dlq`: reading a dead-letter topic in constant memory (mock cluster
//! and Apache Kafka).

mod common;

use std::time::Duration;

use futures::StreamExt as _;
use weir::dlq::{DLQ_STREAM_AHEAD, DlqFilter, client_config, read_dlq, stream_dlq};
use weir_testkit::{BrokerKind, TestRecord};

use common::R;

broker_tests!(a_large_dlq_is_streamed_not_loaded);

/// Issue 21.21: `read_dlq` loaded the whole DLQ into memory before returning
/// anything. `stream_dlq` hands messages over as they are read and keeps its
/// reader at most `DLQ_STREAM_AHEAD` messages ahead of a slow consumer of the
/// stream; `read_dlq` is that stream collected.
async fn a_large_dlq_is_streamed_not_loaded(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("big.dlq", 1).await?;
    let n = 3000;
    cluster
        .produce(
            "big.dlq",
            (0..n).map(|i| TestRecord::keyed(format!("k{i}"), format!("dead-{i}"))),
        )
        .await?;
    let client = client_config(cluster.bootstrap_servers());
    let mut stream = stream_dlq(&client, "big.dlq", &DlqFilter::default(), None)?;
    let first = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await?
        .expect("a first message")?;
    assert_eq!(first.raw.offset, 0);
    // A slow consumer of the stream: the reader waits for it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let read = stream.read();
    assert!(
        read <= (DLQ_STREAM_AHEAD + 2) as u64,
        "the reader stays about {DLQ_STREAM_AHEAD} ahead, not the whole DLQ: {read} of {n} read"
    );
    let mut count = 1;
    let mut last = 0;
    while let Some(m) = stream.next().await {
        let m = m?;
        assert!(m.raw.offset > last, "in offset order");
        last = m.raw.offset;
        count += 1;
    }
    assert_eq!(count, n);
    assert_eq!(
        read_dlq(&client, "big.dlq", &DlqFilter::default(), Some(10))
            .await?
            .len(),
        10
    );
    assert_eq!(
        read_dlq(&client, "big.dlq", &DlqFilter::default(), None)
            .await?
            .len(),
        n
    );
    Ok(())
}
