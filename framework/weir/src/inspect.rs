//! What holds each partition's committed offset, live.
//!
//! When lag grows, the on-call question is "which message is holding us?".
//! A partition's committed offset cannot pass its oldest unfinished message:
//! that message is the partition's **holder**. Every commit interval the
//! dispatcher writes a [`Snapshot`] of its partitions: the holder (offset,
//! key, attempt, what it waits for and for how long), the finished messages
//! above it that its commit holds back, and the keys with the longest queues.
//! Read it with [`ConsumerHandle::inspect`](crate::ConsumerHandle::inspect),
//! from `weir-telemetry`'s `/inspect` endpoint, or with `weir inspect`.
//!
//! ```
//! # fn demo(handle: &weir::ConsumerHandle) {
//! if let Some(snapshot) = handle.inspect() {
//!     for p in &snapshot.partitions {
//!         if let Some(h) = &p.holder {
//!             println!(
//!                 "{}/{} held at {} ({:?}, attempt {}, {} ms) with {} finished behind it",
//!                 p.topic, p.partition, h.offset, h.state, h.attempt, h.waiting_ms, p.finished_above
//!             );
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! Keys are often user or account IDs: a snapshot carries them, and
//! [`Snapshot::without_keys`] drops them (keeping a stable hash of each key
//! to tell keys apart), which is what the HTTP endpoint serves unless told
//! otherwise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::message::RawMessage;

/// Every assigned partition of one consumer, as of `taken_at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The consumer group.
    pub group: String,
    /// When it was taken (epoch ms); refreshed every commit interval.
    pub taken_at_ms: i64,
    /// The assigned partitions, by topic and partition.
    pub partitions: Vec<PartitionView>,
}

/// One assigned partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionView {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset this member last committed (`None`: none yet).
    pub committed: Option<i64>,
    /// The next offset that may be committed now: the holder's offset, or one
    /// past the newest fetched offset when nothing is unfinished.
    pub committable: Option<i64>,
    /// The oldest unfinished message: what the commit waits for.
    pub holder: Option<Holder>,
    /// Finished messages above the holder, uncommitted until it finishes (a
    /// restart processes them again).
    pub finished_above: usize,
    /// Fetched messages not finished (the holder included).
    pub unfinished: usize,
    /// Messages running now.
    pub in_flight: usize,
    /// Messages held until a retry tier's due time.
    pub delayed: usize,
    /// Held back by backpressure.
    pub paused: bool,
    /// Why the partition is halted, if it is.
    pub halted: Option<String>,
    /// The keys with the most messages queued behind their running one,
    /// longest first (at most [`TOP_KEYS`]).
    pub top_keys: Vec<KeyDepth>,
}

/// How many keys [`PartitionView::top_keys`] lists.
pub const TOP_KEYS: usize = 5;

/// The message that holds a partition's commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    /// Its offset.
    pub offset: i64,
    /// Its key (UTF-8, lossy, at most 128 characters); `None` without a key
    /// or in a snapshot [without keys](Snapshot::without_keys).
    pub key: Option<String>,
    /// A stable 64-bit hash of the key bytes (FNV-1a, hex): the same key has
    /// the same hash on every member and in every snapshot.
    pub key_hash: Option<String>,
    /// Its delivery attempt (1 on the first delivery; counts retry tiers and
    /// in-place retries).
    pub attempt: u32,
    /// What it is doing.
    pub state: HolderState,
    /// Time since this member fetched it (ms).
    pub waiting_ms: i64,
    /// Time since its timestamp (ms), when it has one.
    pub age_ms: Option<i64>,
}

/// What the holder is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderState {
    /// Its handler is running (or waiting to retry in place).
    Running,
    /// Waiting for an in-flight slot (`max_in_flight`, `max_in_flight_per_partition`, a spent retry budget).
    Ready,
    /// Held until its retry tier's due time.
    Delayed,
    /// The partition is halted at it.
    Halted,
}

/// A key's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyDepth {
    /// The key (as [`Holder::key`]).
    pub key: Option<String>,
    /// Its hash (as [`Holder::key_hash`]).
    pub key_hash: Option<String>,
    /// Messages of this key waiting behind the running one.
    pub queued: usize,
}

