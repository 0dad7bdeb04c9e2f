//! The wall clock, read in one place: epoch milliseconds for headers, ages
//! and heartbeats. Monotonic deadlines use `tokio::time::Instant` instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 when the clock is set before it.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Milliseconds from a producer timestamp `ts` to `now`, 0 for one in the
/// future; saturating, since a hostile producer chooses the timestamp.
pub fn age_ms(now: i64, ts: i64) -> i64 {
    now.saturating_sub(ts).max(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_saturate_on_hostile_timestamps() {
        assert_eq!(super::age_ms(1_000, 400), 600);
        assert_eq!(
            super::age_ms(1_000, 5_000),
            0,
            "a future timestamp is age 0"
        );
        assert_eq!(super::age_ms(1_700_000_000_000, i64::MIN), i64::MAX);
        assert_eq!(super::age_ms(i64::MIN, i64::MAX), 0);
        assert!(super::now_ms() > 1_700_000_000_000);
    }
}
