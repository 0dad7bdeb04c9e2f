//! Layers: processors that wrap a processor, tower-style, so that the
//! concerns around a handler (a deadline, catching panics, in-place retries,
//! idempotency, your own metrics) compose in one visible stack:
//!
//! ```
//! use std::time::Duration;
//! use weir::processor::{CatchPanicLayer, ProcessorExt, RetryLayer, TimeoutLayer};
//! use weir::{Message, ProcessError, RetryPolicy, processor_fn};
//!
//! let handler = processor_fn(|msg: Message<String>| async move {
//!     let _ = msg.value();
//!     Ok::<_, ProcessError>(())
//! });
//! // Innermost first: each attempt gets 2 s, a panic is a terminal failure,
//! // and retryable failures (timeouts included) are retried three times in place.
//! let stack = handler
//!     .with(TimeoutLayer::new(Duration::from_secs(2)))
//!     .with(CatchPanicLayer)
//!     .with(RetryLayer::new(RetryPolicy::default()));
//! # let _ = stack;
//! ```
//!
//! A layer sees the decoded [`Message`] and the handler's result; it does not
//! see offsets, commits or tiers (the runtime owns those). The runtime adds its
//! own deadline (`handler_timeout`), panic guard and in-place retry
//! (`retry`) around the whole stack, so layers are for what you want inside
//! that: a tighter per-attempt deadline, retries of one dependency, your own
//! wrappers. The consumer processes a message exactly like a processor; a
//! layered processor *is* a processor.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;

use super::Processor;
use crate::config::RetryPolicy;
use crate::error::{HandlerPanic, HandlerTimeout, ProcessError};
use crate::message::Message;

/// Wraps a processor into another (tower's `Layer`, for [`Processor`]s).
pub trait Layer<P> {
    /// The wrapped processor.
    type Processor;

    /// Wraps `inner`.
    fn layer(&self, inner: P) -> Self::Processor;
}

/// `processor.with(layer)`: wraps a processor in a [`Layer`].
pub trait ProcessorExt<T>: Processor<T> + Sized {
    /// Wraps `self` in `layer`; later `with`s wrap the result (outermost last).
    fn with<L>(self, layer: L) -> L::Processor
    where
        L: Layer<Self>,
        L::Processor: Processor<T>,
    {
        layer.layer(self)
    }
}

impl<T, P: Processor<T>> ProcessorExt<T> for P {}

/// The layer that wraps nothing (the start of a [`Stack`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl<P> Layer<P> for Identity {
    type Processor = P;
    fn layer(&self, inner: P) -> P {
        inner
    }
}

/// Two layers as one: `Stack::new(inner, outer)` wraps with `inner` first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stack<Inner, Outer> {
    inner: Inner,
    outer: Outer,
}

impl<Inner, Outer> Stack<Inner, Outer> {
    /// `inner` wraps the processor, `outer` wraps the result.
    pub fn new(inner: Inner, outer: Outer) -> Self {
        Stack { inner, outer }
    }

    /// Adds `layer` outside this stack.
    pub fn push<L>(self, layer: L) -> Stack<Self, L> {
        Stack::new(self, layer)
    }
}

impl<P, Inner: Layer<P>, Outer: Layer<Inner::Processor>> Layer<P> for Stack<Inner, Outer> {
    type Processor = Outer::Processor;
    fn layer(&self, p: P) -> Self::Processor {
        self.outer.layer(self.inner.layer(p))
    }
}

/// Fails an attempt that takes longer than its deadline with a retryable
/// [`HandlerTimeout`] (class `timeout`); the attempt's future is dropped.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer(Duration);

impl TimeoutLayer {
    /// Each call of the inner processor gets `deadline`.
    pub fn new(deadline: Duration) -> Self {
        TimeoutLayer(deadline)
    }
}

impl<P> Layer<P> for TimeoutLayer {
    type Processor = Timeout<P>;
    fn layer(&self, inner: P) -> Timeout<P> {
        Timeout {
            inner,
            deadline: self.0,
        }
    }
}

/// See [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<P> {
    inner: P,
    deadline: Duration,
}

impl<T: Send + 'static, P: Processor<T>> Processor<T> for Timeout<P> {
    async fn process(&self, msg: Message<T>) -> Result<(), ProcessError> {
        let deadline = tokio::time::Instant::now().checked_add(self.deadline);
        within(deadline, self.deadline, self.inner.process(msg)).await
    }

    fn wants_in_flight(&self) -> usize {
        self.inner.wants_in_flight()
    }
}

