//! Per-project quotas on networks, subnets, ports, routers, security groups,
//! security group rules and floating IPs (409 when a create would exceed
//! one). Router interface ports do not count.

use serde_json::{json, Map, Value};

use super::{Attrs, Made, OWNER_ROUTER_INTERFACE};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{
        Change, EndpointGroup, FloatingIp, IkePolicy, IpsecPolicy, IpsecSiteConnection, Kind,
        Network, Object, Port, Quota, Router, SecurityGroup, SecurityGroupRule, Subnet, VpnService,
    },
    state::Resource,
    state::State,
};

/// Resources of kind `T` that `project` holds.
pub fn held<T: Resource>(state: &State, project: &str) -> i64 {
    held_where::<T>(state, project, |_| true)
}

/// Resources of kind `T` that `project` holds and `counts`.
pub fn held_where<T: Resource>(state: &State, project: &str, counts: impl Fn(&T) -> bool) -> i64 {
    T::table(state)
        .values()
        .filter(|x| x.meta().project_id == project && counts(x))
        .count() as i64
}

/// Resources of `project` of one kind, as quotas count them.
pub fn used(state: &State, project: &str, kind: Kind) -> i64 {
    match kind {
        Kind::Network => held::<Network>(state, project),
        Kind::Subnet => held::<Subnet>(state, project),
        Kind::Port => held_where(state, project, |p: &Port| {
            p.device_owner != OWNER_ROUTER_INTERFACE
        }),
        Kind::Router => held::<Router>(state, project),
        Kind::SecurityGroup => held::<SecurityGroup>(state, project),
        Kind::SecurityGroupRule => held::<SecurityGroupRule>(state, project),
        Kind::FloatingIp => held::<FloatingIp>(state, project),
        Kind::IkePolicy => held::<IkePolicy>(state, project),
        Kind::IpsecPolicy => held::<IpsecPolicy>(state, project),
        Kind::VpnService => held::<VpnService>(state, project),
        Kind::EndpointGroup => held::<EndpointGroup>(state, project),
        Kind::IpsecSiteConnection => held::<IpsecSiteConnection>(state, project),
        _ => 0,
    }
}

/// The quota's name in the API (Neutron's, not always the kind's).
fn key(kind: Kind) -> &'static str {
    match kind {
        Kind::FloatingIp => "floatingip",
        k => k.as_str(),
    }
}

/// Whether `project` holding `total` resources of `kind` is over its
/// limit on them (both quota APIs refuse a create that would be).
pub fn exceeded(state: &State, project: &str, kind: Kind, total: i64) -> bool {
    let l = state.quota(project).limit(kind);
    l >= 0 && total > l
}

/// 409 `OverQuota` if adding `n` resources of `kind` exceeds the limit.
pub fn check(state: &State, project: &str, kind: Kind, n: i64) -> Result<(), ApiError> {
    if exceeded(state, project, kind, used(state, project, kind) + n) {
        return Err(ApiError::conflict(
            "OverQuota",
            format!("Quota exceeded for resources: ['{}'].", key(kind)),
        ));
    }
    Ok(())
}

fn render(q: &Quota) -> Value {
    json!({"network": q.network, "subnet": q.subnet, "port": q.port, "router": q.router,
           "security_group": q.security_group, "security_group_rule": q.security_group_rule,
           "floatingip": q.floatingip, "ikepolicy": q.ikepolicy, "ipsecpolicy": q.ipsecpolicy,
           "vpnservice": q.vpnservice, "endpoint_group": q.endpoint_group,
           "ipsec_site_connection": q.ipsec_site_connection, "vpn_subnet": q.vpn_subnet})
}

/// The VPN subnets of one IPsec site connection: its local subnets (its
/// local endpoint group's, or its service's one subnet) and peer CIDRs
/// (its peer endpoint group's, or its own).
pub fn connection_vpn_subnets(state: &State, c: &IpsecSiteConnection) -> i64 {
    let group = |g: &String| {
        state
            .endpoint_groups
            .get(g)
            .map_or(0, |g| g.endpoints.len())
    };
    let local = match &c.local_ep_group_id {
        Some(g) => group(g),
        None => usize::from(
            state
                .vpnservices
                .get(&c.vpnservice_id)
                .is_some_and(|v| v.subnet_id.is_some()),
        ),
    };
    let peer = match &c.peer_ep_group_id {
        Some(g) => group(g),
        None => c.peer_cidrs.len(),
    };
    (local + peer) as i64
}

