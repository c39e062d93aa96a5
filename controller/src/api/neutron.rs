//! Neutron v2.0 routes: version documents, extensions, and the generic
//! create/list/show/update/delete handlers for networks, subnets, ports,
//! routers, security groups and their rules, plus router interfaces, bulk
//! rule creation and quotas. Handlers authenticate,
//! extract, call `network::*` through `Core::mutate`, and render.

use std::sync::Arc;

use axum::{
    extract::{rejection::JsonRejection, DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, put},
    Json, Router,
};
use serde_json::{json, Map, Value};

use super::{authenticate, json_body, neutron_error};
use crate::{
    app::App,
    auth::Auth,
    error::ApiError,
    model::{Change, Port},
    network::{
        self, floating_ips, networks, ports, qos, quotas, routers, security_groups, subnets,
    },
    state::State as Desired,
};

type Reply = Result<(StatusCode, Value), ApiError>;

fn respond(r: Reply) -> Response {
    match r {
        Ok((StatusCode::NO_CONTENT, _)) => StatusCode::NO_CONTENT.into_response(),
        Ok((s, v)) => (s, Json(v)).into_response(),
        Err(e) => neutron_error(e),
    }
}

fn if_match(h: &HeaderMap) -> Option<String> {
    h.get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// What the agents say of a port: ACTIVE once its host reports it realised
/// (tap found, program attached, maps written), DOWN otherwise (unbound,
/// administratively down, host down, tap missing).
pub fn port_status(app: &App, p: &Port) -> &'static str {
    if p.device_owner == network::OWNER_ROUTER_INTERFACE {
        return "ACTIVE";
    }
    if !p.admin_state_up || p.binding_host_id.is_empty() {
        return "DOWN";
    }
    if app.hosts.port_active(&p.binding_host_id, &p.meta.id) {
        "ACTIVE"
    } else {
        "DOWN"
    }
}

/// One Neutron collection.
trait Resource: Send + Sync + 'static {
    const ONE: &'static str;
    const MANY: &'static str;
    /// The collection's URL path segment (`security-groups` for
    /// `security_groups`).
    const PATH: &'static str = Self::MANY;
    /// Listing it gives the caller's project its default security group
    /// first (as Neutron does).
    const ENSURES_DEFAULT_GROUP: bool = false;
    /// Attributes it renders besides `network::STANDARD_ATTRS`: what filters
    /// and sort_key may name.
    const ATTRS: &'static [&'static str];
    fn list(app: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>>;
    fn show(app: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError>;
    fn create(s: &Desired, a: &Auth, body: &Value) -> Result<(Vec<Change>, String), ApiError>;
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<(Vec<Change>, String), ApiError>;
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(Vec<Change>, ()), ApiError>;
}

struct Networks;
struct Subnets;
struct Ports;
struct Routers;
struct SecurityGroups;
struct SecurityGroupRules;
struct FloatingIps;
struct QosPolicies;

impl Resource for FloatingIps {
    const ONE: &'static str = "floatingip";
    const MANY: &'static str = "floatingips";
    const ATTRS: &'static [&'static str] = floating_ips::ATTRS;
    fn list(app: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>> {
        s.floating_ips
            .values()
            .filter(|f| a.can_see(&f.meta.project_id))
            .map(|f| floating_ips::render(s, f, &|p| port_status(app, p)))
            .collect()
    }
    fn show(app: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError> {
        let f = floating_ips::get(s, a, id)?;
        Ok(floating_ips::render(s, f, &|p| port_status(app, p)))
    }
    fn create(s: &Desired, a: &Auth, b: &Value) -> Result<(Vec<Change>, String), ApiError> {
        floating_ips::create(s, a, b).map(|(c, f)| (c, f.meta.id))
    }
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        b: &Value,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, String), ApiError> {
        floating_ips::update(s, a, id, b, m).map(|(c, f)| (c, f.meta.id))
    }
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, ()), ApiError> {
        floating_ips::delete(s, a, id, m)
    }
}

