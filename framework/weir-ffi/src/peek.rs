//! Whether a consumed message surely has no headers, answered from
//! librdkafka's message struct instead of its header parse.
//!
//! `rd_kafka_message_headers` is the only public way to learn whether a
//! message has headers, and for a record without any it still allocates and
//! frees a shadow buffer: about 1,100 instructions per message, 45% of
//! Weir's poll thread (callgrind, `benches/README.md`). `src/peek.c` reads
//! the unparsed header section's first byte instead; see that file for the
//! conditions. It is compiled by `build.rs` against the private headers of
//! the librdkafka tree rdkafka-sys built, and used only when that tree's
//! version is the one linked ([`header_peek_active`]); otherwise every
//! answer is "ask librdkafka" and nothing else changes.

use rdkafka::message::BorrowedMessage;
use rdkafka_sys as rd;

#[cfg(weir_peek)]
mod shim {
    use super::rd;
    use std::ffi::c_int;
    use std::sync::LazyLock;

    unsafe extern "C" {
        /// `RD_KAFKA_VERSION` of the headers `peek.c` was compiled with.
        fn weir_peek_version() -> c_int;
        /// 1 when `m` surely has no headers; 0 for "ask librdkafka".
        fn weir_peek_headerless(m: *const rd::rd_kafka_message_t) -> c_int;
    }

    /// The shim matches the library linked into this process, and
    /// `WEIR_HEADER_PEEK` does not turn it off.
    static ACTIVE: LazyLock<bool> = LazyLock::new(|| {
        // SAFETY: neither function takes an argument; both return a
        // constant (the first is `peek.c`'s, the second librdkafka's).
        let same = unsafe { weir_peek_version() == rd::rd_kafka_version() };
        same && super::allowed(std::env::var_os(super::SWITCH).as_deref())
    });

    pub(super) fn active() -> bool {
        *ACTIVE
    }

    /// # Safety
    /// `m` is a live message, not destroyed during the call.
    pub(super) unsafe fn headerless(m: *const rd::rd_kafka_message_t) -> bool {
        // SAFETY: the caller's guarantee. `peek.c` reads only fields of the
        // message (laid out as the linked library lays them out: `ACTIVE`
        // checked the version, `build.rs` used that tree's own headers) and
        // the first byte of its header section when that section is not
        // empty; it writes nothing.
        *ACTIVE && unsafe { weir_peek_headerless(m) } != 0
    }
}

/// Without `peek.c` (no librdkafka tree to compile it against): every
/// answer is "ask librdkafka".
#[cfg(not(weir_peek))]
mod shim {
    use super::rd;

    pub(super) fn active() -> bool {
        false
    }

    /// # Safety
    /// None needed; the signature matches the real shim's.
    pub(super) unsafe fn headerless(_: *const rd::rd_kafka_message_t) -> bool {
        false
    }
}

/// The environment variable that turns the peek off for a process:
/// `WEIR_HEADER_PEEK=off` (or `0`, `false`, `no`). Read once, at the first
/// message. Every message's headers are then read with
/// `rd_kafka_message_headers`: the same headers, at librdkafka's cost.
pub const SWITCH: &str = "WEIR_HEADER_PEEK";

/// Whether the value of [`SWITCH`] leaves the peek on.
#[cfg_attr(not(weir_peek), allow(dead_code))]
fn allowed(v: Option<&std::ffi::OsStr>) -> bool {
    !v.and_then(|v| v.to_str()).is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "off" | "0" | "false" | "no"
        )
    })
}

/// Whether this build answers [`surely_headerless`] from librdkafka's
/// message struct: rdkafka-sys built librdkafka from source (its default)
/// and that version is the one linked, and [`SWITCH`] does not turn it off.
/// Otherwise this is `false` and every message's headers are read with
/// `rd_kafka_message_headers`, the same result at its usual cost.
pub fn header_peek_active() -> bool {
    shim::active()
}

/// # Safety
/// `m` is a live message, not destroyed during the call.
pub(crate) unsafe fn headerless_raw(m: *const rd::rd_kafka_message_t) -> bool {
    // SAFETY: the caller's guarantee.
    unsafe { shim::headerless(m) }
}

/// `true` when `m` surely has no headers, so that reading them (rust-rdkafka's
/// `Message::headers`) can be skipped: it would answer `None`. `false`
/// means "read them": the message has headers, or this build cannot tell
/// cheaply ([`header_peek_active`]), or the message is a producer's.
///
/// ```no_run
/// use rdkafka::consumer::{BaseConsumer, Consumer};
/// use rdkafka::message::Message;
/// use rdkafka::ClientConfig;
///
/// let c: BaseConsumer = ClientConfig::new()
///     .set("bootstrap.servers", "127.0.0.1:9092")
///     .set("group.id", "peek")
///     .create()
///     .expect("consumer");
/// c.subscribe(&["orders"]).expect("subscribe");
/// if let Some(Ok(m)) = c.poll(std::time::Duration::from_secs(1)) {
///     let headers = if weir_ffi::surely_headerless(&m) { None } else { m.headers() };
///     println!("{} headers", headers.map_or(0, |h| rdkafka::message::Headers::count(h)));
/// }
/// ```
pub fn surely_headerless(m: &BorrowedMessage<'_>) -> bool {
    // SAFETY: a `BorrowedMessage` is a live message for its lifetime, which
    // covers this call.
    unsafe { headerless_raw(m.ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_switch_turns_the_peek_off_only_when_it_says_so() {
        assert!(allowed(None));
        for on in ["on", "1", "", "yes", "whatever"] {
            assert!(allowed(Some(OsStr::new(on))), "{on:?}");
        }
        for off in ["off", "OFF", "0", "false", " no "] {
            assert!(!allowed(Some(OsStr::new(off))), "{off:?}");
        }
    }
}
