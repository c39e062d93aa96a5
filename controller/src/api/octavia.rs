//! Octavia v2 routes (L4 load balancers): loadbalancers (with `status` and
//! `stats`), listeners (with `stats`), pools, pools/{id}/members (and the
//! batch member update), healthmonitors, quotas and providers, under
//! `/v2/lbaas` and `/v2.0/lbaas`, and under `/load-balancer/...`, the
//! catalog's `load-balancer` endpoint (whose version document points
//! openstacksdk at `/load-balancer/v2`; python-octaviaclient appends
//! `/v2.0` to the endpoint). Errors are Octavia's
//! `{"faultcode", "faultstring", "debuginfo"}`. Also the agents' reports of
//! member health and traffic counters (`/internal/v1/hosts/{host}/lb-*`).
//! Handlers authenticate, extract, call `lbaas::*` through `Core::mutate`,
//! and render.

use std::sync::Arc;

use axum::{
    extract::{rejection::JsonRejection, Path, Query, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, put},
    Json, Router,
};
use serde_json::{json, Map, Value};

use super::{authenticate, json_body};
use strato_proto::lb::{Counters, HealthReport, StatsReport};

use crate::{
    app::App,
    auth::Auth,
    error::ApiError,
    lbaas::{self, health_monitors, listeners, load_balancers, members, pools, quotas},
    model::{Change, Object},
    network,
    state::State as Desired,
};

/// Where the Octavia API is served: its own paths and, below the
/// catalog's `load-balancer` endpoint, the same again.
pub const PREFIXES: [&str; 4] = [
    "/v2/lbaas",
    "/v2.0/lbaas",
    "/load-balancer/v2/lbaas",
    "/load-balancer/v2.0/lbaas",
];

/// The catalog's `load-balancer` endpoint, below the public URL.
pub const ENDPOINT_PATH: &str = "/load-balancer";

type Reply = Result<(StatusCode, Value), ApiError>;

/// Renders an [`ApiError`] the Octavia way.
pub fn octavia_error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = if e.status >= 500 { "Server" } else { "Client" };
    (
        status,
        Json(json!({"faultcode": code, "faultstring": e.message, "debuginfo": null})),
    )
        .into_response()
}

fn respond(r: Reply) -> Response {
    match r {
        Ok((StatusCode::NO_CONTENT, _)) => StatusCode::NO_CONTENT.into_response(),
        Ok((StatusCode::ACCEPTED, Value::Null)) => StatusCode::ACCEPTED.into_response(),
        Ok((s, v)) => (s, Json(v)).into_response(),
        Err(e) => octavia_error(e),
    }
}

/// One top-level Octavia collection.
trait Resource: Send + Sync + 'static {
    const ONE: &'static str;
    const MANY: &'static str;
    const ATTRS: &'static [&'static str];
    fn list(app: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>>;
    fn show(app: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError>;
    fn create(s: &Desired, a: &Auth, body: &Value) -> Result<(Vec<Change>, String), ApiError>;
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        body: &Value,
    ) -> Result<(Vec<Change>, String), ApiError>;
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        q: &[(String, String)],
    ) -> Result<(Vec<Change>, ()), ApiError>;
}

struct LoadBalancers;
struct Listeners;
struct Pools;
struct HealthMonitors;

impl Resource for LoadBalancers {
    const ONE: &'static str = "loadbalancer";
    const MANY: &'static str = "loadbalancers";
    const ATTRS: &'static [&'static str] = load_balancers::ATTRS;
    fn list(app: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>> {
        s.load_balancers
            .values()
            .filter(|x| a.can_see(&x.meta.project_id))
            .map(|x| load_balancers::render(s, &app.lb_health, x))
            .collect()
    }
    fn show(app: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError> {
        Ok(load_balancers::render(
            s,
            &app.lb_health,
            lbaas::load_balancer(s, a, id)?,
        ))
    }
    fn create(s: &Desired, a: &Auth, b: &Value) -> Result<(Vec<Change>, String), ApiError> {
        load_balancers::create(s, a, b).map(|(c, x)| (c, x.meta.id))
    }
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        b: &Value,
    ) -> Result<(Vec<Change>, String), ApiError> {
        load_balancers::update(s, a, id, b).map(|(c, x)| (c, x.meta.id))
    }
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        q: &[(String, String)],
    ) -> Result<(Vec<Change>, ()), ApiError> {
        let cascade = match q.iter().find(|(k, _)| k == "cascade").map(|(_, v)| v.as_str()) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for field/attribute cascade. Value: '{v}'. Value should be a boolean."
                )))
            }
        };
        load_balancers::delete(s, a, id, cascade)
    }
}

