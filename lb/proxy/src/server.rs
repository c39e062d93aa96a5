//! Accepting clients: one task per listener (connection limit, allowed
//! CIDRs, TLS handshake, HTTP/1.1 and HTTP/2 through hyper's auto
//! builder, idle timeout, byte counts), its graceful drain, and the
//! control socket (`/metrics`, `/stats`). Never routes requests itself.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::ListenerConfig;
use crate::metrics::ListenerStats;
use crate::proxy::{handle, ConnInfo};
use crate::state::State;

/// A running listener.
pub struct ListenerTask {
    pub bind: SocketAddr,
    pub tls: bool,
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
    done: tokio::task::JoinHandle<()>,
}

impl ListenerTask {
    /// Binds (or takes `inherited`, a socket already listening on the
    /// port) and starts accepting.
    pub async fn start(
        state: Arc<State>,
        cfg: Arc<ListenerConfig>,
        inherited: Option<std::net::TcpListener>,
    ) -> io::Result<ListenerTask> {
        let tcp = match inherited {
            Some(l) => {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)?
            }
            None => {
                let socket = if cfg.bind.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                socket.set_reuseaddr(true)?;
                socket.bind(cfg.bind)?;
                socket.listen(1024)?
            }
        };
        let (stop, stopped) = oneshot::channel();
        let bind = cfg.bind;
        let tls = cfg.tls.is_some();
        let done = tokio::spawn(accept_loop(state, cfg, tcp, stopped));
        Ok(ListenerTask {
            bind,
            tls,
            stop: Some(stop),
            done,
        })
    }

    /// Stops accepting (the port is free when this returns) and returns
    /// the drain of the listener's connections.
    pub async fn stop(mut self) -> tokio::task::JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let (closed, is_closed) = oneshot::channel();
            if stop.send(closed).is_ok() {
                let _ = is_closed.await;
            }
        }
        self.done
    }
}

async fn accept_loop(
    state: Arc<State>,
    cfg: Arc<ListenerConfig>,
    tcp: TcpListener,
    mut stopped: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let graceful = GracefulShutdown::new();
    let stats = state.metrics.listener(&cfg.id);
    tracing::info!(listener = %cfg.id, bind = %cfg.bind, "listening");
    let closed = loop {
        let accepted = tokio::select! {
            a = tcp.accept() => a,
            closed = &mut stopped => break closed.ok(),
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(listener = %cfg.id, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The listener as configured now (TLS and limits follow reloads).
        let current = state
            .config()
            .listeners
            .get(&cfg.id)
            .cloned()
            .unwrap_or_else(|| cfg.clone());
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        if !current.allows(peer.ip())
            || current
                .connection_limit
                .is_some_and(|l| stats.active_connections.get().max(0) as u64 >= l)
        {
            stats.rejected_connections.inc();
            drop(stream);
            continue;
        }
        stats.total_connections.inc();
        stats.active_connections.inc();
        let _ = stream.set_nodelay(true);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let io = Idle::new(
            stream,
            stats.clone(),
            current.client_timeout,
            in_flight.clone(),
        );
        serve(
            state.clone(),
            current,
            stats.clone(),
            io,
            peer,
            in_flight,
            &graceful,
        );
    };
    drop(tcp);
    if let Some(closed) = closed {
        let _ = closed.send(());
    }
    tracing::info!(listener = %cfg.id, "stopped accepting, draining");
    graceful.shutdown().await;
    tracing::info!(listener = %cfg.id, "drained");
}

/// Serves one client connection (TLS first if the listener has it).
fn serve(
    state: Arc<State>,
    cfg: Arc<ListenerConfig>,
    stats: Arc<ListenerStats>,
    io: Idle<tokio::net::TcpStream>,
    peer: SocketAddr,
    in_flight: Arc<AtomicUsize>,
    graceful: &GracefulShutdown,
) {
    // The watcher is taken now so that a drain waits for connections
    // still in their handshake.
    let watcher = graceful.watcher();
    tokio::spawn(async move {
        struct Active(Arc<ListenerStats>);
        impl Drop for Active {
            fn drop(&mut self) {
                self.0.active_connections.dec();
            }
        }
        let _active = Active(stats.clone());
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // No header read timer per request: `Idle` bounds reading a head.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .writev(false)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let info = |tls_version: &'static str, sni: String| {
            Arc::new(ConnInfo::new(
                cfg.clone(),
                stats.clone(),
                peer,
                tls_version,
                sni,
                in_flight.clone(),
            ))
        };
        match cfg.tls.clone() {
            None => {
                let info = info("", String::new());
                let svc = service_fn(move |req| handle(state.clone(), info.clone(), req));
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(client = %peer, error = %e, "client connection ended");
                }
            }
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                let handshake = acceptor.accept(io);
                let bound = cfg.client_timeout.unwrap_or(Duration::from_secs(60));
                let stream = match tokio::time::timeout(bound, handshake).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let (_, session) = stream.get_ref();
                let version = match session.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                    _ => "",
                };
                let sni = session.server_name().unwrap_or("").to_string();
                let info = info(version, sni);
                let svc = service_fn(move |req| handle(state.clone(), info.clone(), req));
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(client = %peer, error = %e, "client connection ended");
                }
            }
        }
    });
}

