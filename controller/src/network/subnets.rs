//! IPv4 subnets of a network: CIDR (RFC 1918 only), gateway, allocation
//! pools, DHCP options (DNS servers, host routes).

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnetwork::Ipv4Network;
use serde_json::{Map, Value};

use super::{
    creating, dict, find, ipam, networks, new_meta, quotas, refuse_in_use, render_meta,
    update_attrs, updated, writable, Edit, Made, OWNER_ROUTER_INTERFACE,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{AllocationPool, Change, HostRoute, Kind, Object, Subnet},
    state::State,
};

pub fn get<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s Subnet, ApiError> {
    find(
        state,
        id,
        |s: &Subnet| {
            auth.can_see(&s.meta.project_id)
                || state.networks.get(&s.network_id).is_some_and(|n| n.shared)
        },
        || ApiError::not_found("subnet", id),
    )
}

/// [`get`], for its owner only (a shared network's subnets are its
/// owner's): 403 saying it may not `what` it otherwise.
fn get_owned<'s>(
    state: &'s State,
    auth: &Auth,
    id: &str,
    what: &str,
) -> Result<&'s Subnet, ApiError> {
    super::owned(get(state, auth, id)?, auth, || {
        format!("Only the owner of subnet {id} may {what} it.")
    })
}

pub fn cidr(s: &Subnet) -> Ipv4Network {
    s.cidr.parse().expect("stored CIDRs were validated")
}

/// Addresses of the subnet held by ports.
pub fn allocated(state: &State, subnet_id: &str) -> BTreeSet<Ipv4Addr> {
    state
        .ports
        .values()
        .flat_map(|p| p.fixed_ips.iter())
        .filter(|f| f.subnet_id == subnet_id)
        .filter_map(|f| f.ip_address.parse().ok())
        .collect()
}

fn parse_pools(key: &str, v: &[Value]) -> Result<Vec<AllocationPool>, ApiError> {
    v.iter()
        .map(|p| {
            let o = dict(key, p, &["start", "end"])?;
            let field = |f: &str| {
                o.get(f)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::invalid(format!("Invalid input for {key}. Reason: '{f}' missing or not a string in {p}.")))
            };
            Ok(AllocationPool { start: field("start")?, end: field("end")? })
        })
        .collect()
}

fn parse_dns(v: Vec<String>) -> Result<Vec<String>, ApiError> {
    if v.len() > 5 {
        return Err(ApiError::bad_request(format!(
            "Number of DNS nameservers exceeds the limit 5 (got {}).",
            v.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for d in &v {
        ipam::parse_ip("dns_nameservers", d)?;
        if !seen.insert(d.clone()) {
            return Err(ApiError::invalid(format!(
                "Invalid input for dns_nameservers. Reason: duplicate nameserver '{d}'."
            )));
        }
    }
    Ok(v)
}

/// Host routes (also used for router static routes): destination CIDR,
/// nexthop address; no duplicates, at most `max`.
pub fn parse_routes(key: &str, v: &[Value], max: usize) -> Result<Vec<HostRoute>, ApiError> {
    if v.len() > max {
        return Err(ApiError::bad_request(format!(
            "Number of {key} exceeds the limit {max} (got {}).",
            v.len()
        )));
    }
    let mut out: Vec<HostRoute> = Vec::new();
    for r in v {
        let o = dict(key, r, &["destination", "nexthop"])?;
        let dest = o
            .get("destination")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "Invalid input for {key}. Reason: 'destination' missing in {r}."
                ))
            })?;
        let hop = o.get("nexthop").and_then(Value::as_str).ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid input for {key}. Reason: 'nexthop' missing in {r}."
            ))
        })?;
        ipam::parse_any_cidr(key, dest)?;
        ipam::parse_ip(key, hop)?;
        let route = HostRoute {
            destination: dest.to_owned(),
            nexthop: hop.to_owned(),
        };
        if out.contains(&route) {
            return Err(ApiError::invalid(format!(
                "Invalid input for {key}. Reason: duplicate route {r}."
            )));
        }
        out.push(route);
    }
    Ok(out)
}

