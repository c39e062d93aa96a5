//! One client request: route it by the listener's policies, choose a
//! member, forward it as HTTP/1.1 (hop-by-hop headers dropped,
//! `X-Forwarded-*` set, upgrades tunnelled), relay the response, count it
//! and log it. Never accepts connections and never reads configuration
//! files.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use strato_proto::l7::{L7AccessLine, PERSISTENCE_COOKIE};

use crate::access_log::timestamp_ms;
use crate::balance::{ChoiceInput, Persistence, PoolConfig};
use crate::config::{cookie, Decision, ListenerConfig, RequestView};
use crate::metrics::{ListenerStats, MemberStats};
use crate::state::State;
use crate::upstream::{BoxError, ProxyBody};

/// What a connection knows about itself.
pub struct ConnInfo {
    pub listener: Arc<ListenerConfig>,
    pub stats: Arc<ListenerStats>,
    pub client: SocketAddr,
    pub tls_version: String,
    pub sni: String,
    /// Requests of this connection whose response is not finished (the
    /// client idle timeout only runs when there are none).
    pub in_flight: Arc<AtomicUsize>,
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
/// runs `done` once at its end (or when dropped).
pub struct Metered<B> {
    inner: B,
    idle: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    what: &'static str,
    counters: Vec<prometheus_client::metrics::counter::Counter>,
    bytes: Arc<AtomicU64>,
    done: Option<Box<dyn FnOnce() + Send>>,
}

impl<B> Metered<B> {
    fn new(inner: B, idle: Option<Duration>, what: &'static str, bytes: Arc<AtomicU64>) -> Self {
        Metered {
            inner,
            idle,
            sleep: idle.map(|d| Box::pin(tokio::time::sleep(d))),
            what,
            counters: Vec::new(),
            bytes,
            done: None,
        }
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done();
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
                    this.bytes.fetch_add(n, Ordering::Relaxed);
                    for c in &this.counters {
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
                if let Some(s) = this.sleep.as_mut() {
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

use std::future::Future;

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

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers (those named by `Connection` too).
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
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

/// The access-log line of a request being served.
struct Pending {
    line: L7AccessLine,
    arrival: Instant,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
    head_in: u64,
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
    let config = state.config();
    // The listener as configured now (a listener being drained keeps the
    // configuration it was accepted with).
    let listener = config
        .listeners
        .get(&conn.listener.id)
        .cloned()
        .unwrap_or_else(|| conn.listener.clone());
    let stats = &conn.stats;
    stats.requests.inc();
    let view = RequestView::new(req.uri(), req.headers());
    let mut p = Pending {
        line: L7AccessLine {
            time: timestamp_ms(strato_proto::time::now_ms()),
            instance: config.instance_id.clone(),
            listener: listener.id.clone(),
            client: conn.client.to_string(),
            method: req.method().to_string(),
            host: view.host.clone(),
            path: req.uri().path().to_string(),
            version: version_text(req.version()).to_string(),
            tls_version: conn.tls_version.clone(),
            sni: conn.sni.clone(),
            ..L7AccessLine::default()
        },
        arrival,
        bytes_in: Arc::new(AtomicU64::new(0)),
        bytes_out: Arc::new(AtomicU64::new(0)),
        head_in: head_size(
            req.headers(),
            req.method().as_str().len() + req.uri().to_string().len() + 10,
        ),
    };
    let route = listener.route(&view);
    p.line.policy = route.policy.unwrap_or_default().to_string();
    let resp = match route.action {
        Decision::Reject => local(stats, text(StatusCode::FORBIDDEN, "Forbidden\n"), false),
        Decision::Redirect { location, code } => {
            let mut r = Response::new(boxed(Empty::<Bytes>::new()));
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::FOUND);
            match HeaderValue::from_str(&location) {
                Ok(v) => {
                    r.headers_mut().insert(header::LOCATION, v);
                    local(stats, r, false)
                }
                Err(_) => local(stats, text(StatusCode::BAD_REQUEST, "Bad Request\n"), true),
            }
        }
        Decision::NoPool => local(
            stats,
            text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n"),
            true,
        ),
        Decision::Pool(pool_id) => match config.pools.get(pool_id) {
            None => local(
                stats,
                text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n"),
                true,
            ),
            Some(pool) => {
                p.line.pool = pool.id.clone();
                forward(&state, &conn, &listener, pool, req, &mut p).await
            }
        },
    };
    Ok(finish(&state, stats, resp, p, guard))
}

fn local(stats: &ListenerStats, r: Response<ProxyBody>, error: bool) -> Response<ProxyBody> {
    if error {
        stats.request_errors.inc();
    }
    r
}

/// Counts the response, and logs the request when its body ends.
fn finish(
    state: &Arc<State>,
    stats: &Arc<ListenerStats>,
    resp: Response<ProxyBody>,
    mut p: Pending,
    guard: InFlight,
) -> Response<ProxyBody> {
    let status = resp.status().as_u16();
    stats.response(status);
    let request_ms = p.arrival.elapsed().as_secs_f64() * 1000.0;
    stats.latency.observe(request_ms / 1000.0);
    let (mut parts, body) = resp.into_parts();
    let head_out = head_size(&parts.headers, 17);
    let mut body = Metered::new(body, None, "response", p.bytes_out.clone());
    let state = state.clone();
    p.line.status = status;
    p.line.request_ms = request_ms;
    body.done = Some(Box::new(move || {
        let _guard = guard;
        p.line.response_ms = p.arrival.elapsed().as_secs_f64() * 1000.0;
        p.line.bytes_in = p.head_in + p.bytes_in.load(Ordering::Relaxed);
        p.line.bytes_out = head_out + p.bytes_out.load(Ordering::Relaxed);
        state.log.log(p.line);
    }));
    if status == 101 {
        // The tunnel follows; the response itself has no body.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    Response::from_parts(parts, boxed(body))
}

/// Forwards a request to a member of `pool`.
async fn forward(
    state: &Arc<State>,
    conn: &ConnInfo,
    listener: &ListenerConfig,
    pool: &Arc<PoolConfig>,
    mut req: Request<Incoming>,
    p: &mut Pending,
) -> Response<ProxyBody> {
    let stats = &conn.stats;
    let pool_state = state.pool_state(&pool.id);
    let app_cookie_name = match &pool.persistence {
        Some(Persistence::AppCookie { name, .. }) => Some(name.clone()),
        _ => None,
    };
    let lb_cookie = cookie(req.headers(), PERSISTENCE_COOKIE).map(str::to_string);
    let app_cookie = app_cookie_name
        .as_deref()
        .and_then(|n| cookie(req.headers(), n))
        .map(str::to_string);
    let input = ChoiceInput {
        client: conn.client.ip(),
        lb_cookie: lb_cookie.as_deref(),
        app_cookie: app_cookie.as_deref(),
    };
    let upgrade = req.version() != Version::HTTP_2 && is_upgrade(req.headers());
    let in_flight = |m: &crate::balance::MemberConfig| {
        state
            .metrics
            .member(&pool.id, &m.id)
            .active_requests
            .get()
            .max(0) as u64
    };

    // Choose and connect; a member that cannot be connected to is
    // replaced once (the request has not been sent yet).
    let mut exclude = None;
    let mut attempt = 0;
    let (choice, member, mstats, conns, mut send) = loop {
        let Some(choice) = pool_state.choose(pool, &input, &in_flight, exclude) else {
            return local(
                stats,
                text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n"),
                true,
            );
        };
        let member = &pool.members[choice.member];
        let mstats = state.metrics.member(&pool.id, &member.id);
        let conns = state.upstreams.get(&pool.id, &member.id, member.addr);
        let pooled = if upgrade { None } else { conns.take_idle() };
        let send = match pooled {
            Some(s) => Ok(s),
            None => conns.connect(listener.connect_timeout, upgrade).await,
        };
        match send {
            Ok(s) => break (choice, member, mstats, conns, s),
            Err(e) => {
                mstats.request_errors.inc();
                tracing::debug!(pool = %pool.id, member = %member.id, error = %e, "member connect failed");
                attempt += 1;
                if attempt >= 2 {
                    // Connect failures (refused, timeout) on both tries: 503.
                    return local(
                        stats,
                        text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n"),
                        true,
                    );
                }
                exclude = Some(choice.member);
            }
        }
    };
    p.line.member = member.id.clone();
    mstats.total_requests.inc();
    mstats.active_requests.inc();
    let member_guard = MemberInFlight(mstats.clone());

    // The request to the member.
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let authority = parts.uri.authority().map(|a| a.as_str().to_string());
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
        if let Some(v) = authority.and_then(|a| HeaderValue::from_str(&a).ok()) {
            parts.headers.insert(header::HOST, v);
        }
    }
    let ins = listener.insert_headers;
    if ins.x_forwarded_for {
        if let Ok(v) = HeaderValue::from_str(&conn.client.ip().to_string()) {
            parts.headers.insert("x-forwarded-for", v);
        }
    }
    if ins.x_forwarded_port {
        parts
            .headers
            .insert("x-forwarded-port", HeaderValue::from(listener.bind.port()));
    }
    if ins.x_forwarded_proto {
        let proto = if listener.tls.is_some() {
            "https"
        } else {
            "http"
        };
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static(proto));
    }
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_else(|_| hyper::Uri::from_static("/"));
    parts.version = Version::HTTP_11;
    if parts.method == hyper::Method::CONNECT {
        return local(stats, text(StatusCode::BAD_REQUEST, "Bad Request\n"), true);
    }
    let mut body = Metered::new(
        body,
        listener.client_timeout,
        "request body",
        p.bytes_in.clone(),
    );
    body.counters = vec![mstats.bytes_out.clone()];
    let upstream_req = Request::from_parts(parts, boxed(body));

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
            let status = match e {
                None => StatusCode::GATEWAY_TIMEOUT,
                Some(e) if e.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
                Some(_) => StatusCode::BAD_GATEWAY,
            };
            let msg = if status == StatusCode::GATEWAY_TIMEOUT {
                "Gateway Timeout\n"
            } else {
                "Bad Gateway\n"
            };
            return local(stats, text(status, msg), true);
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
            return Response::from_parts(parts, boxed(Empty::<Bytes>::new()));
        }
    } else if !upgrade {
        conns.give_back(send);
    }

    // Persistence on the way back.
    if let Some(name) = &app_cookie_name {
        for v in resp.headers().get_all(header::SET_COOKIE) {
            if let Some((k, val)) = v
                .to_str()
                .ok()
                .and_then(|s| s.split(';').next()?.split_once('='))
            {
                if k.trim() == name {
                    pool_state.learn(pool, val.trim().trim_matches('"'), &member.id);
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
    let mut body = Metered::new(
        body,
        listener.member_timeout,
        "member response",
        Arc::new(AtomicU64::new(0)),
    );
    body.counters = vec![mstats.bytes_in.clone()];
    // The member's request is in flight until its response body ends.
    body.done = Some(Box::new(move || drop(member_guard)));
    Response::from_parts(parts, boxed(body))
}