impl Resource for QosPolicies {
    const ONE: &'static str = "policy";
    const MANY: &'static str = "policies";
    const PATH: &'static str = "qos/policies";
    const ATTRS: &'static [&'static str] = qos::ATTRS;
    fn list(_: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>> {
        s.qos_policies
            .values()
            .filter(|p| p.shared || a.can_see(&p.meta.project_id))
            .map(qos::render)
            .collect()
    }
    fn show(_: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError> {
        Ok(qos::render(qos::get(s, a, id)?))
    }
    fn create(s: &Desired, a: &Auth, b: &Value) -> Result<(Vec<Change>, String), ApiError> {
        qos::create(s, a, b).map(|(c, p)| (c, p.meta.id))
    }
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        b: &Value,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, String), ApiError> {
        qos::update(s, a, id, b, m).map(|(c, p)| (c, p.meta.id))
    }
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, ()), ApiError> {
        qos::delete(s, a, id, m)
    }
}

/// GET/POST /v2.0/qos/policies/{id}/bandwidth_limit_rules
async fn bw_rules(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(policy): Path<String>,
    method: axum::http::Method,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        if method == axum::http::Method::POST {
            // A body that is not JSON gets a Neutron error, not axum's
            // plain-text rejection.
            let body = json_body(body)?;
            let rule = app
                .core
                .mutate(|s| qos::rule_create(s, &auth, &policy, &body))?;
            return Ok((StatusCode::CREATED, json!({ "bandwidth_limit_rule": rule })));
        }
        let s = app.core.read();
        let p = qos::get(&s, &auth, &policy)?;
        let rules: Vec<Value> = p
            .bandwidth_limit_rules
            .iter()
            .map(|r| Value::Object(qos::render_rule(p, r)))
            .collect();
        Ok((StatusCode::OK, json!({ "bandwidth_limit_rules": rules })))
    })())
}

/// GET/PUT/DELETE /v2.0/qos/policies/{id}/bandwidth_limit_rules/{rule}
async fn bw_rule(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((policy, rule)): Path<(String, String)>,
    method: axum::http::Method,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        if method == axum::http::Method::PUT {
            // A body that is not JSON gets a Neutron error, not axum's
            // plain-text rejection.
            let body = json_body(body)?;
            let r = app
                .core
                .mutate(|s| qos::rule_update(s, &auth, &policy, &rule, &body))?;
            return Ok((StatusCode::OK, json!({ "bandwidth_limit_rule": r })));
        }
        if method == axum::http::Method::DELETE {
            app.core
                .mutate(|s| qos::rule_delete(s, &auth, &policy, &rule))?;
            return Ok((StatusCode::NO_CONTENT, Value::Null));
        }
        let s = app.core.read();
        let (p, r) = qos::rule_get(&s, &auth, &policy, &rule)?;
        Ok((
            StatusCode::OK,
            json!({ "bandwidth_limit_rule": qos::render_rule(p, r) }),
        ))
    })())
}

async fn qos_rule_types(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    respond((|| {
        authenticate(&app, &h)?;
        Ok((
            StatusCode::OK,
            json!({"rule_types": [{"type": "bandwidth_limit"}]}),
        ))
    })())
}

impl Resource for Networks {
    const ONE: &'static str = "network";
    const MANY: &'static str = "networks";
    const ATTRS: &'static [&'static str] = &[
        "subnets",
        "admin_state_up",
        "status",
        "shared",
        "mtu",
        "port_security_enabled",
        "router:external",
        "availability_zone_hints",
        "availability_zones",
        "ipv4_address_scope",
        "ipv6_address_scope",
        "l2_adjacency",
        "is_default",
        "provider:network_type",
        "provider:physical_network",
        "provider:segmentation_id",
    ];
    fn list(_: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>> {
        s.networks
            .values()
            .filter(|n| networks::visible(a, n))
            .map(|n| networks::render(s, a, n))
            .collect()
    }
    fn show(_: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError> {
        Ok(networks::render(s, a, networks::get(s, a, id)?))
    }
    fn create(s: &Desired, a: &Auth, b: &Value) -> Result<(Vec<Change>, String), ApiError> {
        networks::create(s, a, b).map(|(c, n)| (c, n.meta.id))
    }
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        b: &Value,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, String), ApiError> {
        networks::update(s, a, id, b, m).map(|(c, n)| (c, n.meta.id))
    }
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, ()), ApiError> {
        networks::delete(s, a, id, m)
    }
}

