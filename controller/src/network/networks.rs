//! Networks: L2 segments, each with its own VXLAN network identifier.

use serde_json::{Map, Value};

use super::{
    creating, find, new_meta, owned, quotas, refuse_in_use, render_meta, update_attrs, updated,
    writable, Made,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{Change, Kind, Network, Object},
    state::State,
};

/// MTU offered to VMs: the underlay's 1500 minus VXLAN over IPv4 (50 bytes).
pub const OVERLAY_MTU: u32 = 1450;
/// VNIs handed out, lowest free first.
pub const VNI_MIN: u32 = 100;
pub const VNI_MAX: u32 = (1 << 24) - 1;

/// Shared and external networks are visible to every project.
pub fn visible(auth: &Auth, n: &Network) -> bool {
    n.shared || n.external || auth.can_see(&n.meta.project_id)
}

/// The network, if the caller may see it (404 otherwise, also for other
/// projects' networks: their existence is not disclosed).
pub fn get<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s Network, ApiError> {
    find(
        state,
        id,
        |n| visible(auth, n),
        || ApiError::not_found("network", id),
    )
}

/// As [`get`], but the caller must also own it (or be admin) to change it.
pub fn get_owned<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s Network, ApiError> {
    owned(get(state, auth, id)?, auth, || {
        format!("Network {id} is shared with you; only its owner may change it.")
    })
}

