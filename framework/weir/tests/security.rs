//! Access control against Apache Kafka: SASL/SCRAM (right credentials work, wrong
//! ones fail fast with a clear authentication error, for a consumer and for a
//! producer's sends, secrets never appear in logs, errors or `Debug` output)
//! and TLS (a client trusting the CA connects, a consumer or producer that does
//! not is refused with a clear error).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use weir::producer::ProduceError;
use weir::{Consumer, ConsumerConfig, Message, ProcessError, Producer, Record, processor_fn};
use weir_testkit::{KafkaNodes, KafkaOptions};

use common::R;

const PASSWORD: &str = "correct-horse-battery-staple";

/// Everything logged by this test binary, at debug level for every target
/// (Weir, librdkafka through Weir's client context), so that a test can
/// assert that no secret was ever written to a log.
fn captured_logs() -> Arc<parking_lot::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<parking_lot::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        struct Sink(Arc<parking_lot::Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let b = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(move || Sink(b.clone()))
            .try_init()
            .expect("this test binary installs no other subscriber");
        buf
    })
    .clone()
}
const WRONG: &str = "wrong-password-4711";

async fn create_topic(brokers: &str, extra: &[(&str, &str)], topic: &str) -> R {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let admin: AdminClient<DefaultClientContext> = c.create()?;
    let t = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    let _ = admin
        .create_topics(
            [&t],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    Ok(())
}

fn sasl(c: ConsumerConfig, password: &str) -> ConsumerConfig {
    c.set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", "weir")
        .set("sasl.password", password)
}

fn config(brokers: &str, group: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(brokers, group, &["secure"])
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    c.commit_interval = Duration::from_millis(100);
    c.shutdown_deadline = Duration::from_secs(5);
    c
}

async fn consume(cfg: ConsumerConfig, expect: usize) -> Result<usize, weir::WeirError> {
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let consumer =
        Consumer::builder(cfg).build(processor_fn(move |_m: Message<Option<bytes::Bytes>>| {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ProcessError>(())
            }
        }))?;
    let (handle, run) = common::start(consumer);
    let start = Instant::now();
    while seen.load(Ordering::SeqCst) < expect && start.elapsed() < Duration::from_secs(30) {
        if run.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown();
    let _report = run.await.expect("consumer task")?;
    Ok(seen.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_right_credentials_work_wrong_ones_fail_fast() -> R {
    let logs = captured_logs();
    // The client listener is SASL_PLAINTEXT with SCRAM-SHA-512; the user is
    // created when the storage is formatted.
    let broker = KafkaNodes::start(KafkaOptions {
        scram_users: vec![("weir".into(), PASSWORD.into())],
        ..KafkaOptions::nodes(1)
    })
    .await?;
    assert_eq!(broker.security_protocol(), "SASL_PLAINTEXT");
    let brokers = broker.bootstrap_servers();
    create_topic(&broker.internal_bootstrap(), &[], "secure").await?;

    // Right credentials: produce and consume.
    let good = sasl(config(&brokers, "secure-good"), PASSWORD);
    let producer = Producer::for_consumer(&good)?;
    for i in 0..5 {
        producer
            .send(Record::to("secure").key("k").payload(format!("m{i}")))
            .await?;
    }
    assert_eq!(
        consume(good.clone(), 5).await?,
        5,
        "authenticated consumer reads all"
    );

    // Wrong credentials: the consumer stops with an authentication error, fast.
    // librdkafka's own security and broker debug logs go through Weir's
    // client context into the captured logs too.
    let bad = sasl(config(&brokers, "secure-bad"), WRONG).set("debug", "security,broker");
    let debug = format!("{bad:?}");
    assert!(!debug.contains(WRONG), "password in Debug output: {debug}");
    let start = Instant::now();
    let err = consume(bad, 1).await.expect_err("wrong password must fail");
    let took = start.elapsed();
    let msg = err.to_string();
    assert!(
        msg.to_ascii_lowercase().contains("authentication"),
        "clear authentication error: {msg}"
    );
    assert!(!msg.contains(WRONG), "password in the error: {msg}");
    assert!(
        took < Duration::from_secs(20),
        "failed fast, not a retry loop: {took:?}"
    );

    // Wrong credentials on a producer: its sends fail fast with the reason
    // instead of each waiting out message.timeout.ms, and say what to fix.
    let bad_producer = Producer::for_consumer(&sasl(config(&brokers, "secure-bad"), WRONG))?;
    let start = Instant::now();
    let err = bad_producer
        .send(Record::to("secure").key("k").payload("refused"))
        .await
        .expect_err("a refused producer cannot deliver");
    let took = start.elapsed();
    let msg = err.to_string();
    assert!(
        matches!(err, ProduceError::Refused { .. }),
        "refused, not a timeout: {msg}"
    );
    assert!(
        msg.contains("check sasl.username"),
        "says what to fix: {msg}"
    );
    assert!(!msg.contains(WRONG), "password in the error: {msg}");
    assert!(
        took < Duration::from_secs(20),
        "failed fast, not after message.timeout.ms: {took:?}"
    );
    assert!(bad_producer.refused_connection().is_some());
    let start = Instant::now();
    let again = bad_producer
        .send(Record::to("secure").key("k").payload("refused"))
        .await
        .expect_err("still refused");
    assert!(matches!(again, ProduceError::Refused { .. }), "{again}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "later sends fail at once while the refusal is recent"
    );
    // The right producer is unaffected.
    producer
        .send(Record::to("secure").key("k").payload("m5"))
        .await?;

    // Unauthenticated: refused too.
    let anon = config(&brokers, "secure-anon");
    let res = tokio::time::timeout(Duration::from_secs(25), consume(anon, 1)).await;
    if let Ok(Ok(n)) = res {
        assert_eq!(n, 0, "an anonymous client read nothing");
    }

    // Neither password was ever logged, while the failure itself was.
    let text = String::from_utf8_lossy(&logs.lock()).into_owned();
    assert!(
        text.contains("SASL") || text.to_ascii_lowercase().contains("authentication"),
        "the capture saw the authentication failure ({} bytes logged)",
        text.len()
    );
    assert!(!text.contains(WRONG), "the wrong password was logged");
    assert!(!text.contains(PASSWORD), "the password was logged");
    Ok(())
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA and a server certificate for 127.0.0.1 signed by it, plus an
    /// unrelated CA the untrusting client uses.
    fn new() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let dir = tempfile::tempdir()?;
        let ca = |name: &str| -> Result<(String, Issuer<'static, KeyPair>), rcgen::Error> {
            let mut p = CertificateParams::new(Vec::<String>::new())?;
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let key = KeyPair::generate()?;
            let cert = p.self_signed(&key)?;
            Ok((cert.pem(), Issuer::new(p, key)))
        };
        let (ca_pem, issuer) = ca("weir test CA")?;
        let (other_pem, _) = ca("some other CA")?;
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        std::fs::write(dir.path().join("ca.pem"), ca_pem)?;
        std::fs::write(dir.path().join("other-ca.pem"), other_pem)?;
        std::fs::write(dir.path().join("server.pem"), cert.pem())?;
        std::fs::write(dir.path().join("server.key"), key.serialize_pem())?;
        Ok(Pki { dir })
    }

    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }
}

/// Kafka serves TLS on its client listener from a PEM keystore (key and
/// certificate signed by the test CA): every client connection, bootstrap and
/// broker, is TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trusted_ca_connects_untrusted_is_refused() -> R {
    let _ = captured_logs();
    let pki = Pki::new()?;
    let keystore = pki.path("server-keystore.pem");
    std::fs::write(
        &keystore,
        format!(
            "{}{}",
            std::fs::read_to_string(pki.path("server.key"))?,
            std::fs::read_to_string(pki.path("server.pem"))?
        ),
    )?;
    let broker = KafkaNodes::start(KafkaOptions {
        tls_keystore_pem: Some(keystore.into()),
        ..KafkaOptions::nodes(1)
    })
    .await?;
    assert_eq!(broker.security_protocol(), "SSL");
    let brokers = broker.bootstrap_servers();
    let ca = pki.path("ca.pem");
    create_topic(
        &brokers,
        &[("security.protocol", "SSL"), ("ssl.ca.location", &ca)],
        "secure",
    )
    .await?;
    let trusted = config(&brokers, "tls-good")
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", &ca);
    let producer = Producer::for_consumer(&trusted)?;
    for i in 0..3 {
        producer
            .send(Record::to("secure").key("k").payload(format!("t{i}")))
            .await?;
    }
    assert_eq!(
        consume(trusted, 3).await?,
        3,
        "a client trusting the CA reads all"
    );

    let untrusted = config(&brokers, "tls-bad")
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", pki.path("other-ca.pem"));
    let start = Instant::now();
    let err = consume(untrusted.clone(), 1)
        .await
        .expect_err("a client not trusting the CA must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("certificate is not trusted") && msg.contains("ssl.ca.location"),
        "clear TLS error: {msg}"
    );
    assert!(start.elapsed() < Duration::from_secs(20), "fails fast");

    // A producer not trusting the CA: its send fails fast with the same advice.
    let producer = Producer::for_consumer(&untrusted)?;
    let start = Instant::now();
    let err = producer
        .send(Record::to("tls").key("k").payload("refused"))
        .await
        .expect_err("a producer not trusting the CA cannot deliver");
    let msg = err.to_string();
    assert!(
        matches!(err, ProduceError::Refused { .. }) && msg.contains("ssl.ca.location"),
        "clear TLS error: {msg}"
    );
    assert!(start.elapsed() < Duration::from_secs(20), "fails fast");

    // Plaintext against the TLS port fails too (no silent downgrade).
    let plain = config(&brokers, "tls-plain");
    let res = tokio::time::timeout(Duration::from_secs(25), consume(plain, 1)).await;
    if let Ok(Ok(n)) = res {
        assert_eq!(n, 0, "a plaintext client read nothing");
    }
    Ok(())
}
