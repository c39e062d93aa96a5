//! Routers: the subnets attached to one router form one routing domain (the
//! VPC). Interfaces are ports owned by the router holding the subnet's
//! gateway address; static routes must point into an attached subnet.

use serde_json::{json, Map, Value};

use super::{
    creating, find_own, ipam, new_meta, ports, quotas, refuse_in_use, render_meta, require_write,
    subnets, touch, update_attrs, updated, writable, Attrs, Edit, Made, OWNER_ROUTER_INTERFACE,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{
        Change, FixedIp, HostRoute, Kind, Object, Port, Router, RouterGateway, OWNER_ROUTER_GATEWAY,
    },
    state::State,
};

pub fn get<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s Router, ApiError> {
    find_own(state, auth, id, || ApiError::not_found("router", id))
}

/// The router's interface ports.
pub fn interfaces<'s>(state: &'s State, router_id: &str) -> Vec<&'s Port> {
    state
        .ports
        .values()
        .filter(|p| p.device_owner == OWNER_ROUTER_INTERFACE && p.device_id == router_id)
        .collect()
}

/// A requested `external_gateway_info`: `None` clears it.
struct GatewaySpec {
    network_id: String,
    enable_snat: Option<bool>,
    external_fixed_ips: Option<Vec<Value>>,
}

/// `external_gateway_info` of a request: absent (`None`), cleared
/// (`Some(None)`: null or `{}`), or set.
fn parse_gateway(a: &mut Attrs<'_>) -> Result<Option<Option<GatewaySpec>>, ApiError> {
    let bad = |why: String| {
        ApiError::invalid(format!(
            "Invalid input for external_gateway_info. Reason: {why}."
        ))
    };
    let o = match a.raw("external_gateway_info") {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(None)),
        Some(Value::Object(o)) if o.is_empty() => return Ok(Some(None)),
        Some(Value::Object(o)) => o,
        Some(v) => return Err(bad(format!("'{v}' is not a dictionary"))),
    };
    if let Some(k) = o
        .keys()
        .find(|k| !["network_id", "enable_snat", "external_fixed_ips"].contains(&k.as_str()))
    {
        return Err(bad(format!("unrecognized key '{k}'")));
    }
    let network_id = match o.get("network_id") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(bad(format!("network_id '{v}' is not a string"))),
        None => return Err(bad("network_id is required".into())),
    };
    let enable_snat = match o.get("enable_snat") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(v) => return Err(bad(format!("enable_snat '{v}' is not a boolean"))),
    };
    let external_fixed_ips = match o.get("external_fixed_ips") {
        None => None,
        Some(Value::Array(v)) => Some(v.clone()),
        Some(v) => return Err(bad(format!("external_fixed_ips '{v}' is not a list"))),
    };
    Ok(Some(Some(GatewaySpec {
        network_id,
        enable_snat,
        external_fixed_ips,
    })))
}

/// Floating IPs bound through router `id`.
fn floating_ips_via<'s>(state: &'s State, id: &str) -> Vec<&'s crate::model::FloatingIp> {
    state
        .floating_ips
        .values()
        .filter(|f| f.router_id.as_deref() == Some(id))
        .collect()
}