impl Resource for Subnets {
    const ONE: &'static str = "subnet";
    const MANY: &'static str = "subnets";
    const ATTRS: &'static [&'static str] = &[
        "network_id",
        "ip_version",
        "cidr",
        "gateway_ip",
        "allocation_pools",
        "enable_dhcp",
        "dns_nameservers",
        "host_routes",
        "ipv6_ra_mode",
        "ipv6_address_mode",
        "subnetpool_id",
        "segment_id",
        "service_types",
    ];
    fn list(_: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>> {
        s.subnets
            .values()
            .filter(|x| subnets::get(s, a, &x.meta.id).is_ok())
            .map(subnets::render)
            .collect()
    }
    fn show(_: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError> {
        Ok(subnets::render(subnets::get(s, a, id)?))
    }
    fn create(s: &Desired, a: &Auth, b: &Value) -> Result<(Vec<Change>, String), ApiError> {
        subnets::create(s, a, b).map(|(c, n)| (c, n.meta.id))
    }
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        b: &Value,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, String), ApiError> {
        subnets::update(s, a, id, b, m).map(|(c, n)| (c, n.meta.id))
    }
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, ()), ApiError> {
        subnets::delete(s, a, id, m)
    }
}

impl Resource for Ports {
    const ONE: &'static str = "port";
    const MANY: &'static str = "ports";
    const ATTRS: &'static [&'static str] = &[
        "network_id",
        "mac_address",
        "admin_state_up",
        "status",
        "device_id",
        "device_owner",
        "fixed_ips",
        "allowed_address_pairs",
        "extra_dhcp_opts",
        "security_groups",
        "port_security_enabled",
        "qos_policy_id",
        "propagate_uplink_status",
        "ip_allocation",
        "binding:vnic_type",
        "binding:host_id",
        "binding:vif_type",
        "binding:vif_details",
        "binding:profile",
    ];
    fn list(app: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>> {
        s.ports
            .values()
            .filter(|p| a.can_see(&p.meta.project_id))
            .map(|p| ports::render(a, p, port_status(app, p)))
            .collect()
    }
    fn show(app: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError> {
        let p = ports::get(s, a, id)?;
        Ok(ports::render(a, p, port_status(app, p)))
    }
    fn create(s: &Desired, a: &Auth, b: &Value) -> Result<(Vec<Change>, String), ApiError> {
        ports::create(s, a, b).map(|(c, n)| (c, n.meta.id))
    }
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        b: &Value,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, String), ApiError> {
        ports::update(s, a, id, b, m).map(|(c, n)| (c, n.meta.id))
    }
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, ()), ApiError> {
        ports::delete(s, a, id, m)
    }
}

impl Resource for Routers {
    const ONE: &'static str = "router";
    const MANY: &'static str = "routers";
    const ATTRS: &'static [&'static str] = &[
        "admin_state_up",
        "status",
        "external_gateway_info",
        "routes",
        "distributed",
        "ha",
        "availability_zone_hints",
        "availability_zones",
        "flavor_id",
    ];
    fn list(_: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>> {
        s.routers
            .values()
            .filter(|r| a.can_see(&r.meta.project_id))
            .map(|r| routers::render(s, r))
            .collect()
    }
    fn show(_: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError> {
        Ok(routers::render(s, routers::get(s, a, id)?))
    }
    fn create(s: &Desired, a: &Auth, b: &Value) -> Result<(Vec<Change>, String), ApiError> {
        routers::create(s, a, b).map(|(c, n)| (c, n.meta.id))
    }
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        b: &Value,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, String), ApiError> {
        routers::update(s, a, id, b, m).map(|(c, n)| (c, n.meta.id))
    }
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, ()), ApiError> {
        routers::delete(s, a, id, m)
    }
}

impl Resource for SecurityGroups {
    const ONE: &'static str = "security_group";
    const MANY: &'static str = "security_groups";
    const PATH: &'static str = "security-groups";
    const ENSURES_DEFAULT_GROUP: bool = true;
    const ATTRS: &'static [&'static str] = &["stateful", "shared", "security_group_rules"];
    fn list(_: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>> {
        s.security_groups
            .values()
            .filter(|g| security_groups::visible(a, g))
            .map(|g| security_groups::render(s, g))
            .collect()
    }
    fn show(_: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError> {
        Ok(security_groups::render(s, security_groups::get(s, a, id)?))
    }
    fn create(s: &Desired, a: &Auth, b: &Value) -> Result<(Vec<Change>, String), ApiError> {
        security_groups::create(s, a, b).map(|(c, g)| (c, g.meta.id))
    }
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        b: &Value,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, String), ApiError> {
        security_groups::update(s, a, id, b, m).map(|(c, g)| (c, g.meta.id))
    }
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, ()), ApiError> {
        security_groups::delete(s, a, id, m)
    }
}

