//! Members: the backends of a pool, an address and port in a subnet the
//! VIP can route to (the VIP's network, or a subnet attached to a router
//! the VIP's subnet is attached to). One member per (address, port) in a
//! pool. The batch update (`PUT /pools/{id}/members`) replaces the pool's
//! member list in one commit, as Octavia does.

use std::{collections::BTreeSet, net::Ipv4Addr};

use serde_json::{json, Map, Value};

use super::{
    check_mutable, child_owner, created, health::LbHealth, load_balancer, mandatory, member,
    nullable_port, parent_pending, pending_update, pool, pool_members, pool_monitor, port_number,
    quotas, read_only, render_base, updated, writable,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{
        Change, HealthMonitor, Kind, LoadBalancer, Member, Object, Pool, ProvisioningStatus, Subnet,
    },
    network::{
        ipam, new_meta, require_write, subnets, update_attrs, Attrs, Made, OWNER_ROUTER_INTERFACE,
    },
    state::State,
};

/// Largest member weight.
pub const MAX_WEIGHT: i64 = 256;

/// Attributes a member renders besides `network::STANDARD_ATTRS` (what
/// filters and sort keys may name).
pub const ATTRS: &[&str] = &[
    "admin_state_up",
    "provisioning_status",
    "operating_status",
    "address",
    "protocol_port",
    "weight",
    "backup",
    "subnet_id",
    "monitor_address",
    "monitor_port",
];

/// Does a pool with this monitor check its members (a monitor that is
/// administratively up)?
pub fn monitored(m: Option<&HealthMonitor>) -> bool {
    m.is_some_and(|m| m.admin_state_up)
}

/// Routers a subnet is attached to.
fn routers_of(state: &State, subnet_id: &str) -> BTreeSet<String> {
    state
        .ports
        .values()
        .filter(|p| {
            p.device_owner == OWNER_ROUTER_INTERFACE
                && p.fixed_ips.iter().any(|f| f.subnet_id == subnet_id)
        })
        .map(|p| p.device_id.clone())
        .collect()
}

/// Can the VIP of `lb` reach subnet `s`: the same network, or a router
/// joining both subnets.
pub fn routable(state: &State, lb: &LoadBalancer, s: &Subnet) -> bool {
    if s.network_id == lb.vip_network_id {
        return true;
    }
    let vip = routers_of(state, &lb.vip_subnet_id);
    routers_of(state, &s.meta.id)
        .iter()
        .any(|r| vip.contains(r))
}

/// A new member's attributes from `a`, validated (not yet checked against
/// the pool's other members).
fn parse_new(
    state: &State,
    auth: &Auth,
    p: &Pool,
    lb: &LoadBalancer,
    mut a: Attrs<'_>,
) -> Result<Member, ApiError> {
    let address = a
        .string("address", 64)?
        .ok_or_else(|| mandatory("address"))?;
    let ip = ipam::parse_ip("address", &address)?;
    let port = port_number(&mut a, "protocol_port")?.ok_or_else(|| mandatory("protocol_port"))?;
    let weight = a.integer("weight", 0, MAX_WEIGHT)?.unwrap_or(1) as u16;
    let subnet_in = a.nullable_string("subnet_id", 36)?.flatten();
    let admin_state_up = a.boolean("admin_state_up")?.unwrap_or(true);
    let backup = a.boolean("backup")?.unwrap_or(false);
    let monitor_address = a.nullable_string("monitor_address", 64)?.flatten();
    if let Some(m) = &monitor_address {
        ipam::parse_ip("monitor_address", m)?;
    }
    let monitor_port = nullable_port(&mut a, "monitor_port")?.flatten();
    let name = a.nullable_string("name", 255)?.flatten();
    let project = child_owner(&mut a, lb)?;
    if a.has("vnic_type") {
        match a.raw("vnic_type") {
            Some(Value::Null) => {}
            Some(Value::String(s)) if s == "normal" => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for field/attribute vnic_type. Value: '{v}'. Only 'normal' is supported."
                )))
            }
            None => {}
        }
    }
    a.finish()?;
    let subnet = match &subnet_in {
        Some(sid) => subnets::get(state, auth, sid).map_err(|_| super::not_found("Subnet", sid))?,
        None => {
            let vip = state
                .subnets
                .get(&lb.vip_subnet_id)
                .ok_or_else(|| super::not_found("Subnet", &lb.vip_subnet_id))?;
            if !subnets::cidr(vip).contains(ip) {
                return Err(ApiError::bad_request(format!(
                    "Validation failure: subnet_id is required: member address {ip} is not in the VIP subnet {} ({}).",
                    vip.meta.id, vip.cidr
                )));
            }
            vip
        }
    };
    if !ipam::is_host_address(subnets::cidr(subnet), ip) {
        return Err(ApiError::bad_request(format!(
            "Validation failure: member address {ip} is not a host address of subnet {} ({}).",
            subnet.meta.id, subnet.cidr
        )));
    }
    if !routable(state, lb, subnet) {
        return Err(ApiError::conflict(
            "MemberSubnetNotRoutable",
            format!(
                "Member subnet {} is not routable from the VIP: it is neither on the VIP's network {} nor attached to a router the VIP subnet {} is attached to.",
                subnet.meta.id, lb.vip_network_id, lb.vip_subnet_id
            ),
        ));
    }
    Ok(Member {
        meta: new_meta(project, name, None),
        pool_id: p.meta.id.clone(),
        address: ip.to_string(),
        protocol_port: port,
        weight,
        subnet_id: subnet.meta.id.clone(),
        admin_state_up,
        backup,
        monitor_address,
        monitor_port,
        provisioning_status: ProvisioningStatus::PendingCreate,
        health_down: false,
    })
}

