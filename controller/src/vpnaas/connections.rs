//! IPsec site connections: a tunnel from a VPN service to a peer, with
//! Neutron's two forms: a service with a subnet takes `peer_cidrs`; one
//! without takes a local endpoint group (subnets on the service's router)
//! and a peer one (CIDRs). Checked in Neutron's order; the peer is an IPv4
//! address (Strato resolves no names and carries no IPv6).

use std::net::Ipv4Addr;

use serde_json::{json, Map, Value};

use super::{endpoint_groups, integral, policies, services, updatable};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{Change, IpsecSiteConnection, Kind, Object, VpnStatus},
    network::{
        creating, find_own, new_meta, quotas, render_meta, updated, writable, Attrs, Edit, Made,
    },
    state::State,
};

pub const INITIATORS: &[&str] = &["bi-directional", "response-only"];
pub const DPD_ACTIONS: &[&str] = &["hold", "clear", "disabled", "restart", "restart-by-peer"];
/// Neutron's defaults.
pub const DEFAULT_MTU: u32 = 1500;
pub const DEFAULT_DPD: (&str, u32, u32) = ("hold", 30, 120);
/// The smallest IPv4 MTU (RFC 791).
pub const MIN_MTU: u32 = 68;
/// Largest MTU accepted (a jumbo frame).
pub const MAX_MTU: u32 = 9216;

pub fn get<'s>(
    state: &'s State,
    auth: &Auth,
    id: &str,
) -> Result<&'s IpsecSiteConnection, ApiError> {
    find_own(state, auth, id, || {
        ApiError::new(
            404,
            "IPsecSiteConnectionNotFound",
            format!("ipsec_site_connection {id} not found"),
        )
    })
}

fn required(attr: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Failed to parse request. Required attribute '{attr}' not specified"
    ))
}

/// A uuid-or-null attribute: `Some(None)` when null.
fn uuid_or_none(a: &mut Attrs<'_>, attr: &str) -> Result<Option<Option<String>>, ApiError> {
    match a.nullable_string(attr, 64)? {
        Some(Some(v)) if uuid::Uuid::parse_str(&v).is_err() => Err(ApiError::invalid(format!(
            "Invalid input for {attr}. Reason: '{v}' is not a valid UUID."
        ))),
        other => Ok(other),
    }
}

/// `peer_cidrs`: a list (or one string) of IPv4 CIDRs, no duplicates.
fn peer_cidrs(a: &mut Attrs<'_>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(items) = super::string_list(a, "peer_cidrs")? else {
        return Ok(None);
    };
    let mut seen = std::collections::BTreeSet::new();
    for c in &items {
        if !seen.insert(c.as_str()) {
            return Err(ApiError::invalid(format!(
                "Invalid input for peer_cidrs. Reason: Duplicate items in the list: '{c}'."
            )));
        }
        endpoint_groups::peer_cidr(c, "cidr").map_err(|_| {
            ApiError::invalid(format!(
                "Invalid input for peer_cidrs. Reason: '{c}' is not a valid IPv4 subnet (Strato's VPN carries IPv4)."
            ))
        })?;
    }
    Ok(Some(items))
}

/// `dpd`: `{action, interval, timeout}`, each optional (missing ones keep
/// `current`).
fn dpd(
    a: &mut Attrs<'_>,
    current: (String, u32, u32),
) -> Result<Option<(String, u32, u32)>, ApiError> {
    let v = match a.raw("dpd") {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(current)),
        Some(v) => v,
    };
    let o = v.as_object().ok_or_else(|| {
        ApiError::invalid(format!(
            "Invalid input for dpd. Reason: '{v}' is not a dictionary."
        ))
    })?;
    if let Some(k) = o
        .keys()
        .find(|k| !["action", "interval", "timeout"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(format!(
            "Invalid input for dpd. Reason: Unexpected keys supplied: {k}."
        )));
    }
    let (mut action, mut interval, mut timeout) = current;
    if let Some(x) = o.get("action") {
        let s = x.as_str().unwrap_or_default();
        if !DPD_ACTIONS.contains(&s) {
            return Err(ApiError::invalid(format!(
                "Invalid input for dpd. Reason: {x} is not in valid_values."
            )));
        }
        action = s.to_owned();
    }
    let seconds = |x: &Value| -> Result<u32, ApiError> {
        let n = integral(x).ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid input for dpd. Reason: '{x}' is not an integer."
            ))
        })?;
        u32::try_from(n).map_err(|_| {
            ApiError::invalid(format!(
                "Invalid input for dpd. Reason: '{x}' should be non-negative."
            ))
        })
    };
    if let Some(x) = o.get("interval") {
        interval = seconds(x)?;
    }
    if let Some(x) = o.get("timeout") {
        timeout = seconds(x)?;
    }
    Ok(Some((action, interval, timeout)))
}