/// Applies a requested gateway to `r`: the changes to its gateway port.
fn apply_gateway(
    state: &State,
    auth: &Auth,
    r: &mut Router,
    spec: Option<GatewaySpec>,
) -> Result<Vec<Change>, ApiError> {
    let in_use = || {
        ApiError::conflict(
            "RouterExternalGatewayInUseByFloatingIp",
            format!(
                "Gateway cannot be updated for router {}, since a gateway to external network {} is required by one or more floating IPs.",
                r.meta.id,
                r.gateway.as_ref().map(|g| g.network_id.as_str()).unwrap_or("")
            ),
        )
    };
    let mut changes = Vec::new();
    let Some(spec) = spec else {
        if let Some(g) = &r.gateway {
            if !floating_ips_via(state, &r.meta.id).is_empty() {
                return Err(in_use());
            }
            refuse_vpn_services(state, &r.meta.id)?;
            changes.push(Change::Delete(Kind::Port, g.port_id.clone()));
        }
        r.gateway = None;
        return Ok(changes);
    };
    let net = super::networks::get(state, auth, &spec.network_id)?;
    if !net.external {
        return Err(ApiError::bad_request(format!(
            "Bad router request: Network {} is not a valid external network.",
            spec.network_id
        )));
    }
    let enable_snat = spec
        .enable_snat
        .or(r.gateway.as_ref().map(|g| g.enable_snat))
        .unwrap_or(true);
    let same_net = r
        .gateway
        .as_ref()
        .is_some_and(|g| g.network_id == spec.network_id);
    if same_net && spec.external_fixed_ips.is_none() {
        if let Some(g) = r.gateway.as_mut() {
            g.enable_snat = enable_snat;
        }
        return Ok(changes);
    }
    let old = r.gateway.as_ref().and_then(|g| state.ports.get(&g.port_id));
    if !same_net && old.is_some() && !floating_ips_via(state, &r.meta.id).is_empty() {
        return Err(in_use());
    }
    // A new gateway network or address would move the tunnels' local end
    // under their peers.
    if old.is_some() {
        refuse_vpn_services(state, &r.meta.id)?;
    }
    let own: Vec<FixedIp> = old
        .filter(|_| same_net)
        .map(|p| p.fixed_ips.clone())
        .unwrap_or_default();
    let fixed_ips = ports::allocate_ips(
        state,
        &spec.network_id,
        spec.external_fixed_ips.as_ref(),
        &own,
        false,
    )?;
    if fixed_ips.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Bad router request: external network {} has no subnet to take the gateway address from.",
            spec.network_id
        )));
    }
    if let Some(p) = old {
        changes.push(Change::Delete(Kind::Port, p.meta.id.clone()));
    }
    let port = Port {
        meta: new_meta(String::new(), None, None),
        network_id: spec.network_id.clone(),
        mac_address: ports::unused_mac(state, &spec.network_id),
        fixed_ips,
        security_groups: vec![],
        port_security_enabled: false,
        allowed_address_pairs: vec![],
        binding_host_id: String::new(),
        device_id: r.meta.id.clone(),
        device_owner: OWNER_ROUTER_GATEWAY.to_owned(),
        admin_state_up: true,
    };
    r.gateway = Some(RouterGateway {
        network_id: spec.network_id,
        enable_snat,
        port_id: port.meta.id.clone(),
    });
    changes.push(Change::Put(Object::Port(port)));
    Ok(changes)
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<Router> {
    let (mut a, project) = creating(state, auth, body, "router")?;
    let (name, description) = a.names()?;
    let admin_state_up = a.boolean("admin_state_up")?.unwrap_or(true);
    let gateway = parse_gateway(&mut a)?;
    for (k, ok) in [("distributed", false), ("ha", false)] {
        if let Some(v) = a.boolean(k)? {
            if v != ok {
                return Err(ApiError::invalid(format!("Invalid input for {k}. Reason: routers are always distributed in the dataplane; '{k}' cannot be set.")));
            }
        }
    }
    if let Some(z) = a.strings("availability_zone_hints")? {
        if !z.is_empty() {
            return Err(ApiError::invalid("Invalid input for availability_zone_hints. Reason: routers span every availability zone."));
        }
    }
    a.finish()?;
    quotas::check(state, &project, Kind::Router, 1)?;
    let mut r = Router {
        meta: new_meta(project, name, description),
        admin_state_up,
        routes: vec![],
        gateway: None,
    };
    let mut changes = apply_gateway(state, auth, &mut r, gateway.flatten())?;
    tracing::info!(router = %r.meta.id, project = %r.meta.project_id, gateway = ?r.gateway.as_ref().map(|g| &g.network_id), "router created");
    changes.push(Change::Put(Object::Router(r.clone())));
    Ok((changes, r))
}