/// `attempt`'s result, or a retryable [`HandlerTimeout`] for `limit` (class
/// `timeout`) once `deadline` has passed (`None`: no deadline). As
/// `tokio::time::timeout`, but its timer is made only when the attempt has
/// to wait: an attempt that finishes on its first poll (most do) registers
/// no timer and drops none.
pub(crate) async fn within(
    deadline: Option<tokio::time::Instant>,
    limit: Duration,
    attempt: impl Future<Output = Result<(), ProcessError>>,
) -> Result<(), ProcessError> {
    let Some(deadline) = deadline else {
        return attempt.await;
    };
    let mut attempt = std::pin::pin!(attempt);
    let mut timer = std::pin::pin!(None::<tokio::time::Sleep>);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = attempt.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if timer.is_none() {
            timer.set(Some(tokio::time::sleep_until(deadline)));
        }
        match timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(ProcessError::retryable(HandlerTimeout(
                limit,
            ))
            .with_class("timeout"))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Turns a panic of the inner processor into a terminal [`HandlerPanic`]
/// (class `panic`), so that the failure sink decides what happens to the
/// message instead of the panic unwinding through the layers outside.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<P> Layer<P> for CatchPanicLayer {
    type Processor = CatchPanic<P>;
    fn layer(&self, inner: P) -> CatchPanic<P> {
        CatchPanic(inner)
    }
}

/// See [`CatchPanicLayer`].
#[derive(Debug, Clone)]
pub struct CatchPanic<P>(P);

impl<T: Send + 'static, P: Processor<T>> Processor<T> for CatchPanic<P> {
    async fn process(&self, msg: Message<T>) -> Result<(), ProcessError> {
        match AssertUnwindSafe(self.0.process(msg)).catch_unwind().await {
            Ok(r) => r,
            Err(p) => Err(
                ProcessError::terminal(HandlerPanic(crate::runtime::panic_message(p)))
                    .with_class("panic"),
            ),
        }
    }

    fn wants_in_flight(&self) -> usize {
        self.0.wants_in_flight()
    }
}

/// Retries retryable failures in place with the [`RetryPolicy`]'s backoff, up
/// to its `max_attempts` calls in all; terminal and unavailable failures are
/// returned at once (the runtime waits out an unavailable dependency without
/// spending attempts). Each retry sees [`Message::attempt`] one higher. The
/// wait ends early, with the last error, when the message is cancelled
/// (revoke, shutdown). Needs a `Clone` value: the retry gets a copy.
#[derive(Debug, Clone)]
pub struct RetryLayer(RetryPolicy);

impl RetryLayer {
    /// Retries with `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryLayer(policy)
    }
}

impl<P> Layer<P> for RetryLayer {
    type Processor = Retry<P>;
    fn layer(&self, inner: P) -> Retry<P> {
        Retry {
            inner,
            policy: self.0.clone(),
        }
    }
}

/// See [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct Retry<P> {
    inner: P,
    policy: RetryPolicy,
}