fn parse_gateway(net: Ipv4Network, v: Option<String>) -> Result<Option<Ipv4Addr>, ApiError> {
    match v {
        None => Ok(None),
        Some(g) => {
            let ip = ipam::parse_ip("gateway_ip", &g)?;
            if !ipam::is_host_address(net, ip) {
                return Err(ApiError::bad_request(format!("Invalid input for operation: Gateway is not valid on subnet: {g} is not a host address of {net}.")));
            }
            Ok(Some(ip))
        }
    }
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<Subnet> {
    let (mut a, project) = creating(state, auth, body, "subnet")?;
    let network_id = a
        .string("network_id", 36)?
        .ok_or_else(|| ApiError::bad_request("Invalid input: 'network_id' is required."))?;
    let ip_version = a.integer("ip_version", 4, 6)?.unwrap_or(4);
    if ip_version != 4 {
        return Err(ApiError::invalid(format!("Invalid input for ip_version. Reason: '{ip_version}': only IPv4 subnets are supported.")));
    }
    let cidr_s = a.string("cidr", 64)?.ok_or_else(|| {
        ApiError::bad_request("Invalid input: 'cidr' is required (subnet pools are not supported).")
    })?;
    let (name, description) = a.names()?;
    let gateway_in = a.nullable_string("gateway_ip", 64)?;
    let pools_in = a.list("allocation_pools")?.cloned();
    let enable_dhcp = a.boolean("enable_dhcp")?.unwrap_or(true);
    let dns = a.strings("dns_nameservers")?.unwrap_or_default();
    let routes = a.list("host_routes")?.cloned().unwrap_or_default();
    for unsupported in [
        "subnetpool_id",
        "prefixlen",
        "ipv6_ra_mode",
        "ipv6_address_mode",
        "segment_id",
    ] {
        if let Some(v) = a.raw(unsupported) {
            if !v.is_null() {
                return Err(ApiError::invalid(format!(
                    "Invalid input for {unsupported}. Reason: not supported."
                )));
            }
        }
    }
    a.finish()?;

    let network = networks::get_owned(state, auth, &network_id)?;
    if network.meta.project_id != project && !auth.is_admin() {
        return Err(ApiError::forbidden(
            "Only an administrator may create a subnet on another project's network.",
        ));
    }
    // Tenant subnets are private; an external network's is the operator's
    // public range (the elastic IP pool).
    let net = ipam::parse_cidr(&cidr_s, !network.external)?;
    if let Some(other) = state
        .subnets
        .values()
        .find(|s| s.network_id == network_id && overlaps(cidr(s), net))
    {
        return Err(ApiError::bad_request(format!(
            "Invalid input for operation: Requested subnet with cidr: {net} for network: {network_id} overlaps with another subnet {} ({}).",
            other.meta.id, other.cidr
        )));
    }
    let gateway = match gateway_in {
        None => Some(ipam::host_range(net).0),
        Some(g) => parse_gateway(net, g)?,
    };
    let pools = match pools_in {
        Some(p) => parse_pools("allocation_pools", &p)?,
        None => ipam::default_pools(net, gateway),
    };
    ipam::check_pools(net, gateway, &pools)?;
    let dns = parse_dns(dns)?;
    let host_routes = parse_routes("host_routes", &routes, 20)?;
    quotas::check(state, &project, Kind::Subnet, 1)?;
    let s = Subnet {
        meta: new_meta(project, name, description),
        network_id,
        ip_version: 4,
        cidr: net.to_string(),
        gateway_ip: gateway.map(|g| g.to_string()),
        allocation_pools: pools,
        enable_dhcp,
        dns_nameservers: dns,
        host_routes,
    };
    tracing::info!(subnet = %s.meta.id, network = %s.network_id, cidr = %s.cidr, "subnet created");
    Ok((vec![Change::Put(Object::Subnet(s.clone()))], s))
}

pub fn overlaps(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

pub fn update(state: &State, auth: &Auth, e: Edit) -> Made<Subnet> {
    let Edit { id, body, if_match } = e;
    const READ_ONLY: &[&str] = &[
        "id",
        "cidr",
        "network_id",
        "ip_version",
        "project_id",
        "tenant_id",
        "subnetpool_id",
    ];
    let mut s = writable(auth, || get_owned(state, auth, id, "change"), if_match)?.clone();
    let (gateway_in, pools_in) = update_attrs(body, "subnet", READ_ONLY, |a| {
        a.rename(&mut s.meta)?;
        let gateway_in = a.nullable_string("gateway_ip", 64)?;
        let pools_in = a.list("allocation_pools")?;
        if let Some(v) = a.boolean("enable_dhcp")? {
            s.enable_dhcp = v;
        }
        if let Some(v) = a.strings("dns_nameservers")? {
            s.dns_nameservers = parse_dns(v)?;
        }
        if let Some(v) = a.list("host_routes")? {
            s.host_routes = parse_routes("host_routes", v, 20)?;
        }
        Ok((gateway_in, pools_in))
    })?;
    let net = cidr(&s);
    if let Some(g) = gateway_in {
        let g = parse_gateway(net, g)?.map(|g| g.to_string());
        if g != s.gateway_ip {
            let in_use = state.ports.values().any(|p| {
                p.device_owner == OWNER_ROUTER_INTERFACE
                    && p.fixed_ips.iter().any(|f| f.subnet_id == s.meta.id)
            });
            refuse_in_use(in_use, "GatewayIpInUse", || {
                format!("Gateway ip of subnet {id} is in use by a router interface; remove the interface first.")
            })?;
            if let Some(ip) = &g {
                if allocated(state, id).contains(&ip.parse().expect("validated")) {
                    return Err(ApiError::conflict(
                        "IpAddressAlreadyAllocated",
                        format!("IP address {ip} already allocated in subnet {id}"),
                    ));
                }
            }
            s.gateway_ip = g;
        }
    }
    if let Some(p) = pools_in {
        s.allocation_pools = parse_pools("allocation_pools", p)?;
    }
    ipam::check_pools(
        net,
        s.gateway_ip.as_deref().and_then(|g| g.parse().ok()),
        &s.allocation_pools,
    )?;
    Ok(updated(s, vec![]))
}

pub fn delete(state: &State, auth: &Auth, id: &str, if_match: Option<&str>) -> Made<()> {
    writable(auth, || get_owned(state, auth, id, "delete"), if_match)?;
    let in_use = state
        .ports
        .values()
        .any(|p| p.fixed_ips.iter().any(|f| f.subnet_id == id));
    refuse_in_use(in_use, "SubnetInUse", || {
        format!("Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet.")
    })?;
    check_no_members(state, id)?;
    if let Some(g) = state
        .endpoint_groups
        .values()
        .find(|g| g.kind == "subnet" && g.endpoints.iter().any(|e| e == id))
    {
        return Err(ApiError::conflict(
            "SubnetInUseByEndpointGroup",
            format!("Subnet {id} is used by endpoint group {}", g.meta.id),
        ));
    }
    tracing::info!(subnet = id, "subnet deleted");
    Ok((vec![Change::Delete(Kind::Subnet, id.to_owned())], ()))
}

/// 409 while load balancer members are in the subnet (their backends
/// would become unreachable without a word).
pub fn check_no_members(state: &State, id: &str) -> Result<(), ApiError> {
    if let Some(m) = state.members.values().find(|m| m.subnet_id == id) {
        return Err(ApiError::conflict(
            "SubnetInUse",
            format!(
                "Unable to complete operation on subnet {id}: load balancer member {} (pool {}) is in it.",
                m.meta.id, m.pool_id
            ),
        ));
    }
    Ok(())
}

pub fn render(s: &Subnet) -> Map<String, Value> {
    let mut o = Map::new();
    render_meta(&s.meta, &mut o);
    o.insert("network_id".into(), s.network_id.clone().into());
    o.insert("ip_version".into(), s.ip_version.into());
    o.insert("cidr".into(), s.cidr.clone().into());
    o.insert(
        "gateway_ip".into(),
        s.gateway_ip.clone().map(Value::from).unwrap_or(Value::Null),
    );
    o.insert(
        "allocation_pools".into(),
        serde_json::to_value(&s.allocation_pools).expect("pools serialize"),
    );
    o.insert("enable_dhcp".into(), s.enable_dhcp.into());
    o.insert(
        "dns_nameservers".into(),
        serde_json::to_value(&s.dns_nameservers).expect("dns serialize"),
    );
    o.insert(
        "host_routes".into(),
        serde_json::to_value(&s.host_routes).expect("routes serialize"),
    );
    o.insert("ipv6_ra_mode".into(), Value::Null);
    o.insert("ipv6_address_mode".into(), Value::Null);
    o.insert("subnetpool_id".into(), Value::Null);
    o.insert("segment_id".into(), Value::Null);
    o.insert("service_types".into(), Value::Array(vec![]));
    o
}
