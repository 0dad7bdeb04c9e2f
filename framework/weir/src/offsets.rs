//! [`OffsetTracker`]: which offset of a partition may be committed.
//!
//! Messages of one partition finish out of order (different keys run in
//! parallel). The committable position is the lowest offset that has not
//! finished, or one past the highest tracked offset when all have: never past
//! a message whose processing is not finished.

use std::collections::VecDeque;

/// The offset of the next message to consume: what Kafka stores as a commit.
///
/// rdkafka's conventions differ between calls (`commit_message` adds 1,
/// `commit`/`store_offsets` with a list do not); Weir keeps every committed
/// position in this type so the +1 happens in exactly one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NextOffset(pub i64);

impl NextOffset {
    /// The position after a processed message at `offset`.
    pub fn after(offset: i64) -> Self {
        NextOffset(offset + 1)
    }
}

/// Tracks in-flight offsets of one partition.
///
/// Offsets must be tracked in increasing order (gaps allowed: compaction,
/// transaction markers). Each operation is O(log n) at worst; the memory held
/// is the window from the oldest unfinished offset to the newest tracked one,
/// which the runtime bounds by pausing the partition.
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    /// (offset, finished), ascending; the front is always unfinished.
    window: VecDeque<(i64, bool)>,
    /// One past the highest offset ever tracked.
    high: Option<i64>,
    /// Finished entries inside the window.
    finished_in_window: usize,
}

/// Why [`OffsetTracker::track`] refused an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("offset {offset} is not above the highest tracked offset {highest}")]
pub struct OutOfOrder {
    /// Offset offered.
    pub offset: i64,
    /// Highest tracked so far.
    pub highest: i64,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking `offset` (in flight). Offsets must increase.
    pub fn track(&mut self, offset: i64) -> Result<(), OutOfOrder> {
        if let Some(h) = self.high
            && offset < h
        {
            return Err(OutOfOrder {
                offset,
                highest: h - 1,
            });
        }
        self.window.push_back((offset, false));
        self.high = Some(offset + 1);
        Ok(())
    }

    /// Marks `offset` finished. Returns false if it was not in flight.
    pub fn finish(&mut self, offset: i64) -> bool {
        // Offsets are usually consecutive (gaps come from compaction and
        // transaction markers): then `offset`'s place is its distance from
        // the front, and the search is needed only when that guess misses.
        let guess = self
            .window
            .front()
            .and_then(|(front, _)| usize::try_from(offset.checked_sub(*front)?).ok())
            .filter(|&i| self.window.get(i).is_some_and(|(o, _)| *o == offset));
        let Some(i) = guess.or_else(|| self.window.binary_search_by_key(&offset, |(o, _)| *o).ok())
        else {
            return false;
        };
        if self.window[i].1 {
            return false;
        }
        self.window[i].1 = true;
        self.finished_in_window += 1;
        while let Some((_, true)) = self.window.front() {
            self.window.pop_front();
            self.finished_in_window -= 1;
        }
        true
    }

    /// The position that may be committed: the lowest unfinished offset, or one
    /// past the highest tracked offset. `None` before anything was tracked.
    pub fn committable(&self) -> Option<NextOffset> {
        match self.window.front() {
            Some((o, _)) => Some(NextOffset(*o)),
            None => self.high.map(NextOffset),
        }
    }

    /// Entries held: from the oldest unfinished offset to the newest tracked.
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// Tracked offsets not yet finished.
    pub fn unfinished(&self) -> usize {
        self.window.len() - self.finished_in_window
    }

    /// The oldest unfinished offset.
    pub fn oldest_unfinished(&self) -> Option<i64> {
        self.window.front().map(|(o, _)| *o)
    }

    /// One past the highest tracked offset.
    pub fn high(&self) -> Option<i64> {
        self.high
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commits_contiguous_prefix_only() {
        let mut t = OffsetTracker::new();
        assert_eq!(t.committable(), None);
        for o in [10, 11, 13, 14] {
            t.track(o).unwrap();
        }
        assert_eq!(t.committable(), Some(NextOffset(10)));
        assert!(t.finish(11));
        assert_eq!(t.committable(), Some(NextOffset(10)));
        assert!(t.finish(10));
        assert_eq!(
            t.committable(),
            Some(NextOffset(13)),
            "gap at 12 is skipped"
        );
        assert!(t.finish(14));
        assert!(!t.finish(14), "double finish refused");
        assert!(!t.finish(99), "unknown offset refused");
        assert!(t.finish(13));
        assert_eq!(t.committable(), Some(NextOffset(15)));
        assert_eq!(t.window_len(), 0);
        assert!(t.track(14).is_err());
    }

    proptest! {
        /// Random completion orders never commit past an unfinished offset, and
        /// the committable position always equals the contiguous finished prefix.
        #[test]
        fn never_commits_past_unfinished(
            gaps in proptest::collection::vec(1i64..4, 1..200),
            order_seed in proptest::collection::vec(any::<u32>(), 200),
            finish_count in 0usize..200,
        ) {
            let mut offsets = Vec::new();
            let mut o = 100;
            for g in &gaps { o += g; offsets.push(o); }
            let mut t = OffsetTracker::new();
            for &o in &offsets { t.track(o).unwrap(); }
            // A random permutation of which offsets finish, then finish a prefix of it.
            let mut order: Vec<usize> = (0..offsets.len()).collect();
            order.sort_by_key(|&i| order_seed[i % order_seed.len()].wrapping_mul(i as u32 + 1));
            let mut finished = vec![false; offsets.len()];
            let mut last = t.committable().unwrap();
            for &i in order.iter().take(finish_count.min(offsets.len())) {
                prop_assert!(t.finish(offsets[i]));
                prop_assert!(!t.finish(offsets[i]), "a second finish is refused");
                if i > 0 && offsets[i - 1] != offsets[i] - 1 {
                    prop_assert!(!t.finish(offsets[i] - 1), "an offset never tracked is refused");
                }
                finished[i] = true;
                let c = t.committable().unwrap();
                // Monotonic.
                prop_assert!(c >= last);
                last = c;
                // Expected: the first unfinished offset, or one past the last.
                let expected = finished.iter().position(|f| !f)
                    .map(|j| offsets[j])
                    .unwrap_or(*offsets.last().unwrap() + 1);
                prop_assert_eq!(c, NextOffset(expected));
                // Nothing unfinished is below the commit position.
                for (j, &o) in offsets.iter().enumerate() {
                    if !finished[j] { prop_assert!(o >= c.0); }
                }
            }
            prop_assert_eq!(t.unfinished(), finished.iter().filter(|f| !**f).count());
        }
    }
}
