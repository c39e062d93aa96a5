//! Neutron v2.0 routes: version documents, extensions, the collections
//! (networks, subnets, ports, routers, security groups and their rules,
//! floating IPs, QoS policies) as [`crud::Collection`] descriptors served by
//! the generic handlers of `api::crud`, and what is not CRUD: router
//! interfaces, bulk rule creation, QoS bandwidth limit rules and quotas.
//! Handlers authenticate, extract, call `network::*` through
//! `Core::mutate`, and render; they never validate attributes themselves.

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, put},
    Json, Router,
};
use serde_json::{json, Value};

use super::crud::{
    self, project_scoped, read, write, write_body, Api, Body, Collection, Delete, Quotas, Update,
};
use crate::{
    app::App,
    auth::Auth,
    error::ApiError,
    model::{
        FloatingIp, Network, Port, QosPolicy, Router as L3Router, SecurityGroup, SecurityGroupRule,
        Subnet,
    },
    network::{
        self, floating_ips, networks, ports, qos, quotas, routers, security_groups, subnets,
    },
};

const API: Api = Api::Neutron;

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

static NETWORKS: Collection<Network> = Collection {
    api: API,
    one: "network",
    many: "networks",
    path: "networks",
    attrs: &[
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
    ],
    visible: |_, a, n| networks::visible(a, n),
    get: networks::get,
    render: |_, s, a, n| networks::render(s, a, n),
    create: Some(networks::create),
    // networks::update and ports::update keep their positional parameters:
    // the compiler's tests call them.
    update: Update::IfMatch(|s, a, e| networks::update(s, a, e.id, e.body, e.if_match)),
    delete: Delete::IfMatch(networks::delete),
    prepare_list: None,
};

static SUBNETS: Collection<Subnet> = Collection {
    api: API,
    one: "subnet",
    many: "subnets",
    path: "subnets",
    attrs: &[
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
    ],
    visible: |s, a, x| subnets::get(s, a, &x.meta.id).is_ok(),
    get: subnets::get,
    render: |_, _, _, x| subnets::render(x),
    create: Some(subnets::create),
    update: Update::IfMatch(subnets::update),
    delete: Delete::IfMatch(subnets::delete),
    prepare_list: None,
};

static PORTS: Collection<Port> = Collection {
    api: API,
    one: "port",
    many: "ports",
    path: "ports",
    attrs: &[
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
    ],
    visible: project_scoped,
    get: ports::get,
    render: |app, _, a, p| ports::render(a, p, port_status(app, p)),
    create: Some(ports::create),
    update: Update::IfMatch(|s, a, e| ports::update(s, a, e.id, e.body, e.if_match)),
    delete: Delete::IfMatch(ports::delete),
    prepare_list: None,
};

static ROUTERS: Collection<L3Router> = Collection {
    api: API,
    one: "router",
    many: "routers",
    path: "routers",
    attrs: &[
        "admin_state_up",
        "status",
        "external_gateway_info",
        "routes",
        "distributed",
        "ha",
        "availability_zone_hints",
        "availability_zones",
        "flavor_id",
    ],
    visible: project_scoped,
    get: routers::get,
    render: |_, s, _, r| routers::render(s, r),
    create: Some(routers::create),
    update: Update::IfMatch(routers::update),
    delete: Delete::IfMatch(routers::delete),
    prepare_list: None,
};

static SECURITY_GROUPS: Collection<SecurityGroup> = Collection {
    api: API,
    one: "security_group",
    many: "security_groups",
    path: "security-groups",
    attrs: &["stateful", "shared", "security_group_rules"],
    visible: |_, a, g| security_groups::visible(a, g),
    get: security_groups::get,
    render: |_, s, _, g| security_groups::render(s, g),
    create: Some(security_groups::create),
    update: Update::IfMatch(security_groups::update),
    delete: Delete::IfMatch(security_groups::delete),
    prepare_list: Some(ensure_default_group),
};

/// Rules are created by [`rule_create`] (one or many).
static SECURITY_GROUP_RULES: Collection<SecurityGroupRule> = Collection {
    api: API,
    one: "security_group_rule",
    many: "security_group_rules",
    path: "security-group-rules",
    attrs: security_groups::RULE_ATTRS,
    visible: project_scoped,
    get: security_groups::get_rule,
    render: |_, s, _, r| security_groups::render_rule(s, r),
    create: None,
    update: Update::IfMatch(security_groups::update_rule),
    delete: Delete::IfMatch(security_groups::delete_rule),
    prepare_list: Some(ensure_default_group),
};

