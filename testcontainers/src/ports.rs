//! Free loopback ports for the processes the fixtures start.
//!
//! A port is found by binding `127.0.0.1:0` and reading what the kernel
//! chose. Dropping that listener before asking for the next port lets the
//! kernel hand the same port out again, and Kafka refuses a node whose
//! listeners share a port (`If you have two listeners on the same port ...`).
//! So [`free_ports`] holds every listener until it has all the ports it was
//! asked for, and never hands out a port it handed out before in this process
//! (a stopped fixture's port can be bound again by a later fixture while a
//! client still retries the old address).

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

use crate::TestkitError;

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// `n` distinct loopback ports that were free a moment ago and that this
/// process has not handed out before.
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>, TestkitError> {
    let mut seen = handed_out()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    let mut tries = 0;
    while ports.len() < n {
        tries += 1;
        if tries > 1000 + 10 * n {
            return Err(TestkitError::Other(format!(
                "found only {} of {n} free loopback ports after {tries} tries: is the ephemeral port range exhausted?",
                ports.len()
            )));
        }
        let l =
            TcpListener::bind("127.0.0.1:0").map_err(TestkitError::io("finding a free port"))?;
        let port = l
            .local_addr()
            .map_err(TestkitError::io("finding a free port"))?
            .port();
        // Keep a port we hand out bound until we have them all (so that
        // this call gets distinct ports); close one handed out before at
        // once, since a fixture may be about to bind it.
        if seen.insert(port) {
            held.push(l);
            ports.push(port);
        }
    }
    drop(held);
    Ok(ports)
}

/// One port from [`free_ports`].
pub(crate) fn free_port() -> Result<u16, TestkitError> {
    Ok(free_ports(1)?[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_within_a_call_and_across_calls() {
        let mut all = HashSet::new();
        for _ in 0..300 {
            for p in free_ports(3).unwrap() {
                assert!(all.insert(p), "port {p} handed out twice");
            }
        }
        assert_eq!(all.len(), 900);
    }

    #[test]
    fn a_handed_out_port_is_free_to_bind() {
        // Other tests in this binary bind `127.0.0.1:0` at the same time, and
        // the kernel may offer them this port for a moment: a fixture's
        // start retries on "Address already in use", and so does this test.
        for _ in 0..20 {
            let p = free_port().unwrap();
            let bound = (0..50).any(|_| {
                TcpListener::bind(("127.0.0.1", p)).is_ok() || {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    false
                }
            });
            assert!(
                bound,
                "port {p} stayed taken for 500 ms after it was handed out"
            );
        }
    }
}
