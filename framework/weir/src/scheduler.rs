//! [`KeyScheduler`]: at most one message per key in flight, in offset order.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// How messages of one partition may run concurrently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// One message at a time per partition (classic Kafka consumer).
    Partition,
    /// Messages with the same key strictly in offset order; different keys in
    /// parallel, even within one partition. Messages without a key are unordered.
    #[default]
    Key,
    /// No ordering: every message may run in parallel.
    Unordered,
}

impl std::str::FromStr for Ordering {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "partition" => Ok(Ordering::Partition),
            "key" => Ok(Ordering::Key),
            "unordered" => Ok(Ordering::Unordered),
            other => Err(format!("`{other}` is not one of partition, key, unordered")),
        }
    }
}

/// The lane a message runs in: messages of one lane run one at a time, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Serialised with every other message of the same lane id.
    Ordered(u64),
    /// Runs freely.
    Free,
}

impl Lane {
    /// The lane of a message under `ordering`.
    pub fn of(ordering: Ordering, key: Option<&[u8]>) -> Lane {
        match (ordering, key) {
            (Ordering::Partition, _) => Lane::Ordered(0),
            (Ordering::Key, Some(k)) => Lane::Ordered(hash_key(k)),
            (Ordering::Key, None) | (Ordering::Unordered, _) => Lane::Free,
        }
    }
}

/// The lane hash of a key: `FxHasher` over the key bytes, eight at a time.
/// Two keys sharing a hash share a lane: that only costs parallelism, never
/// order. In-process only (never persisted or sent), so it may change.
pub fn hash_key(key: &[u8]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(key);
    h.finish()
}

#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Per-partition key scheduler.
///
/// [`admit`](Self::admit) returns the item when its lane is idle (run it now)
/// or queues it behind the lane's running item; [`complete`](Self::complete)
/// releases the lane and returns the next queued item of that lane, if any.
pub struct KeyScheduler<T> {
    busy: HashMap<u64, VecDeque<T>, BuildHasherDefault<IdentityHasher>>,
    queued: usize,
}

impl<T> std::fmt::Debug for KeyScheduler<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyScheduler")
            .field("busy_lanes", &self.busy.len())
            .field("queued", &self.queued)
            .finish()
    }
}

impl<T> Default for KeyScheduler<T> {
    fn default() -> Self {
        KeyScheduler {
            busy: HashMap::default(),
            queued: 0,
        }
    }
}

impl<T> KeyScheduler<T> {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers an item. `Some(item)`: run it now. `None`: queued behind its lane.
    pub fn admit(&mut self, lane: Lane, item: T) -> Option<T> {
        match lane {
            Lane::Free => Some(item),
            // One lookup: the lane's entry either queues the item or is
            // made busy by it.
            Lane::Ordered(id) => match self.busy.entry(id) {
                Entry::Occupied(mut q) => {
                    q.get_mut().push_back(item);
                    self.queued += 1;
                    None
                }
                Entry::Vacant(v) => {
                    v.insert(VecDeque::new());
                    Some(item)
                }
            },
        }
    }

    /// Drops every queued item and keeps the lanes whose head is running
    /// busy (their completion frees them). Returns how many were dropped.
    pub fn drop_queued(&mut self) -> usize {
        for q in self.busy.values_mut() {
            q.clear();
        }
        std::mem::take(&mut self.queued)
    }

    /// The running item of `lane` finished: returns the lane's next item to run.
    pub fn complete(&mut self, lane: Lane) -> Option<T> {
        let Lane::Ordered(id) = lane else { return None };
        let Entry::Occupied(mut q) = self.busy.entry(id) else {
            return None;
        };
        match q.get_mut().pop_front() {
            Some(next) => {
                self.queued -= 1;
                Some(next)
            }
            None => {
                q.remove();
                None
            }
        }
    }

    /// Items waiting behind a running item of their lane.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Lanes with an item running.
    pub fn busy_lanes(&self) -> usize {
        self.busy.len()
    }