fn allocate_vni(state: &State) -> Result<u32, ApiError> {
    let used: std::collections::BTreeSet<u32> = state.networks.values().map(|n| n.vni).collect();
    let mut candidate = VNI_MIN;
    for v in used.range(VNI_MIN..) {
        if *v > candidate {
            break;
        }
        candidate = v + 1;
    }
    if candidate > VNI_MAX {
        return Err(ApiError::conflict(
            "NoNetworkAvailable",
            "Unable to create the network. No tenant network is available for allocation.",
        ));
    }
    Ok(candidate)
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<Network> {
    let (mut a, project) = creating(state, auth, body, "network")?;
    let (name, description) = a.names()?;
    let admin_state_up = a.boolean("admin_state_up")?.unwrap_or(true);
    let shared = a.boolean("shared")?.unwrap_or(false);
    let mtu = a
        .integer("mtu", 68, OVERLAY_MTU as i64)?
        .map(|m| m as u32)
        .unwrap_or(OVERLAY_MTU);
    let port_security_enabled = a.boolean("port_security_enabled")?.unwrap_or(true);
    if let Some(z) = a.strings("availability_zone_hints")? {
        if !z.is_empty() {
            return Err(ApiError::invalid("Invalid input for availability_zone_hints. Reason: networks span every availability zone of the region."));
        }
    }
    let external = a.boolean("router:external")?.unwrap_or(false);
    a.finish()?;
    if shared && !auth.is_admin() {
        return Err(ApiError::forbidden(
            "Only an administrator may create shared networks.",
        ));
    }
    if external && !auth.is_admin() {
        return Err(ApiError::forbidden(
            "Only an administrator may create external networks (router:external).",
        ));
    }
    quotas::check(state, &project, Kind::Network, 1)?;
    let n = Network {
        meta: new_meta(project, name, description),
        admin_state_up,
        shared,
        mtu,
        port_security_enabled,
        vni: allocate_vni(state)?,
        external,
    };
    tracing::info!(network = %n.meta.id, project = %n.meta.project_id, vni = n.vni, "network created");
    Ok((vec![Change::Put(Object::Network(n.clone()))], n))
}

pub fn update(
    state: &State,
    auth: &Auth,
    id: &str,
    body: &Value,
    if_match: Option<&str>,
) -> Made<Network> {
    const READ_ONLY: &[&str] = &[
        "id",
        "project_id",
        "tenant_id",
        "status",
        "subnets",
        "provider:segmentation_id",
    ];
    let mut n = writable(auth, || get_owned(state, auth, id), if_match)?.clone();
    update_attrs(body, "network", READ_ONLY, |a| {
        a.rename(&mut n.meta)?;
        if let Some(v) = a.boolean("admin_state_up")? {
            n.admin_state_up = v;
        }
        if let Some(v) = a.integer("mtu", 68, OVERLAY_MTU as i64)? {
            n.mtu = v as u32;
        }
        if let Some(v) = a.boolean("port_security_enabled")? {
            n.port_security_enabled = v;
        }
        if let Some(v) = a.boolean("shared")? {
            if v != n.shared && !auth.is_admin() {
                return Err(ApiError::forbidden(
                    "Only an administrator may share or unshare networks.",
                ));
            }
            n.shared = v;
        }
        if let Some(v) = a.boolean("router:external")? {
            if v != n.external {
                if !auth.is_admin() {
                    return Err(ApiError::forbidden(
                        "Only an administrator may change router:external.",
                    ));
                }
                // Router gateways and floating IPs are ports on it.
                refuse_in_use(
                    !v && state.ports.values().any(|p| p.network_id == id),
                    "NetworkInUse",
                    || {
                        format!("Unable to complete operation on network {id}: router gateways or floating IPs still use it as an external network.")
                    },
                )?;
            }
            n.external = v;
        }
        Ok(())
    })?;
    Ok(updated(n, vec![]))
}

/// Deletes the network and its subnets; 409 while any port is on it.
pub fn delete(state: &State, auth: &Auth, id: &str, if_match: Option<&str>) -> Made<()> {
    writable(auth, || get_owned(state, auth, id), if_match)?;
    refuse_in_use(
        state.ports.values().any(|p| p.network_id == id),
        "NetworkInUse",
        || {
            format!("Unable to complete operation on network {id}. There are one or more ports still in use on the network.")
        },
    )?;
    for s in state.subnets.values().filter(|s| s.network_id == id) {
        super::subnets::check_no_members(state, &s.meta.id)?;
    }
    let mut changes: Vec<Change> = state
        .subnets
        .values()
        .filter(|s| s.network_id == id)
        .map(|s| Change::Delete(Kind::Subnet, s.meta.id.clone()))
        .collect();
    changes.push(Change::Delete(Kind::Network, id.to_owned()));
    tracing::info!(network = id, "network deleted");
    Ok((changes, ()))
}

pub fn render(state: &State, auth: &Auth, n: &Network) -> Map<String, Value> {
    let mut o = Map::new();
    render_meta(&n.meta, &mut o);
    let mut subnets: Vec<&crate::model::Subnet> = state
        .subnets
        .values()
        .filter(|s| s.network_id == n.meta.id)
        .collect();
    subnets.sort_by(|a, b| {
        a.meta
            .created_at
            .cmp(&b.meta.created_at)
            .then(a.meta.id.cmp(&b.meta.id))
    });
    o.insert(
        "subnets".into(),
        subnets
            .iter()
            .map(|s| Value::from(s.meta.id.clone()))
            .collect(),
    );
    o.insert("admin_state_up".into(), n.admin_state_up.into());
    o.insert("status".into(), "ACTIVE".into());
    o.insert("shared".into(), n.shared.into());
    o.insert("mtu".into(), n.mtu.into());
    o.insert(
        "port_security_enabled".into(),
        n.port_security_enabled.into(),
    );
    o.insert("router:external".into(), n.external.into());
    o.insert("availability_zone_hints".into(), Value::Array(vec![]));
    o.insert("availability_zones".into(), Value::Array(vec![]));
    o.insert("ipv4_address_scope".into(), Value::Null);
    o.insert("ipv6_address_scope".into(), Value::Null);
    o.insert("l2_adjacency".into(), true.into());
    o.insert("is_default".into(), false.into());
    if auth.is_admin() {
        o.insert("provider:network_type".into(), "vxlan".into());
        o.insert("provider:physical_network".into(), Value::Null);
        o.insert("provider:segmentation_id".into(), n.vni.into());
    }
    o
}
