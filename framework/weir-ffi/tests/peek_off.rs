//! `WEIR_HEADER_PEEK=off`: the peek is off for the process, and every
//! message's headers are still read right, through librdkafka's parse. Its
//! own test binary, because the switch is read once per process. Also runs
//! under valgrind memcheck (`scripts/memcheck`).

use weir_testkit::{BrokerKind, RawRecord};

mod common;
use common::{R, cluster_with, consumer, read_each};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_switched_off_the_peek_answers_read_them_and_headers_still_arrive() -> R {
    // SAFETY: set before any thread of this test reads the environment (the
    // runtime's workers do not) and before the peek's first use.
    unsafe { std::env::set_var(weir_ffi::HEADER_PEEK_SWITCH, "off") };
    assert!(!weir_ffi::header_peek_active(), "switched off");

    let topic = "ffi-peek-off";
    let recs = vec![
        RawRecord {
            key: Some(b"k".to_vec()),
            value: Some(b"p".to_vec()),
            headers: vec![],
            timestamp_ms: 1_700_000_000_000,
        },
        RawRecord {
            key: None,
            value: Some(b"q".to_vec()),
            headers: vec![(b"a".to_vec(), Some(b"1".to_vec()))],
            timestamp_ms: 1_700_000_000_001,
        },
    ];
    let cluster = cluster_with(BrokerKind::Mock, topic, &recs).await?;
    let (c, _q) = consumer(cluster.bootstrap_servers(), topic, false);
    let seen = read_each(&c, topic, recs.len(), |m| {
        let mut names = Vec::new();
        m.headers(|_, n, _| names.push(n.to_vec()));
        (m.offset(), m.surely_headerless(), names)
    });
    assert_eq!(
        seen,
        vec![(0, false, vec![]), (1, false, vec![b"a".to_vec()])],
        "switched off, the peek never answers; headers come from librdkafka"
    );
    Ok(())
}