/// `peer_address`: an IPv4 address.
fn peer_address(v: &str) -> Result<String, ApiError> {
    match v.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) if !a.is_unspecified() && !a.is_broadcast() => Ok(a.to_string()),
        Ok(_) => Err(ApiError::bad_request(format!(
            "Peer address {v} is not supported: Strato's VPN takes the peer's unicast IPv4 address"
        ))),
        Err(_) => Err(ApiError::bad_request(format!(
            "Peer address {v} cannot be resolved (give the peer's IPv4 address; Strato does not resolve names)"
        ))),
    }
}

/// What the connection's attributes read from a body change.
struct Fields {
    name: Option<String>,
    description: Option<String>,
    peer_address: Option<String>,
    peer_id: Option<String>,
    local_id: Option<String>,
    psk: Option<String>,
    peer_cidrs: Option<Vec<String>>,
    local_ep_group_id: Option<Option<String>>,
    peer_ep_group_id: Option<Option<String>>,
    mtu: Option<u32>,
    initiator: Option<String>,
    dpd: Option<(String, u32, u32)>,
    admin_state_up: Option<bool>,
}

fn fields(a: &mut Attrs<'_>, current_dpd: (String, u32, u32)) -> Result<Fields, ApiError> {
    let (name, description) = a.names()?;
    let initiator = match a.string("initiator", 32)? {
        Some(v) if INITIATORS.contains(&v.as_str()) => Some(v),
        Some(v) => {
            return Err(ApiError::invalid(format!(
                "Invalid input for initiator. Reason: {v} is not in valid_values."
            )))
        }
        None => None,
    };
    let mtu = match a.raw("mtu") {
        None => None,
        Some(v) => {
            let n = integral(v).ok_or_else(|| {
                ApiError::invalid(format!(
                    "Invalid input for mtu. Reason: '{v}' is not an integer."
                ))
            })?;
            if n < 0 {
                return Err(ApiError::invalid(format!(
                    "Invalid input for mtu. Reason: '{n}' should be non-negative."
                )));
            }
            Some(u32::try_from(n).unwrap_or(u32::MAX))
        }
    };
    Ok(Fields {
        name,
        description,
        peer_address: a.string("peer_address", 255)?,
        peer_id: a.string("peer_id", 255)?,
        local_id: a.string("local_id", 255)?,
        psk: a.string("psk", 255)?,
        peer_cidrs: peer_cidrs(a)?,
        local_ep_group_id: uuid_or_none(a, "local_ep_group_id")?,
        peer_ep_group_id: uuid_or_none(a, "peer_ep_group_id")?,
        mtu,
        initiator,
        dpd: dpd(a, current_dpd)?,
        admin_state_up: a.boolean("admin_state_up")?,
    })
}

