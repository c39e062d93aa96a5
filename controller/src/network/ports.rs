//! Ports: a VM's (or a router's) attachment to a network, with its MAC,
//! fixed IPs (allocated from the subnets' pools), anti-spoofing settings
//! (`port_security_enabled`, `allowed_address_pairs`) and binding to a host.

use std::{collections::BTreeSet, net::Ipv4Addr};

use serde_json::{json, Map, Value};

use super::{
    creating, dict, find_own, ipam, networks, new_meta, quotas, render_meta, security_groups as sg,
    subnets, touch, update_attrs, updated, writable, Attrs, Made, OWNER_ROUTER_INTERFACE,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{AddressPair, Change, FixedIp, Kind, Object, Port, Subnet},
    state::State,
};

pub fn get<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s Port, ApiError> {
    find_own(state, auth, id, || ApiError::not_found("port", id))
}

fn network_subnets<'s>(state: &'s State, network_id: &str) -> Vec<&'s Subnet> {
    let mut v: Vec<&Subnet> = state
        .subnets
        .values()
        .filter(|s| s.network_id == network_id)
        .collect();
    v.sort_by(|a, b| {
        a.meta
            .created_at
            .cmp(&b.meta.created_at)
            .then(a.meta.id.cmp(&b.meta.id))
    });
    v
}

/// Resolves requested fixed IPs (or the default: one address from the
/// network's first subnet with room) against what is allocated, ignoring
/// the addresses `own` already holds (an update keeping its IPs).
pub fn allocate_ips(
    state: &State,
    network_id: &str,
    requested: Option<&Vec<Value>>,
    own: &[FixedIp],
    router_interface: bool,
) -> Result<Vec<FixedIp>, ApiError> {
    let subnets = network_subnets(state, network_id);
    let taken_in = |s: &Subnet| -> BTreeSet<Ipv4Addr> {
        let mut t = subnets::allocated(state, &s.meta.id);
        for f in own.iter().filter(|f| f.subnet_id == s.meta.id) {
            if let Ok(ip) = f.ip_address.parse() {
                t.remove(&ip);
            }
        }
        t
    };
    let Some(requested) = requested else {
        for s in &subnets {
            let mut taken = taken_in(s);
            if let Some(g) = &s.gateway_ip {
                taken.insert(g.parse().expect("validated gateway"));
            }
            if let Some(ip) = ipam::first_free(&s.allocation_pools, &taken) {
                return Ok(vec![FixedIp {
                    subnet_id: s.meta.id.clone(),
                    ip_address: ip.to_string(),
                }]);
            }
        }
        if subnets.is_empty() {
            return Ok(vec![]);
        }
        return Err(ApiError::conflict(
            "IpAddressGenerationFailure",
            format!("No more IP addresses available on network {network_id}."),
        ));
    };
    let mut out: Vec<FixedIp> = Vec::new();
    for r in requested {
        let o = dict("fixed_ips", r, &["subnet_id", "ip_address"])?;
        let sid = o
            .get("subnet_id")
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    ApiError::invalid(format!(
                        "Invalid input for fixed_ips. Reason: subnet_id in {r} is not a string."
                    ))
                })
            })
            .transpose()?;
        let ip = o
            .get("ip_address")
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    ApiError::invalid(format!(
                        "Invalid input for fixed_ips. Reason: ip_address in {r} is not a string."
                    ))
                })
            })
            .transpose()?;
        let ip = ip.map(|i| ipam::parse_ip("fixed_ips", i)).transpose()?;
        let subnet = match (sid, ip) {
            (Some(sid), _) => *subnets.iter().find(|s| s.meta.id == sid).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Invalid input for operation: Failed to create port on network {network_id}, because fixed_ips included invalid subnet {sid}."
                ))
            })?,
            (None, Some(ip)) => *subnets.iter().find(|s| subnets::cidr(s).contains(ip)).ok_or_else(|| {
                ApiError::bad_request(format!("Invalid input for operation: IP address {ip} is not a valid IP for any subnet on network {network_id}."))
            })?,
            (None, None) => return Err(ApiError::invalid("Invalid input for fixed_ips. Reason: each entry needs subnet_id or ip_address.")),
        };
        let mut taken = taken_in(subnet);
        for f in out.iter().filter(|f| f.subnet_id == subnet.meta.id) {
            taken.insert(f.ip_address.parse().expect("allocated above"));
        }
        let ip = match ip {
            Some(ip) => {
                let net = subnets::cidr(subnet);
                if !ipam::is_host_address(net, ip) {
                    return Err(ApiError::bad_request(format!("Invalid input for operation: IP address {ip} is not a valid IP for the specified subnet {}.", subnet.meta.id)));
                }
                let is_gateway = subnet.gateway_ip.as_deref() == Some(ip.to_string().as_str());
                if taken.contains(&ip) || (is_gateway && !router_interface) {
                    return Err(ApiError::conflict(
                        "IpAddressAlreadyAllocated",
                        format!(
                            "IP address {ip} already allocated in subnet {}",
                            subnet.meta.id
                        ),
                    ));
                }
                ip
            }
            None => {
                if let Some(g) = &subnet.gateway_ip {
                    taken.insert(g.parse().expect("validated gateway"));
                }
                ipam::first_free(&subnet.allocation_pools, &taken).ok_or_else(|| {
                    ApiError::conflict(
                        "IpAddressGenerationFailure",
                        format!(
                            "No more IP addresses available on subnet {}.",
                            subnet.meta.id
                        ),
                    )
                })?
            }
        };
        out.push(FixedIp {
            subnet_id: subnet.meta.id.clone(),
            ip_address: ip.to_string(),
        });
    }
    Ok(out)
}