pub fn update(state: &State, auth: &Auth, e: Edit) -> Made<Router> {
    let Edit { id, body, if_match } = e;
    const READ_ONLY: &[&str] = &["id", "project_id", "tenant_id", "status"];
    let mut r = writable(auth, || get(state, auth, id), if_match)?.clone();
    let gateway = update_attrs(body, "router", READ_ONLY, |a| {
        a.rename(&mut r.meta)?;
        if let Some(v) = a.boolean("admin_state_up")? {
            r.admin_state_up = v;
        }
        let gateway = parse_gateway(a)?;
        if let Some(v) = a.list("routes")? {
            r.routes = parse_routes(state, id, v)?;
        }
        Ok(gateway)
    })?;
    let changes = match gateway {
        Some(spec) => apply_gateway(state, auth, &mut r, spec)?,
        None => vec![],
    };
    Ok(updated(r, changes))
}

/// A router's new static routes: each next hop in an attached subnet and
/// not one of the router's own addresses.
fn parse_routes(state: &State, id: &str, v: &[Value]) -> Result<Vec<HostRoute>, ApiError> {
    let routes = subnets::parse_routes("routes", v, 30)?;
    let attached: Vec<ipnetwork::Ipv4Network> = interfaces(state, id)
        .iter()
        .flat_map(|p| p.fixed_ips.iter())
        .filter_map(|f| state.subnets.get(&f.subnet_id))
        .map(subnets::cidr)
        .collect();
    for route in &routes {
        let hop = ipam::parse_ip("routes", &route.nexthop)?;
        if !attached.iter().any(|n| ipam::is_host_address(*n, hop)) {
            return Err(ApiError::bad_request(format!(
                "Invalid format for routes: {{'destination': '{}', 'nexthop': '{}'}}, the nexthop is not connected with router",
                route.destination, route.nexthop
            )));
        }
        let gateway_of_attached = interfaces(state, id)
            .iter()
            .flat_map(|p| p.fixed_ips.iter())
            .any(|f| f.ip_address == route.nexthop);
        if gateway_of_attached {
            return Err(ApiError::bad_request(format!(
                "Invalid format for routes: nexthop {} is the router's own address",
                route.nexthop
            )));
        }
    }
    Ok(routes)
}

/// 409 while VPN services run on the router (VPNaaS's `RouterInUse`):
/// their tunnels' local end is the router's gateway.
fn refuse_vpn_services(state: &State, id: &str) -> Result<(), ApiError> {
    let services: Vec<&str> = state
        .vpnservices
        .values()
        .filter(|v| v.router_id == id)
        .map(|v| v.meta.id.as_str())
        .collect();
    refuse_in_use(!services.is_empty(), "RouterInUse", || {
        format!(
            "Router {id} is currently used by VPN service{} ({})",
            if services.len() > 1 { "s" } else { "" },
            services.join(",")
        )
    })
}

pub fn delete(state: &State, auth: &Auth, id: &str, if_match: Option<&str>) -> Made<()> {
    let r = writable(auth, || get(state, auth, id), if_match)?;
    refuse_vpn_services(state, id)?;
    refuse_in_use(!interfaces(state, id).is_empty(), "RouterInUse", || {
        format!("Router {id} still has ports")
    })?;
    let mut changes = Vec::new();
    if let Some(g) = &r.gateway {
        changes.push(Change::Delete(Kind::Port, g.port_id.clone()));
    }
    tracing::info!(router = id, "router deleted");
    changes.push(Change::Delete(Kind::Router, id.to_owned()));
    Ok((changes, ()))
}

