//! One file per benchmark scenario; `main.rs` holds the arguments, the shared fixtures and the dispatch.

pub(crate) mod baseline;
pub(crate) mod batch_sink;
pub(crate) mod keyed;
pub(crate) mod memory;
pub(crate) mod outbox;
pub(crate) mod overhead;
pub(crate) mod peers;
pub(crate) mod rebalance;
pub(crate) mod retry;
pub(crate) mod transactions;
