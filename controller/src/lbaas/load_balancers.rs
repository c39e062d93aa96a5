//! Load balancers: a VIP address in a tenant subnet, held by a port made
//! through the Neutron port logic (device owner `Octavia`, device id
//! `lb-<id>`), or by a port the user supplies (`vip_port_id`, left as it
//! is and kept when the load balancer goes). The VIP port has no port
//! security: what it answers is its listeners, which the dataplane
//! enforces.

use serde_json::{json, Map, Value};

use super::{
    check_mutable, health::LbHealth, health_monitors, id_refs, load_balancer, members, not_found,
    pool_members, pool_monitor, quotas, render_base, updated, vip_device_id, writable,
    OWNER_OCTAVIA, PROVIDER,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{Change, Kind, LoadBalancer, Object, Port, ProvisioningStatus},
    network::{
        ipam, networks, new_meta, owner, ports, require_write, subnets, update_attrs, Attrs, Made,
    },
    state::State,
};

/// Attributes a load balancer renders besides `network::STANDARD_ATTRS` (what
/// filters and sort keys may name).
pub const ATTRS: &[&str] = &[
    "admin_state_up",
    "provisioning_status",
    "operating_status",
    "vip_address",
    "vip_port_id",
    "vip_subnet_id",
    "vip_network_id",
    "vip_qos_policy_id",
    "provider",
    "flavor_id",
    "availability_zone",
    "listeners",
    "pools",
];

