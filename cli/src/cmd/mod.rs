//! One file per `weir` command; `main.rs` holds the arguments and the exit codes.

pub(crate) mod console;
pub(crate) mod dlq;
pub(crate) mod groups;
pub(crate) mod inspect;
pub(crate) mod offsets;
pub(crate) mod outbox;
pub(crate) mod render;
pub(crate) mod replay;
