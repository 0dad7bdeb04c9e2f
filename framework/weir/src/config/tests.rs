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
fn a_console_section_is_left_to_the_console() {
    let c = ConsumerConfig::from_toml_str(
        "brokers = \"k:9092\"\ngroup_id = \"g\"\n[kafka]\n\"security.protocol\" = \"SSL\"\n[console]\ntoken = \"t\"\nactions = true\n",
    )
    .unwrap();
    assert_eq!(c.brokers, "k:9092");
    assert_eq!(
        c.kafka.get("security.protocol").map(String::as_str),
        Some("SSL")
    );
    // Other unknown keys are still errors, with or without the section.
    let e = ConsumerConfig::from_toml_str("no_such_key = 1\n[console]\ntoken = \"t\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no_such_key"), "{e}");
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

#[test]
fn the_consumer_group_protocol_sets_none_of_the_classic_properties() {
    let get = |c: &ConsumerConfig, k: &str| c.client_config().get(k).map(str::to_string);
    let classic = ConsumerConfig::new("b:9092", "g", &["t"]);
    assert_eq!(get(&classic, "group.protocol").as_deref(), Some("classic"));
    assert_eq!(
        get(&classic, "partition.assignment.strategy").as_deref(),
        Some("cooperative-sticky")
    );
    let c = ConsumerConfig::from_toml_str(
        "brokers = \"b:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\ngroup_protocol = \"consumer\"\n[kafka]\n\"group.remote.assignor\" = \"range\"\n",
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(get(&c, "group.protocol").as_deref(), Some("consumer"));
    assert_eq!(get(&c, "group.remote.assignor").as_deref(), Some("range"));
    for k in [
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
    ] {
        assert_eq!(
            get(&c, k),
            None,
            "{k} is not set under the consumer protocol"
        );
    }
    assert_eq!(get(&c, "fetch.wait.max.ms").as_deref(), Some("100"));
    let own = c.clone().set("fetch.wait.max.ms", "500");
    assert_eq!(get(&own, "fetch.wait.max.ms").as_deref(), Some("500"));
    let c = c
        .with_env(env(&[("WEIR_GROUP_PROTOCOL", "classic")]))
        .unwrap();
    assert_eq!(c.group_protocol, crate::GroupProtocol::Classic);
    let e = ConsumerConfig::new("b", "g", &["t"])
        .with_env(env(&[("WEIR_GROUP_PROTOCOL", "next")]))
        .unwrap_err();
    assert!(e.to_string().contains("classic, consumer"), "{e}");
}

#[test]
fn classic_properties_under_the_consumer_protocol_are_refused_with_what_to_use() {
    let consumer = || {
        let mut c = ConsumerConfig::new("b:9092", "g", &["t"]);
        c.group_protocol = crate::GroupProtocol::Consumer;
        c
    };
    for (k, hint) in [
        ("session.timeout.ms", "group.consumer.session.timeout.ms"),
        (
            "heartbeat.interval.ms",
            "group.consumer.heartbeat.interval.ms",
        ),
    ] {
        let e = consumer()
            .set(k, "6000")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains(k) && e.contains(hint), "{e}");
        // The same property is fine under the classic protocol.
        ConsumerConfig::new("b:9092", "g", &["t"])
            .set(k, "6000")
            .validate()
            .unwrap();
    }
    let mut c = consumer();
    c.assignment = crate::Assignment::Range;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("group.remote.assignor"), "{e}");
    let e = consumer()
        .set("group.protocol", "consumer")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("group_protocol"), "{e}");
}

#[test]
fn static_membership_from_the_config_the_environment_or_the_host_name() {
    let get = |c: &ConsumerConfig| {
        c.client_config()
            .get("group.instance.id")
            .map(str::to_string)
    };
    let c = ConsumerConfig::new("b:9092", "g", &["t"]);
    assert_eq!(get(&c), None, "dynamic membership by default");
    let c = c
        .with_env(env(&[("WEIR_GROUP_INSTANCE_ID", "orders-1")]))
        .unwrap();
    c.validate().unwrap();
    assert_eq!(get(&c).as_deref(), Some("orders-1"));
    let mut h = ConsumerConfig::new("b:9092", "g", &["t"]);
    h.group_instance_id_from_hostname = true;
    h.validate().unwrap();
    let host = h.instance_id().unwrap().unwrap();
    assert!(!host.is_empty());
    assert_eq!(get(&h).as_deref(), Some(host.as_str()));
    let mut bad = ConsumerConfig::new("b:9092", "g", &["t"]);
    bad.group_instance_id = Some("no spaces".into());
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("group_instance_id"), "{e}");
    let e = ConsumerConfig::new("b:9092", "g", &["t"])
        .set("group.instance.id", "x")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("use the `group_instance_id` key"), "{e}");
}