/// `{"subnet_id": ..}` or `{"port_id": ..}`, exactly one.
fn interface_target(body: &Value) -> Result<(Option<String>, Option<String>), ApiError> {
    let o = body.as_object().ok_or_else(|| {
        ApiError::bad_request("Request body must be a JSON object with subnet_id or port_id.")
    })?;
    if let Some(k) = o.keys().find(|k| *k != "subnet_id" && *k != "port_id") {
        return Err(ApiError::bad_request(format!(
            "Unrecognized attribute(s) '{k}'"
        )));
    }
    let get = |k: &str| -> Result<Option<String>, ApiError> {
        match o.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(ApiError::invalid(format!(
                "Invalid input for {k}. Reason: '{v}' is not a valid string."
            ))),
        }
    };
    match (get("subnet_id")?, get("port_id")?) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "Bad router request: Cannot specify both subnet-id and port-id",
        )),
        (None, None) => Err(ApiError::bad_request(
            "Bad router request: Either subnet_id or port_id must be specified",
        )),
        t => Ok(t),
    }
}

fn interface_info(router: &Router, port: &Port, network_id: &str) -> Value {
    let subnet_ids: Vec<&str> = port
        .fixed_ips
        .iter()
        .map(|f| f.subnet_id.as_str())
        .collect();
    json!({
        "id": router.meta.id,
        "tenant_id": router.meta.project_id,
        "project_id": router.meta.project_id,
        "port_id": port.meta.id,
        "network_id": network_id,
        "subnet_id": subnet_ids.first().copied().unwrap_or_default(),
        "subnet_ids": subnet_ids,
    })
}

pub fn add_interface(state: &State, auth: &Auth, router_id: &str, body: &Value) -> Made<Value> {
    require_write(auth)?;
    let router = get(state, auth, router_id)?;
    let (subnet_id, port_id) = interface_target(body)?;
    let mut port = match (subnet_id, port_id) {
        (Some(sid), _) => {
            let subnet = subnets::get(state, auth, &sid)?;
            // A shared network's subnet stays its owner's: attaching it would
            // take the owner's gateway address.
            if !auth.can_see(&subnet.meta.project_id) {
                return Err(ApiError::not_found("subnet", &sid));
            }
            if interfaces(state, router_id)
                .iter()
                .any(|p| p.fixed_ips.iter().any(|f| f.subnet_id == sid))
            {
                return Err(ApiError::bad_request(format!(
                    "Bad router request: Router already has a port on subnet {sid}."
                )));
            }
            let gw = subnet.gateway_ip.clone().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Bad router request: Subnet {sid} does not have a gateway IP"
                ))
            })?;
            let requested = vec![json!({"subnet_id": sid, "ip_address": gw})];
            let fixed_ips =
                ports::allocate_ips(state, &subnet.network_id, Some(&requested), &[], true)?;
            let mut meta = new_meta(router.meta.project_id.clone(), None, None);
            meta.name = String::new();
            Port {
                meta,
                network_id: subnet.network_id.clone(),
                mac_address: loop {
                    let m = ipam::random_mac();
                    if !state
                        .ports
                        .values()
                        .any(|p| p.network_id == subnet.network_id && p.mac_address == m)
                    {
                        break m;
                    }
                },
                fixed_ips,
                security_groups: vec![],
                port_security_enabled: false,
                allowed_address_pairs: vec![],
                binding_host_id: String::new(),
                device_id: router_id.to_owned(),
                device_owner: OWNER_ROUTER_INTERFACE.to_owned(),
                admin_state_up: true,
            }
        }
        (None, Some(pid)) => {
            let p = ports::get(state, auth, &pid)?.clone();
            if !p.device_id.is_empty() || !p.device_owner.is_empty() {
                return Err(ApiError::conflict("PortInUse", format!("Unable to complete operation on port {pid} for network {}. Port already has an attached device {}.", p.network_id, p.device_id)));
            }
            if p.fixed_ips.len() != 1 {
                return Err(ApiError::bad_request(format!("Bad router request: Router port must have exactly one fixed IP (port {pid} has {}).", p.fixed_ips.len())));
            }
            let mut p = p;
            p.device_id = router_id.to_owned();
            p.device_owner = OWNER_ROUTER_INTERFACE.to_owned();
            p.port_security_enabled = false;
            p.security_groups.clear();
            p.allowed_address_pairs.clear();
            touch(&mut p.meta);
            p
        }
        (None, None) => unreachable!("interface_target requires one"),
    };
    // One routing domain: no overlapping subnets, one interface per subnet.
    let new: FixedIp = port.fixed_ips[0].clone();
    let new_net = subnets::cidr(
        state
            .subnets
            .get(&new.subnet_id)
            .expect("allocated from an existing subnet"),
    );
    for existing in interfaces(state, router_id) {
        for f in &existing.fixed_ips {
            if f.subnet_id == new.subnet_id {
                return Err(ApiError::bad_request(format!(
                    "Bad router request: Router already has a port on subnet {}.",
                    new.subnet_id
                )));
            }
            if let Some(s) = state.subnets.get(&f.subnet_id) {
                if subnets::overlaps(subnets::cidr(s), new_net) {
                    return Err(ApiError::bad_request(format!(
                        "Bad router request: Cidr {new_net} of subnet {} overlaps with cidr {} of subnet {}.",
                        new.subnet_id, s.cidr, s.meta.id
                    )));
                }
            }
        }
    }
    port.meta.revision_number = port.meta.revision_number.max(1);
    let mut r = router.clone();
    touch(&mut r.meta);
    let info = interface_info(&r, &port, &port.network_id.clone());
    tracing::info!(router = router_id, subnet = %new.subnet_id, port = %port.meta.id, "router interface added");
    Ok((
        vec![
            Change::Put(Object::Port(port)),
            Change::Put(Object::Router(r)),
        ],
        info,
    ))
}

