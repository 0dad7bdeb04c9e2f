//! The [`Processor`] trait, the one thing a user writes, and the [`Layer`]s
//! that wrap it. This room knows messages and results only: no offsets,
//! partitions, librdkafka or retry tiers.

mod layer;

pub(crate) use layer::within;
pub use layer::{
    CatchPanic, CatchPanicLayer, Identity, Layer, ProcessorExt, Retry, RetryLayer, Stack, Timeout,
    TimeoutLayer,
};

use std::future::Future;

use crate::error::ProcessError;
use crate::message::Message;

/// Handles one message. Implement it with an `async fn`:
///
/// ```
/// use weir::{Message, ProcessError, Processor};
///
/// struct Print;
///
/// impl Processor<String> for Print {
///     async fn process(&self, msg: Message<String>) -> Result<(), ProcessError> {
///         println!("{} -> {} chars", msg.coordinates(), msg.value().len());
///         Ok(())
///     }
/// }
/// ```
///
/// The runtime calls it concurrently for messages of different keys (see
/// [`Ordering`](crate::Ordering)), so it takes `&self`. Return
/// [`ProcessError::retryable`] for transient failures and
/// [`ProcessError::terminal`] for poison input. A panic counts as a terminal
/// failure of that message, not a dead worker.
pub trait Processor<T>: Send + Sync + 'static {
    /// Processes one message.
    fn process(&self, msg: Message<T>) -> impl Future<Output = Result<(), ProcessError>> + Send;

    /// How many messages this processor needs in flight at once to work as
    /// configured: 1 by default; a [`Batched`](crate::batch::Batched)
    /// processor needs `max_batch` × `max_batches_in_flight`. The consumer
    /// builder warns when `max_in_flight` is lower. Wrappers forward their
    /// inner processor's answer.
    fn wants_in_flight(&self) -> usize {
        1
    }
}

/// A processor made from an async closure; see [`processor_fn`].
#[derive(Clone)]
pub struct ProcessorFn<F>(F);

impl<F> std::fmt::Debug for ProcessorFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessorFn")
    }
}

/// Turns `Fn(Message<T>) -> impl Future<Output = Result<(), ProcessError>>` into a [`Processor`].
///
/// ```
/// let p = weir::processor_fn(|msg: weir::Message<String>| async move {
///     let _ = msg.value();
///     Ok::<_, weir::ProcessError>(())
/// });
/// # let _ = p;
/// ```
pub fn processor_fn<F>(f: F) -> ProcessorFn<F> {
    ProcessorFn(f)
}

impl<T, F, Fut> Processor<T> for ProcessorFn<F>
where
    T: Send + 'static,
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ProcessError>> + Send,
{
    fn process(&self, msg: Message<T>) -> impl Future<Output = Result<(), ProcessError>> + Send {
        (self.0)(msg)
    }
}