static FLOATING_IPS: Collection<FloatingIp> = Collection {
    api: API,
    one: "floatingip",
    many: "floatingips",
    path: "floatingips",
    attrs: floating_ips::ATTRS,
    visible: project_scoped,
    get: floating_ips::get,
    render: |app, s, _, f| floating_ips::render(s, f, &|p| port_status(app, p)),
    create: Some(floating_ips::create),
    update: Update::IfMatch(floating_ips::update),
    delete: Delete::IfMatch(floating_ips::delete),
    prepare_list: None,
};

static QOS_POLICIES: Collection<QosPolicy> = Collection {
    api: API,
    one: "policy",
    many: "policies",
    path: "qos/policies",
    attrs: qos::ATTRS,
    visible: |_, a, p| p.shared || a.can_see(&p.meta.project_id),
    get: qos::get,
    render: |_, _, _, p| qos::render(p),
    create: Some(qos::create),
    update: Update::IfMatch(qos::update),
    delete: Delete::IfMatch(qos::delete),
    prepare_list: None,
};

static QUOTAS: Quotas = Quotas {
    api: API,
    list: quotas::list,
    show: quotas::show,
    update: quotas::update,
    updated: StatusCode::OK,
    reset: quotas::reset,
};

/// GET /v2.0/qos/policies/{id}/bandwidth_limit_rules
async fn bw_rules(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(policy): Path<String>,
) -> Response {
    read(API, &app, &h, |s, auth| {
        let p = qos::get(s, auth, &policy)?;
        let rules: Vec<Value> = p
            .bandwidth_limit_rules
            .iter()
            .map(|r| Value::Object(qos::render_rule(p, r)))
            .collect();
        Ok(json!({ "bandwidth_limit_rules": rules }))
    })
}

/// POST /v2.0/qos/policies/{id}/bandwidth_limit_rules
async fn bw_rule_create(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(policy): Path<String>,
    body: Body,
) -> Response {
    write_body(API, &app, &h, body, StatusCode::CREATED, |s, auth, b| {
        let (c, rule) = qos::rule_create(s, auth, &policy, b)?;
        Ok((c, json!({ "bandwidth_limit_rule": rule })))
    })
}

/// GET /v2.0/qos/policies/{id}/bandwidth_limit_rules/{rule}
async fn bw_rule(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((policy, rule)): Path<(String, String)>,
) -> Response {
    read(API, &app, &h, |s, auth| {
        let (p, r) = qos::rule_get(s, auth, &policy, &rule)?;
        Ok(json!({ "bandwidth_limit_rule": qos::render_rule(p, r) }))
    })
}

/// PUT /v2.0/qos/policies/{id}/bandwidth_limit_rules/{rule}
async fn bw_rule_update(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((policy, rule)): Path<(String, String)>,
    body: Body,
) -> Response {
    write_body(API, &app, &h, body, StatusCode::OK, |s, auth, b| {
        let (c, r) = qos::rule_update(s, auth, &policy, &rule, b)?;
        Ok((c, json!({ "bandwidth_limit_rule": r })))
    })
}

/// DELETE /v2.0/qos/policies/{id}/bandwidth_limit_rules/{rule}
async fn bw_rule_delete(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((policy, rule)): Path<(String, String)>,
) -> Response {
    write(API, &app, &h, StatusCode::NO_CONTENT, |s, auth| {
        let (c, ()) = qos::rule_delete(s, auth, &policy, &rule)?;
        Ok((c, Value::Null))
    })
}