pub fn remove_interface(state: &State, auth: &Auth, router_id: &str, body: &Value) -> Made<Value> {
    require_write(auth)?;
    let router = get(state, auth, router_id)?;
    let (subnet_id, port_id) = interface_target(body)?;
    let port = match (&subnet_id, &port_id) {
        (Some(sid), _) => interfaces(state, router_id)
            .into_iter()
            .find(|p| p.fixed_ips.iter().any(|f| &f.subnet_id == sid))
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "RouterInterfaceNotFoundForSubnet",
                    format!("Router {router_id} has no interface on subnet {sid}"),
                )
            })?,
        (None, Some(pid)) => interfaces(state, router_id)
            .into_iter()
            .find(|p| &p.meta.id == pid)
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "RouterInterfaceNotFound",
                    format!("Router {router_id} does not have an interface with id {pid}"),
                )
            })?,
        (None, None) => unreachable!("interface_target requires one"),
    };
    // Floating IPs bound through this interface block removal.
    for f in &port.fixed_ips {
        if let Some(fip) = floating_ips_via(state, router_id).into_iter().find(|fip| {
            fip.port_id
                .as_deref()
                .and_then(|p| state.ports.get(p))
                .is_some_and(|p| p.fixed_ips.iter().any(|x| x.subnet_id == f.subnet_id))
        }) {
            return Err(ApiError::conflict(
                "RouterInterfaceInUseByFloatingIP",
                format!("Router interface for subnet {} on router {router_id} cannot be deleted, as it is required by one or more floating IPs ({}).", f.subnet_id, fip.meta.id),
            ));
        }
    }
    // Subnets a VPN service or an IPsec site connection on this router
    // uses (VPNaaS's checks).
    for f in &port.fixed_ips {
        if let Some(v) = state
            .vpnservices
            .values()
            .find(|v| v.router_id == router_id && v.subnet_id.as_deref() == Some(&f.subnet_id))
        {
            return Err(ApiError::conflict(
                "SubnetInUseByVPNService",
                format!("Subnet {} is used by VPNService {}", f.subnet_id, v.meta.id),
            ));
        }
        let by_connection = state.ipsec_site_connections.values().find(|c| {
            state
                .vpnservices
                .get(&c.vpnservice_id)
                .is_some_and(|v| v.router_id == router_id)
                && c.local_ep_group_id
                    .as_ref()
                    .and_then(|g| state.endpoint_groups.get(g))
                    .is_some_and(|g| g.endpoints.contains(&f.subnet_id))
        });
        if let Some(c) = by_connection {
            return Err(ApiError::conflict(
                "SubnetInUseByIPsecSiteConnection",
                format!(
                    "Subnet {} is used by ipsec site connection {}",
                    f.subnet_id, c.meta.id
                ),
            ));
        }
    }
    // Static routes whose nexthop lives in the leaving subnet block removal.
    for f in &port.fixed_ips {
        if let Some(s) = state.subnets.get(&f.subnet_id) {
            let net = subnets::cidr(s);
            if let Some(route) = router
                .routes
                .iter()
                .find(|r| r.nexthop.parse().is_ok_and(|h| net.contains(h)))
            {
                return Err(ApiError::conflict(
                    "RouterInterfaceInUseByRoute",
                    format!("Router interface for subnet {} on router {router_id} cannot be deleted, as it is required by one or more routes (nexthop {}).", s.meta.id, route.nexthop),
                ));
            }
        }
    }
    let mut r = router.clone();
    touch(&mut r.meta);
    let info = interface_info(&r, port, &port.network_id);
    tracing::info!(router = router_id, port = %port.meta.id, "router interface removed");
    Ok((
        vec![
            Change::Delete(Kind::Port, port.meta.id.clone()),
            Change::Put(Object::Router(r)),
        ],
        info,
    ))
}

