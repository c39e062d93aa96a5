//! The HTTP layer: parses requests into commands and renders replies and
//! errors (Neutron style `{"NeutronError": {type, message, detail}}` for the
//! network API and internal endpoints, Keystone style under `/v3`, Octavia
//! style `{"faultcode", "faultstring", "debuginfo"}` for load balancers). It never
//! touches state itself: identity and network logic live in `identity` and
//! `network`, durable changes go through `commit::Core::mutate`. Every
//! response carries `X-Openstack-Request-Id`. The Neutron and Octavia
//! collections are descriptors served by the one generic path of [`crud`];
//! `neutron` and `octavia` declare them and hold what is not CRUD.

pub mod barbican;
pub mod crud;
pub mod keystone;
pub mod neutron;
pub mod octavia;
pub mod vpnaas;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use axum::{
    extract::{
        rejection::{JsonRejection, QueryRejection},
        DefaultBodyLimit, Path, Query, Request, State,
    },
    http::{HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;

use crate::{
    app::App,
    auth::Auth,
    error::ApiError,
    hosts::{Command, CommandError, Reply},
};
use strato_proto::report::HostReport;

/// Request bodies above this are refused with 413.
pub const MAX_BODY: usize = 1 << 20;

/// Where bulk security group rule creation is posted: its bodies may carry
/// tens of thousands of rules (about 200 bytes each), so they may be up to
/// [`MAX_BULK_BODY`].
pub const BULK_RULES_PATH: &str = "/v2.0/security-group-rules";
pub const MAX_BULK_BODY: usize = 16 << 20;

fn max_body(path: &str) -> usize {
    if path == BULK_RULES_PATH {
        MAX_BULK_BODY
    } else {
        MAX_BODY
    }
}

/// Internal (operator) read endpoints.
fn internal_reads() -> Router<Arc<App>> {
    Router::new()
        .route("/internal/v1/hosts", get(list_hosts))
        .route("/internal/v1/compiled", get(compiled))
        .route("/internal/v1/resources", get(resources))
        .route("/internal/v1/hosts/{host}/config", get(host_config))
}

/// The public API (TCP): Keystone, Neutron, and the internal read endpoints
/// for administrators (admin token required).
pub fn router(app: Arc<App>) -> Router {
    let internal = internal_reads()
        .route("/internal/v1/hosts/{host}", get(show_host))
        .layer(middleware::from_fn_with_state(app.clone(), require_admin));
    finish(
        Router::new()
            .merge(keystone::routes())
            .merge(neutron::routes())
            .merge(vpnaas::routes())
            .merge(octavia::routes())
            .merge(barbican::routes())
            .merge(internal),
        app,
    )
}

/// The agents' API (the controller's Unix socket, reachable only by root on
/// the controller machine; in the harness, the management network): host
/// reports, configuration watches and the internal reads, without tokens.
pub fn agent_router(app: Arc<App>) -> Router {
    let r = internal_reads()
        .route("/internal/v1/hosts/{host}", get(show_host).put(report_host))
        .route("/internal/v1/hosts/{host}/watch", get(watch_host))
        .route(
            "/internal/v1/hosts/{host}/status",
            axum::routing::put(status_host),
        );
    finish(
        Router::new()
            .merge(keystone::routes())
            .merge(neutron::routes())
            .merge(vpnaas::routes())
            .merge(octavia::routes())
            .merge(octavia::agent_routes())
            .merge(barbican::routes())
            .merge(r),
        app,
    )
}

fn finish(r: Router<Arc<App>>, app: Arc<App>) -> Router {
    r.route("/healthz", get(|| async { "ok\n" }))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(body_limit))
        .layer(middleware::from_fn(request_id))
        .with_state(app)
}

/// Renders an [`ApiError`] the Neutron way.
pub fn neutron_error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({"NeutronError": {"type": e.kind, "message": e.message, "detail": ""}})),
    )
        .into_response()
}

/// Renders an [`ApiError`] the Keystone way.
pub fn keystone_error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({"error": {"code": e.status, "title": e.title(), "message": e.message}})),
    )
        .into_response()
}

