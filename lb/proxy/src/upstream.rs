//! Connections to members: HTTP/1.1 keep-alive pools, one per member,
//! connect with a timeout, and closing a member's idle connections when it
//! stops taking requests. Never chooses members.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Bodies in both directions.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Idle connections kept per member.
const IDLE_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {0}: timed out")]
    Timeout(SocketAddr),
    #[error("connecting to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

/// One member's connections.
pub struct MemberConns {
    pub addr: SocketAddr,
    /// False once the member takes no new request: connections that
    /// finish their request are closed instead of kept.
    accepting: AtomicBool,
    idle: Mutex<Vec<SendRequest<ProxyBody>>>,
}

impl MemberConns {
    fn new(addr: SocketAddr) -> MemberConns {
        MemberConns {
            addr,
            accepting: AtomicBool::new(true),
            idle: Mutex::default(),
        }
    }

    /// Connections to a member that takes no new request (none kept).
    pub fn closed(addr: SocketAddr) -> MemberConns {
        MemberConns {
            addr,
            accepting: AtomicBool::new(false),
            idle: Mutex::default(),
        }
    }

    /// An idle keep-alive connection, if one is still usable.
    pub fn take_idle(&self) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().expect("member pool poisoned");
        while let Some(s) = idle.pop() {
            if !s.is_closed() && s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    /// A new connection (not pooled yet).
    pub async fn connect(
        &self,
        timeout: Option<Duration>,
        upgrades: bool,
    ) -> Result<SendRequest<ProxyBody>, ConnectError> {
        let addr = self.addr;
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|source| ConnectError::Io { addr, source })?;
            let _ = tcp.set_nodelay(true);
            let (send, conn) = hyper::client::conn::http1::Builder::new()
                .writev(false)
                .handshake(TokioIo::new(tcp))
                .await
                .map_err(|source| ConnectError::Handshake { addr, source })?;
            if upgrades {
                tokio::spawn(async move {
                    if let Err(e) = conn.with_upgrades().await {
                        tracing::debug!(member = %addr, error = %e, "member connection ended");
                    }
                });
            } else {
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(member = %addr, error = %e, "member connection ended");
                    }
                });
            }
            Ok(send)
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, handshake)
                .await
                .map_err(|_| ConnectError::Timeout(addr))?,
            None => handshake.await,
        }
    }

    /// Keeps a connection for the next request once its response is
    /// complete (called when the response body has ended), if the member
    /// still takes requests.
    pub fn give_back(self: &Arc<Self>, mut send: SendRequest<ProxyBody>) {
        if !self.accepting.load(Ordering::Acquire) || send.is_closed() {
            return;
        }
        if send.is_ready() {
            // The usual case: the connection's task has already read the
            // whole response and waits for the next request.
            self.keep(send);
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if send.ready().await.is_ok() {
                me.keep(send);
            }
        });
    }

    fn keep(&self, send: SendRequest<ProxyBody>) {
        let mut idle = self.idle.lock().expect("member pool poisoned");
        if self.accepting.load(Ordering::Acquire) && idle.len() < IDLE_MAX {
            idle.push(send);
        }
    }

    /// Stops keeping connections and closes the idle ones.
    pub fn close(&self) {
        let mut idle = self.idle.lock().expect("member pool poisoned");
        self.accepting.store(false, Ordering::Release);
        idle.clear();
    }

    fn reopen(&self) {
        self.accepting.store(true, Ordering::Release);
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().expect("member pool poisoned").len()
    }
}

/// Every member's connections, by pool and member id.
#[derive(Default)]
pub struct Upstreams {
    members: Mutex<HashMap<(String, String), Arc<MemberConns>>>,
}

impl Upstreams {
    pub fn get(&self, pool: &str, member: &str, addr: SocketAddr) -> Arc<MemberConns> {
        let mut map = self.members.lock().expect("upstreams poisoned");
        let key = (pool.to_string(), member.to_string());
        match map.get(&key) {
            Some(m) if m.addr == addr => m.clone(),
            _ => {
                let m = Arc::new(MemberConns::new(addr));
                if let Some(old) = map.insert(key, m.clone()) {
                    old.close();
                }
                m
            }
        }
    }

    /// After a reload: `active(pool, member)` gives the member's address
    /// if it takes new requests. Others have their idle connections
    /// closed (requests in flight finish, then their connections close).
    pub fn retain(&self, active: impl Fn(&str, &str) -> Option<SocketAddr>) {
        let mut map = self.members.lock().expect("upstreams poisoned");
        map.retain(|(pool, member), conns| match active(pool, member) {
            Some(addr) if addr == conns.addr => {
                conns.reopen();
                true
            }
            _ => {
                conns.close();
                false
            }
        });
    }
}