impl Resource for Listeners {
    const ONE: &'static str = "listener";
    const MANY: &'static str = "listeners";
    const ATTRS: &'static [&'static str] = listeners::ATTRS;
    fn list(app: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>> {
        s.listeners
            .values()
            .filter(|x| a.can_see(&x.meta.project_id))
            .map(|x| listeners::render(s, &app.lb_health, x))
            .collect()
    }
    fn show(app: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError> {
        Ok(listeners::render(
            s,
            &app.lb_health,
            lbaas::listener(s, a, id)?,
        ))
    }
    fn create(s: &Desired, a: &Auth, b: &Value) -> Result<(Vec<Change>, String), ApiError> {
        listeners::create(s, a, b).map(|(c, x)| (c, x.meta.id))
    }
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        b: &Value,
    ) -> Result<(Vec<Change>, String), ApiError> {
        listeners::update(s, a, id, b).map(|(c, x)| (c, x.meta.id))
    }
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        _: &[(String, String)],
    ) -> Result<(Vec<Change>, ()), ApiError> {
        listeners::delete(s, a, id)
    }
}

impl Resource for Pools {
    const ONE: &'static str = "pool";
    const MANY: &'static str = "pools";
    const ATTRS: &'static [&'static str] = pools::ATTRS;
    fn list(app: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>> {
        s.pools
            .values()
            .filter(|x| a.can_see(&x.meta.project_id))
            .map(|x| pools::render(s, &app.lb_health, x))
            .collect()
    }
    fn show(app: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError> {
        Ok(pools::render(s, &app.lb_health, lbaas::pool(s, a, id)?))
    }
    fn create(s: &Desired, a: &Auth, b: &Value) -> Result<(Vec<Change>, String), ApiError> {
        pools::create(s, a, b).map(|(c, x)| (c, x.meta.id))
    }
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        b: &Value,
    ) -> Result<(Vec<Change>, String), ApiError> {
        pools::update(s, a, id, b).map(|(c, x)| (c, x.meta.id))
    }
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        _: &[(String, String)],
    ) -> Result<(Vec<Change>, ()), ApiError> {
        pools::delete(s, a, id)
    }
}

impl Resource for HealthMonitors {
    const ONE: &'static str = "healthmonitor";
    const MANY: &'static str = "healthmonitors";
    const ATTRS: &'static [&'static str] = health_monitors::ATTRS;
    fn list(_: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>> {
        s.health_monitors
            .values()
            .filter(|x| a.can_see(&x.meta.project_id))
            .map(health_monitors::render)
            .collect()
    }
    fn show(_: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError> {
        Ok(health_monitors::render(lbaas::health_monitor(s, a, id)?))
    }
    fn create(s: &Desired, a: &Auth, b: &Value) -> Result<(Vec<Change>, String), ApiError> {
        health_monitors::create(s, a, b).map(|(c, x)| (c, x.meta.id))
    }
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        b: &Value,
    ) -> Result<(Vec<Change>, String), ApiError> {
        health_monitors::update(s, a, id, b).map(|(c, x)| (c, x.meta.id))
    }
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        _: &[(String, String)],
    ) -> Result<(Vec<Change>, ()), ApiError> {
        health_monitors::delete(s, a, id)
    }
}

/// Octavia's `sort=key:dir,...` as the `sort_key`/`sort_dir` the shared
/// list machinery understands (the first key decides).
fn normalise_query(q: &[(String, String)]) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for (k, v) in q {
        if k == "sort" {
            let first = v.split(',').next().unwrap_or_default();
            let (key, dir) = first.split_once(':').unwrap_or((first, "asc"));
            if key.is_empty() {
                return Err(ApiError::bad_request(format!("Invalid sort '{v}'.")));
            }
            out.push(("sort_key".to_owned(), key.to_owned()));
            out.push(("sort_dir".to_owned(), dir.to_owned()));
        } else {
            out.push((k.clone(), v.clone()));
        }
    }
    Ok(out)
}

