//! A TLS terminator for tests: accepts TLS on a loopback port with a given
//! certificate and forwards the plaintext stream to a target.
//!
//! Tansu 0.6.0 cannot serve TLS itself (its `--cert` and `--key` flags are in
//! one mutually exclusive argument group, so both can never be given); Weir's
//! TLS client configuration is tested through this terminator in front of a
//! tansu that advertises the terminator's address (see `docs/brokers.md`).

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::TestkitError;

/// Terminates TLS and forwards to a target set with [`forward_to`](Self::forward_to).
pub struct TlsProxy {
    addr: SocketAddr,
    target: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TlsProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsProxy")
            .field("addr", &self.addr)
            .field("target", &*self.target.lock())
            .finish()
    }
}

impl TlsProxy {
    /// Listens on a free loopback port with `cert_pem` (chain) and `key_pem`
    /// (PKCS#8). Connections are refused until a target is set.
    pub async fn bind(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TestkitError> {
        let identity = native_tls::Identity::from_pkcs8(cert_pem, key_pem)
            .map_err(|e| TestkitError::io("loading the TLS identity")(std::io::Error::other(e)))?;
        let acceptor = native_tls::TlsAcceptor::new(identity)
            .map_err(|e| TestkitError::io("building the TLS acceptor")(std::io::Error::other(e)))?;
        let acceptor = Arc::new(tokio_native_tls::TlsAcceptor::from(acceptor));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(TestkitError::io("binding the TLS proxy"))?;
        let addr = listener
            .local_addr()
            .map_err(TestkitError::io("TLS proxy address"))?;
        let target: Arc<Mutex<Option<String>>> = Arc::default();
        let t = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Some(target) = t.lock().clone() else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust the certificate aborts the
                    // handshake: nothing to forward.
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                });
            }
        });
        Ok(TlsProxy { addr, target, task })
    }

    /// The TLS address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forwards new connections to `target` (`host:port`).
    pub fn forward_to(&self, target: &str) {
        *self.target.lock() = Some(target.to_string());
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