fn parse_pairs(v: &[Value], port_mac: &str) -> Result<Vec<AddressPair>, ApiError> {
    if v.len() > 10 {
        return Err(ApiError::bad_request(format!(
            "Exceeded maximum amount of allowed address pairs 10 (got {}).",
            v.len()
        )));
    }
    let mut out: Vec<AddressPair> = Vec::new();
    for p in v {
        let o = dict("allowed_address_pairs", p, &["ip_address", "mac_address"])?;
        let ip = o.get("ip_address").and_then(Value::as_str).ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid input for allowed_address_pairs. Reason: ip_address missing in {p}."
            ))
        })?;
        if ip.contains('/') {
            ipam::parse_any_cidr("allowed_address_pairs", ip)?;
        } else {
            ipam::parse_ip("allowed_address_pairs", ip)?;
        }
        let mac = match o.get("mac_address") {
            None | Some(Value::Null) => port_mac.to_owned(),
            Some(Value::String(m)) => ipam::parse_mac("allowed_address_pairs", m)?,
            Some(v) => {
                return Err(ApiError::invalid(format!(
                "Invalid input for allowed_address_pairs. Reason: mac_address {v} is not a string."
            )))
            }
        };
        let pair = AddressPair {
            ip_address: ip.to_owned(),
            mac_address: mac,
        };
        if out.contains(&pair) {
            return Err(ApiError::invalid(format!(
                "Invalid input for allowed_address_pairs. Reason: duplicate pair {p}."
            )));
        }
        out.push(pair);
    }
    Ok(out)
}

fn check_uuid_list(key: &str, v: &[String]) -> Result<(), ApiError> {
    for id in v {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(ApiError::invalid(format!(
                "Invalid input for {key}. Reason: '{id}' is not a valid UUID."
            )));
        }
    }
    Ok(())
}

/// Neutron's rules: security groups need port security (400), so do
/// allowed address pairs (409).
fn check_security_consistency(p: &Port) -> Result<(), ApiError> {
    if !p.port_security_enabled && !p.security_groups.is_empty() {
        return Err(ApiError::new(
            400,
            "PortSecurityAndIPRequiredForSecurityGroups",
            "Port security must be enabled and port must have an IP address in order to use security groups.",
        ));
    }
    if !p.port_security_enabled && !p.allowed_address_pairs.is_empty() {
        return Err(ApiError::conflict(
            "AddressPairAndPortSecurityRequired",
            "Port Security must be enabled in order to have allowed address pairs on a port.",
        ));
    }
    Ok(())
}

