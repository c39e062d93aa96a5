//! Endpoint groups: the local subnets (`subnet`, subnet ids) and peer
//! CIDRs (`cidr`) of IPsec site connections. Endpoints are immutable; a
//! group a connection uses cannot be deleted (Neutron's 400).

use ipnetwork::IpNetwork;
use serde_json::{Map, Value};

use crate::{
    auth::Auth,
    error::ApiError,
    model::{Change, EndpointGroup, Kind, Object},
    network::{
        creating, find_own, new_meta, quotas, render_meta, update_attrs, updated, writable, Edit,
        Made,
    },
    state::State,
};

/// Neutron's group types (only `subnet` and `cidr` are used by
/// connections; the others are stored as Neutron stores them).
pub const TYPES: &[&str] = &["subnet", "cidr", "network", "router", "vlan"];

pub fn get<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s EndpointGroup, ApiError> {
    find_own(state, auth, id, || {
        ApiError::new(
            404,
            "VPNEndpointGroupNotFound",
            format!("Endpoint group {id} could not be found"),
        )
    })
}

fn invalid_endpoint(endpoint: &str, kind: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Endpoint '{endpoint}' is invalid for group type '{kind}': {why}"
    ))
}

/// A peer CIDR: an IPv4 network in canonical form (IPv6 is not carried by
/// Strato's VPN).
pub fn peer_cidr(endpoint: &str, kind: &str) -> Result<ipnetwork::Ipv4Network, ApiError> {
    let net: IpNetwork = endpoint
        .parse()
        .ok()
        .filter(|_| endpoint.contains('/'))
        .ok_or_else(|| invalid_endpoint(endpoint, kind, "Invalid CIDR"))?;
    match net {
        IpNetwork::V4(n) if n.network() == n.ip() => Ok(n),
        IpNetwork::V4(n) => Err(invalid_endpoint(
            endpoint,
            kind,
            &format!(
                "Invalid CIDR (host bits set; the network is {}/{})",
                n.network(),
                n.prefix()
            ),
        )),
        IpNetwork::V6(_) => Err(invalid_endpoint(
            endpoint,
            kind,
            "IPv6 is not supported by Strato's VPN",
        )),
    }
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<EndpointGroup> {
    let (mut a, project) = creating(state, auth, body, "endpoint_group")?;
    let (name, description) = a.names()?;
    let kind = a.string("type", 16)?.ok_or_else(|| {
        ApiError::bad_request("Failed to parse request. Required attribute 'type' not specified")
    })?;
    if !TYPES.contains(&kind.as_str()) {
        return Err(ApiError::invalid(format!(
            "Invalid input for type. Reason: {kind} is not in valid_values."
        )));
    }
    // Neutron converts a single value to a list.
    let endpoints = super::string_list(&mut a, "endpoints")?.unwrap_or_default();
    a.finish()?;
    if endpoints.is_empty() {
        return Err(ApiError::bad_request(format!(
            "No endpoints specified for endpoint group '{}'",
            body.get("endpoint_group").unwrap_or(&Value::Null)
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in &endpoints {
        if !seen.insert(e.as_str()) {
            return Err(invalid_endpoint(e, &kind, "Endpoints have to be unique"));
        }
    }
    for e in &endpoints {
        match kind.as_str() {
            "cidr" => {
                peer_cidr(e, &kind)?;
            }
            "subnet" => {
                if uuid::Uuid::parse_str(e).is_err() {
                    return Err(invalid_endpoint(e, &kind, "Invalid UUID"));
                }
                let visible = state
                    .subnets
                    .get(e)
                    .is_some_and(|s| auth.can_see(&s.meta.project_id));
                if !visible {
                    return Err(ApiError::bad_request(format!(
                        "Subnet {e} in endpoint group does not exist"
                    )));
                }
            }
            _ => {}
        }
    }
    quotas::check(state, &project, Kind::EndpointGroup, 1)?;
    let g = EndpointGroup {
        meta: new_meta(project, name, description),
        kind,
        endpoints,
    };
    tracing::info!(endpoint_group = %g.meta.id, kind = %g.kind, endpoints = g.endpoints.len(), "endpoint group created");
    Ok((vec![Change::Put(Object::EndpointGroup(g.clone()))], g))
}

pub fn update(state: &State, auth: &Auth, e: Edit) -> Made<EndpointGroup> {
    let Edit { id, body, if_match } = e;
    let mut g = writable(auth, || get(state, auth, id), if_match)?.clone();
    update_attrs(
        body,
        "endpoint_group",
        &["id", "project_id", "tenant_id", "type", "endpoints"],
        |a| a.rename(&mut g.meta),
    )?;
    Ok(updated(g, vec![]))
}

pub fn delete(state: &State, auth: &Auth, id: &str, if_match: Option<&str>) -> Made<()> {
    writable(auth, || get(state, auth, id), if_match)?;
    let used = state.ipsec_site_connections.values().any(|c| {
        c.local_ep_group_id.as_deref() == Some(id) || c.peer_ep_group_id.as_deref() == Some(id)
    });
    if used {
        return Err(ApiError::new(
            400,
            "EndpointGroupInUse",
            format!("Endpoint group {id} is in use and cannot be deleted"),
        ));
    }
    tracing::info!(endpoint_group = id, "endpoint group deleted");
    Ok((vec![Change::Delete(Kind::EndpointGroup, id.to_owned())], ()))
}

pub const ATTRS: &[&str] = &["type", "endpoints"];

pub fn render(g: &EndpointGroup) -> Map<String, Value> {
    let mut o = Map::new();
    render_meta(&g.meta, &mut o);
    o.insert("type".into(), g.kind.clone().into());
    o.insert(
        "endpoints".into(),
        Value::Array(g.endpoints.iter().cloned().map(Value::from).collect()),
    );
    o
}