/// The caller behind `X-Auth-Token`, or 401.
pub fn authenticate(app: &App, headers: &axum::http::HeaderMap) -> Result<Auth, ApiError> {
    let token = headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::unauthorized("The request you have made requires authentication.")
        })?;
    crate::identity::authenticate(&app.core.read(), token, crate::model::now_unix())
}

/// A JSON body, or a 400/413 [`ApiError`] saying what is wrong with it.
pub fn json_body(
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<serde_json::Value, ApiError> {
    match body {
        Ok(Json(v)) => Ok(v),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!(
                "request body exceeds {MAX_BODY} bytes ({MAX_BULK_BODY} for bulk security group rule creation)"
            ),
        )),
        Err(r) => Err(ApiError::bad_request(format!(
            "invalid request body: {}",
            r.body_text()
        ))),
    }
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

/// Internal reads over TCP need an administrator's token.
async fn require_admin(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    match authenticate(&app, req.headers()) {
        Ok(a) if a.is_admin() => next.run(req).await,
        Ok(_) => neutron_error(ApiError::forbidden(
            "Internal endpoints require the admin role.",
        )),
        Err(e) => neutron_error(e),
    }
}

/// Refuses a declared body over [`MAX_BODY`] ([`MAX_BULK_BODY`] for bulk
/// rule creation) before reading any of it (a body without Content-Length
/// is cut off by `DefaultBodyLimit` instead).
async fn body_limit(req: Request, next: Next) -> Response {
    let max = max_body(req.uri().path());
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return fault(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("request body exceeds {max} bytes"),
        );
    }
    next.run(req).await
}

async fn request_id(req: Request, next: Next) -> Response {
    let id = format!(
        "req-{:016x}-{:08x}",
        strato_proto::time::now_ms(),
        REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    let mut resp = {
        let _e = span.enter();
        tracing::debug!("received");
        drop(_e);
        next.run(req).await
    };
    let status = resp.status().as_u16();
    span.in_scope(|| tracing::debug!(status, "answered"));
    if status >= 500 {
        span.in_scope(|| tracing::warn!(status, "request failed"));
    }
    resp.headers_mut().insert(
        "x-openstack-request-id",
        HeaderValue::from_str(&id).expect("ascii id"),
    );
    resp
}

/// A Neutron-style fault body.
pub fn fault(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        status,
        Json(json!({"NeutronError": {"type": kind, "message": message, "detail": ""}})),
    )
        .into_response()
}

fn command_error(e: CommandError) -> Response {
    match e {
        CommandError::BadRequest(m) => fault(StatusCode::BAD_REQUEST, "BadRequest", m),
        CommandError::NotFound { kind, .. } => fault(
            StatusCode::NOT_FOUND,
            &format!("{kind}NotFound"),
            e.to_string(),
        ),
    }
}

fn json_rejection(r: JsonRejection) -> Response {
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => fault(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("request body exceeds {MAX_BODY} bytes"),
        ),
        _ => fault(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("invalid request body: {}", r.body_text()),
        ),
    }
}

fn reply(r: Result<Reply, CommandError>) -> Response {
    match r {
        Ok(Reply::Accepted) => StatusCode::NO_CONTENT.into_response(),
        Ok(Reply::Hosts(h)) => Json(json!({ "hosts": h })).into_response(),
        Ok(Reply::Host(h)) => Json(json!({ "host": h })).into_response(),
        Err(e) => command_error(e),
    }
}

async fn not_found() -> Response {
    fault(
        StatusCode::NOT_FOUND,
        "HTTPNotFound",
        "the resource could not be found",
    )
}

async fn list_hosts(State(app): State<Arc<App>>) -> Response {
    reply(app.hosts.apply(Command::ListHosts))
}

async fn show_host(State(app): State<Arc<App>>, Path(host): Path<String>) -> Response {
    reply(app.hosts.apply(Command::ShowHost { host }))
}

