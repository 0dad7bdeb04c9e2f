//! Property-based fuzzing of every parser of untrusted input in the core:
//! header values (attempt, due time, schedule, message ID), payload codecs,
//! and configuration (TOML text and `WEIR_*` values). Each must return a value
//! or a clear error for any input: no panic, no unbounded allocation.
//!
//! Case counts are recorded in `docs/bad-input.md`; raise them with
//! `PROPTEST_CASES=1000000 cargo test -p weir --lib fuzz`.

use std::sync::Arc;

use bytes::Bytes;
use futures::executor::block_on;
use proptest::prelude::*;

use crate::codec::{Codec, JsonCodec, StringCodec};
use crate::message::{Headers, RawMessage};
use crate::wire::{delivery_attempt, due_at, headers, not_yet};

/// Cases per target (overridable with `PROPTEST_CASES`).
fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(n)
}

fn raw(headers: Headers, payload: Option<Vec<u8>>) -> RawMessage {
    RawMessage {
        topic: Arc::from("fuzz"),
        partition: 0,
        offset: 0,
        timestamp_ms: None,
        key: None,
        payload: payload.map(Bytes::from),
        headers,
    }
}

/// Header values: arbitrary bytes, numbers as text (huge, negative,
/// whitespace), invalid UTF-8.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        // The edges of every width a header number is read into.
        proptest::sample::select(vec![
            i64::MIN.to_string(),
            (i64::MIN + 1).to_string(),
            i64::MAX.to_string(),
            u32::MAX.to_string(),
            (u32::MAX as i64 + 1).to_string(),
            i32::MIN.to_string(),
            "0".to_string(),
            "-1".to_string(),
        ])
        .prop_map(String::into_bytes),
        "[ \t]*-?[0-9]{0,25}[ \t]*".prop_map(String::into_bytes),
    ]
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Order {
    id: u64,
    note: Option<String>,
    items: Vec<(String, i32)>,
}

proptest! {
    #![proptest_config(cases(20_000))]

    #[test]
    fn failure_headers_never_panic(
        attempt in header_value(),
        due in header_value(),
        not_before in header_value(),
        id in header_value(),
        dup in any::<bool>(),
    ) {
        let mut h = Headers::default();
        h.push(headers::ATTEMPT, attempt.clone());
        if dup {
            h.push(headers::ATTEMPT, attempt);
        }
        h.push(headers::DUE_MS, due);
        h.push(headers::NOT_BEFORE_MS, not_before);
        h.push(crate::MESSAGE_ID_HEADER, id);
        let m = raw(h, None);
        prop_assert!(delivery_attempt(&m) >= 1);
        // A due time is held at most the tier's limit, whatever the header says.
        let hold = std::time::Duration::from_secs(65);
        if let Some(at) = due_at(&m, hold) {
            prop_assert!(at <= tokio::time::Instant::now() + hold);
        }
        prop_assert!(delivery_attempt(&m) <= crate::retry::MAX_DELIVERY_ATTEMPT);
        let _ = not_yet(&m);
        let _ = m.message_id();
    }

    #[test]
    fn codecs_never_panic(payload in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200))) {
        let m = raw(Headers::default(), payload);
        let _ = block_on(StringCodec.decode(&m));
        let _ = block_on(JsonCodec::<Order>::new().decode(&m));
        let _ = block_on(JsonCodec::<serde_json::Value>::new().decode(&m));
    }

    #[test]
    fn json_shaped_payloads_never_panic(s in r#"\{("[a-z]{1,5}":(-?[0-9]{1,30}|"[^"]{0,10}"|null|\[[0-9,]{0,10}\]|\{\}),?){0,4}\}"#) {
        let m = raw(Headers::default(), Some(s.into_bytes()));
        if let Err(e) = block_on(JsonCodec::<Order>::new().decode(&m)) {
            let pe = crate::ProcessError::from(e);
            prop_assert_eq!(pe.class(), "decode");
        }
    }

    #[test]
    fn config_text_never_panics(text in "(([a-z_]{1,25}|\\[kafka\\]|\\[retry\\]) ?= ?(\"[^\"\\n]{0,12}\"|-?[0-9]{1,22}|true|\\[\\]|[a-z]{0,6})\\n){0,6}") {
        let _ = crate::ConsumerConfig::from_toml_str(&text).and_then(|c| c.validate().map(|_| c));
    }

    #[test]
    fn arbitrary_config_text_never_panics(text in "\\PC{0,120}") {
        let _ = crate::ConsumerConfig::from_toml_str(&text);
    }

    #[test]
    fn env_values_never_panic(
        key in prop::sample::select(vec![
            "WEIR_BROKERS", "WEIR_GROUP_ID", "WEIR_TOPICS", "WEIR_ORDERING", "WEIR_MAX_IN_FLIGHT",
            "WEIR_MAX_IN_FLIGHT_PER_PARTITION", "WEIR_MAX_BUFFERED_PER_PARTITION", "WEIR_HANDLER_TIMEOUT",
            "WEIR_MAX_HEADER_BYTES", "WEIR_COMMIT_INTERVAL", "WEIR_SHUTDOWN_DEADLINE", "WEIR_REVOKE_DEADLINE",
            "WEIR_AUTO_OFFSET_RESET", "WEIR_ASSIGNMENT", "WEIR_RETRY_MAX_ATTEMPTS", "WEIR_RETRY_INITIAL_BACKOFF",
            "WEIR_RETRY_MAX_BACKOFF", "WEIR_KAFKA_SASL_PASSWORD",
        ]),
        value in "\\PC{0,40}",
    ) {
        let base = crate::ConsumerConfig::new("b:9092", "g", &["t"]);
        match base.with_env([(key.to_string(), value.clone())]) {
            Ok(c) => { let _ = c.validate(); }
            Err(e) => {
                let msg = e.to_string();
                // The error names the key it is about.
                let k = key["WEIR_".len()..].to_ascii_lowercase();
                let toml_key = match k.strip_prefix("retry_") {
                    Some(r) => format!("retry.{r}"),
                    None => k.clone(),
                };
                prop_assert!(msg.contains(&toml_key) || msg.contains(key), "{}", msg);
            }
        }
    }
}