fn duplicate(m: &Member) -> ApiError {
    ApiError::conflict(
        "DuplicateMemberEntry",
        format!(
            "Another member on this pool is already using ip {} on protocol_port {}",
            m.address, m.protocol_port
        ),
    )
}

pub fn create(state: &State, auth: &Auth, pool_id: &str, body: &Value) -> Made<Member> {
    require_write(auth)?;
    let p = pool(state, auth, pool_id)?;
    let lb = load_balancer(state, auth, &p.loadbalancer_id)?;
    let a = Attrs::from_body(body, "member")?;
    let m = parse_new(state, auth, p, lb, a)?;
    check_mutable(lb)?;
    if pool_members(state, pool_id)
        .any(|o| o.address == m.address && o.protocol_port == m.protocol_port)
    {
        return Err(duplicate(&m));
    }
    quotas::check(state, &m.meta.project_id, Kind::Member, 1)?;
    tracing::info!(member = %m.meta.id, pool = pool_id, address = %m.address, port = m.protocol_port, "member created");
    created(state, m, vec![])
}

/// Applies the mutable attributes of `a` to `m` (the immutable ones must
/// be absent, or, in a batch, equal).
fn apply_update(m: &mut Member, a: &mut Attrs<'_>) -> Result<(), ApiError> {
    a.rename_nullable(&mut m.meta, false)?;
    if let Some(v) = a.integer("weight", 0, MAX_WEIGHT)? {
        m.weight = v as u16;
    }
    if let Some(v) = a.boolean("admin_state_up")? {
        m.admin_state_up = v;
    }
    if let Some(v) = a.boolean("backup")? {
        m.backup = v;
    }
    if let Some(v) = a.nullable_string("monitor_address", 64)? {
        if let Some(ip) = &v {
            ipam::parse_ip("monitor_address", ip)?;
        }
        m.monitor_address = v;
    }
    if let Some(v) = nullable_port(a, "monitor_port")? {
        m.monitor_port = v;
    }
    Ok(())
}

pub fn update(state: &State, auth: &Auth, pool_id: &str, id: &str, body: &Value) -> Made<Member> {
    let mut m = writable(state, auth, || member(state, auth, pool_id, id))?;
    let specific = ["address", "protocol_port", "subnet_id", "pool_id"];
    update_attrs(body, "member", &read_only(&specific), |a| {
        apply_update(&mut m, a)
    })?;
    updated(state, m, vec![])
}

pub fn delete(state: &State, auth: &Auth, pool_id: &str, id: &str) -> Made<()> {
    require_write(auth)?;
    member(state, auth, pool_id, id)?;
    let p = pool(state, auth, pool_id)?;
    check_mutable(load_balancer(state, auth, &p.loadbalancer_id)?)?;
    let mut changes = vec![Change::Delete(Kind::Member, id.to_owned())];
    changes.extend(parent_pending(state, &p.loadbalancer_id));
    tracing::info!(member = id, pool = pool_id, "member deleted");
    Ok((changes, ()))
}

