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

/// A fresh message ID: a UUIDv7 (time-ordered, so indexes on it stay compact).
pub fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