/// The VIP's subnet, network, and the `fixed_ips` request of its port.
struct Vip {
    subnet: Option<String>,
    network: String,
    fixed_ips: Option<Vec<Value>>,
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<LoadBalancer> {
    require_write(auth)?;
    let mut a = Attrs::from_body(body, "loadbalancer")?;
    let project = owner(auth, &mut a, state)?;
    let name = a.nullable_string("name", 255)?.flatten();
    let description = a.nullable_string("description", 255)?.flatten();
    let admin_state_up = a.boolean("admin_state_up")?.unwrap_or(true);
    let vip_subnet = a.nullable_string("vip_subnet_id", 36)?.flatten();
    let vip_network = a.nullable_string("vip_network_id", 36)?.flatten();
    let vip_port = a.nullable_string("vip_port_id", 36)?.flatten();
    let vip_address = a.nullable_string("vip_address", 64)?.flatten();
    let availability_zone = a.nullable_string("availability_zone", 255)?.flatten();
    let provider = a.nullable_string("provider", 64)?.flatten();
    if let Some(p) = provider.as_deref().filter(|p| *p != PROVIDER) {
        return Err(ApiError::bad_request(format!(
            "Provider '{p}' is not enabled."
        )));
    }
    if a.has("flavor_id") && !a.is_null("flavor_id") {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute flavor_id: flavors are not supported.",
        ));
    }
    a.raw("flavor_id");
    if a.has("vip_qos_policy_id") && !a.is_null("vip_qos_policy_id") {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute vip_qos_policy_id: QoS on VIPs is not supported.",
        ));
    }
    a.raw("vip_qos_policy_id");
    a.finish()?;
    if vip_subnet.is_none() && vip_network.is_none() && vip_port.is_none() {
        return Err(ApiError::bad_request(
            "Validation failure: VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id.",
        ));
    }
    let address = vip_address
        .as_deref()
        .map(|ip| ipam::parse_ip("vip_address", ip))
        .transpose()?;
    quotas::check(state, &project, Kind::LoadBalancer, 1)?;
    let meta = new_meta(project.clone(), name, description);
    let mut changes = Vec::new();
    let port: Port = if let Some(port_id) = &vip_port {
        // A port the user made: it must be theirs, unused, with an address
        // (the one asked for, in the subnet asked for, if any).
        let p = ports::get(state, auth, port_id)
            .ok()
            .filter(|p| p.meta.project_id == project)
            .ok_or_else(|| not_found("Port", port_id))?;
        if !p.device_owner.is_empty() || !p.device_id.is_empty() {
            return Err(ApiError::conflict(
                "PortInUse",
                format!(
                    "Port {port_id} is in use (device owner '{}', device id '{}').",
                    p.device_owner, p.device_id
                ),
            ));
        }
        if let Some(lb) = state
            .load_balancers
            .values()
            .find(|l| l.vip_port_id == *port_id)
        {
            return Err(ApiError::conflict(
                "PortInUse",
                format!(
                    "Port {port_id} is already the VIP port of load balancer {}.",
                    lb.meta.id
                ),
            ));
        }
        if vip_network.as_deref().is_some_and(|n| n != p.network_id) {
            return Err(ApiError::bad_request(format!(
                "Port {port_id} is not on network {}.",
                vip_network.as_deref().unwrap_or_default()
            )));
        }
        let fixed = p
            .fixed_ips
            .iter()
            .find(|f| {
                vip_subnet.as_deref().is_none_or(|s| f.subnet_id == s)
                    && address.is_none_or(|ip| f.ip_address == ip.to_string())
            })
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Port {port_id} has no fixed IP matching the requested VIP subnet and address."
                ))
            })?;
        let mut p = p.clone();
        // The chosen address first: the VIP is the port's first fixed IP.
        let fixed = fixed.clone();
        p.fixed_ips.retain(|f| *f != fixed);
        p.fixed_ips.insert(0, fixed);
        p
    } else {
        let vip = resolve_vip(
            state,
            auth,
            vip_subnet.as_deref(),
            vip_network.as_deref(),
            address,
        )?;
        let mut port = json!({
            "network_id": vip.network,
            "name": format!("octavia-lb-{}", meta.id),
            "device_owner": OWNER_OCTAVIA,
            "device_id": vip_device_id(&meta.id),
            "project_id": project,
            "port_security_enabled": false,
        });
        if let Some(f) = vip.fixed_ips {
            port["fixed_ips"] = Value::Array(f);
        }
        let (c, p) = ports::create(state, auth, &json!({ "port": port }))?;
        if p.fixed_ips.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Network {} has no subnet for the VIP.",
                vip.network
            )));
        }
        if let Some(s) = &vip.subnet {
            debug_assert_eq!(&p.fixed_ips[0].subnet_id, s);
        }
        changes.extend(c);
        p
    };
    let fixed = port.fixed_ips[0].clone();
    let lb = LoadBalancer {
        meta,
        vip_subnet_id: fixed.subnet_id,
        vip_network_id: port.network_id.clone(),
        vip_port_id: port.meta.id.clone(),
        vip_address: fixed.ip_address,
        admin_state_up,
        availability_zone,
        provider: PROVIDER.to_owned(),
        provisioning_status: ProvisioningStatus::PendingCreate,
        error_reason: None,
    };
    tracing::info!(loadbalancer = %lb.meta.id, vip = %lb.vip_address, subnet = %lb.vip_subnet_id, project = %lb.meta.project_id, "load balancer created");
    changes.push(Change::Put(Object::LoadBalancer(lb.clone())));
    Ok((changes, lb))
}

/// Where a new VIP port goes: the subnet asked for (visible, a tenant
/// subnet, holding the address asked for), or the network's subnet that
/// holds the address, or the network's first subnet with room.
fn resolve_vip(
    state: &State,
    auth: &Auth,
    subnet: Option<&str>,
    network: Option<&str>,
    address: Option<std::net::Ipv4Addr>,
) -> Result<Vip, ApiError> {
    let (subnet, network) = match (subnet, network) {
        (Some(sid), net) => {
            let s = subnets::get(state, auth, sid)?;
            if net.is_some_and(|n| n != s.network_id) {
                return Err(ApiError::bad_request(format!(
                    "Subnet {sid} is not on network {}.",
                    net.unwrap_or_default()
                )));
            }
            (Some(s), s.network_id.clone())
        }
        (None, Some(nid)) => (None, networks::get(state, auth, nid)?.meta.id.clone()),
        (None, None) => unreachable!("checked by the caller"),
    };
    let net = networks::get(state, auth, &network)?;
    if net.external {
        return Err(ApiError::bad_request(format!(
            "Network {network} is an external network: a VIP goes in a tenant subnet (bind a floating IP to the VIP port to reach it from outside)."
        )));
    }
    if let (Some(s), Some(ip)) = (subnet, address) {
        if !subnets::cidr(s).contains(ip) {
            return Err(ApiError::bad_request(format!(
                "VIP address {ip} is not in subnet {} ({}).",
                s.meta.id, s.cidr
            )));
        }
    }
    let fixed_ips = match (subnet, address) {
        (Some(s), Some(ip)) => Some(vec![
            json!({"subnet_id": s.meta.id, "ip_address": ip.to_string()}),
        ]),
        (Some(s), None) => Some(vec![json!({"subnet_id": s.meta.id})]),
        (None, Some(ip)) => Some(vec![json!({"ip_address": ip.to_string()})]),
        (None, None) => None,
    };
    Ok(Vip {
        subnet: subnet.map(|s| s.meta.id.clone()),
        network,
        fixed_ips,
    })
}

