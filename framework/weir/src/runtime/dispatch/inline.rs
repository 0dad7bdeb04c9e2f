//! The dispatch round: starts ready messages within the caps, polling each
//! run once inline first (a handler that does not wait finishes without a
//! task), with the policy that stops inlining CPU-heavy handlers.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::super::run::Outcome;
use super::{Completion, DISPATCH_BUDGET, Dispatcher, PartitionControl, RunMessage};
use crate::error::WeirError;

/// Decides whether to poll a message's run inline before spawning it: yes
/// while first polls are cheap (a moving average under
/// `inline_first_poll_limit`); when they are
/// not (CPU-heavy handlers), every `PROBE`-th message is still tried so the
/// average follows the handler when it becomes cheap again.
pub(super) struct InlinePolicy {
    /// `inline_first_poll_limit`, in ns.
    limit_ns: u64,
    avg_ns: u64,
    skipped: u32,
    /// Counts tried first polls, so that one in `SAMPLE` is timed.
    tried: u32,
}

impl InlinePolicy {
    const PROBE: u32 = 64;
    /// One first poll in this many is timed (two clock reads per timed poll);
    /// while first polls are slow (spawning most), every probe is timed.
    const SAMPLE: u32 = 8;

    pub(super) fn new(limit: Duration) -> Self {
        InlinePolicy {
            limit_ns: (limit.as_nanos().min(u128::from(u64::MAX / 2)) as u64).max(1),
            avg_ns: 0,
            skipped: 0,
            tried: 0,
        }
    }

    /// Whether to time this first poll.
    fn sample(&mut self) -> bool {
        if self.avg_ns >= self.limit_ns {
            return true;
        }
        self.tried = self.tried.wrapping_add(1);
        self.tried.is_multiple_of(Self::SAMPLE)
    }

    fn should_try(&mut self) -> bool {
        if self.avg_ns < self.limit_ns {
            return true;
        }
        self.skipped += 1;
        if self.skipped >= Self::PROBE {
            self.skipped = 0;
            return true;
        }
        false
    }

    /// Polls `fut` once on this thread when the policy says to try: its
    /// outcome if it finished without waiting. A panic outside the handler
    /// (the runner catches the handler's) is a Weir bug: an internal error.
    fn poll_once<F: Future<Output = Outcome>>(
        &mut self,
        fut: &mut Pin<Box<F>>,
    ) -> Result<Option<Outcome>, WeirError> {
        if !self.should_try() {
            return Ok(None);
        }
        let started = self.sample().then(std::time::Instant::now);
        let mut cx = Context::from_waker(Waker::noop());
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
        if let Some(started) = started {
            self.record(started.elapsed());
        }
        match polled {
            Ok(Poll::Ready(outcome)) => Ok(Some(outcome)),
            Ok(Poll::Pending) => Ok(None),
            Err(p) => Err(WeirError::Internal(format!(
                "message run panicked outside the handler: {}",
                super::super::run::panic_message(p)
            ))),
        }
    }

    fn record(&mut self, took: Duration) {
        let ns = took.as_nanos().min(u128::from(u64::MAX / 16)) as u64;
        // Exponential moving average with weight 1/8.
        self.avg_ns = self.avg_ns - self.avg_ns / 8 + ns / 8;
    }
}