/// The VPN subnets of `project`'s IPsec site connections: what the
/// `vpn_subnet` quota counts.
pub fn vpn_subnets(state: &State, project: &str) -> i64 {
    state
        .ipsec_site_connections
        .values()
        .filter(|c| c.meta.project_id == project)
        .map(|c| connection_vpn_subnets(state, c))
        .sum()
}

/// 403 unless an administrator asks (both quota APIs: quotas change only
/// so).
pub fn require_admin(auth: &Auth) -> Result<(), ApiError> {
    if auth.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Only an administrator may change quotas.",
        ))
    }
}

fn may_read(auth: &Auth, project: &str) -> Result<(), ApiError> {
    if auth.can_see(project) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Only an administrator may read other projects' quotas.",
        ))
    }
}

pub fn show(state: &State, auth: &Auth, project: &str) -> Result<Value, ApiError> {
    may_read(auth, project)?;
    Ok(json!({"quota": render(&state.quota(project))}))
}

pub fn details(state: &State, auth: &Auth, project: &str) -> Result<Value, ApiError> {
    may_read(auth, project)?;
    let q = state.quota(project);
    let mut o = Map::new();
    for k in [
        Kind::Network,
        Kind::Subnet,
        Kind::Port,
        Kind::Router,
        Kind::SecurityGroup,
        Kind::SecurityGroupRule,
        Kind::FloatingIp,
        Kind::IkePolicy,
        Kind::IpsecPolicy,
        Kind::VpnService,
        Kind::EndpointGroup,
        Kind::IpsecSiteConnection,
    ] {
        o.insert(
            key(k).into(),
            json!({"used": used(state, project, k), "limit": q.limit(k), "reserved": 0}),
        );
    }
    o.insert(
        "vpn_subnet".into(),
        json!({"used": vpn_subnets(state, project), "limit": q.vpn_subnet, "reserved": 0}),
    );
    Ok(json!({"quota": o}))
}

pub fn list(state: &State, auth: &Auth) -> Result<Value, ApiError> {
    if !auth.is_admin() {
        return Err(ApiError::forbidden(
            "Only an administrator may list quotas.",
        ));
    }
    let quotas: Vec<Value> = state
        .quotas
        .values()
        .map(|q| {
            let mut v = render(q);
            v["project_id"] = q.project_id.clone().into();
            v["tenant_id"] = q.project_id.clone().into();
            v
        })
        .collect();
    Ok(json!({"quotas": quotas}))
}

pub fn update(state: &State, auth: &Auth, project: &str, body: &Value) -> Made<Value> {
    if !auth.is_admin() {
        return Err(ApiError::forbidden(
            "Only an administrator may change quotas.",
        ));
    }
    if !state.projects.contains_key(project) {
        return Err(ApiError::not_found("project", project));
    }
    let mut q = state.quota(project);
    let mut a = Attrs::from_body(body, "quota")?;
    for (key, slot) in [
        ("network", &mut q.network),
        ("subnet", &mut q.subnet),
        ("port", &mut q.port),
        ("router", &mut q.router),
        ("security_group", &mut q.security_group),
        ("security_group_rule", &mut q.security_group_rule),
        ("floatingip", &mut q.floatingip),
        ("ikepolicy", &mut q.ikepolicy),
        ("ipsecpolicy", &mut q.ipsecpolicy),
        ("vpnservice", &mut q.vpnservice),
        ("endpoint_group", &mut q.endpoint_group),
        ("ipsec_site_connection", &mut q.ipsec_site_connection),
        ("vpn_subnet", &mut q.vpn_subnet),
    ] {
        if let Some(v) = a.integer(key, -1, i32::MAX as i64)? {
            *slot = v;
        }
    }
    a.finish()?;
    let out = json!({"quota": render(&q)});
    Ok((vec![Change::Put(Object::Quota(q))], out))
}

pub fn reset(state: &State, auth: &Auth, project: &str) -> Made<()> {
    require_admin(auth)?;
    if !state.quotas.contains_key(project) {
        return Ok((vec![], ()));
    }
    Ok((vec![Change::Delete(Kind::Quota, project.to_owned())], ()))
}