/// `PUT /pools/{id}/members` with `{"members": [...]}`: the pool's members
/// become the listed ones, matched by (address, protocol_port): listed and
/// present ones are updated (address, port and subnet cannot change),
/// listed and absent ones created, present and unlisted ones deleted
/// (kept with `additive_only`). All or nothing.
pub fn batch(
    state: &State,
    auth: &Auth,
    pool_id: &str,
    body: &Value,
    additive_only: bool,
) -> Made<()> {
    require_write(auth)?;
    let p = pool(state, auth, pool_id)?;
    let lb = load_balancer(state, auth, &p.loadbalancer_id)?;
    check_mutable(lb)?;
    let top = body
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("members"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::bad_request("Request body must be a JSON object with a 'members' list.")
        })?;
    let mut seen: BTreeSet<(Ipv4Addr, u16)> = BTreeSet::new();
    let mut changes = Vec::new();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    let mut created = 0;
    for entry in top {
        let o = entry.as_object().ok_or_else(|| {
            ApiError::bad_request(format!("Invalid member '{entry}': not a JSON object."))
        })?;
        let address = o.get("address").and_then(Value::as_str).ok_or_else(|| {
            ApiError::bad_request(format!("Invalid member '{entry}': address is mandatory."))
        })?;
        let ip = ipam::parse_ip("address", address)?;
        let port = o
            .get("protocol_port")
            .and_then(Value::as_u64)
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Invalid member '{entry}': protocol_port must be 1..65535."
                ))
            })? as u16;
        if !seen.insert((ip, port)) {
            return Err(ApiError::bad_request(format!(
                "Member {ip}:{port} is listed twice."
            )));
        }
        let existing = pool_members(state, pool_id)
            .find(|m| m.address == ip.to_string() && m.protocol_port == port);
        match existing {
            Some(m) => {
                let mut m = m.clone();
                let mut a = Attrs::from_map(o);
                a.string("address", 64)?;
                a.integer("protocol_port", 1, 65535)?;
                if let Some(s) = a.nullable_string("subnet_id", 36)?.flatten() {
                    if s != m.subnet_id {
                        return Err(ApiError::bad_request(format!(
                            "Cannot update read-only attribute subnet_id of member {ip}:{port}"
                        )));
                    }
                }
                child_owner(&mut a, lb)?;
                a.raw("vnic_type");
                apply_update(&mut m, &mut a)?;
                a.finish()?;
                if Some(&m) != state.members.get(&m.meta.id) {
                    pending_update(&mut m);
                    changes.push(Change::Put(Object::Member(m.clone())));
                }
                kept.insert(m.meta.id.clone());
            }
            None => {
                let m = parse_new(state, auth, p, lb, Attrs::from_map(o))?;
                created += 1;
                changes.push(Change::Put(Object::Member(m)));
            }
        }
    }
    if !additive_only {
        for m in pool_members(state, pool_id).filter(|m| !kept.contains(&m.meta.id)) {
            changes.push(Change::Delete(Kind::Member, m.meta.id.clone()));
        }
    }
    let removed = changes
        .iter()
        .filter(|c| matches!(c, Change::Delete(..)))
        .count() as i64;
    // Members this request removes make room for the ones it adds.
    quotas::check(state, &p.meta.project_id, Kind::Member, created - removed)?;
    if !changes.is_empty() {
        changes.extend(parent_pending(state, &p.loadbalancer_id));
    }
    tracing::info!(pool = pool_id, created, removed, "members replaced (batch)");
    Ok((changes, ()))
}

pub fn render(health: &LbHealth, m: &Member, monitor: bool) -> Map<String, Value> {
    let mut o = render_base(m, m.admin_state_up, health.member_status(m, monitor));
    o.remove("description");
    o.insert("address".into(), m.address.clone().into());
    o.insert("protocol_port".into(), m.protocol_port.into());
    o.insert("weight".into(), m.weight.into());
    o.insert("backup".into(), m.backup.into());
    o.insert("subnet_id".into(), m.subnet_id.clone().into());
    o.insert("monitor_address".into(), json!(m.monitor_address));
    o.insert("monitor_port".into(), json!(m.monitor_port));
    o.insert("vnic_type".into(), "normal".into());
    o
}

/// Renders a member of a pool looked up in `state` (its monitor decides
/// NO_MONITOR).
pub fn render_in(state: &State, health: &LbHealth, m: &Member) -> Map<String, Value> {
    render(health, m, monitored(pool_monitor(state, &m.pool_id)))
}