/// A client connection's socket: counts bytes, and fails after the idle
/// timeout without progress: a response byte written, or a request body
/// byte read while a request is in flight. Bytes of a request head do not
/// count (a head sent a byte at a time does not keep the connection), so
/// the timeout also bounds reading the next request's head. A write to
/// the client blocked that long fails too.
///
/// The timer is lazy: traffic only records when it happened, and the
/// timer, when it fires, moves to the deadline that follows (no timer
/// operation per read or write).
pub struct Idle<IO> {
    io: IO,
    stats: Arc<ListenerStats>,
    idle: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    last: tokio::time::Instant,
    in_flight: Arc<AtomicUsize>,
}

impl<IO> Idle<IO> {
    fn new(
        io: IO,
        stats: Arc<ListenerStats>,
        idle: Option<Duration>,
        in_flight: Arc<AtomicUsize>,
    ) -> Self {
        Idle {
            io,
            stats,
            idle,
            sleep: None,
            last: tokio::time::Instant::now(),
            in_flight,
        }
    }

    fn progress(&mut self) {
        if self.idle.is_some() {
            self.last = tokio::time::Instant::now();
        }
    }

    /// Whether the idle time is up; `writing`: a write is blocked.
    fn expired(&mut self, cx: &mut Context<'_>, writing: bool) -> bool {
        let Some(d) = self.idle else { return false };
        let due = self.last + d;
        let s = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if s.as_mut().poll(cx).is_pending() {
            return false;
        }
        let now = tokio::time::Instant::now();
        if due > now {
            // Traffic since the timer was set: wait for the new deadline.
            s.as_mut().reset(due);
            return s.as_mut().poll(cx).is_ready();
        }
        if writing || self.in_flight.load(Ordering::Acquire) == 0 {
            return true;
        }
        // A request in flight (its member is slow to answer: the member
        // timeout bounds that) keeps the connection.
        self.last = now;
        s.as_mut().reset(now + d);
        let _ = s.as_mut().poll(cx);
        false
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "client idle timeout")
}

impl<IO: AsyncRead + Unpin> AsyncRead for Idle<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n > 0 {
                    self.stats.bytes_in.inc_by(n);
                    if self.in_flight.load(Ordering::Relaxed) > 0 {
                        self.progress();
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if self.expired(cx, false) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Idle<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                self.stats.bytes_out.inc_by(n as u64);
                self.progress();
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                if self.expired(cx, true) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                self.stats.bytes_out.inc_by(n as u64);
                self.progress();
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                if self.expired(cx, true) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `GET /metrics` and `GET /stats` on the control socket until
/// the task is aborted.
pub async fn control(state: Arc<State>, listener: tokio::net::UnixListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    let (status, ctype, body) = match (req.method().as_str(), req.uri().path()) {
                        ("GET", "/metrics") => (
                            StatusCode::OK,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            state.metrics.encode(),
                        ),
                        ("GET", "/stats") => (
                            StatusCode::OK,
                            "application/json",
                            serde_json::to_string(&state.metrics.stats()).unwrap_or_default(),
                        ),
                        _ => (
                            StatusCode::NOT_FOUND,
                            "text/plain",
                            "not found\n".to_string(),
                        ),
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = status;
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(ctype),
                    );
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
