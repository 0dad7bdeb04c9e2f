//! The wire: every header name Weir reads or writes, with the one defensive
//! parser each value has. Nothing else in the crate parses a Weir header;
//! this room knows no tiers, processors or librdkafka, only names and bytes
//! (a hostile producer chooses them: every parser here returns `None` or a
//! clamped value for garbage, never an error that could wedge a partition).

use std::time::Duration;

use tokio::time::Instant;

use crate::clock::now_ms;
use crate::message::{Headers, RawMessage};

pub use crate::id::{INVALID_MESSAGE_ID_HEADER, MESSAGE_ID_HEADER};

/// Header names Weir writes on retry-tier and DLQ copies.
pub mod headers {
    /// Topic the message was first consumed from.
    pub const ORIGINAL_TOPIC: &str = "weir-original-topic";
    /// Its partition there.
    pub const ORIGINAL_PARTITION: &str = "weir-original-partition";
    /// Its offset there.
    pub const ORIGINAL_OFFSET: &str = "weir-original-offset";
    /// Its timestamp there (epoch ms), if it had one.
    pub const ORIGINAL_TIMESTAMP: &str = "weir-original-timestamp";
    /// The delivery attempt this copy is (2 for the first retry).
    pub const ATTEMPT: &str = "weir-attempt";
    /// Not to be processed before this time (epoch ms).
    pub const DUE_MS: &str = "weir-due-ms";
    /// Class of the last error (`timeout`, `http_503`, `decode`…).
    pub const ERROR_CLASS: &str = "weir-error-class";
    /// The last error's message, truncated to 512 bytes.
    pub const ERROR_MESSAGE: &str = "weir-error-message";
    /// When the first delivery failed (epoch ms).
    pub const FIRST_FAILURE_MS: &str = "weir-first-failure-ms";
    /// Why the message is in the DLQ: `terminal`, `retries_exhausted` or `invalid_retry_headers`.
    pub const DLQ_REASON: &str = "weir-dlq-reason";
    /// The consumer group that gave up on it.
    pub const FAILED_GROUP: &str = "weir-failed-group";
    /// The one consumer group that processes this copy: set on retry-tier
    /// copies (the group that failed them) and on DLQ replays (the group that
    /// gave up); other groups reading the same topic skip it. Tier topics are
    /// named after their source topic only, so several groups with tiers on
    /// one topic share them.
    pub const FOR_GROUP: &str = "weir-for-group";
    /// When it was sent to the DLQ (epoch ms).
    pub const DLQ_AT_MS: &str = "weir-dlq-at-ms";
    /// On a replayed copy: the DLQ coordinates it came from (`topic/partition@offset`).
    pub const REPLAYED_FROM: &str = "weir-replayed-from";
    /// On a scheduled message: not to be processed before this time (epoch ms);
    /// it hops through the delay tiers until then.
    pub const NOT_BEFORE_MS: &str = "weir-not-before-ms";

    /// Headers describing one failure; replaced (not duplicated) on each hop and
    /// removed by a DLQ replay.
    pub const FAILURE_STATE: &[&str] = &[
        ATTEMPT,
        DUE_MS,
        ERROR_CLASS,
        ERROR_MESSAGE,
        DLQ_REASON,
        FAILED_GROUP,
        DLQ_AT_MS,
        FOR_GROUP,
    ];
}

/// Highest delivery attempt read from a header: a hostile `weir-attempt`
/// saturates here instead of overflowing attempt arithmetic.
pub const MAX_DELIVERY_ATTEMPT: u32 = 1_000_000;

/// A header's value as a decimal integer (surrounding spaces allowed);
/// `None` when it is missing, not UTF-8 or not a number.
#[inline]
pub(crate) fn header_i64(h: &Headers, name: &str) -> Option<i64> {
    h.get_str(name).ok().flatten()?.trim().parse().ok()
}

/// The delivery attempt a message starts at: its [`headers::ATTEMPT`], else 1;
/// at most [`MAX_DELIVERY_ATTEMPT`].
pub(crate) fn delivery_attempt(m: &RawMessage) -> u32 {
    header_i64(&m.headers, headers::ATTEMPT)
        .filter(|a| *a >= 1)
        .map(|a| a.min(i64::from(MAX_DELIVERY_ATTEMPT)) as u32)
        .unwrap_or(1)
}

