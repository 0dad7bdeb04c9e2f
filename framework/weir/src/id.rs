//! Message identity: the producer-assigned ID every message Weir produces carries.
//!
//! Idempotency (exactly-once *effect*) needs an identity that survives
//! redelivery *and* re-publication. Weir's producers (the [`Producer`](crate::producer::Producer)
//! helper, retry tiers, the DLQ, the outbox relay) put a UUIDv7 in the
//! [`MESSAGE_ID_HEADER`] header when the record has none, and keep it when it is
//! copied elsewhere (a retry tier, the DLQ, a replay), so every copy of one
//! logical message has the same ID.
//!
//! For foreign producers that set no ID, the fallback identity is the message's
//! coordinates `topic/partition@offset`. It is weaker: it is stable across
//! redeliveries of the same record, but a re-published copy (a producer retry
//! without idempotence, a manual re-send) gets a new identity and is not
//! recognised as a duplicate.

/// The header holding the message ID (UTF-8, at most [`MAX_MESSAGE_ID_LEN`] bytes).
pub const MESSAGE_ID_HEADER: &str = "weir-message-id";

/// Longest accepted message ID in bytes. Longer IDs are rejected as invalid
/// input instead of being stored.
pub const MAX_MESSAGE_ID_LEN: usize = 255;

/// Where a copy (retry tier, DLQ, replay) keeps a [`MESSAGE_ID_HEADER`] value
/// that is not a valid ID (empty, longer than [`MAX_MESSAGE_ID_LEN`], not
/// UTF-8), byte for byte, when it gets a valid one instead.
pub const INVALID_MESSAGE_ID_HEADER: &str = "weir-invalid-message-id";

/// Whether `id` is a message ID a Weir producer accepts.
pub fn is_valid_message_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_MESSAGE_ID_LEN && std::str::from_utf8(id).is_ok()
}

/// Gives `headers` one valid [`MESSAGE_ID_HEADER`] before a copy is produced:
/// a valid one is kept; a missing one becomes `fallback()` (the original's
/// coordinates); an invalid one moves to [`INVALID_MESSAGE_ID_HEADER`] and
/// `fallback()` takes its place, so the copy can always be sent.
pub(crate) fn repair_message_id(
    headers: &mut crate::message::Headers,
    fallback: impl FnOnce() -> String,
) {
    let current = headers.get(MESSAGE_ID_HEADER).map(<[u8]>::to_vec);
    if current.as_deref().is_some_and(is_valid_message_id) {
        return;
    }
    headers.0.retain(|h| h.key != MESSAGE_ID_HEADER);
    if let Some(bad) = current {
        headers.0.retain(|h| h.key != INVALID_MESSAGE_ID_HEADER);
        headers.push(INVALID_MESSAGE_ID_HEADER, bad);
    }
    headers.push(MESSAGE_ID_HEADER, fallback());
}

/// A fresh message ID: a UUIDv7 (time-ordered, so indexes on it stay compact).
pub fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Headers;

    #[test]
    fn invalid_ids_are_kept_aside_and_replaced() {
        for bad in [vec![], vec![b'x'; MAX_MESSAGE_ID_LEN + 1], vec![0xff, 0x00]] {
            let mut h = Headers::default();
            h.push(MESSAGE_ID_HEADER, bad.clone());
            repair_message_id(&mut h, || "t/0@5".into());
            assert_eq!(h.get_str(MESSAGE_ID_HEADER).unwrap(), Some("t/0@5"));
            assert_eq!(h.get(INVALID_MESSAGE_ID_HEADER), Some(bad.as_slice()));
            assert_eq!(h.iter().filter(|x| x.key == MESSAGE_ID_HEADER).count(), 1);
        }
        let mut h = Headers::default();
        h.push(MESSAGE_ID_HEADER, "good");
        repair_message_id(&mut h, || unreachable!());
        assert_eq!(h.get_str(MESSAGE_ID_HEADER).unwrap(), Some("good"));
        assert!(h.get(INVALID_MESSAGE_ID_HEADER).is_none());
        let mut h = Headers::default();
        repair_message_id(&mut h, || "t/1@2".into());
        assert_eq!(h.get_str(MESSAGE_ID_HEADER).unwrap(), Some("t/1@2"));
        assert!(
            h.get(INVALID_MESSAGE_ID_HEADER).is_none(),
            "a missing id is not invalid"
        );
    }

    #[test]
    fn ids_are_unique_v7_and_time_ordered() {
        let a = new_message_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_message_id();
        assert_ne!(a, b);
        let ua = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(ua.get_version_num(), 7);
        assert!(a < b, "v7 ids sort by creation time");
        assert!(a.len() <= MAX_MESSAGE_ID_LEN);
    }
}