impl<R: RunMessage, K: PartitionControl> Dispatcher<R, K> {
    /// Starts ready messages within the caps. Each message's run is polled once
    /// right here first: a handler that completes without waiting (a no-op, a
    /// cache hit, a cheap transformation) finishes without a task spawn, a
    /// cross-thread wake-up and a join; one that waits is spawned onto the
    /// runtime as before. Handlers that run long on their first poll (CPU-heavy
    /// synchronous work) are detected and spawned directly, so they keep
    /// running in parallel on every worker thread.
    pub(super) fn dispatch_ready(&mut self) -> Result<(), WeirError> {
        if self.budget_spent() {
            // The retry budget is spent: nothing new starts until it recovers.
            return Ok(());
        }
        let mut budget = DISPATCH_BUDGET;
        let mut done = std::mem::take(&mut self.inline_done);
        // The box of a future that finished inline, reused for the next
        // message (no allocation per message while handlers finish inline).
        let mut spare = None;
        let closing = self.tx_closing();
        loop {
            let mut visits = self.runnable.len();
            while visits > 0 && self.in_flight < self.limits.max_in_flight && budget > 0 {
                visits -= 1;
                let Some(epoch) = self.runnable.pop_front() else {
                    break;
                };
                let Some(st) = self.parts.get_mut(&epoch) else {
                    continue;
                };
                // While a transaction closes, a revoking partition still
                // runs what is at or below its cut, and nothing above it
                // starts anywhere (see `transaction`).
                if (st.revoking && !closing) || st.halted.is_some() {
                    st.in_runnable = false;
                    continue;
                }
                while self.in_flight < self.limits.max_in_flight
                    && st.in_flight < self.limits.max_in_flight_per_partition
                    && budget > 0
                    && let Some((lane, m)) = super::transaction::next_ready(st, closing)
                {
                    budget -= 1;
                    st.in_flight += 1;
                    self.in_flight += 1;
                    let offset = m.offset;
                    st.max_started = Some(st.max_started.map_or(offset, |o| o.max(offset)));
                    let generation = st.generation;
                    // Boxed before the first poll (a polled future cannot move);
                    // wrapped into a task only if it has to wait.
                    let message = m.clone();
                    let run = self.runner.clone().run_message(m, st.cancel.clone());
                    let mut fut = match spare.take() {
                        Some(mut b) => {
                            Pin::set(&mut b, run);
                            b
                        }
                        None => Box::pin(run),
                    };
                    if self.limits.inline_first_poll {
                        match self.inline.poll_once(&mut fut) {
                            Ok(Some(outcome)) => {
                                done.push(Completion {
                                    epoch,
                                    generation,
                                    offset,
                                    lane,
                                    outcome,
                                    message,
                                });
                                spare = Some(fut);
                                continue;
                            }
                            Ok(None) => {}
                            Err(e) => {
                                self.inline_done = done;
                                return Err(e);
                            }
                        }
                    }
                    // Pending (or not tried): the task polls it again with its
                    // own waker, which replaces the no-op one of the first poll.
                    self.tasks.spawn(async move {
                        Completion {
                            epoch,
                            generation,
                            offset,
                            lane,
                            outcome: fut.await,
                            message,
                        }
                    });
                }
                // (Ready above a transaction's cut: it stays in the round,
                // and starts once the close has ended.)
                if st.ready.is_empty() {
                    st.in_runnable = false;
                } else {
                    self.runnable.push_back(epoch);
                }
            }
            if done.is_empty() {
                break;
            }
            let mut touched = None;
            for c in done.drain(..) {
                let epoch = c.epoch;
                self.on_completion(c);
                self.touch(&mut touched, Some(epoch));
            }
            self.touch(&mut touched, None);
            if budget == 0 {
                break;
            }
        }
        self.inline_done = done;
        self.stats.in_flight_now(self.in_flight as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_policy_times_one_cheap_first_poll_in_eight_and_every_probe() {
        let mut p = InlinePolicy::new(Duration::from_micros(50));
        let timed = (0..800).filter(|_| p.sample()).count();
        assert_eq!(timed, 100, "cheap first polls: one in SAMPLE is timed");
        // One slow timed poll is enough to leave inline mode, so a CPU-heavy
        // handler is detected within SAMPLE messages.
        p.record(Duration::from_millis(2));
        assert!(!p.should_try(), "slow first poll detected");
        assert!(p.sample(), "while slow, every probe is timed");
    }

    #[test]
    fn the_limit_is_the_configured_one() {
        // Under a profiler a no-op's first poll takes far longer than 50 µs:
        // a raised limit keeps such handlers inline.
        let mut p = InlinePolicy::new(Duration::from_millis(10));
        for _ in 0..100 {
            assert!(p.should_try());
            p.record(Duration::from_millis(2));
        }
        assert!(p.should_try(), "2 ms first polls stay under a 10 ms limit");
        let mut strict = InlinePolicy::new(Duration::from_micros(50));
        strict.record(Duration::from_millis(2));
        assert!(!strict.should_try(), "and over the default 50 µs");
    }

    #[test]
    fn inline_policy_backs_off_for_slow_first_polls_and_probes() {
        let mut p = InlinePolicy::new(Duration::from_micros(50));
        for _ in 0..100 {
            assert!(p.should_try(), "cheap first polls stay inline");
            p.record(Duration::from_micros(1));
        }
        for _ in 0..50 {
            if p.should_try() {
                p.record(Duration::from_millis(2));
            }
        }
        let tried = (0..640).filter(|_| p.should_try()).count();
        assert_eq!(
            tried, 10,
            "slow handlers: only every 64th message is probed"
        );
        // Cheap again: the probes bring the average down and inline comes back.
        let mut tries = 0;
        while !(0..4).all(|_| p.should_try()) {
            p.record(Duration::from_nanos(500));
            tries += 1;
            assert!(tries < 10_000, "never returned to inline polling");
        }
    }
}
