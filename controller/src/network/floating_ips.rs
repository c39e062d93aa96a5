//! Floating IPs (elastic IPs): addresses of an external network's
//! allocation pools, allocated to a project, bound 1:1 to one fixed IP of a
//! port or unbound. The address is held by a port on the external network
//! (device owner `network:floatingip`, owned by no project), so allocation
//! and in-use checks are the ports'. Binding needs a path: the port's
//! subnet must be attached to a router whose gateway is on the floating
//! IP's network. Deleting the bound port unbinds; the address stays
//! allocated until the floating IP is deleted.

use std::net::Ipv4Addr;

use serde_json::{json, Map, Value};

use super::{
    creating, find_own, ipam, networks, new_meta, ports, quotas, render_meta, update_attrs,
    updated, writable, Attrs, Edit, Made, OWNER_ROUTER_INTERFACE,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{Change, FloatingIp, Kind, Object, Port, OWNER_FLOATING_IP},
    state::State,
};

pub fn get<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s FloatingIp, ApiError> {
    find_own(state, auth, id, || ApiError::not_found("floatingip", id))
}

/// Attributes that name DNS integration (not supported).
const DNS: [&str; 2] = ["dns_name", "dns_domain"];

fn reject_dns(a: &mut Attrs<'_>) -> Result<(), ApiError> {
    for k in DNS {
        if let Some(v) = a.raw(k) {
            if v.as_str().is_some_and(|s| !s.is_empty()) {
                return Err(ApiError::invalid(format!(
                    "Invalid input for {k}. Reason: DNS integration is not supported."
                )));
            }
        }
    }
    Ok(())
}

/// A binding of floating IP `fip` (of `project`, on external network
/// `network_id`) to `port_id` and `fixed` (default: the port's first
/// address): (port id, fixed IP, router id).
fn binding(
    state: &State,
    auth: &Auth,
    fip_id: &str,
    project: &str,
    network_id: &str,
    port_id: &str,
    fixed: Option<&str>,
) -> Result<(String, String, String), ApiError> {
    // Another project's port is not found, whoever asks (admins bind the
    // floating IP's project's ports only).
    let port: &Port = ports::get(state, auth, port_id)
        .ok()
        .filter(|p| p.meta.project_id == project)
        .ok_or_else(|| ApiError::not_found("port", port_id))?;
    if port.device_owner.starts_with("network:") {
        return Err(ApiError::bad_request(format!(
            "Bad floatingip request: Port {port_id} has device owner {}: floating IPs bind to VM ports only.",
            port.device_owner
        )));
    }
    let fixed = match fixed {
        Some(ip) => {
            ipam::parse_ip("fixed_ip_address", ip)?;
            port.fixed_ips
                .iter()
                .find(|f| f.ip_address == ip)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Bad floatingip request: Port {port_id} does not have fixed ip {ip}."
                    ))
                })?
        }
        None => port.fixed_ips.first().ok_or_else(|| {
            ApiError::bad_request(format!(
                "Bad floatingip request: Port {port_id} has no fixed IPs to bind to."
            ))
        })?,
    };
    // The router joining the fixed IP's subnet to the external network.
    let router = state
        .ports
        .values()
        .filter(|p| {
            p.device_owner == OWNER_ROUTER_INTERFACE
                && p.fixed_ips.iter().any(|f| f.subnet_id == fixed.subnet_id)
        })
        .filter_map(|p| state.routers.get(&p.device_id))
        .find(|r| {
            r.gateway
                .as_ref()
                .is_some_and(|g| g.network_id == network_id)
        })
        .ok_or_else(|| {
            // Neutron's ExternalGatewayForFloatingIPNotFound is a NotFound
            // (404), with its message word for word (two spaces included).
            ApiError::new(
                404,
                "ExternalGatewayForFloatingIPNotFound",
                format!(
                    "External network {network_id} is not reachable from subnet {}.  Therefore, cannot associate Port {port_id} with a Floating IP.",
                    fixed.subnet_id
                ),
            )
        })?;
    if let Some(other) = state.floating_ips.values().find(|f| {
        f.meta.id != fip_id
            && f.port_id.as_deref() == Some(port_id)
            && f.fixed_ip_address.as_deref() == Some(fixed.ip_address.as_str())
    }) {
        return Err(ApiError::conflict(
            "FloatingIPPortAlreadyAssociated",
            format!(
                "Cannot associate floating IP {fip_id} with port {port_id} using fixed IP {}, as that fixed IP already has a floating IP on external network {} ({}).",
                fixed.ip_address, other.floating_network_id, other.meta.id
            ),
        ));
    }
    Ok((
        port_id.to_owned(),
        fixed.ip_address.clone(),
        router.meta.id.clone(),
    ))
}