async fn report_host(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    body: Result<Json<HostReport>, JsonRejection>,
) -> Response {
    let report = match body {
        Ok(Json(report)) => report,
        Err(r) => return json_rejection(r),
    };
    let underlay = report.underlay_ip.clone();
    let (az, gateway) = (report.az.clone(), report.external.is_some());
    if let Some(ip) = &underlay {
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            return fault(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("underlay_ip {ip:?} is not an IPv4 address"),
            );
        }
    }
    let r = app.hosts.apply(Command::ReportHost {
        host: host.clone(),
        report: Box::new(report),
    });
    if r.is_ok() {
        if let Some(ip) = underlay {
            // Register (durably) the host and its tunnel endpoint the first
            // time, or when it moved: the compiler tells other hosts.
            let rec = crate::model::HostRecord {
                name: host.clone(),
                underlay_ip: ip,
                az,
                gateway,
                available: true,
            };
            let res = app.core.mutate(|s| {
                let changes = if s.hosts.get(&host) == Some(&rec) {
                    vec![]
                } else {
                    vec![crate::model::Change::Put(crate::model::Object::Host(
                        rec.clone(),
                    ))]
                };
                Ok((changes, ()))
            });
            if let Err(e) = res {
                return neutron_error(e);
            }
        }
    }
    reply(r)
}

async fn status_host(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    body: Result<Json<strato_proto::report::StatusReport>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(status)) => reply(app.hosts.apply(Command::HostStatus { host, status })),
        Err(r) => json_rejection(r),
    }
}

#[derive(serde::Deserialize)]
struct WatchQuery {
    #[serde(default)]
    since: u64,
}

/// A chunk stream from a channel (the watch response body).
struct ChannelBody(
    tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::convert::Infallible>>,
);

