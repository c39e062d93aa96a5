//! Octavia v2 routes: loadbalancers (with `status` and `stats`), listeners
//! (with `stats`), pools, pools/{id}/members (and the batch member
//! update), healthmonitors, l7policies, l7policies/{id}/rules, quotas and
//! providers, under
//! `/v2/lbaas` and `/v2.0/lbaas`, and under `/load-balancer/...`, the
//! catalog's `load-balancer` endpoint (whose version document points
//! openstacksdk at `/load-balancer/v2`; python-octaviaclient appends
//! `/v2.0` to the endpoint). Errors are Octavia's
//! `{"faultcode", "faultstring", "debuginfo"}`. Also the agents' reports of
//! member health and traffic counters (`/internal/v1/hosts/{host}/lb-*`).
//! The top-level collections are [`crud::Collection`] descriptors served
//! by the generic handlers of `api::crud`. Handlers authenticate, extract,
//! call `lbaas::*` through `Core::mutate`, and render; they never validate
//! attributes themselves.

use std::sync::Arc;

use axum::{
    extract::{rejection::JsonRejection, Path, Query, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, put},
    Json, Router,
};
use serde_json::{json, Value};

use strato_proto::lb::{Counters, HealthReport, StatsReport};

use super::{
    authenticate,
    crud::{
        self, project_scoped, read, write, Api, Body, Collection, Delete, Pairs, Quotas, Update,
    },
    json_body,
};
use crate::{
    app::App,
    auth::Auth,
    error::ApiError,
    lbaas::{
        self, health_monitors, l7policies, l7rules, listeners, load_balancers, members, pools,
        quotas,
    },
    model::{Change, HealthMonitor, L7Policy, Listener, LoadBalancer, Object, Pool},
    network,
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

const API: Api = Api::Octavia;

static LOAD_BALANCERS: Collection<LoadBalancer> = Collection {
    api: API,
    one: "loadbalancer",
    many: "loadbalancers",
    path: "loadbalancers",
    attrs: load_balancers::ATTRS,
    visible: project_scoped,
    get: lbaas::load_balancer,
    render: |app, s, _, x| load_balancers::render(s, &app.lb_health, x),
    create: Some(load_balancers::create),
    update: Update::Plain(load_balancers::update),
    delete: Delete::Cascade(load_balancers::delete),
    prepare_list: None,
};

static LISTENERS: Collection<Listener> = Collection {
    api: API,
    one: "listener",
    many: "listeners",
    path: "listeners",
    attrs: listeners::ATTRS,
    visible: project_scoped,
    get: lbaas::listener,
    render: |app, s, _, x| listeners::render(s, &app.lb_health, x),
    create: Some(listeners::create),
    update: Update::Plain(listeners::update),
    delete: Delete::Plain(listeners::delete),
    prepare_list: None,
};

static POOLS: Collection<Pool> = Collection {
    api: API,
    one: "pool",
    many: "pools",
    path: "pools",
    attrs: pools::ATTRS,
    visible: project_scoped,
    get: lbaas::pool,
    render: |app, s, _, x| pools::render(s, &app.lb_health, x),
    create: Some(pools::create),
    update: Update::Plain(pools::update),
    delete: Delete::Plain(pools::delete),
    prepare_list: None,
};

static HEALTH_MONITORS: Collection<HealthMonitor> = Collection {
    api: API,
    one: "healthmonitor",
    many: "healthmonitors",
    path: "healthmonitors",
    attrs: health_monitors::ATTRS,
    visible: project_scoped,
    get: lbaas::health_monitor,
    render: |_, _, _, x| health_monitors::render(x),
    create: Some(health_monitors::create),
    update: Update::Plain(health_monitors::update),
    delete: Delete::Plain(health_monitors::delete),
    prepare_list: None,
};

static L7POLICIES: Collection<L7Policy> = Collection {
    api: API,
    one: "l7policy",
    many: "l7policies",
    path: "l7policies",
    attrs: l7policies::ATTRS,
    visible: project_scoped,
    get: lbaas::l7policy,
    render: |_, s, _, x| l7policies::render(s, x),
    create: Some(l7policies::create),
    update: Update::Plain(l7policies::update),
    delete: Delete::Plain(l7policies::delete),
    prepare_list: None,
};

static QUOTAS: Quotas = Quotas {
    api: API,
    list: quotas::list,
    show: quotas::show,
    update: quotas::update,
    updated: StatusCode::ACCEPTED,
    reset: quotas::reset,
};

// ------------------------------------------------------------------ members

async fn member_list(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    uri: Uri,
    Path(pool_id): Path<String>,
    Query(q): Query<Pairs>,
) -> Response {
    read(API, &app, &h, |s, auth| {
        lbaas::pool(s, auth, &pool_id)?;
        let items = lbaas::pool_members(s, &pool_id)
            .map(|m| members::render_in(s, &app.lb_health, m))
            .collect();
        let many = "members";
        API.list_body(&app, many, many, members::ATTRS, items, &q, uri.path())
    })
}

/// A member of the pool, rendered, as the state now holds it.
fn member_reply(app: &App, auth: &Auth, pool_id: &str, id: &str) -> Result<Value, ApiError> {
    let s = app.core.read();
    let m = lbaas::member(&s, auth, pool_id, id)?;
    Ok(json!({"member": members::render_in(&s, &app.lb_health, m)}))
}

async fn member_create(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(pool_id): Path<String>,
    body: Body,
) -> Response {
    API.respond((|| {
        let auth = authenticate(&app, &h)?;
        let body = json_body(body)?;
        let m = app
            .core
            .mutate(|s| members::create(s, &auth, &pool_id, &body))?;
        Ok((
            StatusCode::CREATED,
            member_reply(&app, &auth, &pool_id, &m.meta.id)?,
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
    body: Body,
) -> Response {
    API.respond((|| {
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
    Query(q): Query<Pairs>,
) -> Response {
    read(API, &app, &h, |s, auth| {
        let m = lbaas::member(s, auth, &pool_id, &id)?;
        let item = network::select_fields(members::render_in(s, &app.lb_health, m), &q);
        Ok(json!({ "member": item }))
    })
}

async fn member_update(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((pool_id, id)): Path<(String, String)>,
    body: Body,
) -> Response {
    API.respond((|| {
        let auth = authenticate(&app, &h)?;
        let body = json_body(body)?;
        app.core
            .mutate(|s| members::update(s, &auth, &pool_id, &id, &body))?;
        Ok((StatusCode::OK, member_reply(&app, &auth, &pool_id, &id)?))
    })())
}

async fn member_delete(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((pool_id, id)): Path<(String, String)>,
) -> Response {
    write(API, &app, &h, StatusCode::NO_CONTENT, |s, auth| {
        let (c, ()) = members::delete(s, auth, &pool_id, &id)?;
        Ok((c, Value::Null))
    })
}

// ------------------------------------------------------------- L7 rules

async fn rule_list(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    uri: Uri,
    Path(policy_id): Path<String>,
    Query(q): Query<Pairs>,
) -> Response {
    read(API, &app, &h, |s, auth| {
        lbaas::rules_policy(s, auth, &policy_id)?;
        let items = lbaas::policy_rules(s, &policy_id)
            .map(l7rules::render)
            .collect();
        API.list_body(
            &app,
            "rules",
            "rules",
            l7rules::ATTRS,
            items,
            &q,
            uri.path(),
        )
    })
}

/// A rule of the policy, rendered, as the state now holds it.
fn rule_reply(app: &App, auth: &Auth, policy_id: &str, id: &str) -> Result<Value, ApiError> {
    let s = app.core.read();
    Ok(json!({"rule": l7rules::render(lbaas::l7rule(&s, auth, policy_id, id)?)}))
}

async fn rule_create(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(policy_id): Path<String>,
    body: Body,
) -> Response {
    API.respond((|| {
        let auth = authenticate(&app, &h)?;
        let body = json_body(body)?;
        let r = app
            .core
            .mutate(|s| l7rules::create(s, &auth, &policy_id, &body))?;
        Ok((
            StatusCode::CREATED,
            rule_reply(&app, &auth, &policy_id, &r.meta.id)?,
        ))
    })())
}

async fn rule_show(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((policy_id, id)): Path<(String, String)>,
    Query(q): Query<Pairs>,
) -> Response {
    read(API, &app, &h, |s, auth| {
        let r = lbaas::l7rule(s, auth, &policy_id, &id)?;
        Ok(json!({ "rule": network::select_fields(l7rules::render(r), &q) }))
    })
}

async fn rule_update(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((policy_id, id)): Path<(String, String)>,
    body: Body,
) -> Response {
    API.respond((|| {
        let auth = authenticate(&app, &h)?;
        let body = json_body(body)?;
        app.core
            .mutate(|s| l7rules::update(s, &auth, &policy_id, &id, &body))?;
        Ok((StatusCode::OK, rule_reply(&app, &auth, &policy_id, &id)?))
    })())
}

async fn rule_delete(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((policy_id, id)): Path<(String, String)>,
) -> Response {
    write(API, &app, &h, StatusCode::NO_CONTENT, |s, auth| {
        let (c, ()) = l7rules::delete(s, auth, &policy_id, &id)?;
        Ok((c, Value::Null))
    })
}

// ------------------------------------------------------- status and stats

async fn lb_status(State(app): State<Arc<App>>, h: HeaderMap, Path(id): Path<String>) -> Response {
    read(API, &app, &h, |s, auth| {
        let lb = lbaas::load_balancer(s, auth, &id)?;
        Ok(load_balancers::status_tree(s, &app.lb_health, lb))
    })
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
    read(API, &app, &h, |s, auth| {
        lbaas::load_balancer(s, auth, &id)?;
        Ok(stats_body(app.lb_stats.load_balancer(s, &id)))
    })
}

async fn listener_stats(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    read(API, &app, &h, |s, auth| {
        lbaas::listener(s, auth, &id)?;
        Ok(stats_body(app.lb_stats.listener(&id)))
    })
}

// ------------------------------------------------------------ amphorae

/// `GET .../octavia/amphorae` (admin only, as Octavia): the L7 instances,
/// filtered by `loadbalancer_id`, `status` or `compute_id` if asked.
async fn amphora_list(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    read(API, &app, &h, |s, auth| {
        require_amphora_admin(auth)?;
        let list: Vec<Value> = s
            .amphorae
            .values()
            .map(|a| lbaas::amphorae::render(s, a))
            .filter(|o| {
                ["loadbalancer_id", "status", "compute_id", "id"]
                    .iter()
                    .all(|k| {
                        q.get(*k)
                            .is_none_or(|v| o.get(*k).and_then(Value::as_str) == Some(v))
                    })
            })
            .map(Value::Object)
            .collect();
        Ok(json!({"amphorae": list, "amphorae_links": []}))
    })
}

async fn amphora_show(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    read(API, &app, &h, |s, auth| {
        require_amphora_admin(auth)?;
        let a = s
            .amphorae
            .get(&id)
            .ok_or_else(|| lbaas::not_found("Amphora", &id))?;
        Ok(json!({"amphora": lbaas::amphorae::render(s, a)}))
    })
}

fn require_amphora_admin(auth: &crate::auth::Auth) -> Result<(), ApiError> {
    if auth.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Policy does not allow this request to be performed.",
        ))
    }
}

// ------------------------------------------------- quotas, providers, versions

async fn quota_defaults(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    read(API, &app, &h, |_, auth| quotas::defaults(auth))
}

async fn providers(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    read(API, &app, &h, |_, _| {
        Ok(
            json!({"providers": [{"name": lbaas::PROVIDER, "description": "Strato: eBPF L4 load balancing (Maglev) on every host, L7 proxy instances for HTTP"}]}),
        )
    })
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
        "l7policies",
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
                if s.members.contains_key(&m.id) || s.amphorae.contains_key(&m.id) {
                    app.lb_health.report(&host, &m.id, m.up, now);
                    accepted += 1;
                } else {
                    unknown += 1;
                }
            }
            app.lb_health
                .retain(|id| s.members.contains_key(id) || s.amphorae.contains_key(id));
            (accepted, unknown)
        };
        // A member whose health flipped is stored so, which recompiles the
        // hosts of its VPC: they stop (or start again) sending it new
        // connections.
        app.core.mutate(|s| {
            let now = crate::model::now_unix();
            let instances = report.members.iter().filter_map(|r| {
                let up = app.lb_health.latest(&r.id)?;
                crate::lbaas::amphorae::on_health(s, &r.id, up, now)
            });
            let changes = instances
                .collect::<Vec<_>>()
                .into_iter()
                .chain(report.members.iter().filter_map(|r| {
                    let m = s.members.get(&r.id)?;
                    let down = app.lb_health.latest(&r.id) == Some(false);
                    (m.health_down != down).then(|| {
                        let mut m = m.clone();
                        m.health_down = down;
                        Change::Put(Object::Member(m))
                    })
                }))
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
        drop(s);
        // Listeners reaching (or leaving) their connection limit.
        app.core
            .mutate(|s| Ok((lbaas::health::limit_changes(s, &app.lb_stats), ())))?;
        Ok::<_, ApiError>(json!({"accepted": accepted, "unknown": before - accepted}))
    })();
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => super::neutron_error(e),
    }
}

pub fn routes() -> Router<Arc<App>> {
    let mut r = Router::new()
        .route(ENDPOINT_PATH, get(versions))
        .route(&format!("{ENDPOINT_PATH}/"), get(versions));
    for v in ["/v2", "/load-balancer/v2", "/load-balancer/v2.0"] {
        r = r.route(v, get(root)).route(&format!("{v}/"), get(root));
    }
    for p in PREFIXES {
        r = crud::route(r, p, &LOAD_BALANCERS);
        r = crud::route(r, p, &LISTENERS);
        r = crud::route(r, p, &POOLS);
        r = crud::route(r, p, &HEALTH_MONITORS);
        r = crud::route(r, p, &L7POLICIES);
        r = r
            .route(
                &format!("{p}/l7policies/{{id}}/rules"),
                get(rule_list).post(rule_create),
            )
            .route(
                &format!("{p}/l7policies/{{id}}/rules/{{rule}}"),
                get(rule_show).put(rule_update).delete(rule_delete),
            );
        r = crud::route_quotas(r, p, &QUOTAS);
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
            .route(&format!("{p}/quotas/defaults"), get(quota_defaults))
            .route(
                &format!("{}/octavia/amphorae", p.trim_end_matches("/lbaas")),
                get(amphora_list),
            )
            .route(
                &format!("{}/octavia/amphorae/{{id}}", p.trim_end_matches("/lbaas")),
                get(amphora_show),
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