fn apply(c: &mut IpsecSiteConnection, f: Fields) -> Result<(), ApiError> {
    if let Some(v) = f.name {
        c.meta.name = v;
    }
    if let Some(v) = f.description {
        c.meta.description = v;
    }
    if let Some(v) = f.peer_address {
        c.peer_address = peer_address(&v)?;
    }
    if let Some(v) = f.peer_id {
        c.peer_id = v;
    }
    if let Some(v) = f.local_id {
        c.local_id = v;
    }
    if let Some(v) = f.psk {
        c.psk = v;
    }
    if let Some(v) = f.peer_cidrs {
        c.peer_cidrs = v;
    }
    if let Some(v) = f.local_ep_group_id {
        c.local_ep_group_id = v;
    }
    if let Some(v) = f.peer_ep_group_id {
        c.peer_ep_group_id = v;
    }
    if let Some(v) = f.mtu {
        c.mtu = v;
    }
    if let Some(v) = f.initiator {
        c.initiator = v;
    }
    if let Some((action, interval, timeout)) = f.dpd {
        c.dpd_action = action;
        c.dpd_interval = interval;
        c.dpd_timeout = timeout;
    }
    if let Some(v) = f.admin_state_up {
        c.admin_state_up = v;
    }
    Ok(())
}

fn which(local: bool, peer: bool) -> (&'static str, &'static str) {
    match (local, peer) {
        (true, true) => ("s", "local and peer"),
        (true, false) => ("", "local"),
        _ => ("", "peer"),
    }
}

/// Neutron's checks of a whole connection (its form, its endpoints, DPD,
/// MTU) against the state; `auth` sees the groups it names.
fn validate(state: &State, auth: &Auth, c: &IpsecSiteConnection) -> Result<(), ApiError> {
    if c.psk.is_empty() {
        return Err(ApiError::invalid(
            "Invalid input for psk. Reason: a pre-shared key must not be empty.",
        ));
    }
    let service = services::get(state, auth, &c.vpnservice_id)?;
    let (local, peer) = (c.local_ep_group_id.is_some(), c.peer_ep_group_id.is_some());
    if service.subnet_id.is_some() {
        if local || peer {
            let (suffix, w) = which(local, peer);
            return Err(ApiError::bad_request(format!(
                "Endpoint group{suffix} {w} cannot be specified, when VPN Service has subnet specified"
            )));
        }
        if c.peer_cidrs.is_empty() {
            return Err(ApiError::bad_request(
                "Missing peer CIDRs for IPsec site-to-site connection",
            ));
        }
    } else {
        if !c.peer_cidrs.is_empty() {
            return Err(ApiError::bad_request(
                "Peer CIDRs cannot be specified, when using endpoint groups",
            ));
        }
        if !local || !peer {
            let (suffix, w) = which(!local, !peer);
            return Err(ApiError::bad_request(format!(
                "Missing endpoint group{suffix} {w} for IPSec site-to-site connection"
            )));
        }
        let lg = endpoint_groups::get(state, auth, c.local_ep_group_id.as_deref().unwrap_or(""))?;
        if lg.kind != "subnet" {
            return Err(ApiError::bad_request(format!(
                "Endpoint group {} type is '{}' and should be 'subnet'",
                lg.meta.id, lg.kind
            )));
        }
        for s in &lg.endpoints {
            if !services::subnet_on_router(state, &service.router_id, s) {
                return Err(ApiError::bad_request(format!(
                    "Subnet {s} is not connected to Router {}",
                    service.router_id
                )));
            }
            if state.subnets.get(s).is_some_and(|x| x.ip_version != 4) {
                return Err(ApiError::bad_request(format!(
                    "Subnet {s} is IPv6: Strato's VPN carries IPv4"
                )));
            }
        }
        let pg = endpoint_groups::get(state, auth, c.peer_ep_group_id.as_deref().unwrap_or(""))?;
        if pg.kind != "cidr" {
            return Err(ApiError::bad_request(format!(
                "Endpoint group {} type is '{}' and should be 'cidr'",
                pg.meta.id, pg.kind
            )));
        }
    }
    if c.dpd_timeout <= c.dpd_interval {
        return Err(ApiError::bad_request(
            "ipsec_site_connection dpd_timeout is equal to or less than dpd_interval",
        ));
    }
    if c.mtu != 0 && c.mtu < MIN_MTU {
        return Err(ApiError::bad_request(format!(
            "ipsec_site_connection MTU {} is too small for ipv4",
            c.mtu
        )));
    }
    if c.mtu > MAX_MTU {
        return Err(ApiError::invalid(format!(
            "Invalid input for mtu. Reason: '{}' is larger than {MAX_MTU}.",
            c.mtu
        )));
    }
    if let Ok(peer) = c.peer_address.parse::<Ipv4Addr>() {
        for cidr in peer_networks(state, c) {
            if cidr.contains(peer) {
                return Err(ApiError::bad_request(format!(
                    "Peer address {peer} is inside the peer CIDR {cidr}: the tunnel's outer address cannot be one it carries"
                )));
            }
        }
    }
    Ok(())
}

