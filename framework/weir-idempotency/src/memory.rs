//! An in-memory [`IdempotencyStore`] for tests and single-process tools. Markers
//! die with the process, so it does not give exactly-once effect across restarts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::store::{Claim, IdempotencyStore, MarkerKey, StoreError};

type Key = (String, String);

enum Entry {
    Pending(Arc<Notify>),
    Done(Instant),
}

#[derive(Default)]
struct Inner {
    map: Mutex<HashMap<Key, Entry>>,
    down: AtomicBool,
}

/// In-memory store. Cloning shares the markers.
#[derive(Clone, Default)]
pub struct InMemoryStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for InMemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryStore")
            .field("markers", &self.len())
            .finish()
    }
}

/// A claim held in an [`InMemoryStore`]; dropping it uncommitted releases it.
pub struct MemoryTx {
    inner: Arc<Inner>,
    key: Option<Key>,
}

impl std::fmt::Debug for MemoryTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTx").field("key", &self.key).finish()
    }
}

impl MemoryTx {
    fn finish(mut self, done: bool) {
        if let Some(key) = self.key.take() {
            self.inner.finish(key, done);
        }
    }
}

impl Drop for MemoryTx {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.inner.finish(key, false);
        }
    }
}

impl Inner {
    fn finish(&self, key: Key, done: bool) {
        let mut map = self.map.lock();
        let prev = if done {
            map.insert(key, Entry::Done(Instant::now()))
        } else {
            map.remove(&key)
        };
        if let Some(Entry::Pending(n)) = prev {
            n.notify_waiters();
        }
    }
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Committed markers.
    pub fn len(&self) -> usize {
        self.inner
            .map
            .lock()
            .values()
            .filter(|e| matches!(e, Entry::Done(_)))
            .count()
    }

    /// True when no marker is committed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Simulates an outage: while `down`, every call fails with
    /// [`StoreError::Unavailable`]. For tests of outage handling.
    pub fn set_unavailable(&self, down: bool) {
        self.inner.down.store(down, Relaxed);
    }

    fn check_up(&self) -> Result<(), StoreError> {
        if self.inner.down.load(Relaxed) {
            Err(StoreError::Unavailable {
                backend: "memory",
                message: "store marked unavailable".into(),
            })
        } else {
            Ok(())
        }
    }
}

impl IdempotencyStore for InMemoryStore {
    type Tx = MemoryTx;

    async fn claim(&self, key: MarkerKey<'_>) -> Result<Claim<MemoryTx>, StoreError> {
        let k: Key = (key.group.to_owned(), key.message_id.to_owned());
        loop {
            self.check_up()?;
            let wait = {
                let mut map = self.inner.map.lock();
                match map.get(&k) {
                    Some(Entry::Done(_)) => return Ok(Claim::Duplicate),
                    Some(Entry::Pending(n)) => {
                        // Registered under the lock: `notify_waiters` after this
                        // point wakes it even before it is first polled.
                        let n = n.clone();
                        let mut fut = Box::pin(n.notified_owned());
                        fut.as_mut().enable();
                        fut
                    }
                    None => {
                        map.insert(k.clone(), Entry::Pending(Arc::new(Notify::new())));
                        return Ok(Claim::Fresh(MemoryTx {
                            inner: self.inner.clone(),
                            key: Some(k),
                        }));
                    }
                }
            };
            wait.await;
        }
    }

    async fn commit(&self, tx: MemoryTx) -> Result<(), StoreError> {
        self.check_up()?;
        tx.finish(true);
        Ok(())
    }

    async fn rollback(&self, tx: MemoryTx) -> Result<(), StoreError> {
        tx.finish(false);
        Ok(())
    }

    async fn is_processed(&self, group: &str, message_id: &str) -> Result<bool, StoreError> {
        self.check_up()?;
        Ok(matches!(
            self.inner
                .map
                .lock()
                .get(&(group.to_owned(), message_id.to_owned())),
            Some(Entry::Done(_))
        ))
    }

    async fn purge_older_than(&self, age: Duration) -> Result<u64, StoreError> {
        self.check_up()?;
        let now = Instant::now();
        let mut map = self.inner.map.lock();
        let before = map.len();
        map.retain(|_, e| match e {
            Entry::Done(at) => now.duration_since(*at) <= age,
            Entry::Pending(_) => true,
        });
        Ok((before - map.len()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> MarkerKey<'_> {
        MarkerKey {
            group: "g",
            message_id: id,
            topic: "t",
            partition: 0,
            offset: 0,
        }
    }

    #[tokio::test]
    async fn second_claim_waits_for_the_first_and_sees_its_outcome() {
        let s = InMemoryStore::new();
        let Claim::Fresh(tx) = s.claim(key("a")).await.unwrap() else {
            panic!("first claim must be fresh")
        };
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { s2.claim(key("a")).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a concurrent claim must wait");
        s.commit(tx).await.unwrap();
        assert!(matches!(waiter.await.unwrap(), Claim::Duplicate));
        assert!(s.is_processed("g", "a").await.unwrap());
        assert!(!s.is_processed("other-group", "a").await.unwrap());
    }

    #[tokio::test]
    async fn rollback_or_drop_releases_the_claim() {
        let s = InMemoryStore::new();
        let Claim::Fresh(tx) = s.claim(key("a")).await.unwrap() else {
            panic!()
        };
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { s2.claim(key("a")).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(tx);
        let Claim::Fresh(tx) = waiter.await.unwrap() else {
            panic!("after a drop the next claim is fresh")
        };
        s.rollback(tx).await.unwrap();
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn purge_removes_only_old_markers() {
        let s = InMemoryStore::new();
        for id in ["a", "b"] {
            let Claim::Fresh(tx) = s.claim(key(id)).await.unwrap() else {
                panic!()
            };
            s.commit(tx).await.unwrap();
        }
        assert_eq!(
            s.purge_older_than(Duration::from_secs(60)).await.unwrap(),
            0
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        let Claim::Fresh(tx) = s.claim(key("c")).await.unwrap() else {
            panic!()
        };
        s.commit(tx).await.unwrap();
        assert_eq!(
            s.purge_older_than(Duration::from_millis(20)).await.unwrap(),
            2
        );
        assert!(s.is_processed("g", "c").await.unwrap());
        assert!(!s.is_processed("g", "a").await.unwrap());
    }

    #[tokio::test]
    async fn unavailable_store_fails_claims() {
        let s = InMemoryStore::new();
        s.set_unavailable(true);
        let e = s.claim(key("a")).await.unwrap_err();
        assert!(e.is_unavailable());
        assert!(e.into_process_error().is_unavailable());
        s.set_unavailable(false);
        assert!(matches!(s.claim(key("a")).await.unwrap(), Claim::Fresh(_)));
    }
}