impl Resource for SecurityGroupRules {
    const ONE: &'static str = "security_group_rule";
    const MANY: &'static str = "security_group_rules";
    const PATH: &'static str = "security-group-rules";
    const ENSURES_DEFAULT_GROUP: bool = true;
    const ATTRS: &'static [&'static str] = &[
        "security_group_id",
        "direction",
        "ethertype",
        "protocol",
        "port_range_min",
        "port_range_max",
        "remote_ip_prefix",
        "remote_group_id",
        "remote_address_group_id",
        "normalized_cidr",
        "belongs_to_default_sg",
    ];
    fn list(_: &App, s: &Desired, a: &Auth) -> Vec<Map<String, Value>> {
        s.security_group_rules
            .values()
            .filter(|r| a.can_see(&r.meta.project_id))
            .map(|r| security_groups::render_rule(s, r))
            .collect()
    }
    fn show(_: &App, s: &Desired, a: &Auth, id: &str) -> Result<Map<String, Value>, ApiError> {
        Ok(security_groups::render_rule(
            s,
            security_groups::get_rule(s, a, id)?,
        ))
    }
    fn create(s: &Desired, a: &Auth, b: &Value) -> Result<(Vec<Change>, String), ApiError> {
        security_groups::create_rules(s, a, b).map(|(c, r)| (c, r[0].meta.id.clone()))
    }
    fn update(
        s: &Desired,
        a: &Auth,
        id: &str,
        b: &Value,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, String), ApiError> {
        security_groups::update_rule(s, a, id, b, m).map(|(c, r)| (c, r.meta.id))
    }
    fn delete(
        s: &Desired,
        a: &Auth,
        id: &str,
        m: Option<&str>,
    ) -> Result<(Vec<Change>, ()), ApiError> {
        security_groups::delete_rule(s, a, id, m)
    }
}

/// Gives the project the caller lists for (its own, or an admin's
/// `project_id`/`tenant_id` filter) its default security group, in its own
/// commit; nothing (not even a write lock) when it already has one.
fn ensure_default_group(app: &App, auth: &Auth, q: &[(String, String)]) -> Result<(), ApiError> {
    let project = q
        .iter()
        .find(|(k, _)| k == "project_id" || k == "tenant_id")
        .map(|(_, v)| v.clone())
        .filter(|p| auth.can_see(p))
        .unwrap_or_else(|| auth.project_id.clone());
    {
        let s = app.core.read();
        if !s.projects.contains_key(&project)
            || security_groups::default_group(&s, &project).is_some()
        {
            return Ok(());
        }
    }
    app.core
        .mutate(|s| Ok((security_groups::ensure_default(s, &project).0, ())))
}

async fn list<R: Resource>(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        if R::ENSURES_DEFAULT_GROUP {
            // A list refused for its query must change nothing: check it
            // (all but the marker, which needs the items) first.
            let probe: Vec<(String, String)> =
                q.iter().filter(|(k, _)| k != "marker").cloned().collect();
            network::list_response(R::MANY, vec![], &probe, "", R::ATTRS)?;
            ensure_default_group(&app, &auth, &q)?;
        }
        let s = app.core.read();
        let items = R::list(&app, &s, &auth);
        let mut body =
            network::list_response(R::MANY, items, &q, &app.config.public_url, R::ATTRS)?;
        if R::PATH != R::MANY {
            // Next-page links name the URL path, not the collection.
            if let Some(Value::String(href)) = body
                .get_mut(format!("{}_links", R::MANY))
                .and_then(|l| l.get_mut(0))
                .and_then(|l| l.get_mut("href"))
            {
                *href = href.replacen(
                    &format!("/v2.0/{}?", R::MANY),
                    &format!("/v2.0/{}?", R::PATH),
                    1,
                );
            }
        }
        Ok((StatusCode::OK, body))
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
        if body.get(R::MANY).is_some() {
            return Err(ApiError::bad_request(format!(
                "Bulk creation of {} is not supported; create them one by one.",
                R::MANY
            )));
        }
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
        let m = if_match(&h);
        let id = app
            .core
            .mutate(|s| R::update(s, &auth, &id, &body, m.as_deref()))?;
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
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let m = if_match(&h);
        app.core
            .mutate(|s| R::delete(s, &auth, &id, m.as_deref()))?;
        Ok((StatusCode::NO_CONTENT, Value::Null))
    })())
}