    /// The `n` lanes with the most items queued (longest first, ties in any
    /// order): each lane's queue length and its first queued item. O(lanes).
    pub fn deepest(&self, n: usize) -> Vec<(usize, &T)> {
        let mut top: Vec<(usize, &T)> = Vec::with_capacity(n + 1);
        if n == 0 {
            return top;
        }
        for q in self.busy.values() {
            let Some(front) = q.front() else { continue };
            if top.len() == n && top[n - 1].0 >= q.len() {
                continue;
            }
            let at = top.partition_point(|(d, _)| *d >= q.len());
            top.insert(at, (q.len(), front));
            top.truncate(n);
        }
        top
    }

    /// Drops every queued item (partition revoked).
    pub fn clear(&mut self) {
        self.busy.clear();
        self.queued = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn partition_mode_is_one_lane() {
        assert_eq!(
            Lane::of(Ordering::Partition, Some(b"a")),
            Lane::of(Ordering::Partition, None)
        );
        assert_eq!(Lane::of(Ordering::Key, None), Lane::Free);
        assert_eq!(Lane::of(Ordering::Unordered, Some(b"a")), Lane::Free);
    }

    #[test]
    fn deepest_lists_the_longest_queues_first() {
        let mut s: KeyScheduler<(u8, u32)> = KeyScheduler::new();
        for (key, n) in [(1u8, 3u32), (2, 1), (3, 5), (4, 0), (5, 2)] {
            let lane = Lane::of(Ordering::Key, Some(&[key]));
            // The first runs; the rest queue behind it.
            for i in 0..=n {
                let _ = s.admit(lane, (key, i));
            }
        }
        let top: Vec<(usize, u8)> = s.deepest(3).into_iter().map(|(d, m)| (d, m.0)).collect();
        assert_eq!(top, [(5, 3), (3, 1), (2, 5)]);
        assert_eq!(
            s.deepest(3)[0].1,
            &(3, 1),
            "the first queued item of the lane"
        );
        assert!(s.deepest(0).is_empty());
        assert_eq!(
            s.deepest(10).len(),
            4,
            "a lane with nothing queued is not listed"
        );
    }

    proptest! {
        /// Simulates a partition: messages (key, seq) arrive in order; at each step
        /// a random running message finishes. No two messages of one key are ever
        /// in flight together, and each key's messages start in arrival order.
        #[test]
        fn one_in_flight_per_key_in_order(
            keys in proptest::collection::vec(0u8..12, 1..300),
            picks in proptest::collection::vec(any::<usize>(), 600),
        ) {
            let mut s: KeyScheduler<(u8, usize)> = KeyScheduler::new();
            let mut running: Vec<(u8, usize)> = Vec::new();
            let mut started: HashMap<u8, Vec<usize>> = HashMap::new();
            let mut pick = picks.iter().cycle();
            let mut next = 0;
            let start = |m: (u8, usize), running: &mut Vec<(u8, usize)>, started: &mut HashMap<u8, Vec<usize>>| {
                assert!(!running.iter().any(|r| r.0 == m.0), "key {} already in flight", m.0);
                started.entry(m.0).or_default().push(m.1);
                running.push(m);
            };
            while next < keys.len() || !running.is_empty() {
                let arrive = next < keys.len() && (running.is_empty() || pick.next().unwrap() % 2 == 0);
                if arrive {
                    let m = (keys[next], next);
                    next += 1;
                    let lane = Lane::of(Ordering::Key, Some(&[m.0]));
                    if let Some(m) = s.admit(lane, m) { start(m, &mut running, &mut started); }
                } else {
                    let i = pick.next().unwrap() % running.len();
                    let done = running.swap_remove(i);
                    let lane = Lane::of(Ordering::Key, Some(&[done.0]));
                    if let Some(m) = s.complete(lane) { start(m, &mut running, &mut started); }
                }
            }
            prop_assert_eq!(s.queued(), 0);
            prop_assert_eq!(s.busy_lanes(), 0);
            for (k, seqs) in started {
                let expected: Vec<usize> = keys.iter().enumerate().filter(|(_, kk)| **kk == k).map(|(i, _)| i).collect();
                prop_assert_eq!(seqs, expected);
            }
        }
    }
}