async fn qos_rule_types(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    read(API, &app, &h, |_, _| {
        Ok(json!({"rule_types": [{"type": "bandwidth_limit"}]}))
    })
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

/// POST /v2.0/security-group-rules: one rule, or many
/// (`{"security_group_rules": [...]}`) in one all-or-nothing commit.
async fn rule_create(State(app): State<Arc<App>>, h: HeaderMap, body: Body) -> Response {
    let rules = &SECURITY_GROUP_RULES;
    API.respond((|| {
        let auth = super::authenticate(&app, &h)?;
        let body = super::json_body(body)?;
        let bulk = body.get(rules.many).is_some();
        let created = app
            .core
            .mutate(|s| security_groups::create_rules(s, &auth, &body))?;
        let s = app.core.read();
        let mut rendered: Vec<Value> = created
            .iter()
            .map(|r| Value::Object(security_groups::render_rule(&s, r)))
            .collect();
        let body = if bulk {
            json!({ rules.many: rendered })
        } else {
            json!({ rules.one: rendered.swap_remove(0) })
        };
        Ok((StatusCode::CREATED, body))
    })())
}

/// PUT /v2.0/routers/{id}/add_router_interface (and remove_).
async fn router_interface(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Body,
) -> Response {
    write_body(
        API,
        &app,
        &h,
        body,
        StatusCode::OK,
        |s, auth, b| match action.as_str() {
            "add_router_interface" => routers::add_interface(s, auth, &id, b),
            "remove_router_interface" => routers::remove_interface(s, auth, &id, b),
            other => Err(ApiError::new(
                404,
                "HTTPNotFound",
                format!("Unknown router action '{other}'"),
            )),
        },
    )
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
    (
        "vpnaas",
        "VPN service",
        "IKE and IPsec policies, VPN services and IPsec site connections (IKEv2, ESP tunnel mode)",
    ),
    (
        "vpn-endpoint-groups",
        "VPN Endpoint Groups",
        "endpoint groups of local subnets and peer CIDRs for IPsec site connections",
    ),
];

fn extension(alias: &str, name: &str, description: &str) -> Value {
    json!({"alias": alias, "name": name, "description": description, "updated": "2026-11-23T00:00:00-00:00", "links": []})
}

async fn extensions(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    read(API, &app, &h, |_, _| {
        Ok(
            json!({"extensions": EXTENSIONS.iter().map(|(a, n, d)| extension(a, n, d)).collect::<Vec<_>>()}),
        )
    })
}

async fn extension_show(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(alias): Path<String>,
) -> Response {
    read(API, &app, &h, |_, _| {
        let (a, n, d) = EXTENSIONS
            .iter()
            .find(|(a, _, _)| *a == alias)
            .ok_or_else(|| ApiError::not_found("extension", &alias))?;
        Ok(json!({"extension": extension(a, n, d)}))
    })
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
        ("ikepolicy", "ikepolicies", "vpn/ikepolicies"),
        ("ipsecpolicy", "ipsecpolicies", "vpn/ipsecpolicies"),
        ("vpnservice", "vpnservices", "vpn/vpnservices"),
        ("endpoint_group", "endpoint_groups", "vpn/endpoint-groups"),
        (
            "ipsec_site_connection",
            "ipsec_site_connections",
            "vpn/ipsec-site-connections",
        ),
    ]
    .iter()
    .map(|(n, c, p)| json!({"name": n, "collection": c, "links": [{"href": format!("{base}/v2.0/{p}"), "rel": "self"}]}))
    .collect();
    Json(json!({ "resources": r })).into_response()
}

pub fn routes() -> Router<Arc<App>> {
    let r = Router::new()
        .route("/", get(versions))
        .route("/v2.0", get(resources))
        .route("/v2.0/", get(resources))
        .route("/v2.0/extensions", get(extensions))
        .route("/v2.0/extensions/{alias}", get(extension_show))
        .route("/v2.0/routers/{id}/{action}", put(router_interface))
        .route(
            "/v2.0/quotas/{project}/details",
            get(
                |State(app): State<Arc<App>>, h: HeaderMap, Path(p): Path<String>| async move {
                    read(API, &app, &h, |s, a| quotas::details(s, a, &p))
                },
            ),
        );
    let r = crud::route_quotas(r, "/v2.0", &QUOTAS);
    let r = crud::route(r, "/v2.0", &NETWORKS);
    let r = crud::route(r, "/v2.0", &SUBNETS);
    let r = crud::route(r, "/v2.0", &PORTS);
    let r = crud::route(r, "/v2.0", &ROUTERS);
    let r = crud::route(r, "/v2.0", &SECURITY_GROUPS);
    let r = crud::route(r, "/v2.0", &FLOATING_IPS);
    let r = crud::route(r, "/v2.0", &QOS_POLICIES);
    let r = r
        .route("/v2.0/qos/rule-types", get(qos_rule_types))
        .route(
            "/v2.0/qos/policies/{id}/bandwidth_limit_rules",
            get(bw_rules).post(bw_rule_create),
        )
        .route(
            "/v2.0/qos/policies/{id}/bandwidth_limit_rules/{rule}",
            get(bw_rule).put(bw_rule_update).delete(bw_rule_delete),
        );
    let (rules, rule) = crud::methods(&SECURITY_GROUP_RULES);
    r.route(
        super::BULK_RULES_PATH,
        rules
            .post(rule_create)
            .layer(DefaultBodyLimit::max(super::MAX_BULK_BODY)),
    )
    .route(&format!("/v2.0/{}/{{id}}", SECURITY_GROUP_RULES.path), rule)
}