/// POST /v2.0/security-group-rules: one rule, or many
/// (`{"security_group_rules": [...]}`) in one all-or-nothing commit.
async fn rule_create(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let body = json_body(body)?;
        let bulk = body.get(SecurityGroupRules::MANY).is_some();
        let rules = app
            .core
            .mutate(|s| security_groups::create_rules(s, &auth, &body))?;
        let s = app.core.read();
        let mut rendered: Vec<Value> = rules
            .iter()
            .map(|r| Value::Object(security_groups::render_rule(&s, r)))
            .collect();
        let body = if bulk {
            json!({ SecurityGroupRules::MANY: rendered })
        } else {
            json!({ SecurityGroupRules::ONE: rendered.swap_remove(0) })
        };
        Ok((StatusCode::CREATED, body))
    })())
}

async fn router_interface(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let body = json_body(body)?;
        let info = match action.as_str() {
            "add_router_interface" => app
                .core
                .mutate(|s| routers::add_interface(s, &auth, &id, &body))?,
            "remove_router_interface" => app
                .core
                .mutate(|s| routers::remove_interface(s, &auth, &id, &body))?,
            other => {
                return Err(ApiError::new(
                    404,
                    "HTTPNotFound",
                    format!("Unknown router action '{other}'"),
                ))
            }
        };
        Ok((StatusCode::OK, info))
    })())
}