/// A random MAC no port of `network_id` has.
pub fn unused_mac(state: &State, network_id: &str) -> String {
    loop {
        let m = ipam::random_mac();
        if !mac_in_use(state, network_id, &m, "") {
            return m;
        }
    }
}

fn mac_in_use(state: &State, network_id: &str, mac: &str, except: &str) -> bool {
    state
        .ports
        .values()
        .any(|p| p.network_id == network_id && p.mac_address == mac && p.meta.id != except)
}

/// Creates a port. `router_interface`: the caller is the router API, which
/// may take the gateway address and the reserved device owner.
pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<Port> {
    let (mut a, project) = creating(state, auth, body, "port")?;
    let network_id = a
        .string("network_id", 36)?
        .ok_or_else(|| ApiError::bad_request("Invalid input: 'network_id' is required."))?;
    let (name, description) = a.names()?;
    let admin_state_up = a.boolean("admin_state_up")?.unwrap_or(true);
    let mac_in = a.string("mac_address", 32)?;
    let fixed_in = a.list("fixed_ips")?.cloned();
    let groups_in = a.strings("security_groups")?;
    let port_security = a.boolean("port_security_enabled")?;
    let pairs_in = a.list("allowed_address_pairs")?.cloned();
    let host = a.string("binding:host_id", 255)?;
    let device_id = a.string("device_id", 255)?.unwrap_or_default();
    let device_owner = a.string("device_owner", 255)?.unwrap_or_default();
    check_binding_extras(&mut a)?;
    a.finish()?;

    let network = networks::get(state, auth, &network_id)?;
    if network.external && !auth.is_admin() {
        return Err(ApiError::forbidden(format!(
            "Network {network_id} is an external network: its addresses are floating IPs and router gateways, not ports."
        )));
    }
    if network.meta.project_id != project && !network.shared && !auth.is_admin() {
        return Err(ApiError::forbidden(
            "Only an administrator may create a port on another project's network.",
        ));
    }
    if host.as_deref().is_some_and(|h| !h.is_empty()) && !auth.is_admin() {
        return Err(ApiError::forbidden("Only an administrator (the compute service) may bind a port to a host: binding:host_id."));
    }
    if device_owner.starts_with("network:") && !auth.is_admin() {
        return Err(ApiError::forbidden(format!(
            "device_owner '{device_owner}' is reserved for the network service."
        )));
    }
    let port_security_enabled = port_security.unwrap_or(network.port_security_enabled);
    // Like Neutron: the groups asked for must be the port's project's; with
    // none asked for, a port with port security gets the project's default
    // group (created now if need be), a network-owned port none.
    let mut changes = Vec::new();
    let security_groups = match groups_in {
        Some(ids) => {
            check_uuid_list("security_groups", &ids)?;
            sg::port_groups(state, &project, &ids)?
        }
        None if port_security_enabled && !device_owner.starts_with("network:") => {
            let (c, id) = sg::ensure_default(state, &project);
            changes = c;
            vec![id]
        }
        None => vec![],
    };
    let mac = match mac_in {
        Some(m) => {
            let m = ipam::parse_mac("mac_address", &m)?;
            if mac_in_use(state, &network_id, &m, "") {
                return Err(ApiError::conflict("MacAddressInUse", format!("Unable to complete operation for network {network_id}. The mac address {m} is in use.")));
            }
            m
        }
        None => unused_mac(state, &network_id),
    };
    let fixed_ips = allocate_ips(state, &network_id, fixed_in.as_ref(), &[], false)?;
    let allowed_address_pairs = parse_pairs(pairs_in.as_deref().unwrap_or(&[]), &mac)?;
    quotas::check(state, &project, Kind::Port, 1)?;
    let port = Port {
        meta: new_meta(project, name, description),
        network_id,
        mac_address: mac,
        fixed_ips,
        security_groups,
        port_security_enabled,
        allowed_address_pairs,
        binding_host_id: host.unwrap_or_default(),
        device_id,
        device_owner,
        admin_state_up,
    };
    check_security_consistency(&port)?;
    tracing::info!(port = %port.meta.id, network = %port.network_id, host = %port.binding_host_id, "port created");
    changes.push(Change::Put(Object::Port(port.clone())));
    Ok((changes, port))
}