pub fn update(state: &State, auth: &Auth, id: &str, body: &Value) -> Made<LoadBalancer> {
    const READ_ONLY: &[&str] = &[
        "id",
        "project_id",
        "tenant_id",
        "vip_address",
        "vip_port_id",
        "vip_subnet_id",
        "vip_network_id",
        "provider",
        "flavor_id",
        "availability_zone",
        "provisioning_status",
        "operating_status",
        "listeners",
        "pools",
        "created_at",
        "updated_at",
    ];
    let mut lb = writable(state, auth, || load_balancer(state, auth, id))?;
    update_attrs(body, "loadbalancer", READ_ONLY, |a| {
        a.rename_nullable(&mut lb.meta, true)?;
        if let Some(v) = a.boolean("admin_state_up")? {
            lb.admin_state_up = v;
        }
        if a.has("vip_qos_policy_id") && !a.is_null("vip_qos_policy_id") {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute vip_qos_policy_id: QoS on VIPs is not supported.",
            ));
        }
        a.raw("vip_qos_policy_id");
        Ok(())
    })?;
    updated(state, lb, vec![])
}

/// Deletes a load balancer: 409 while it has listeners or pools, unless
/// `cascade` (then they go too, with their members, health monitors, L7
/// policies and L7 rules).
/// Its own VIP port goes with it; a port the user supplied stays.
pub fn delete(state: &State, auth: &Auth, id: &str, cascade: bool) -> Made<()> {
    require_write(auth)?;
    let lb = load_balancer(state, auth, id)?;
    check_mutable(lb)?;
    let lst: Vec<&str> = state
        .listeners
        .values()
        .filter(|l| l.loadbalancer_id == id)
        .map(|l| l.meta.id.as_str())
        .collect();
    let pls: Vec<&str> = state
        .pools
        .values()
        .filter(|p| p.loadbalancer_id == id)
        .map(|p| p.meta.id.as_str())
        .collect();
    if !cascade && (!lst.is_empty() || !pls.is_empty()) {
        return Err(ApiError::conflict(
            "LoadBalancerInUse",
            format!("Cannot delete Load Balancer {id} - it has children"),
        ));
    }
    let mut changes = Vec::new();
    for p in &pls {
        for m in pool_members(state, p) {
            changes.push(Change::Delete(Kind::Member, m.meta.id.clone()));
        }
        if let Some(hm) = pool_monitor(state, p) {
            changes.push(Change::Delete(Kind::HealthMonitor, hm.meta.id.clone()));
        }
        changes.push(Change::Delete(Kind::Pool, (*p).to_owned()));
    }
    for l in &lst {
        changes.extend(super::l7policies::removal_of_listener(state, l));
        changes.push(Change::Delete(Kind::Listener, (*l).to_owned()));
    }
    if let Some(p) = state.ports.get(&lb.vip_port_id) {
        if p.device_owner == OWNER_OCTAVIA && p.device_id == vip_device_id(id) {
            changes.push(Change::Delete(Kind::Port, p.meta.id.clone()));
        }
    }
    changes.extend(super::amphorae::remove_all(state, id));
    changes.push(Change::Delete(Kind::LoadBalancer, id.to_owned()));
    tracing::info!(
        loadbalancer = id,
        listeners = lst.len(),
        pools = pls.len(),
        cascade,
        "load balancer deleted"
    );
    Ok((changes, ()))
}