/// A QoS policy the caller may apply (own or shared).
fn check_qos(state: &State, auth: &Auth, id: &str) -> Result<(), ApiError> {
    super::qos::get(state, auth, id).map(|_| ())
}

/// Is `ip` inside one of the allocation pools of `network_id`'s subnets?
fn in_pools(state: &State, network_id: &str, ip: Ipv4Addr) -> bool {
    state
        .subnets
        .values()
        .filter(|s| s.network_id == network_id)
        .flat_map(|s| s.allocation_pools.iter())
        .any(|p| {
            let (Ok(a), Ok(b)) = (p.start.parse::<Ipv4Addr>(), p.end.parse::<Ipv4Addr>()) else {
                return false;
            };
            (u32::from(a)..=u32::from(b)).contains(&u32::from(ip))
        })
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<FloatingIp> {
    let (mut a, project) = creating(state, auth, body, "floatingip")?;
    let network_id = a.string("floating_network_id", 36)?.ok_or_else(|| {
        ApiError::bad_request("Invalid input: 'floating_network_id' is required.")
    })?;
    let address = a.string("floating_ip_address", 64)?;
    let subnet_id = a.string("subnet_id", 36)?;
    let port_id = a.nullable_string("port_id", 36)?.flatten();
    let fixed = a.string("fixed_ip_address", 64)?;
    let description = a.string("description", 255)?;
    let qos_policy_id = a.nullable_string("qos_policy_id", 36)?.flatten();
    reject_dns(&mut a)?;
    a.finish()?;
    let net = networks::get(state, auth, &network_id)?;
    if !net.external {
        return Err(ApiError::bad_request(format!(
            "Bad floatingip request: Network {network_id} is not a valid external network."
        )));
    }
    if fixed.is_some() && port_id.is_none() {
        return Err(ApiError::bad_request(
            "Bad floatingip request: fixed_ip_address needs port_id.",
        ));
    }
    if let Some(q) = &qos_policy_id {
        check_qos(state, auth, q)?;
    }
    quotas::check(state, &project, Kind::FloatingIp, 1)?;
    // The address: requested (inside a pool, free), or the first free one
    // (of the requested subnet, if any).
    let requested = match (&address, &subnet_id) {
        (Some(ip), _) => {
            let ip = ipam::parse_ip("floating_ip_address", ip)?;
            if !in_pools(state, &network_id, ip) {
                return Err(ApiError::conflict(
                    "InvalidIpForNetwork",
                    format!("IP address {ip} is not inside an allocation pool of external network {network_id}."),
                ));
            }
            let mut r = json!({"ip_address": ip.to_string()});
            if let Some(s) = &subnet_id {
                r["subnet_id"] = json!(s);
            }
            Some(vec![r])
        }
        (None, Some(s)) => Some(vec![json!({"subnet_id": s})]),
        (None, None) => None,
    };
    let fixed_ips = ports::allocate_ips(state, &network_id, requested.as_ref(), &[], false)?;
    let Some(addr) = fixed_ips.first().cloned() else {
        return Err(ApiError::conflict(
            "IpAddressGenerationFailure",
            format!("External network {network_id} has no subnet to allocate floating IPs from."),
        ));
    };
    let mut meta = new_meta(project.clone(), None, description);
    meta.name = String::new();
    let holder = Port {
        meta: new_meta(String::new(), None, None),
        network_id: network_id.clone(),
        mac_address: ports::unused_mac(state, &network_id),
        fixed_ips,
        security_groups: vec![],
        port_security_enabled: false,
        allowed_address_pairs: vec![],
        binding_host_id: String::new(),
        device_id: meta.id.clone(),
        device_owner: OWNER_FLOATING_IP.to_owned(),
        admin_state_up: true,
    };
    let (port_id, fixed_ip_address, router_id) = match &port_id {
        Some(p) => {
            let (p, f, r) = binding(
                state,
                auth,
                &meta.id,
                &project,
                &network_id,
                p,
                fixed.as_deref(),
            )?;
            (Some(p), Some(f), Some(r))
        }
        None => (None, None, None),
    };
    let f = FloatingIp {
        meta,
        floating_network_id: network_id,
        floating_ip_address: addr.ip_address,
        floating_port_id: holder.meta.id.clone(),
        port_id,
        fixed_ip_address,
        router_id,
        qos_policy_id,
    };
    tracing::info!(floatingip = %f.meta.id, address = %f.floating_ip_address, project = %f.meta.project_id, port = ?f.port_id, "floating IP allocated");
    Ok((
        vec![
            Change::Put(Object::Port(holder)),
            Change::Put(Object::FloatingIp(f.clone())),
        ],
        f,
    ))
}

pub fn update(state: &State, auth: &Auth, e: Edit) -> Made<FloatingIp> {
    let Edit { id, body, if_match } = e;
    const READ_ONLY: &[&str] = &[
        "id",
        "project_id",
        "tenant_id",
        "status",
        "floating_ip_address",
        "floating_network_id",
        "router_id",
        "subnet_id",
    ];
    let mut f = writable(auth, || get(state, auth, id), if_match)?.clone();
    let (port, fixed, qos) = update_attrs(body, "floatingip", READ_ONLY, |a| {
        let port = if a.has("port_id") {
            Some(a.nullable_string("port_id", 36)?.flatten())
        } else {
            None
        };
        let fixed = a.string("fixed_ip_address", 64)?;
        if let Some(v) = a.string("description", 255)? {
            f.meta.description = v;
        }
        let qos = if a.has("qos_policy_id") {
            Some(a.nullable_string("qos_policy_id", 36)?.flatten())
        } else {
            None
        };
        reject_dns(a)?;
        Ok((port, fixed, qos))
    })?;
    if let Some(q) = qos {
        if let Some(id) = &q {
            check_qos(state, auth, id)?;
        }
        f.qos_policy_id = q;
    }
    // The port (and fixed IP) to bind to: the one named, or for a new
    // fixed IP alone the bound one; `port_id: null` unbinds.
    let target = match (port, fixed) {
        (Some(None), _) => {
            f.port_id = None;
            f.fixed_ip_address = None;
            f.router_id = None;
            None
        }
        (Some(Some(p)), fixed) => Some((p, fixed)),
        (None, Some(fixed)) => {
            let Some(p) = f.port_id.clone() else {
                return Err(ApiError::bad_request(
                    "Bad floatingip request: fixed_ip_address needs port_id.",
                ));
            };
            Some((p, Some(fixed)))
        }
        (None, None) => None,
    };
    if let Some((p, fixed)) = target {
        let (p, fx, r) = binding(
            state,
            auth,
            &f.meta.id,
            &f.meta.project_id,
            &f.floating_network_id,
            &p,
            fixed.as_deref(),
        )?;
        f.port_id = Some(p);
        f.fixed_ip_address = Some(fx);
        f.router_id = Some(r);
    }
    tracing::info!(floatingip = %f.meta.id, port = ?f.port_id, fixed = ?f.fixed_ip_address, "floating IP updated");
    Ok(updated(f, vec![]))
}

/// Releases the address (the floating IP and its holder port).
pub fn delete(state: &State, auth: &Auth, id: &str, if_match: Option<&str>) -> Made<()> {
    let f = writable(auth, || get(state, auth, id), if_match)?;
    tracing::info!(floatingip = id, address = %f.floating_ip_address, "floating IP released");
    Ok((
        vec![
            Change::Delete(Kind::FloatingIp, id.to_owned()),
            Change::Delete(Kind::Port, f.floating_port_id.clone()),
        ],
        (),
    ))
}

/// Attributes a floating IP renders (filters and sort keys).
pub const ATTRS: &[&str] = &[
    "floating_ip_address",
    "floating_network_id",
    "router_id",
    "port_id",
    "fixed_ip_address",
    "status",
    "qos_policy_id",
    "port_details",
    "dns_name",
    "dns_domain",
];

/// `status`: ACTIVE when bound and the bound port is ACTIVE (its host
/// programmed it), DOWN otherwise. `port_status` gives a port's.
pub fn render(
    state: &State,
    f: &FloatingIp,
    port_status: &dyn Fn(&Port) -> &'static str,
) -> Map<String, Value> {
    let mut o = Map::new();
    render_meta(&f.meta, &mut o);
    o.remove("name");
    let port = f.port_id.as_deref().and_then(|p| state.ports.get(p));
    let status = match port {
        Some(p) if port_status(p) == "ACTIVE" => "ACTIVE",
        _ => "DOWN",
    };
    o.insert(
        "floating_ip_address".into(),
        f.floating_ip_address.clone().into(),
    );
    o.insert(
        "floating_network_id".into(),
        f.floating_network_id.clone().into(),
    );
    o.insert("router_id".into(), json!(f.router_id));
    o.insert("port_id".into(), json!(f.port_id));
    o.insert("fixed_ip_address".into(), json!(f.fixed_ip_address));
    o.insert("status".into(), status.into());
    o.insert("qos_policy_id".into(), json!(f.qos_policy_id));
    o.insert(
        "port_details".into(),
        port.map(|p| {
            json!({"name": p.meta.name, "network_id": p.network_id, "mac_address": p.mac_address,
                   "admin_state_up": p.admin_state_up, "status": port_status(p),
                   "device_id": p.device_id, "device_owner": p.device_owner})
        })
        .unwrap_or(Value::Null),
    );
    o.insert("dns_name".into(), "".into());
    o.insert("dns_domain".into(), "".into());
    o
}