/// Filters, `fields`, sorting and pages over rendered items, with
/// Octavia's `<collection>_links` (next page, to the path that was asked).
fn list_body(
    app: &App,
    many: &str,
    attrs: &[&str],
    items: Vec<Map<String, Value>>,
    q: &[(String, String)],
    path: &str,
) -> Result<Value, ApiError> {
    let q = normalise_query(q)?;
    let mut body = network::list_response(many, items, &q, &app.config.public_url, attrs)?;
    let key = format!("{many}_links");
    match body
        .get_mut(&key)
        .and_then(|l| l.get_mut(0))
        .and_then(|l| l.get_mut("href"))
    {
        Some(Value::String(href)) => {
            *href = href.replacen(
                &format!("{}/v2.0/{many}?", app.config.public_url),
                &format!("{}{path}?", app.config.public_url),
                1,
            );
        }
        _ => {
            body[key] = json!([]);
        }
    }
    Ok(body)
}

async fn list<R: Resource>(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    uri: Uri,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let s = app.core.read();
        let items = R::list(&app, &s, &auth);
        Ok((
            StatusCode::OK,
            list_body(&app, R::MANY, R::ATTRS, items, &q, uri.path())?,
        ))
    })())
}

async fn show<R: Resource>(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let s = app.core.read();
        let item = network::select_fields(R::show(&app, &s, &auth, &id)?, &q);
        Ok((StatusCode::OK, json!({ R::ONE: item })))
    })())
}

async fn create<R: Resource>(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let body = json_body(body)?;
        let id = app.core.mutate(|s| R::create(s, &auth, &body))?;
        let s = app.core.read();
        Ok((
            StatusCode::CREATED,
            json!({ R::ONE: R::show(&app, &s, &auth, &id)? }),
        ))
    })())
}

async fn update<R: Resource>(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let body = json_body(body)?;
        let id = app.core.mutate(|s| R::update(s, &auth, &id, &body))?;
        let s = app.core.read();
        Ok((
            StatusCode::OK,
            json!({ R::ONE: R::show(&app, &s, &auth, &id)? }),
        ))
    })())
}

async fn delete<R: Resource>(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        app.core.mutate(|s| R::delete(s, &auth, &id, &q))?;
        Ok((StatusCode::NO_CONTENT, Value::Null))
    })())
}

// ------------------------------------------------------------------ members

async fn member_list(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    uri: Uri,
    Path(pool_id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let s = app.core.read();
        lbaas::pool(&s, &auth, &pool_id)?;
        let items = lbaas::pool_members(&s, &pool_id)
            .map(|m| members::render_in(&s, &app.lb_health, m))
            .collect();
        Ok((
            StatusCode::OK,
            list_body(&app, "members", members::ATTRS, items, &q, uri.path())?,
        ))
    })())
}

async fn member_create(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(pool_id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let body = json_body(body)?;
        let m = app
            .core
            .mutate(|s| members::create(s, &auth, &pool_id, &body))?;
        let s = app.core.read();
        let m = lbaas::member(&s, &auth, &pool_id, &m.meta.id)?;
        Ok((
            StatusCode::CREATED,
            json!({"member": members::render_in(&s, &app.lb_health, m)}),
        ))
    })())
}

#[derive(serde::Deserialize)]
struct BatchQuery {
    #[serde(default)]
    additive_only: bool,
}

/// PUT /pools/{id}/members: the batch update (202, no body, as Octavia).
async fn member_batch(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(pool_id): Path<String>,
    q: Result<Query<BatchQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let Query(q) = q.map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        let body = json_body(body)?;
        app.core
            .mutate(|s| members::batch(s, &auth, &pool_id, &body, q.additive_only))?;
        Ok((StatusCode::ACCEPTED, Value::Null))
    })())
}

async fn member_show(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((pool_id, id)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let s = app.core.read();
        let m = lbaas::member(&s, &auth, &pool_id, &id)?;
        let item = network::select_fields(members::render_in(&s, &app.lb_health, m), &q);
        Ok((StatusCode::OK, json!({ "member": item })))
    })())
}

async fn member_update(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((pool_id, id)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let body = json_body(body)?;
        app.core
            .mutate(|s| members::update(s, &auth, &pool_id, &id, &body))?;
        let s = app.core.read();
        let m = lbaas::member(&s, &auth, &pool_id, &id)?;
        Ok((
            StatusCode::OK,
            json!({"member": members::render_in(&s, &app.lb_health, m)}),
        ))
    })())
}

