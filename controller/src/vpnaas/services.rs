//! VPN services: a router's VPN gateway. The router must have an external
//! gateway (its IPv4 address is the tunnels' local end, rendered as
//! `external_v4_ip`); a service with connections cannot be deleted.

use serde_json::{Map, Value};

use super::updatable;
use crate::{
    auth::Auth,
    error::ApiError,
    model::{Change, Kind, Object, Router, VpnService, VpnStatus},
    network::{
        creating, find_own, new_meta, quotas, render_meta, routers, update_attrs, updated,
        writable, Edit, Made,
    },
    state::State,
};

pub fn get<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s VpnService, ApiError> {
    find_own(state, auth, id, || {
        ApiError::new(
            404,
            "VPNServiceNotFound",
            format!("VPNService {id} could not be found"),
        )
    })
}

/// The router's external IPv4 address (its gateway port's), if any.
pub fn external_v4_ip(state: &State, r: &Router) -> Option<String> {
    let g = r.gateway.as_ref()?;
    let port = state.ports.get(&g.port_id)?;
    port.fixed_ips
        .iter()
        .find(|f| f.ip_address.parse::<std::net::Ipv4Addr>().is_ok())
        .map(|f| f.ip_address.clone())
}

/// Whether `subnet_id` is on one of `router_id`'s interfaces.
pub fn subnet_on_router(state: &State, router_id: &str, subnet_id: &str) -> bool {
    routers::interfaces(state, router_id)
        .iter()
        .any(|p| p.fixed_ips.iter().any(|f| f.subnet_id == subnet_id))
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<VpnService> {
    let (mut a, project) = creating(state, auth, body, "vpnservice")?;
    let (name, description) = a.names()?;
    let router_id = a.string("router_id", 64)?.ok_or_else(|| {
        ApiError::bad_request(
            "Failed to parse request. Required attribute 'router_id' not specified",
        )
    })?;
    let subnet_id = a.nullable_string("subnet_id", 64)?.flatten();
    let admin_state_up = a.boolean("admin_state_up")?.unwrap_or(true);
    if let Some(Some(f)) = a.nullable_string("flavor_id", 64)? {
        return Err(ApiError::new(
            404,
            "FlavorsPluginNotLoaded",
            format!("Flavors plugin not found (flavor {f}): VPN services have one provider"),
        ));
    }
    a.finish()?;
    let router = routers::get(state, auth, &router_id)?;
    if router.gateway.is_none() {
        return Err(ApiError::bad_request(format!(
            "Router {router_id} has no external network gateway set"
        )));
    }
    if external_v4_ip(state, router).is_none() {
        return Err(ApiError::bad_request(format!(
            "Router's {router_id} external network has no IPv4 subnet"
        )));
    }
    if let Some(s) = &subnet_id {
        if !subnet_on_router(state, &router_id, s) {
            return Err(ApiError::bad_request(format!(
                "Subnet {s} is not connected to Router {router_id}"
            )));
        }
    }
    quotas::check(state, &project, Kind::VpnService, 1)?;
    let v = VpnService {
        meta: new_meta(project, name, description),
        router_id,
        subnet_id,
        admin_state_up,
        status: VpnStatus::PendingCreate,
    };
    tracing::info!(vpnservice = %v.meta.id, router = %v.router_id, "VPN service created");
    Ok((vec![Change::Put(Object::VpnService(v.clone()))], v))
}

pub fn update(state: &State, auth: &Auth, e: Edit) -> Made<VpnService> {
    let Edit { id, body, if_match } = e;
    let mut v = writable(auth, || get(state, auth, id), if_match)?.clone();
    const READ_ONLY: &[&str] = &[
        "id",
        "project_id",
        "tenant_id",
        "router_id",
        "subnet_id",
        "flavor_id",
        "status",
        "external_v4_ip",
        "external_v6_ip",
    ];
    update_attrs(body, "vpnservice", READ_ONLY, |a| {
        a.rename(&mut v.meta)?;
        if let Some(b) = a.boolean("admin_state_up")? {
            v.admin_state_up = b;
        }
        Ok(())
    })?;
    updatable(v.status, id)?;
    Ok(updated(v, vec![]))
}

pub fn delete(state: &State, auth: &Auth, id: &str, if_match: Option<&str>) -> Made<()> {
    writable(auth, || get(state, auth, id), if_match)?;
    if state
        .ipsec_site_connections
        .values()
        .any(|c| c.vpnservice_id == id)
    {
        return Err(ApiError::conflict(
            "VPNServiceInUse",
            format!("VPNService {id} is still in use"),
        ));
    }
    tracing::info!(vpnservice = id, "VPN service deleted");
    Ok((vec![Change::Delete(Kind::VpnService, id.to_owned())], ()))
}

pub const ATTRS: &[&str] = &[
    "router_id",
    "subnet_id",
    "flavor_id",
    "admin_state_up",
    "external_v4_ip",
    "external_v6_ip",
    "status",
];

pub fn render(state: &State, v: &VpnService) -> Map<String, Value> {
    let mut o = Map::new();
    render_meta(&v.meta, &mut o);
    o.insert("router_id".into(), v.router_id.clone().into());
    o.insert("subnet_id".into(), v.subnet_id.clone().into());
    o.insert("flavor_id".into(), Value::Null);
    o.insert("admin_state_up".into(), v.admin_state_up.into());
    let ip = state
        .routers
        .get(&v.router_id)
        .and_then(|r| external_v4_ip(state, r));
    o.insert("external_v4_ip".into(), ip.into());
    o.insert("external_v6_ip".into(), Value::Null);
    o.insert("status".into(), v.status.as_str().into());
    o
}
