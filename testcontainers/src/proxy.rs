//! A TCP proxy for fault injection: put it between a client and a server
//! (PostgreSQL, a broker) and cut the link to simulate an outage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use crate::TestkitError;

#[derive(Default)]
struct State {
    cut: AtomicBool,
    conns: Mutex<Vec<AbortHandle>>,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// Forwards connections from a loopback port to `target`.
///
/// ```no_run
/// # async fn demo() -> Result<(), weir_testkit::TestkitError> {
/// let proxy = weir_testkit::TcpProxy::start("127.0.0.1:5432").await?;
/// // connect your client to proxy.addr() …
/// proxy.cut();      // drops open connections, refuses new ones
/// proxy.restore();  // accepts again
/// # Ok(()) }
/// ```
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("addr", &self.addr)
            .field("cut", &self.state.cut.load(SeqCst))
            .finish()
    }
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`).
    pub async fn start(target: &str) -> Result<Self, TestkitError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(TestkitError::io("binding the proxy port"))?;
        let addr = listener
            .local_addr()
            .map_err(TestkitError::io("reading the proxy address"))?;
        let state = Arc::new(State::default());
        let st = state.clone();
        let target = target.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if st.cut.load(SeqCst) {
                    st.refused.fetch_add(1, SeqCst);
                    drop(inbound);
                    continue;
                }
                st.accepted.fetch_add(1, SeqCst);
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut conns = st.conns.lock();
                conns.retain(|c| !c.is_finished());
                conns.push(h.abort_handle());
            }
        });
        Ok(TcpProxy { addr, state, task })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.state.cut.store(true, SeqCst);
        for c in self.state.conns.lock().drain(..) {
            c.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.state.cut.store(false, SeqCst);
    }

    /// Connections refused while cut.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(SeqCst)
    }

    /// Connections forwarded.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        for c in self.state.conns.lock().drain(..) {
            c.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn forwards_cuts_and_restores() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = TcpProxy::start(&echo_addr.to_string()).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");

        proxy.cut();
        // The open connection is closed…
        let mut rest = Vec::new();
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), c.read_to_end(&mut rest))
            .await
            .expect("cut must close the connection");
        assert!(n.is_ok() || n.is_err());
        // …and a new one is closed at once.
        let mut c2 = TcpStream::connect(proxy.addr()).await.unwrap();
        let _ = c2.write_all(b"x").await;
        let r = c2.read(&mut b).await;
        assert!(matches!(r, Ok(0) | Err(_)));
        assert!(proxy.refused() >= 1);

        proxy.restore();
        let mut c3 = TcpStream::connect(proxy.addr()).await.unwrap();
        c3.write_all(b"pong").await.unwrap();
        c3.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"pong");
    }
}