/// binding:vnic_type and binding:profile: only the defaults are supported.
fn check_binding_extras(a: &mut Attrs<'_>) -> Result<(), ApiError> {
    if let Some(v) = a.string("binding:vnic_type", 64)? {
        if v != "normal" {
            return Err(ApiError::invalid(format!("Invalid input for binding:vnic_type. Reason: '{v}' is not supported (only 'normal').")));
        }
    }
    match a.raw("binding:profile") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(o)) if o.is_empty() => Ok(()),
        Some(v) => Err(ApiError::invalid(format!(
            "Invalid input for binding:profile. Reason: '{v}' is not supported (only {{}})."
        ))),
    }
}

pub fn update(
    state: &State,
    auth: &Auth,
    id: &str,
    body: &Value,
    if_match: Option<&str>,
) -> Made<Port> {
    const READ_ONLY: &[&str] = &["id", "network_id", "project_id", "tenant_id", "status"];
    let mut p = writable(auth, || get(state, auth, id), if_match)?.clone();
    update_attrs(body, "port", READ_ONLY, |a| {
        edit(state, auth, id, &mut p, a)
    })?;
    check_security_consistency(&p)?;
    Ok(updated(p, vec![]))
}

/// What an update may change of a port, applied to `p`.
fn edit(
    state: &State,
    auth: &Auth,
    id: &str,
    p: &mut Port,
    a: &mut Attrs<'_>,
) -> Result<(), ApiError> {
    let router_port = p.device_owner == OWNER_ROUTER_INTERFACE;
    if router_port
        && ["fixed_ips", "device_owner", "device_id", "mac_address"]
            .iter()
            .any(|k| a.has(k))
    {
        return Err(ApiError::conflict(
            "PortInUse",
            format!(
                "Port {id} is a router interface: change it through add/remove_router_interface."
            ),
        ));
    }
    a.rename(&mut p.meta)?;
    if let Some(v) = a.boolean("admin_state_up")? {
        p.admin_state_up = v;
    }
    if let Some(m) = a.string("mac_address", 32)? {
        let m = ipam::parse_mac("mac_address", &m)?;
        if m != p.mac_address {
            if !auth.is_admin() {
                return Err(ApiError::forbidden(
                    "Only an administrator may change a port's MAC address.",
                ));
            }
            if !p.binding_host_id.is_empty() {
                return Err(ApiError::conflict(
                    "PortBound",
                    format!(
                        "Unable to change the MAC address of port {id}: it is bound to host {}.",
                        p.binding_host_id
                    ),
                ));
            }
            if mac_in_use(state, &p.network_id, &m, id) {
                return Err(ApiError::conflict(
                    "MacAddressInUse",
                    format!("The mac address {m} is in use."),
                ));
            }
            p.mac_address = m;
        }
    }
    if let Some(f) = a.list("fixed_ips")? {
        p.fixed_ips = allocate_ips(state, &p.network_id, Some(f), &p.fixed_ips, false)?;
    }
    if let Some(v) = a.strings("security_groups")? {
        check_uuid_list("security_groups", &v)?;
        p.security_groups = sg::port_groups(state, &p.meta.project_id, &v)?;
    }
    if let Some(v) = a.boolean("port_security_enabled")? {
        p.port_security_enabled = v;
    }
    if let Some(v) = a.list("allowed_address_pairs")? {
        p.allowed_address_pairs = parse_pairs(v, &p.mac_address)?;
    }
    if let Some(h) = a.string("binding:host_id", 255)? {
        if h != p.binding_host_id && !auth.is_admin() {
            return Err(ApiError::forbidden("Only an administrator (the compute service) may bind a port to a host: binding:host_id."));
        }
        p.binding_host_id = h;
    }
    if let Some(v) = a.string("device_id", 255)? {
        p.device_id = v;
    }
    if let Some(v) = a.string("device_owner", 255)? {
        if v.starts_with("network:") && !auth.is_admin() {
            return Err(ApiError::forbidden(format!(
                "device_owner '{v}' is reserved for the network service."
            )));
        }
        p.device_owner = v;
    }
    check_binding_extras(a)
}