pub fn render(state: &State, health: &LbHealth, lb: &LoadBalancer) -> Map<String, Value> {
    let mut o = render_base(lb, lb.admin_state_up, health.lb_status(state, lb));
    o.insert("vip_address".into(), lb.vip_address.clone().into());
    o.insert("vip_port_id".into(), lb.vip_port_id.clone().into());
    o.insert("vip_subnet_id".into(), lb.vip_subnet_id.clone().into());
    o.insert("vip_network_id".into(), lb.vip_network_id.clone().into());
    o.insert("vip_qos_policy_id".into(), Value::Null);
    o.insert("vip_vnic_type".into(), "normal".into());
    o.insert("additional_vips".into(), json!([]));
    o.insert("provider".into(), lb.provider.clone().into());
    o.insert("flavor_id".into(), Value::Null);
    o.insert("availability_zone".into(), json!(lb.availability_zone));
    o.insert(
        "listeners".into(),
        id_refs(
            state
                .listeners
                .values()
                .filter(|l| l.loadbalancer_id == lb.meta.id)
                .map(|l| l.meta.id.as_str()),
        ),
    );
    o.insert(
        "pools".into(),
        id_refs(
            state
                .pools
                .values()
                .filter(|p| p.loadbalancer_id == lb.meta.id)
                .map(|p| p.meta.id.as_str()),
        ),
    );
    if let Some(r) = &lb.error_reason {
        o.insert("error_reason".into(), r.clone().into());
    }
    o
}

/// Octavia's status tree of a load balancer (`GET .../status`).
pub fn status_tree(state: &State, health: &LbHealth, lb: &LoadBalancer) -> Value {
    let listeners: Vec<Value> = state
        .listeners
        .values()
        .filter(|l| l.loadbalancer_id == lb.meta.id)
        .map(|l| {
            let pools: Vec<Value> = l
                .default_pool_id
                .as_deref()
                .and_then(|p| state.pools.get(p))
                .into_iter()
                .map(|p| pool_tree(state, health, p))
                .collect();
            json!({
                "id": l.meta.id, "name": l.meta.name,
                "provisioning_status": l.provisioning_status.as_str(),
                "operating_status": health.listener_status(state, l),
                "pools": pools,
            })
        })
        .collect();
    // Pools no listener uses still show (Octavia lists them under the
    // load balancer's listeners only; a pool without a listener would be
    // invisible there, so it gets its own list).
    let loose: Vec<Value> = state
        .pools
        .values()
        .filter(|p| p.loadbalancer_id == lb.meta.id && p.listener_id.is_none())
        .map(|p| pool_tree(state, health, p))
        .collect();
    let mut tree = json!({
        "id": lb.meta.id, "name": lb.meta.name,
        "provisioning_status": lb.provisioning_status.as_str(),
        "operating_status": health.lb_status(state, lb),
        "listeners": listeners,
    });
    if !loose.is_empty() {
        tree["pools"] = Value::Array(loose);
    }
    json!({"statuses": {"loadbalancer": tree}})
}

fn pool_tree(state: &State, health: &LbHealth, p: &crate::model::Pool) -> Value {
    let monitor = pool_monitor(state, &p.meta.id);
    let members: Vec<Value> = pool_members(state, &p.meta.id)
        .map(|m| {
            json!({
                "id": m.meta.id, "name": m.meta.name, "address": m.address,
                "protocol_port": m.protocol_port,
                "provisioning_status": m.provisioning_status.as_str(),
                "operating_status": health.member_status(m, members::monitored(monitor)),
            })
        })
        .collect();
    let mut v = json!({
        "id": p.meta.id, "name": p.meta.name,
        "provisioning_status": p.provisioning_status.as_str(),
        "operating_status": health.pool_status(state, p),
        "members": members,
    });
    if let Some(hm) = monitor {
        v["health_monitor"] = json!({
            "id": hm.meta.id, "name": hm.meta.name, "type": hm.kind.as_str(),
            "provisioning_status": hm.provisioning_status.as_str(),
            "operating_status": health_monitors::operating_status(hm),
        });
    }
    v
}