impl<T: Clone + Send + Sync + 'static, P: Processor<T>> Processor<T> for Retry<P> {
    async fn process(&self, msg: Message<T>) -> Result<(), ProcessError> {
        let mut tries: u32 = 1;
        loop {
            let attempt = msg.attempt().saturating_add(tries - 1);
            if tries >= self.policy.max_attempts {
                // No retry can follow: the last attempt takes the message
                // itself, so a single-attempt policy never clones the value.
                return self.inner.process(msg.into_attempt(attempt)).await;
            }
            let copy = msg.copy_for_attempt(attempt);
            let err = match self.inner.process(copy).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if !err.is_retryable() || err.is_unavailable() {
                return Err(err);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.policy.backoff(tries)) => {}
                _ = msg.cancellation().cancelled() => return Err(err),
            }
            tries += 1;
        }
    }

    fn wants_in_flight(&self) -> usize {
        self.inner.wants_in_flight()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::error::ErrorKind;
    use crate::message::RawMessage;
    use crate::processor_fn;

    fn raw() -> Arc<RawMessage> {
        Arc::new(RawMessage {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            timestamp_ms: None,
            key: None,
            payload: None,
            headers: Default::default(),
        })
    }

    fn msg(cancel: CancellationToken) -> Message<String> {
        Message::new("v".to_string(), raw(), 1, cancel)
    }

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..Default::default()
        }
    }

    /// A handler that fails with `fail(attempt)` and records the attempts it saw.
    fn scripted(
        seen: Arc<Mutex<Vec<u32>>>,
        fail: fn(u32) -> Option<ProcessError>,
    ) -> impl Processor<String> {
        processor_fn(move |m: Message<String>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(m.attempt());
                assert_eq!(m.value(), "v", "every attempt sees the value");
                fail(m.attempt()).map_or(Ok(()), Err)
            }
        })
    }

    #[tokio::test]
    async fn timeout_fails_a_slow_attempt_as_retryable() {
        let slow = processor_fn(|_m: Message<String>| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, ProcessError>(())
        })
        .with(TimeoutLayer::new(Duration::from_millis(20)));
        let e = slow
            .process(msg(CancellationToken::new()))
            .await
            .unwrap_err();
        assert_eq!(e.class(), "timeout");
        assert_eq!(e.kind(), ErrorKind::Retryable);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_counts_from_the_call_and_lets_a_waiting_attempt_finish_in_time() {
        let started = tokio::time::Instant::now();
        // 30 ms pass before the attempt first waits: a deadline counted from
        // its first wait (not from the call) would let it wait 20 ms more.
        let late = processor_fn(|_m: Message<String>| async {
            tokio::time::advance(Duration::from_millis(30)).await;
            std::future::pending::<()>().await;
            Ok::<_, ProcessError>(())
        })
        .with(TimeoutLayer::new(Duration::from_millis(20)));
        let e = late
            .process(msg(CancellationToken::new()))
            .await
            .unwrap_err();
        assert_eq!(e.class(), "timeout");
        assert_eq!(started.elapsed(), Duration::from_millis(30));
        // Waits, and finishes before its deadline: its own result.
        let waits = processor_fn(|_m: Message<String>| async {
            tokio::time::sleep(Duration::from_millis(15)).await;
            Err::<(), _>(ProcessError::terminal(std::io::Error::other("own")))
        })
        .with(TimeoutLayer::new(Duration::from_millis(20)));
        let e = waits
            .process(msg(CancellationToken::new()))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Terminal);
        // Finishes at once: its result, with a deadline too large to add.
        let huge = processor_fn(|_m: Message<String>| async { Ok::<_, ProcessError>(()) })
            .with(TimeoutLayer::new(Duration::MAX));
        huge.process(msg(CancellationToken::new())).await.unwrap();
    }

    #[tokio::test]
    async fn catch_panic_turns_a_panic_into_a_terminal_failure() {
        let p = processor_fn(|m: Message<String>| async move {
            if m.offset() == 7 {
                panic!("handler bug at {}", m.offset());
            }
            Ok::<_, ProcessError>(())
        })
        .with(CatchPanicLayer);
        let e = p.process(msg(CancellationToken::new())).await.unwrap_err();
        assert_eq!(e.class(), "panic");
        assert_eq!(e.kind(), ErrorKind::Terminal);
        assert!(e.to_string().contains("handler bug at 7"), "{e}");
    }

    #[tokio::test]
    async fn retry_retries_retryable_failures_with_rising_attempts() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let p = scripted(seen.clone(), |a| {
            (a < 3).then(|| ProcessError::retryable(std::io::Error::other("503")))
        })
        .with(RetryLayer::new(policy(5)));
        p.process(msg(CancellationToken::new())).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn retry_stops_at_max_attempts_and_never_retries_terminal_or_unavailable() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let p = scripted(seen.clone(), |_| {
            Some(ProcessError::retryable(std::io::Error::other("503")))
        })
        .with(RetryLayer::new(policy(3)));
        assert!(p.process(msg(CancellationToken::new())).await.is_err());
        assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
        for fail in [
            (|_| Some(ProcessError::terminal(std::io::Error::other("bad")))) as fn(u32) -> _,
            |_| Some(ProcessError::unavailable(std::io::Error::other("db down"))),
        ] {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let p = scripted(seen.clone(), fail).with(RetryLayer::new(policy(3)));
            assert!(p.process(msg(CancellationToken::new())).await.is_err());
            assert_eq!(*seen.lock().unwrap(), vec![1]);
        }
    }

    #[tokio::test]
    async fn retry_waits_end_when_the_message_is_cancelled() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let long = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            ..Default::default()
        };
        let p = scripted(seen.clone(), |_| {
            Some(ProcessError::retryable(std::io::Error::other("503")))
        })
        .with(RetryLayer::new(long));
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.cancel();
        });
        let r = tokio::time::timeout(Duration::from_secs(5), p.process(msg(cancel))).await;
        assert!(r.expect("cancellation ends the wait").is_err());
        assert_eq!(*seen.lock().unwrap(), vec![1]);
    }

    /// Counts its clones.
    struct Counted(Arc<std::sync::atomic::AtomicUsize>);

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Counted(self.0.clone())
        }
    }

    #[tokio::test]
    async fn retry_clones_the_value_only_for_attempts_that_can_be_retried() {
        let clones = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let failing = || {
            let s = seen.clone();
            processor_fn(move |m: Message<Counted>| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(m.attempt());
                    Err::<(), _>(ProcessError::retryable(std::io::Error::other("503")))
                }
            })
        };
        let m = |a| Message::new(Counted(clones.clone()), raw(), a, CancellationToken::new());
        let count = || clones.load(std::sync::atomic::Ordering::SeqCst);
        let once = failing().with(RetryLayer::new(policy(1)));
        assert!(once.process(m(1)).await.is_err());
        assert_eq!(count(), 0, "one attempt: no copy");
        let thrice = failing().with(RetryLayer::new(policy(3)));
        assert!(thrice.process(m(4)).await.is_err());
        assert_eq!(
            count(),
            2,
            "three attempts: copies for the first two, the last takes the message"
        );
        assert_eq!(*seen.lock().unwrap(), [1, 4, 5, 6]);
    }

    #[tokio::test]
    async fn layers_compose_innermost_first() {
        // Timeout inside retry: each attempt gets its own deadline.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let p = processor_fn(move |m: Message<String>| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(m.attempt());
                if m.attempt() == 1 {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                Ok::<_, ProcessError>(())
            }
        });
        let stacked = Stack::new(TimeoutLayer::new(Duration::from_millis(20)), Identity)
            .push(RetryLayer::new(policy(2)))
            .layer(p);
        stacked
            .process(msg(CancellationToken::new()))
            .await
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
    }
}