async fn member_delete(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((pool_id, id)): Path<(String, String)>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        app.core
            .mutate(|s| members::delete(s, &auth, &pool_id, &id))?;
        Ok((StatusCode::NO_CONTENT, Value::Null))
    })())
}

// ------------------------------------------------------- status and stats

async fn lb_status(State(app): State<Arc<App>>, h: HeaderMap, Path(id): Path<String>) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let s = app.core.read();
        let lb = lbaas::load_balancer(&s, &auth, &id)?;
        Ok((
            StatusCode::OK,
            load_balancers::status_tree(&s, &app.lb_health, lb),
        ))
    })())
}

fn stats_body(c: Counters) -> Value {
    json!({"stats": {
        "bytes_in": c.bytes_in, "bytes_out": c.bytes_out,
        "active_connections": c.active_connections,
        "total_connections": c.total_connections,
        "request_errors": c.request_errors,
    }})
}

async fn lb_stats(State(app): State<Arc<App>>, h: HeaderMap, Path(id): Path<String>) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let s = app.core.read();
        lbaas::load_balancer(&s, &auth, &id)?;
        Ok((
            StatusCode::OK,
            stats_body(app.lb_stats.load_balancer(&s, &id)),
        ))
    })())
}

async fn listener_stats(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let s = app.core.read();
        lbaas::listener(&s, &auth, &id)?;
        Ok((StatusCode::OK, stats_body(app.lb_stats.listener(&id))))
    })())
}

// ------------------------------------------------- quotas, providers, versions

async fn quota_list(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        Ok((StatusCode::OK, quotas::list(&app.core.read(), &auth)?))
    })())
}

async fn quota_defaults(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        Ok((StatusCode::OK, quotas::defaults(&auth)?))
    })())
}

async fn quota_show(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(project): Path<String>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        Ok((
            StatusCode::OK,
            quotas::show(&app.core.read(), &auth, &project)?,
        ))
    })())
}

async fn quota_update(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(project): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let body = json_body(body)?;
        Ok((
            StatusCode::ACCEPTED,
            app.core
                .mutate(|s| quotas::update(s, &auth, &project, &body))?,
        ))
    })())
}

async fn quota_reset(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(project): Path<String>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        app.core.mutate(|s| quotas::reset(s, &auth, &project))?;
        Ok((StatusCode::NO_CONTENT, Value::Null))
    })())
}

async fn providers(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    respond((|| {
        authenticate(&app, &h)?;
        Ok((
            StatusCode::OK,
            json!({"providers": [{"name": lbaas::PROVIDER, "description": "Strato: eBPF L4 load balancing (Maglev) on every host"}]}),
        ))
    })())
}

/// The version document at the catalog's `load-balancer` endpoint.
async fn versions(State(app): State<Arc<App>>) -> Response {
    let base = format!("{}{ENDPOINT_PATH}", app.config.public_url);
    Json(json!({"versions": [{
        "id": "v2.0", "status": "CURRENT", "updated": "2026-12-01T00:00:00Z",
        "links": [{"href": format!("{base}/v2"), "rel": "self"}]
    }]}))
    .into_response()
}

/// The API root of a version: its collections.
async fn root(State(app): State<Arc<App>>, uri: Uri) -> Response {
    let base = format!(
        "{}{}",
        app.config.public_url,
        uri.path().trim_end_matches('/')
    );
    let links: Vec<Value> = [
        "loadbalancers",
        "listeners",
        "pools",
        "healthmonitors",
        "quotas",
        "providers",
    ]
    .iter()
    .map(|c| json!({"rel": c, "href": format!("{base}/lbaas/{c}")}))
    .collect();
    Json(json!({"version": {"id": "v2.0", "status": "CURRENT", "links": links}})).into_response()
}

// --------------------------------------------------------- agents' reports

fn valid_host(host: &str) -> Result<(), ApiError> {
    if crate::hosts::valid_host_name(host) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "host name {host:?} is invalid"
        )))
    }
}

fn report_rejection(r: JsonRejection) -> ApiError {
    ApiError::bad_request(format!("invalid report: {}", r.body_text()))
}