/// The peer's networks (its CIDRs, in either form).
pub fn peer_networks(state: &State, c: &IpsecSiteConnection) -> Vec<ipnetwork::Ipv4Network> {
    let texts: Vec<&String> = match &c.peer_ep_group_id {
        Some(g) => state
            .endpoint_groups
            .get(g)
            .map(|g| g.endpoints.iter().collect())
            .unwrap_or_default(),
        None => c.peer_cidrs.iter().collect(),
    };
    texts.iter().filter_map(|t| t.parse().ok()).collect()
}

/// 409 `OverQuota` when `c` (replacing `replaced`, if an update) takes the
/// project over its VPN subnets.
fn check_vpn_subnets(
    state: &State,
    c: &IpsecSiteConnection,
    replaced: Option<&IpsecSiteConnection>,
) -> Result<(), ApiError> {
    let limit = state.quota(&c.meta.project_id).vpn_subnet;
    let total = quotas::vpn_subnets(state, &c.meta.project_id)
        - replaced.map_or(0, |r| quotas::connection_vpn_subnets(state, r))
        + quotas::connection_vpn_subnets(state, c);
    if limit >= 0 && total > limit {
        return Err(ApiError::conflict(
            "OverQuota",
            "Quota exceeded for resources: ['vpn_subnet'].",
        ));
    }
    Ok(())
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<IpsecSiteConnection> {
    let (mut a, project) = creating(state, auth, body, "ipsec_site_connection")?;
    let vpnservice_id = a.string("vpnservice_id", 64)?;
    let ikepolicy_id = a.string("ikepolicy_id", 64)?;
    let ipsecpolicy_id = a.string("ipsecpolicy_id", 64)?;
    let (action, interval, timeout) = DEFAULT_DPD;
    let f = fields(&mut a, (action.to_owned(), interval, timeout))?;
    a.finish()?;
    for (attr, present) in [
        ("peer_address", f.peer_address.is_some()),
        ("peer_id", f.peer_id.is_some()),
        ("psk", f.psk.is_some()),
        ("vpnservice_id", vpnservice_id.is_some()),
        ("ikepolicy_id", ikepolicy_id.is_some()),
        ("ipsecpolicy_id", ipsecpolicy_id.is_some()),
    ] {
        if !present {
            return Err(required(attr));
        }
    }
    let (vpnservice_id, ikepolicy_id, ipsecpolicy_id) = (
        vpnservice_id.unwrap_or_default(),
        ikepolicy_id.unwrap_or_default(),
        ipsecpolicy_id.unwrap_or_default(),
    );
    let service = services::get(state, auth, &vpnservice_id)?;
    policies::get_ike(state, auth, &ikepolicy_id)?;
    policies::get_ipsec(state, auth, &ipsecpolicy_id)?;
    if service.meta.project_id != project {
        return Err(ApiError::bad_request(format!(
            "VPNService {vpnservice_id} belongs to another project"
        )));
    }
    let mut c = IpsecSiteConnection {
        meta: new_meta(project, None, None),
        vpnservice_id,
        ikepolicy_id,
        ipsecpolicy_id,
        peer_address: String::new(),
        peer_id: String::new(),
        local_id: String::new(),
        peer_cidrs: vec![],
        local_ep_group_id: None,
        peer_ep_group_id: None,
        mtu: DEFAULT_MTU,
        initiator: "bi-directional".into(),
        psk: String::new(),
        dpd_action: action.into(),
        dpd_interval: interval,
        dpd_timeout: timeout,
        admin_state_up: true,
        status: VpnStatus::PendingCreate,
    };
    apply(&mut c, f)?;
    validate(state, auth, &c)?;
    quotas::check(state, &c.meta.project_id, Kind::IpsecSiteConnection, 1)?;
    check_vpn_subnets(state, &c, None)?;
    tracing::info!(ipsec_site_connection = %c.meta.id, vpnservice = %c.vpnservice_id, peer = %c.peer_address, "IPsec site connection created");
    Ok((vec![Change::Put(Object::IpsecSiteConnection(c.clone()))], c))
}

pub fn update(state: &State, auth: &Auth, e: Edit) -> Made<IpsecSiteConnection> {
    let Edit { id, body, if_match } = e;
    let current = writable(auth, || get(state, auth, id), if_match)?;
    let mut c = current.clone();
    let mut a = Attrs::from_body(body, "ipsec_site_connection")?;
    a.reject_read_only(&[
        "id",
        "project_id",
        "tenant_id",
        "vpnservice_id",
        "ikepolicy_id",
        "ipsecpolicy_id",
        "status",
        "route_mode",
        "auth_mode",
    ])?;
    let f = fields(
        &mut a,
        (c.dpd_action.clone(), c.dpd_interval, c.dpd_timeout),
    )?;
    a.finish()?;
    apply(&mut c, f)?;
    validate(state, auth, &c)?;
    check_vpn_subnets(state, &c, Some(current))?;
    updatable(c.status, id)?;
    Ok(updated(c, vec![]))
}

pub fn delete(state: &State, auth: &Auth, id: &str, if_match: Option<&str>) -> Made<()> {
    writable(auth, || get(state, auth, id), if_match)?;
    tracing::info!(ipsec_site_connection = id, "IPsec site connection deleted");
    Ok((
        vec![Change::Delete(Kind::IpsecSiteConnection, id.to_owned())],
        (),
    ))
}

pub const ATTRS: &[&str] = &[
    "vpnservice_id",
    "ikepolicy_id",
    "ipsecpolicy_id",
    "peer_address",
    "peer_id",
    "local_id",
    "peer_cidrs",
    "local_ep_group_id",
    "peer_ep_group_id",
    "route_mode",
    "mtu",
    "initiator",
    "auth_mode",
    "psk",
    "dpd",
    "admin_state_up",
    "status",
];

pub fn render(c: &IpsecSiteConnection) -> Map<String, Value> {
    let mut o = Map::new();
    render_meta(&c.meta, &mut o);
    o.insert("vpnservice_id".into(), c.vpnservice_id.clone().into());
    o.insert("ikepolicy_id".into(), c.ikepolicy_id.clone().into());
    o.insert("ipsecpolicy_id".into(), c.ipsecpolicy_id.clone().into());
    o.insert("peer_address".into(), c.peer_address.clone().into());
    o.insert("peer_id".into(), c.peer_id.clone().into());
    o.insert("local_id".into(), c.local_id.clone().into());
    o.insert(
        "peer_cidrs".into(),
        Value::Array(c.peer_cidrs.iter().cloned().map(Value::from).collect()),
    );
    o.insert(
        "local_ep_group_id".into(),
        c.local_ep_group_id.clone().into(),
    );
    o.insert("peer_ep_group_id".into(), c.peer_ep_group_id.clone().into());
    o.insert("route_mode".into(), "static".into());
    o.insert("mtu".into(), c.mtu.into());
    o.insert("initiator".into(), c.initiator.clone().into());
    o.insert("auth_mode".into(), "psk".into());
    o.insert("psk".into(), c.psk.clone().into());
    o.insert(
        "dpd".into(),
        json!({"action": c.dpd_action, "interval": c.dpd_interval, "timeout": c.dpd_timeout}),
    );
    o.insert("admin_state_up".into(), c.admin_state_up.into());
    o.insert("status".into(), c.status.as_str().into());
    o
}
