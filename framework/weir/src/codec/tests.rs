use std::sync::Arc;

use super::*;
use futures::executor::block_on;

fn raw(payload: Option<&[u8]>) -> RawMessage {
    RawMessage {
        topic: Arc::from("t"),
        partition: 0,
        offset: 7,
        timestamp_ms: None,
        key: None,
        payload: payload.map(Bytes::copy_from_slice),
        headers: Default::default(),
    }
}

#[test]
fn string_codec_rejects_invalid_utf8() {
    let e = block_on(StringCodec.decode(&raw(Some(b"ab\xffcd")))).unwrap_err();
    assert!(matches!(e, DecodeError::InvalidUtf8 { valid_up_to: 2 }));
    assert_eq!(
        block_on(StringCodec.decode(&raw(Some(b"ok")))).unwrap(),
        "ok"
    );
    assert!(matches!(
        block_on(StringCodec.decode(&raw(None))),
        Err(DecodeError::Missing(Part::Value))
    ));
}

#[cfg(feature = "json")]
#[test]
fn json_codec_decodes_and_classifies() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Click {
        id: u32,
    }
    let c = JsonCodec::<Click>::new();
    assert_eq!(
        block_on(c.decode(&raw(Some(br#"{"id":3}"#)))).unwrap(),
        Click { id: 3 }
    );
    let e = block_on(c.decode(&raw(Some(b"{\"id\":\"secret-pii\"}")))).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("not valid JSON"), "{msg}");
    assert!(
        !msg.contains("secret-pii"),
        "payload leaked into the error: {msg}"
    );
    let e = block_on(c.decode(&raw(Some(b"{}")))).unwrap_err();
    assert!(e.to_string().contains("missing field `id`"), "{e}");
    let pe: crate::ProcessError = e.into();
    assert_eq!(pe.class(), "decode");
    assert!(!pe.is_retryable());
}

#[cfg(feature = "json")]
#[test]
fn key_and_value_codecs_are_independent() {
    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
    struct Click {
        id: u32,
    }
    let mut m = raw(Some(br#"{"id":9}"#));
    m.key = Some(Bytes::from_static(b"link-1"));
    let c = (Key(StringCodec), JsonCodec::<Click>::new());
    assert_eq!(
        block_on(c.decode(&m)).unwrap(),
        ("link-1".to_string(), Click { id: 9 })
    );
    m.key = None;
    assert!(matches!(
        block_on(c.decode(&m)),
        Err(DecodeError::Missing(Part::Key))
    ));
    let bytes = block_on(JsonCodec::<Click>::new().encode("t", &Click { id: 4 })).unwrap();
    assert_eq!(&bytes[..], br#"{"id":4}"#);
}

#[test]
fn by_topic_picks_codec_and_follows_retry_copies() {
    let c = ByTopic::new()
        .topic("a", StringCodec.map(|s| format!("a:{s}")))
        .topic(
            "b",
            BytesCodec.map(|b| format!("b:{}", b.map_or(0, |b| b.len()))),
        );
    let mut m = raw(Some(b"xyz"));
    m.topic = Arc::from("a");
    assert_eq!(block_on(c.decode(&m)).unwrap(), "a:xyz");
    m.topic = Arc::from("b");
    assert_eq!(block_on(c.decode(&m)).unwrap(), "b:3");
    m.topic = Arc::from("b.retry.1s");
    m.headers.push(crate::wire::headers::ORIGINAL_TOPIC, "a");
    assert_eq!(block_on(c.decode(&m)).unwrap(), "a:xyz");
    m.topic = Arc::from("zzz");
    m.headers = Default::default();
    let e = block_on(c.decode(&m)).unwrap_err();
    assert!(e.to_string().contains("no codec for topic `zzz`"), "{e}");
}

#[test]
fn classes_and_kinds() {
    let e = DecodeError::WrongMagicByte {
        part: Part::Value,
        found: 0x7b,
    };
    assert_eq!(e.class(), "decode_wrong_magic_byte");
    assert!(e.to_string().contains("0x7b"), "{e}");
    let pe: crate::ProcessError = e.into();
    assert_eq!(pe.kind(), crate::ErrorKind::Terminal);
    assert_eq!(pe.class(), "decode_wrong_magic_byte");
    let pe: crate::ProcessError = DecodeError::Unavailable {
        what: "schema registry http://x".into(),
        detail: "connection refused".into(),
    }
    .into();
    assert!(pe.is_unavailable());
    assert_eq!(pe.class(), "schema_registry_unavailable");
}