impl Snapshot {
    /// The snapshot with every key removed (hashes kept).
    pub fn without_keys(mut self) -> Self {
        for p in &mut self.partitions {
            if let Some(h) = &mut p.holder {
                h.key = None;
            }
            for k in &mut p.top_keys {
                k.key = None;
            }
        }
        self
    }

    /// The view of `topic`/`partition`.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionView> {
        self.partitions
            .iter()
            .find(|p| p.topic == topic && p.partition == partition)
    }
}

/// A key for display: UTF-8 (lossy), control characters escaped, at most 128 characters.
pub(crate) fn key_text(key: &[u8]) -> String {
    let s = String::from_utf8_lossy(key);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == 128 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// FNV-1a 64 of the key bytes, hex: stable across processes and versions.
pub(crate) fn key_hash(key: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

type Coordinates = (Arc<str>, i32, i64);

/// Where the dispatcher leaves its snapshot and the runner the attempts of
/// messages retrying in place (written only on that slow path).
#[derive(Debug, Default)]
pub(crate) struct Board {
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    attempts: Mutex<HashMap<Coordinates, u32>>,
}

impl Board {
    pub(crate) fn publish(&self, s: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(s));
    }

    pub(crate) fn latest(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The runner is on `attempt` of `m` (in-place retries only).
    pub(crate) fn note_attempt(&self, m: &RawMessage, attempt: u32) {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((m.topic.clone(), m.partition, m.offset), attempt);
    }

    /// The run of `m` ended.
    pub(crate) fn forget(&self, m: &RawMessage) {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(m.topic.clone(), m.partition, m.offset));
    }

    /// The in-place attempt noted for `m`, if any.
    pub(crate) fn attempt_of(&self, m: &RawMessage) -> Option<u32> {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(m.topic.clone(), m.partition, m.offset))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_shown_safely_and_hashed_stably() {
        assert_eq!(key_text(b"user-42"), "user-42");
        assert_eq!(key_text(b"a\nb\x07"), "a\\nb\\u{7}");
        assert_eq!(key_text(&[0xff, b'x']), "\u{fffd}x");
        assert_eq!(key_text(&[b'k'; 300]).chars().count(), 129);
        // FNV-1a 64 test vectors.
        assert_eq!(key_hash(b""), "cbf29ce484222325");
        assert_eq!(key_hash(b"a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn without_keys_drops_keys_and_keeps_hashes() {
        let s = Snapshot {
            group: "g".into(),
            taken_at_ms: 1,
            partitions: vec![PartitionView {
                topic: "t".into(),
                partition: 0,
                committed: None,
                committable: Some(3),
                holder: Some(Holder {
                    offset: 3,
                    key: Some("user-42".into()),
                    key_hash: Some(key_hash(b"user-42")),
                    attempt: 1,
                    state: HolderState::Running,
                    waiting_ms: 5,
                    age_ms: None,
                }),
                finished_above: 0,
                unfinished: 1,
                in_flight: 1,
                delayed: 0,
                paused: false,
                halted: None,
                top_keys: vec![KeyDepth {
                    key: Some("user-42".into()),
                    key_hash: Some(key_hash(b"user-42")),
                    queued: 2,
                }],
            }],
        };
        let text = serde_json::to_string(&s.clone().without_keys()).unwrap();
        assert!(!text.contains("user-42"), "{text}");
        assert!(text.contains(&key_hash(b"user-42")), "{text}");
        let p = s.partition("t", 0).unwrap();
        assert_eq!(p.holder.as_ref().unwrap().state, HolderState::Running);
    }

    #[test]
    fn the_board_keeps_in_place_attempts_until_the_run_ends() {
        let b = Board::default();
        let m = crate::message::test_raw("t", &[]);
        assert_eq!(b.attempt_of(&m), None);
        b.note_attempt(&m, 3);
        assert_eq!(b.attempt_of(&m), Some(3));
        b.forget(&m);
        assert_eq!(b.attempt_of(&m), None);
    }
}
