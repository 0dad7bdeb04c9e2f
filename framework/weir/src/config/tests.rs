use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn toml_then_env() {
    let c = ConsumerConfig::from_toml_str(
        r#"
        brokers = "a:9092"
        group_id = "g"
        topics = ["t1"]
        ordering = "partition"
        handler_timeout = "5s"
        [retry]
        max_attempts = 5
        [kafka]
        "fetch.min.bytes" = "10"
        "#,
    )
    .unwrap();
    assert_eq!(c.ordering, Ordering::Partition);
    assert_eq!(c.handler_timeout, Duration::from_secs(5));
    assert_eq!(c.retry.max_attempts, 5);
    let c = c
        .with_env(env(&[
            ("WEIR_TOPICS", "x, y"),
            ("WEIR_KAFKA_SASL_PASSWORD", "hunter2"),
            ("WEIR_TEST_BROKER", "tansu"),
            ("OTHER", "1"),
        ]))
        .unwrap();
    assert_eq!(c.topics, vec!["x", "y"]);
    assert_eq!(c.kafka["sasl.password"], "hunter2");
    c.validate().unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("hunter2"), "secret leaked: {dbg}");
    assert!(dbg.contains("***"));
}

#[test]
fn safety_valves_load_from_toml_and_env_and_are_off_by_default() {
    let c = ConsumerConfig::new("a:9092", "g", &["t"]);
    assert!(!c.dlq_limit.is_on() && !c.retry_budget.is_on());
    let c = ConsumerConfig::from_toml_str(
        r#"
        brokers = "a:9092"
        group_id = "g"
        topics = ["t"]
        [dlq_limit]
        max_share = 0.5
        window = 40
        [retry_budget]
        max_share = 0.25
        window = "10s"
        "#,
    )
    .unwrap()
    .with_env(env(&[
        ("WEIR_DLQ_LIMIT_MAX_CONSECUTIVE", "7"),
        ("WEIR_RETRY_BUDGET_MIN_RETRIES", "9"),
    ]))
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.dlq_limit.max_share, Some(0.5));
    assert_eq!(c.dlq_limit.window, 40);
    assert_eq!(c.dlq_limit.max_consecutive, Some(7));
    assert_eq!(c.retry_budget.max_share, Some(0.25));
    assert_eq!(c.retry_budget.window, Duration::from_secs(10));
    assert_eq!(c.retry_budget.min_retries, 9);
    let bad = c
        .with_env(env(&[("WEIR_RETRY_BUDGET_MAX_SHARE", "2")]))
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(bad.to_string().contains("retry_budget.max_share"), "{bad}");
}

#[test]
fn errors_name_the_key() {
    let e = ConsumerConfig::from_toml_str("max_in_flight = \"lots\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_in_flight"), "{e}");
    let e = ConsumerConfig::from_toml_str("no_such_key = 1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no_such_key"), "{e}");
    let base = ConsumerConfig::new("b:1", "g", &["t"]);
    let e = base
        .clone()
        .with_env(env(&[("WEIR_HANDLER_TIMEOUT", "soon")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("handler_timeout") && e.contains("soon"), "{e}");
    let e = base
        .clone()
        .set("enable.auto.commit", "true")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("enable.auto.commit"), "{e}");
    let mut c = base.clone();
    c.max_in_flight = 0;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("max_in_flight")
    );
    let mut c = base.clone();
    c.topics = vec!["bad topic!".into()];
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("not a valid topic name")
    );
    let mut c = base.clone();
    c.group_id.clear();
    assert!(c.validate().unwrap_err().to_string().contains("group_id"));
    let mut c = base;
    c.auto_offset_reset = "smallest-ish".into();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("auto_offset_reset")
    );
}

#[test]
fn backoff_grows_and_caps() {
    let p = RetryPolicy {
        jitter: false,
        ..RetryPolicy::default()
    };
    assert_eq!(p.backoff(1), Duration::from_millis(200));
    assert_eq!(p.backoff(2), Duration::from_millis(400));
    assert_eq!(p.backoff(30), Duration::from_secs(10));
    let j = RetryPolicy::default();
    for _ in 0..100 {
        let d = j.backoff(2);
        assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(600));
    }
}

#[test]
fn secret_keys() {
    for k in [
        "sasl.password",
        "ssl.key.password",
        "ssl.key.pem",
        "sasl.oauthbearer.config",
        "ssl.keystore.password",
    ] {
        assert!(is_secret_key(k), "{k}");
    }
    assert!(!is_secret_key("sasl.username"));
}

#[test]
fn partition_queues_keep_librdkafkas_fetch_size_unless_the_user_sized_it() {
    let base = ConsumerConfig::new("127.0.0.1:9", "g", &["t"]);
    let c = base.client_config();
    assert_eq!(c.get("queued.max.messages.kbytes"), Some("4096"));
    assert_eq!(c.get("fetch.max.bytes"), Some("52428800"));
    // librdkafka accepts the combination (it checks fetch.max.bytes
    // against message.max.bytes and receive.message.max.bytes).
    let _: rdkafka::consumer::BaseConsumer = c.create().expect("valid config");

    let own = base.clone().set("fetch.max.bytes", "2097152");
    assert_eq!(own.client_config().get("fetch.max.bytes"), Some("2097152"));
    let small = base.clone().set("queued.max.messages.kbytes", "64");
    assert_eq!(
        small.client_config().get("fetch.max.bytes"),
        None,
        "a small queue limit keeps fetches small too"
    );
    let recv = base.clone().set("receive.message.max.bytes", "8000000");
    assert_eq!(recv.client_config().get("fetch.max.bytes"), None);
    let _: rdkafka::consumer::BaseConsumer = recv.client_config().create().expect("valid config");
    let mut shared = base;
    shared.partition_queues = false;
    assert_eq!(shared.client_config().get("fetch.max.bytes"), None);
    assert_eq!(
        shared.client_config().get("queued.max.messages.kbytes"),
        None
    );
}