pub fn render(state: &State, r: &Router) -> Map<String, Value> {
    let mut o = Map::new();
    render_meta(&r.meta, &mut o);
    o.insert("admin_state_up".into(), r.admin_state_up.into());
    o.insert("status".into(), "ACTIVE".into());
    let gw = r.gateway.as_ref().map(|g| {
        let ips: Vec<Value> = state
            .ports
            .get(&g.port_id)
            .map(|p| {
                p.fixed_ips
                    .iter()
                    .map(|f| json!({"subnet_id": f.subnet_id, "ip_address": f.ip_address}))
                    .collect()
            })
            .unwrap_or_default();
        json!({"network_id": g.network_id, "enable_snat": g.enable_snat, "external_fixed_ips": ips})
    });
    o.insert("external_gateway_info".into(), gw.unwrap_or(Value::Null));
    o.insert(
        "routes".into(),
        serde_json::to_value(&r.routes).expect("routes serialize"),
    );
    o.insert("distributed".into(), false.into());
    o.insert("ha".into(), false.into());
    o.insert("availability_zone_hints".into(), Value::Array(vec![]));
    // Where it is scheduled: the zone of the gateway host doing its SNAT.
    o.insert(
        "availability_zones".into(),
        Value::Array(
            snat_host(state, r)
                .map(|h| vec![Value::from(h.az.clone())])
                .unwrap_or_default(),
        ),
    );
    o.insert("flavor_id".into(), Value::Null);
    o
}

/// The gateway host that does a router's SNAT: one of the available
/// gateway hosts, chosen by a stable hash of the router's id (so routers
/// spread over them, and every host agrees); another one when it fails.
pub fn snat_host<'s>(
    state: &'s State,
    r: &crate::model::Router,
) -> Option<&'s crate::model::HostRecord> {
    let g = r.gateway.as_ref()?;
    if !g.enable_snat {
        return None;
    }
    let mut hosts: Vec<&crate::model::HostRecord> = state
        .hosts
        .values()
        .filter(|h| h.gateway && h.available)
        .collect();
    if hosts.is_empty() {
        return None;
    }
    hosts.sort_by(|a, b| (&a.az, &a.name).cmp(&(&b.az, &b.name)));
    // FNV-1a: stable across processes and releases.
    let h = r.meta.id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Some(hosts[(h % hosts.len() as u64) as usize])
}