pub fn delete(state: &State, auth: &Auth, id: &str, if_match: Option<&str>) -> Made<()> {
    let p = writable(auth, || get(state, auth, id), if_match)?;
    if p.device_owner == OWNER_ROUTER_INTERFACE {
        return Err(ApiError::conflict(
            "PortInUse",
            format!("Port {id} cannot be deleted directly via the port API: has device owner {OWNER_ROUTER_INTERFACE}."),
        ));
    }
    if let Some(lb) = state.load_balancers.values().find(|l| l.vip_port_id == id) {
        return Err(ApiError::conflict(
            "PortInUse",
            format!(
                "Port {id} is the VIP port of load balancer {}: delete the load balancer instead.",
                lb.meta.id
            ),
        ));
    }
    if p.device_owner.starts_with("network:") {
        return Err(ApiError::conflict(
            "PortInUse",
            format!(
                "Port {id} cannot be deleted directly via the port API: has device owner {}.",
                p.device_owner
            ),
        ));
    }
    // Its floating IPs stay allocated, unbound.
    let mut changes: Vec<Change> = state
        .floating_ips
        .values()
        .filter(|f| f.port_id.as_deref() == Some(id))
        .map(|f| {
            let mut f = f.clone();
            f.port_id = None;
            f.fixed_ip_address = None;
            f.router_id = None;
            touch(&mut f.meta);
            Change::Put(Object::FloatingIp(f))
        })
        .collect();
    tracing::info!(
        port = id,
        unbound_floating_ips = changes.len(),
        "port deleted"
    );
    changes.push(Change::Delete(Kind::Port, id.to_owned()));
    Ok((changes, ()))
}

/// `status`: what the agents report (see `api::neutron`).
pub fn render(auth: &Auth, p: &Port, status: &str) -> Map<String, Value> {
    let mut o = Map::new();
    render_meta(&p.meta, &mut o);
    o.insert("network_id".into(), p.network_id.clone().into());
    o.insert("mac_address".into(), p.mac_address.clone().into());
    o.insert("admin_state_up".into(), p.admin_state_up.into());
    o.insert("status".into(), status.into());
    o.insert("device_id".into(), p.device_id.clone().into());
    o.insert("device_owner".into(), p.device_owner.clone().into());
    o.insert(
        "fixed_ips".into(),
        serde_json::to_value(&p.fixed_ips).expect("fixed ips serialize"),
    );
    o.insert(
        "allowed_address_pairs".into(),
        serde_json::to_value(&p.allowed_address_pairs).expect("pairs serialize"),
    );
    o.insert("extra_dhcp_opts".into(), Value::Array(vec![]));
    o.insert(
        "security_groups".into(),
        serde_json::to_value(&p.security_groups).expect("sgs serialize"),
    );
    o.insert(
        "port_security_enabled".into(),
        p.port_security_enabled.into(),
    );
    o.insert("qos_policy_id".into(), Value::Null);
    o.insert("propagate_uplink_status".into(), false.into());
    o.insert("ip_allocation".into(), "immediate".into());
    o.insert("binding:vnic_type".into(), "normal".into());
    if auth.is_admin() {
        o.insert("binding:host_id".into(), p.binding_host_id.clone().into());
        o.insert(
            "binding:vif_type".into(),
            if p.binding_host_id.is_empty() {
                "unbound"
            } else {
                "other"
            }
            .into(),
        );
        o.insert("binding:vif_details".into(), json!({}));
        o.insert("binding:profile".into(), json!({}));
    }
    o
}