/// PUT /internal/v1/hosts/{host}/lb-health: `{"members": [{"id", "up"}]}`.
/// Unknown members are ignored (a member deleted since the agent's last
/// configuration) and counted in the answer.
pub async fn report_health(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    body: Result<Json<HealthReport>, JsonRejection>,
) -> Response {
    let r = (|| {
        valid_host(&host)?;
        let Json(report) = body.map_err(report_rejection)?;
        let (accepted, unknown) = {
            let s = app.core.read();
            let now = std::time::Instant::now();
            let (mut accepted, mut unknown) = (0, 0);
            for m in &report.members {
                if s.members.contains_key(&m.id) {
                    app.lb_health.report(&host, &m.id, m.up, now);
                    accepted += 1;
                } else {
                    unknown += 1;
                }
            }
            app.lb_health.retain(|id| s.members.contains_key(id));
            (accepted, unknown)
        };
        // A member whose health flipped is stored so, which recompiles the
        // hosts of its VPC: they stop (or start again) sending it new
        // connections.
        app.core.mutate(|s| {
            let changes = report
                .members
                .iter()
                .filter_map(|r| {
                    let m = s.members.get(&r.id)?;
                    let down = app.lb_health.latest(&r.id) == Some(false);
                    (m.health_down != down).then(|| {
                        let mut m = m.clone();
                        m.health_down = down;
                        Change::Put(Object::Member(m))
                    })
                })
                .collect();
            Ok((changes, ()))
        })?;
        Ok::<_, ApiError>(json!({"accepted": accepted, "unknown": unknown}))
    })();
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => super::neutron_error(e),
    }
}

/// PUT /internal/v1/hosts/{host}/lb-stats: the host's counters per
/// listener and member (replacing its previous report; unknown ids are
/// dropped and counted).
pub async fn report_stats(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    body: Result<Json<StatsReport>, JsonRejection>,
) -> Response {
    let r = (|| {
        valid_host(&host)?;
        let Json(mut report) = body.map_err(report_rejection)?;
        let s = app.core.read();
        let before = report.listeners.len() + report.members.len();
        report.listeners.retain(|l| s.listeners.contains_key(&l.id));
        report.members.retain(|m| s.members.contains_key(&m.id));
        let accepted = report.listeners.len() + report.members.len();
        app.lb_stats.report(&host, report);
        Ok::<_, ApiError>(json!({"accepted": accepted, "unknown": before - accepted}))
    })();
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => super::neutron_error(e),
    }
}

fn collection<R: Resource>(r: Router<Arc<App>>, prefix: &str) -> Router<Arc<App>> {
    r.route(
        &format!("{prefix}/{}", R::MANY),
        get(list::<R>).post(create::<R>),
    )
    .route(
        &format!("{prefix}/{}/{{id}}", R::MANY),
        get(show::<R>).put(update::<R>).delete(delete::<R>),
    )
}

pub fn routes() -> Router<Arc<App>> {
    let mut r = Router::new()
        .route(ENDPOINT_PATH, get(versions))
        .route(&format!("{ENDPOINT_PATH}/"), get(versions));
    for v in ["/v2", "/load-balancer/v2", "/load-balancer/v2.0"] {
        r = r.route(v, get(root)).route(&format!("{v}/"), get(root));
    }
    for p in PREFIXES {
        r = collection::<LoadBalancers>(r, p);
        r = collection::<Listeners>(r, p);
        r = collection::<Pools>(r, p);
        r = collection::<HealthMonitors>(r, p);
        r = r
            .route(&format!("{p}/loadbalancers/{{id}}/status"), get(lb_status))
            .route(&format!("{p}/loadbalancers/{{id}}/stats"), get(lb_stats))
            .route(&format!("{p}/listeners/{{id}}/stats"), get(listener_stats))
            .route(
                &format!("{p}/pools/{{id}}/members"),
                get(member_list).post(member_create).put(member_batch),
            )
            .route(
                &format!("{p}/pools/{{id}}/members/{{member}}"),
                get(member_show).put(member_update).delete(member_delete),
            )
            .route(&format!("{p}/quotas"), get(quota_list))
            .route(&format!("{p}/quotas/defaults"), get(quota_defaults))
            .route(
                &format!("{p}/quotas/{{project}}"),
                get(quota_show).put(quota_update).delete(quota_reset),
            )
            .route(&format!("{p}/providers"), get(providers));
    }
    r
}

/// The agents' report endpoints (on the agent router only).
pub fn agent_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/internal/v1/hosts/{host}/lb-health", put(report_health))
        .route("/internal/v1/hosts/{host}/lb-stats", put(report_stats))
}