impl futures_core::Stream for ChannelBody {
    type Item = Result<axum::body::Bytes, std::convert::Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Seconds between heartbeat lines on an idle watch.
const WATCH_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// The watch stream of one host's configuration, as JSON lines: first a
/// snapshot (`since=0`) or the delta since `since` (a snapshot if the log no
/// longer reaches back), then a delta per change concerning the host, and
/// `{"kind":"heartbeat",...}` when idle. An agent resumes after a
/// disconnect with `since=<last revision it applied>`.
async fn watch_host(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> Response {
    if !crate::hosts::valid_host_name(&host) {
        return fault(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("host name {host:?} is invalid"),
        );
    }
    let since = match q {
        Ok(Query(q)) => q.since,
        Err(e) => {
            return fault(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("invalid query: {e}"),
            )
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut revisions = app.core.subscribe();
    let mut stopping = app.stopping.subscribe();
    tokio::spawn(async move {
        let mut since = since;
        let mut first = true;
        // A fixed beat: other hosts' commits must not postpone this host's
        // heartbeats (the agent gives up on a silent stream).
        let mut beat = tokio::time::interval_at(
            tokio::time::Instant::now() + WATCH_HEARTBEAT,
            WATCH_HEARTBEAT,
        );
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(u) = app.core.host_update(&host, since, first && since == 0) {
                since = u.revision;
                let mut line = serde_json::to_vec(&u).expect("updates serialize");
                line.push(b'\n');
                if tx.send(Ok(line.into())).await.is_err() {
                    break;
                }
            }
            first = false;
            tokio::select! {
                r = revisions.changed() => if r.is_err() { break },
                _ = beat.tick() => {
                    let hb = format!("{{\"kind\":\"heartbeat\",\"host\":\"{host}\",\"revision\":{since}}}\n");
                    if tx.send(Ok(hb.into())).await.is_err() {
                        break;
                    }
                }
                _ = tx.closed() => break,
                _ = stopping.changed() => break,
            }
        }
        tracing::debug!(host, "watch closed");
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(axum::body::Body::from_stream(ChannelBody(rx)))
        .expect("static response parts")
}

/// Every project's network resources, for operators (`stratoctl resources`).
async fn resources(State(app): State<Arc<App>>) -> Response {
    let s = app.core.read();
    let mut projects: std::collections::BTreeMap<&str, serde_json::Map<String, serde_json::Value>> =
        Default::default();
    for (pid, p) in &s.projects {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), pid.clone().into());
        m.insert("name".into(), p.name.clone().into());
        for k in ["networks", "routers", "ports", "load_balancers"] {
            m.insert(k.into(), json!([]));
        }
        projects.insert(pid.as_str(), m);
    }
    let push = |projects: &mut std::collections::BTreeMap<
        &str,
        serde_json::Map<String, serde_json::Value>,
    >,
                pid: &str,
                k: &str,
                v: serde_json::Value| {
        if let Some(m) = projects.get_mut(pid) {
            if let Some(a) = m.get_mut(k).and_then(|a| a.as_array_mut()) {
                a.push(v);
            }
        }
    };
    for n in s.networks.values() {
        let subnets: Vec<serde_json::Value> = s
            .subnets
            .values()
            .filter(|x| x.network_id == n.meta.id)
            .map(|x| json!({"id": x.meta.id, "name": x.meta.name, "cidr": x.cidr, "gateway_ip": x.gateway_ip}))
            .collect();
        push(
            &mut projects,
            &n.meta.project_id,
            "networks",
            json!({"id": n.meta.id, "name": n.meta.name, "vni": n.vni, "mtu": n.mtu, "subnets": subnets}),
        );
    }
    for r in s.routers.values() {
        let ifaces = crate::network::routers::interfaces(&s, &r.meta.id).len();
        push(
            &mut projects,
            &r.meta.project_id,
            "routers",
            json!({"id": r.meta.id, "name": r.meta.name, "interfaces": ifaces, "routes": r.routes.len()}),
        );
    }
    for p in s.ports.values() {
        let status = crate::api::neutron::port_status(&app, p);
        let ips: Vec<&str> = p.fixed_ips.iter().map(|f| f.ip_address.as_str()).collect();
        push(
            &mut projects,
            &p.meta.project_id,
            "ports",
            json!({
                "id": p.meta.id, "name": p.meta.name, "network_id": p.network_id, "ips": ips, "mac": p.mac_address,
                "host": p.binding_host_id, "device_owner": p.device_owner, "status": status
            }),
        );
    }
    for lb in s.load_balancers.values() {
        let listeners: Vec<serde_json::Value> = s
            .listeners
            .values()
            .filter(|l| l.loadbalancer_id == lb.meta.id)
            .map(|l| {
                let members: Vec<serde_json::Value> = l
                    .default_pool_id
                    .iter()
                    .flat_map(|p| crate::lbaas::pool_members(&s, p))
                    .map(|m| {
                        let monitored = crate::lbaas::members::monitored(
                            crate::lbaas::pool_monitor(&s, &m.pool_id),
                        );
                        json!({"id": m.meta.id, "name": m.meta.name, "address": m.address,
                            "port": m.protocol_port, "weight": m.weight,
                            "status": app.lb_health.member_status(m, monitored)})
                    })
                    .collect();
                json!({"id": l.meta.id, "protocol": l.protocol.as_str(), "port": l.protocol_port,
                    "members": members})
            })
            .collect();
        let fip = s
            .floating_ips
            .values()
            .find(|f| f.port_id.as_deref() == Some(lb.vip_port_id.as_str()))
            .map(|f| f.floating_ip_address.clone());
        push(
            &mut projects,
            &lb.meta.project_id,
            "load_balancers",
            json!({"id": lb.meta.id, "name": lb.meta.name, "vip": lb.vip_address,
                "floating_ip": fip, "provisioning_status": lb.provisioning_status.as_str(),
                "operating_status": app.lb_health.lb_status(&s, lb), "listeners": listeners}),
        );
    }
    Json(json!({"revision": s.revision, "projects": projects.into_values().collect::<Vec<_>>()}))
        .into_response()
}

/// Compiled entries per host (operators, stratoctl).
/// A host's compiled configuration as its agent would receive it (a
/// snapshot): what `stratoctl trace` names rules from.
async fn host_config(State(app): State<Arc<App>>, Path(host): Path<String>) -> Response {
    if !crate::hosts::valid_host_name(&host) {
        return fault(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("host name {host:?} is invalid"),
        );
    }
    match app.core.host_update(&host, 0, true) {
        Some(u) => Json(u).into_response(),
        None => fault(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no configuration for host {host:?}"),
        ),
    }
}

async fn compiled(State(app): State<Arc<App>>) -> Response {
    Json(json!({"revision": app.core.read().revision, "hosts": app.core.compiled_sizes()}))
        .into_response()
}
