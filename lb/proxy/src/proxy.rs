//! One client request: route it by the listener's policies, choose a
//! member, forward it as HTTP/1.1 (hop-by-hop headers dropped,
//! `X-Forwarded-*` set, upgrades tunnelled), relay the response, count it
//! and log it. Never accepts connections and never reads configuration
//! files.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use strato_proto::l7::{L7AccessLine, PERSISTENCE_COOKIE};

use crate::access_log::timestamp_ms;
use crate::balance::{ChoiceInput, Persistence, PoolConfig};
use crate::config::{cookie, Decision, ListenerConfig, RequestView};
use crate::metrics::{ListenerStats, MemberStats};
use crate::state::{LivePool, Snapshot, State};
use crate::upstream::{BoxError, MemberConns, ProxyBody};

/// What a connection knows about itself.
pub struct ConnInfo {
    pub listener: Arc<ListenerConfig>,
    pub stats: Arc<ListenerStats>,
    pub client: SocketAddr,
    /// `TLSv1.3`, `TLSv1.2`; empty without TLS.
    pub tls_version: &'static str,
    pub sni: String,
    /// Requests of this connection whose response is not finished (the
    /// client idle timeout only runs when there are none).
    pub in_flight: Arc<AtomicUsize>,
    /// `X-Forwarded-For`'s value: the client's address, made once.
    pub forwarded_for: Option<HeaderValue>,
    /// `address:port` for the access log, made once.
    client_text: String,
}

impl ConnInfo {
    pub fn new(
        listener: Arc<ListenerConfig>,
        stats: Arc<ListenerStats>,
        client: SocketAddr,
        tls_version: &'static str,
        sni: String,
        in_flight: Arc<AtomicUsize>,
    ) -> ConnInfo {
        ConnInfo {
            listener,
            stats,
            forwarded_for: HeaderValue::from_str(&client.ip().to_string()).ok(),
            client_text: client.to_string(),
            client,
            tls_version,
            sni,
            in_flight,
        }
    }
}