/// When a message on a tier topic becomes due, if its [`headers::DUE_MS`] is
/// in the future: held at most `max_hold` (the tier's delay with jitter and
/// [`HOLD_SKEW_ALLOWANCE`](crate::retry::HOLD_SKEW_ALLOWANCE)), whatever the header says.
pub(crate) fn due_at(m: &RawMessage, max_hold: Duration) -> Option<Instant> {
    let due = header_i64(&m.headers, headers::DUE_MS)?;
    let wait = due.saturating_sub(now_ms());
    if wait <= 0 {
        return None;
    }
    let wait = Duration::from_millis(wait as u64);
    if wait > max_hold {
        tracing::warn!(
            topic = %m.topic, partition = m.partition, offset = m.offset,
            ?wait, ?max_hold,
            "due time further ahead than this tier delays; holding for the tier's delay"
        );
    }
    Some(Instant::now() + wait.min(max_hold))
}

/// True when a scheduled message's [`headers::NOT_BEFORE_MS`] is still ahead.
pub(crate) fn not_yet(m: &RawMessage) -> bool {
    header_i64(&m.headers, headers::NOT_BEFORE_MS).is_some_and(|nb| nb > now_ms().saturating_add(2))
}

/// A header's value as UTF-8 text; `None` when missing or not UTF-8.
pub(crate) fn header_str<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.get_str(name).ok().flatten()
}

/// The consumer group a copy is meant for ([`headers::FOR_GROUP`]), as raw bytes.
#[inline]
pub(crate) fn for_group(h: &Headers) -> Option<&[u8]> {
    h.get(headers::FOR_GROUP)
}

/// The topic a retry-tier or DLQ copy was first consumed from
/// ([`headers::ORIGINAL_TOPIC`]), when it is UTF-8.
pub(crate) fn original_topic(h: &Headers) -> Option<&str> {
    header_str(h, headers::ORIGINAL_TOPIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::message::test_raw as raw;

    #[test]
    fn attempt_and_due_headers_are_parsed_defensively() {
        assert_eq!(delivery_attempt(&raw("t", &[])), 1);
        assert_eq!(delivery_attempt(&raw("t", &[(headers::ATTEMPT, "3")])), 3);
        assert_eq!(delivery_attempt(&raw("t", &[(headers::ATTEMPT, "-4")])), 1);
        assert_eq!(delivery_attempt(&raw("t", &[(headers::ATTEMPT, "zz")])), 1);
        assert_eq!(
            delivery_attempt(&raw("t", &[(headers::ATTEMPT, "4294967295")])),
            MAX_DELIVERY_ATTEMPT
        );
        let hold = Duration::from_secs(70);
        assert!(
            due_at(&raw("t", &[(headers::DUE_MS, "12")]), hold).is_none(),
            "past"
        );
        assert!(due_at(&raw("t", &[(headers::DUE_MS, &i64::MIN.to_string())]), hold).is_none());
        let soon = (now_ms() + 60_000).to_string();
        assert!(due_at(&raw("t", &[(headers::DUE_MS, &soon)]), hold).is_some());
        assert!(due_at(&raw("t", &[(headers::DUE_MS, "garbage")]), hold).is_none());
        let far = i64::MAX.to_string();
        let at = due_at(&raw("t", &[(headers::DUE_MS, &far)]), hold).unwrap();
        assert!(at <= Instant::now() + hold);
        let nb = raw("t", &[(headers::NOT_BEFORE_MS, &far)]);
        assert!(not_yet(&nb));
    }

    #[test]
    fn text_headers_are_read_only_when_utf8() {
        let m = raw(
            "orders.retry.1s",
            &[
                (headers::ORIGINAL_TOPIC, "orders"),
                (headers::FOR_GROUP, "g"),
            ],
        );
        assert_eq!(original_topic(&m.headers), Some("orders"));
        assert_eq!(for_group(&m.headers), Some(&b"g"[..]));
        let mut bad = Headers::default();
        bad.push(headers::ORIGINAL_TOPIC, vec![0xff, 0xfe]);
        assert_eq!(original_topic(&bad), None);
        assert_eq!(header_i64(&bad, headers::ORIGINAL_TOPIC), None);
    }
}