async fn quota_list(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        Ok((StatusCode::OK, quotas::list(&app.core.read(), &auth)?))
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

async fn quota_details(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(project): Path<String>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        Ok((
            StatusCode::OK,
            quotas::details(&app.core.read(), &auth, &project)?,
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
            StatusCode::OK,
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

/// The extensions whose behaviour this API implements.
const EXTENSIONS: &[(&str, &str, &str)] = &[
    (
        "router",
        "Neutron L3 Router",
        "Routers connecting subnets into one routing domain (a VPC)",
    ),
    (
        "extraroute",
        "Neutron Extra Route",
        "Static routes on routers",
    ),
    (
        "quotas",
        "Quota management support",
        "Per-project quotas on networks, subnets, ports, routers, security groups and rules",
    ),
    (
        "security-group",
        "security-group",
        "The security groups extension: groups of allow rules on ports",
    ),
    (
        "stateful-security-group",
        "Stateful security group",
        "Security groups may be stateless (stateful: false)",
    ),
    (
        "security-groups-normalized-cidr",
        "Normalized CIDR field for security group rules",
        "normalized_cidr on security group rules",
    ),
    (
        "port-security",
        "Port Security",
        "Anti-spoofing per network and port (port_security_enabled)",
    ),
    (
        "allowed-address-pairs",
        "Allowed Address Pairs",
        "Extra addresses a port may send from",
    ),
    (
        "binding",
        "Port Binding",
        "binding:host_id and related attributes (admin only)",
    ),
    (
        "net-mtu",
        "Network MTU",
        "Network MTU attribute (overlay MTU)",
    ),
    (
        "project-id",
        "project_id field enabled",
        "project_id alongside tenant_id",
    ),
    (
        "standard-attr-revisions",
        "Resource revision numbers",
        "revision_number on every resource",
    ),
    (
        "revision-if-match",
        "If-Match constraints based on revision_number",
        "If-Match: revision_number=N on updates and deletes",
    ),
    (
        "standard-attr-timestamp",
        "Resource timestamps",
        "created_at and updated_at",
    ),
    (
        "standard-attr-description",
        "standard-attr-description",
        "description on every resource",
    ),
    (
        "filter-validation",
        "Filter parameters validation",
        "Unknown filter attributes are rejected",
    ),
    (
        "pagination",
        "Pagination support",
        "limit and marker on lists",
    ),
    (
        "sorting",
        "Sorting support",
        "sort_key and sort_dir on lists",
    ),
    (
        "external-net",
        "Neutron external network",
        "router:external networks: the elastic IP pool (administrators create them)",
    ),
    (
        "ext-gw-mode",
        "Neutron L3 Configurable external gateway mode",
        "enable_snat in a router's external_gateway_info",
    ),
    (
        "fip-port-details",
        "Floating IP Port Details Extension",
        "port_details on floating IPs",
    ),
    (
        "qos",
        "Quality of Service",
        "QoS policies with bandwidth limit rules",
    ),
    (
        "qos-bw-limit-direction",
        "Direction for QoS bandwidth limit rule",
        "ingress and egress bandwidth limit rules",
    ),
    (
        "qos-fip",
        "Floating IP QoS",
        "qos_policy_id on floating IPs",
    ),
];

fn extension(alias: &str, name: &str, description: &str) -> Value {
    json!({"alias": alias, "name": name, "description": description, "updated": "2026-11-23T00:00:00-00:00", "links": []})
}

async fn extensions(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    respond((|| {
        authenticate(&app, &h)?;
        Ok((
            StatusCode::OK,
            json!({"extensions": EXTENSIONS.iter().map(|(a, n, d)| extension(a, n, d)).collect::<Vec<_>>()}),
        ))
    })())
}

async fn extension_show(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(alias): Path<String>,
) -> Response {
    respond((|| {
        authenticate(&app, &h)?;
        let (a, n, d) = EXTENSIONS
            .iter()
            .find(|(a, _, _)| *a == alias)
            .ok_or_else(|| ApiError::not_found("extension", &alias))?;
        Ok((StatusCode::OK, json!({"extension": extension(a, n, d)})))
    })())
}

async fn versions(State(app): State<Arc<App>>) -> Response {
    Json(json!({"versions": [{
        "id": "v2.0", "status": "CURRENT",
        "links": [{"href": format!("{}/v2.0/", app.config.public_url), "rel": "self"}]
    }]}))
    .into_response()
}

async fn resources(State(app): State<Arc<App>>) -> Response {
    let base = &app.config.public_url;
    let r: Vec<Value> = [
        ("network", "networks", "networks"),
        ("subnet", "subnets", "subnets"),
        ("port", "ports", "ports"),
        ("router", "routers", "routers"),
        ("security_group", "security_groups", "security-groups"),
        (
            "security_group_rule",
            "security_group_rules",
            "security-group-rules",
        ),
        ("floatingip", "floatingips", "floatingips"),
        ("policy", "policies", "qos/policies"),
    ]
    .iter()
    .map(|(n, c, p)| json!({"name": n, "collection": c, "links": [{"href": format!("{base}/v2.0/{p}"), "rel": "self"}]}))
    .collect();
    Json(json!({ "resources": r })).into_response()
}

fn collection<R: Resource>(r: Router<Arc<App>>) -> Router<Arc<App>> {
    r.route(
        &format!("/v2.0/{}", R::PATH),
        get(list::<R>).post(create::<R>),
    )
    .route(
        &format!("/v2.0/{}/{{id}}", R::PATH),
        get(show::<R>).put(update::<R>).delete(delete::<R>),
    )
}

pub fn routes() -> Router<Arc<App>> {
    let r = Router::new()
        .route("/", get(versions))
        .route("/v2.0", get(resources))
        .route("/v2.0/", get(resources))
        .route("/v2.0/extensions", get(extensions))
        .route("/v2.0/extensions/{alias}", get(extension_show))
        .route("/v2.0/routers/{id}/{action}", put(router_interface))
        .route("/v2.0/quotas", get(quota_list))
        .route(
            "/v2.0/quotas/{project}",
            get(quota_show).put(quota_update).delete(quota_reset),
        )
        .route("/v2.0/quotas/{project}/details", get(quota_details));
    let r = collection::<Networks>(r);
    let r = collection::<Subnets>(r);
    let r = collection::<Ports>(r);
    let r = collection::<Routers>(r);
    let r = collection::<SecurityGroups>(r);
    let r = collection::<FloatingIps>(r);
    let r = collection::<QosPolicies>(r);
    let r = r
        .route("/v2.0/qos/rule-types", get(qos_rule_types))
        .route(
            "/v2.0/qos/policies/{id}/bandwidth_limit_rules",
            get(bw_rules).post(bw_rules),
        )
        .route(
            "/v2.0/qos/policies/{id}/bandwidth_limit_rules/{rule}",
            get(bw_rule).put(bw_rule).delete(bw_rule),
        );
    r.route(
        super::BULK_RULES_PATH,
        get(list::<SecurityGroupRules>)
            .post(rule_create)
            .layer(DefaultBodyLimit::max(super::MAX_BULK_BODY)),
    )
    .route(
        &format!("/v2.0/{}/{{id}}", SecurityGroupRules::PATH),
        get(show::<SecurityGroupRules>)
            .put(update::<SecurityGroupRules>)
            .delete(delete::<SecurityGroupRules>),
    )
}