/// Decrements a counter when dropped.
struct InFlight(Arc<AtomicUsize>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A member's requests in flight.
struct MemberInFlight(Arc<MemberStats>);
impl Drop for MemberInFlight {
    fn drop(&mut self) {
        self.0.active_requests.dec();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0} stalled")]
struct Stalled(&'static str);

/// A body that counts its bytes, fails after `idle` without a frame, and
/// runs `done` once at its end (or when dropped). The idle timer exists
/// only once the body has had to wait: a body that is ready when asked
/// costs no timer.
pub struct Metered<B> {
    inner: B,
    idle: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    what: &'static str,
    counter: Option<Counter>,
    bytes: u64,
    done: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl<B> Metered<B> {
    fn new(inner: B, idle: Option<Duration>, what: &'static str) -> Self {
        Metered {
            inner,
            idle,
            sleep: None,
            what,
            counter: None,
            bytes: 0,
            done: None,
        }
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.bytes);
        }
    }
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    this.bytes += n;
                    if let Some(c) = &this.counter {
                        c.inc_by(n);
                    }
                }
                if let (Some(s), Some(d)) = (this.sleep.as_mut(), this.idle) {
                    s.as_mut().reset(tokio::time::Instant::now() + d);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(d) = this.idle {
                    let s = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(d)));
                    if s.as_mut().poll(cx).is_ready() {
                        this.finish();
                        return Poll::Ready(Some(Err(Box::new(Stalled(this.what)))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn boxed<B>(b: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed_unsync()
}

fn text(status: StatusCode, msg: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(boxed(Full::new(Bytes::from_static(msg.as_bytes()))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Hop-by-hop headers other than `Connection` (RFC 9110 7.6.1, and the
/// old `Keep-Alive` and `Proxy-Connection`).
const HOP_BY_HOP: [HeaderName; 7] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers (those named by `Connection` too).
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if let Some(connection) = h.remove(header::CONNECTION) {
        // Rare: names a `Connection` header lists besides keep-alive and
        // close (the remaining values of a repeated header were dropped
        // with it, which is what they are for).
        if let Ok(v) = connection.to_str() {
            for name in v.split(',').map(str::trim) {
                if !name.eq_ignore_ascii_case("keep-alive") && !name.eq_ignore_ascii_case("close") {
                    if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                        h.remove(n);
                    }
                }
            }
        }
    }
    h.remove(header::UPGRADE);
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .map(|s| {
                    s.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                })
                .unwrap_or(false)
        })
}

fn head_size(h: &HeaderMap, first_line: usize) -> u64 {
    (first_line
        + 2
        + h.iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
        + 2) as u64
}

fn version_text(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// What a request's access-log line needs, kept until its response ends
/// (names are borrowed from the configuration it was served with).
struct Pending {
    snapshot: Arc<Snapshot>,
    conn: Arc<ConnInfo>,
    listener: Arc<ListenerConfig>,
    arrival: Instant,
    arrival_ms: u64,
    method: Method,
    uri: Uri,
    host: String,
    version: Version,
    policy: Option<String>,
    /// The pool and member (index) that took it.
    pool: Option<Arc<PoolConfig>>,
    member: Option<usize>,
    head_in: u64,
    /// Request body bytes (a body's own count, when it has one).
    body_in: Arc<AtomicU64>,
}

impl Pending {
    fn log(&self, state: &State, status: u16, request_ms: f64, bytes_out: u64) {
        let member = (self.pool.as_ref())
            .zip(self.member)
            .map(|(pool, i)| Cow::Borrowed(pool.members[i].id.as_str()));
        let line = L7AccessLine {
            time: Cow::Owned(timestamp_ms(self.arrival_ms)),
            instance: Cow::Borrowed(&self.snapshot.config.instance_id),
            listener: Cow::Borrowed(&self.listener.id),
            pool: Cow::Borrowed(self.pool.as_ref().map_or("", |p| p.id.as_str())),
            member: member.unwrap_or_default(),
            client: Cow::Borrowed(&self.conn.client_text),
            method: Cow::Borrowed(self.method.as_str()),
            host: Cow::Borrowed(&self.host),
            path: Cow::Borrowed(self.uri.path()),
            version: Cow::Borrowed(version_text(self.version)),
            status,
            bytes_in: self.head_in + self.body_in.load(Ordering::Relaxed),
            bytes_out,
            request_ms,
            response_ms: self.arrival.elapsed().as_secs_f64() * 1000.0,
            tls_version: Cow::Borrowed(self.conn.tls_version),
            sni: Cow::Borrowed(&self.conn.sni),
            policy: Cow::Borrowed(self.policy.as_deref().unwrap_or("")),
        };
        state.log.log(&line);
    }
}

/// The member side of a forwarded request, finished when the response
/// body ends: the member's request count and its connection, kept for the
/// next request.
struct Exchange {
    _member: MemberInFlight,
    bytes_in: Counter,
    timeout: Option<Duration>,
    reuse: Option<(Arc<MemberConns>, SendRequest<ProxyBody>)>,
}

/// Serves one request; never fails (errors become responses).
pub async fn handle(
    state: Arc<State>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    conn.in_flight.fetch_add(1, Ordering::AcqRel);
    let guard = InFlight(conn.in_flight.clone());
    let arrival = Instant::now();
    let snapshot = state.snapshot();
    // The listener as configured now (a listener being drained keeps the
    // configuration it was accepted with).
    let listener = snapshot
        .config
        .listeners
        .get(&conn.listener.id)
        .cloned()
        .unwrap_or_else(|| conn.listener.clone());
    conn.stats.requests.inc();
    let view = RequestView::new(req.uri(), req.headers());
    let route = listener.route(&view);
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let mut p = Pending {
        snapshot: snapshot.clone(),
        conn: conn.clone(),
        listener: listener.clone(),
        arrival,
        arrival_ms: strato_proto::time::now_ms(),
        method: req.method().clone(),
        uri: req.uri().clone(),
        host: view.host,
        version: req.version(),
        policy: route.policy.map(str::to_string),
        pool: None,
        member: None,
        head_in: head_size(req.headers(), req.method().as_str().len() + target + 10),
        body_in: Arc::new(AtomicU64::new(0)),
    };
    let stats = &conn.stats;
    let (resp, exchange) = match route.action {
        Decision::Reject => (
            local(stats, text(StatusCode::FORBIDDEN, "Forbidden\n"), false),
            None,
        ),
        Decision::Redirect { location, code } => {
            let mut r = Response::new(boxed(Empty::<Bytes>::new()));
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::FOUND);
            let r = match HeaderValue::from_str(&location) {
                Ok(v) => {
                    r.headers_mut().insert(header::LOCATION, v);
                    local(stats, r, false)
                }
                Err(_) => local(stats, text(StatusCode::BAD_REQUEST, "Bad Request\n"), true),
            };
            (r, None)
        }
        Decision::NoPool => (unavailable(stats), None),
        Decision::Pool(pool_id) => match snapshot.pools.get(pool_id) {
            None => (unavailable(stats), None),
            Some(pool) => {
                p.pool = Some(pool.config.clone());
                forward(&conn, &listener, pool, req, &mut p).await
            }
        },
    };
    Ok(finish(&state, resp, exchange, p, guard))
}

fn local(stats: &ListenerStats, r: Response<ProxyBody>, error: bool) -> Response<ProxyBody> {
    if error {
        stats.request_errors.inc();
    }
    r
}

fn unavailable(stats: &ListenerStats) -> Response<ProxyBody> {
    local(
        stats,
        text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n"),
        true,
    )
}

/// Counts the response; when its body ends, finishes the member's side
/// and logs the request.
fn finish<B>(
    state: &Arc<State>,
    resp: Response<B>,
    exchange: Option<Exchange>,
    p: Pending,
    guard: InFlight,
) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let status = resp.status().as_u16();
    let stats = &p.conn.stats;
    stats.response(status);
    let request_ms = p.arrival.elapsed().as_secs_f64() * 1000.0;
    stats.latency.observe(request_ms / 1000.0);
    let (mut parts, body) = resp.into_parts();
    let head_out = head_size(&parts.headers, 17);
    let mut body = Metered::new(
        body,
        exchange.as_ref().and_then(|x| x.timeout),
        "member response",
    );
    body.counter = exchange.as_ref().map(|x| x.bytes_in.clone());
    let state = state.clone();
    body.done = Some(Box::new(move |bytes| {
        let _guard = guard;
        if let Some(Exchange {
            reuse: Some((conns, send)),
            ..
        }) = exchange
        {
            conns.give_back(send);
        }
        p.log(&state, status, request_ms, head_out + bytes);
    }));
    if status == 101 {
        // The tunnel follows; the response itself has no body.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    Response::from_parts(parts, boxed(body))
}

/// A member's request failed: its status and text.
fn failed(e: Option<hyper::Error>) -> (StatusCode, &'static str) {
    match e {
        None => (StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout\n"),
        Some(e) if e.is_timeout() => (StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout\n"),
        Some(_) => (StatusCode::BAD_GATEWAY, "Bad Gateway\n"),
    }
}

/// Forwards a request to a member of `pool`.
async fn forward(
    conn: &ConnInfo,
    listener: &ListenerConfig,
    live: &LivePool,
    mut req: Request<Incoming>,
    p: &mut Pending,
) -> (Response<ProxyBody>, Option<Exchange>) {
    let stats = &conn.stats;
    let pool = &live.config;
    let app_cookie_name = match &pool.persistence {
        Some(Persistence::AppCookie { name, .. }) => Some(name.as_str()),
        _ => None,
    };
    let upgrade = req.version() != Version::HTTP_2 && is_upgrade(req.headers());
    let in_flight = |i: usize| live.members[i].stats.active_requests.get().max(0) as u64;

    // Choose and connect; a member that cannot be connected to is
    // replaced once (the request has not been sent yet).
    let mut exclude = None;
    let mut attempt = 0;
    let (choice, mut send) = loop {
        let choice = {
            let input = ChoiceInput {
                client: conn.client.ip(),
                lb_cookie: cookie(req.headers(), PERSISTENCE_COOKIE),
                app_cookie: app_cookie_name.and_then(|n| cookie(req.headers(), n)),
            };
            live.state.choose(pool, &input, &in_flight, exclude)
        };
        let Some(choice) = choice else {
            return (unavailable(stats), None);
        };
        let conns = &live.members[choice.member].conns;
        let pooled = if upgrade { None } else { conns.take_idle() };
        let send = match pooled {
            Some(s) => Ok(s),
            None => conns.connect(listener.connect_timeout, upgrade).await,
        };
        match send {
            Ok(s) => break (choice, s),
            Err(e) => {
                let member = &pool.members[choice.member];
                live.members[choice.member].stats.request_errors.inc();
                tracing::debug!(pool = %pool.id, member = %member.id, error = %e, "member connect failed");
                attempt += 1;
                if attempt >= 2 {
                    // Connect failures (refused, timeout) on both tries: 503.
                    return (unavailable(stats), None);
                }
                exclude = Some(choice.member);
            }
        }
    };
    let member = &pool.members[choice.member];
    let mlive = &live.members[choice.member];
    let mstats = &mlive.stats;
    p.member = Some(choice.member);
    mstats.total_requests.inc();
    mstats.active_requests.inc();
    let member_guard = MemberInFlight(mstats.clone());

    // The request to the member.
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let upgrade_headers = if upgrade {
        (
            parts.headers.get(header::UPGRADE).cloned(),
            parts.headers.get(header::CONNECTION).cloned(),
        )
    } else {
        (None, None)
    };
    strip_hop_by_hop(&mut parts.headers);
    if let (Some(u), Some(_)) = upgrade_headers {
        parts.headers.insert(header::UPGRADE, u);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if !parts.headers.contains_key(header::HOST) {
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, v);
        }
    }
    let ins = listener.insert_headers;
    if ins.x_forwarded_for {
        if let Some(v) = &conn.forwarded_for {
            parts.headers.insert(X_FORWARDED_FOR, v.clone());
        }
    }
    if ins.x_forwarded_port {
        parts
            .headers
            .insert(X_FORWARDED_PORT, HeaderValue::from(listener.bind.port()));
    }
    if ins.x_forwarded_proto {
        let proto = if listener.tls.is_some() {
            "https"
        } else {
            "http"
        };
        parts
            .headers
            .insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    // Origin form to the member (an absolute-form target loses its scheme
    // and authority; the Host header carries the latter).
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let mut target = hyper::http::uri::Parts::default();
        target.path_and_query = Some(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
        );
        parts.uri = Uri::from_parts(target).unwrap_or_else(|_| Uri::from_static("/"));
    }
    parts.version = Version::HTTP_11;
    if parts.method == Method::CONNECT {
        return (
            local(stats, text(StatusCode::BAD_REQUEST, "Bad Request\n"), true),
            None,
        );
    }
    let body = if body.is_end_stream() {
        boxed(Empty::<Bytes>::new())
    } else {
        let mut body = Metered::new(body, listener.client_timeout, "request body");
        body.counter = Some(mstats.bytes_out.clone());
        let counted = p.body_in.clone();
        body.done = Some(Box::new(move |n| counted.store(n, Ordering::Relaxed)));
        boxed(body)
    };
    let upstream_req = Request::from_parts(parts, body);

    let sent = send.send_request(upstream_req);
    let result = match listener.member_timeout {
        Some(t) => match tokio::time::timeout(t, sent).await {
            Ok(r) => r.map_err(Some),
            Err(_) => Err(None),
        },
        None => sent.await.map_err(Some),
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            mstats.request_errors.inc();
            tracing::debug!(pool = %pool.id, member = %member.id, error = ?e, "member request failed");
            let (status, msg) = failed(e);
            return (local(stats, text(status, msg), true), None);
        }
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let member_upgrade = hyper::upgrade::on(&mut resp);
            let (mstats2, member_id) = (mstats.clone(), member.id.clone());
            tokio::spawn(async move {
                let _member_guard = member_guard;
                match tokio::try_join!(client_upgrade, member_upgrade) {
                    Ok((c, m)) => {
                        let (mut c, mut m) = (TokioIo::new(c), TokioIo::new(m));
                        match tokio::io::copy_bidirectional(&mut c, &mut m).await {
                            Ok((to_member, to_client)) => {
                                mstats2.bytes_out.inc_by(to_member);
                                mstats2.bytes_in.inc_by(to_client);
                            }
                            Err(e) => {
                                tracing::debug!(member = %member_id, error = %e, "tunnel ended")
                            }
                        }
                    }
                    Err(e) => tracing::debug!(member = %member_id, error = %e, "upgrade failed"),
                }
            });
            let (mut parts, _) = resp.into_parts();
            // Keep the member's Upgrade and Connection headers.
            parts.headers.remove(header::TRANSFER_ENCODING);
            return (
                Response::from_parts(parts, boxed(Empty::<Bytes>::new())),
                None,
            );
        }
    }

    // Persistence on the way back.
    if let Some(name) = app_cookie_name {
        for v in resp.headers().get_all(header::SET_COOKIE) {
            if let Some((k, val)) = v
                .to_str()
                .ok()
                .and_then(|s| s.split(';').next()?.split_once('='))
            {
                if k.trim() == name {
                    live.state
                        .learn(pool, val.trim().trim_matches('"'), &member.id);
                }
            }
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let (Some(token), Some(Persistence::HttpCookie { max_age_s })) =
        (&choice.set_cookie, &pool.persistence)
    {
        let mut c = format!("{PERSISTENCE_COOKIE}={token}; Path=/; HttpOnly");
        if *max_age_s > 0 {
            c.push_str(&format!("; Max-Age={max_age_s}"));
        }
        if let Ok(v) = HeaderValue::from_str(&c) {
            parts.headers.append(header::SET_COOKIE, v);
        }
    }
    // The member's request is in flight until its response body ends;
    // then its connection serves the next request (not after an upgrade
    // attempt: such connections are not pooled).
    let exchange = Exchange {
        _member: member_guard,
        bytes_in: mstats.bytes_in.clone(),
        timeout: listener.member_timeout,
        reuse: (!upgrade).then(|| (mlive.conns.clone(), send)),
    };
    (Response::from_parts(parts, boxed(body)), Some(exchange))
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
