//! Listeners: a protocol (TCP or UDP) and port on a load balancer's VIP,
//! with its default pool, connection limit, timeouts and connection
//! draining timeout. One listener per (load balancer, protocol, port):
//! TCP and UDP may share a port number.

use serde_json::{json, Map, Value};

use super::{
    check_mutable, child_owner, created, health::LbHealth, id_refs, listener, load_balancer,
    mandatory, not_found, parent_pending, port_number, quotas, read_only, render_base, updated,
    wire, writable,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{Change, Kind, LbProtocol, Listener, Pool, ProvisioningStatus},
    network::{new_meta, require_write, touch, update_attrs, Attrs, Made},
    state::Resource as _,
    state::State,
};

/// Octavia's timeout bounds, ms (0 to a day).
pub const MAX_TIMEOUT_MS: i64 = 86_400_000;
pub const DEFAULT_TIMEOUT_CLIENT_DATA: u32 = 50_000;
pub const DEFAULT_TIMEOUT_MEMBER_CONNECT: u32 = 5_000;
pub const DEFAULT_TIMEOUT_MEMBER_DATA: u32 = 50_000;
pub const DEFAULT_TIMEOUT_TCP_INSPECT: u32 = 0;
/// Connection draining, ms: default a minute, at most an hour.
pub const DEFAULT_DRAIN_TIMEOUT: u32 = 60_000;
pub const MAX_DRAIN_TIMEOUT_MS: i64 = 3_600_000;

/// Attributes a listener renders besides `network::STANDARD_ATTRS` (what
/// filters and sort keys may name).
pub const ATTRS: &[&str] = &[
    "admin_state_up",
    "provisioning_status",
    "operating_status",
    "protocol",
    "protocol_port",
    "connection_limit",
    "default_pool_id",
    "loadbalancers",
    "timeout_client_data",
    "timeout_member_connect",
    "timeout_member_data",
    "timeout_tcp_inspect",
    "connection_drain_timeout",
    "default_tls_container_ref",
    "sni_container_refs",
    "l7policies",
    "insert_headers",
    "allowed_cidrs",
];

/// 400 for the protocols L4 load balancing does not carry.
pub fn check_l4(key: &str, p: LbProtocol) -> Result<(), ApiError> {
    match p {
        LbProtocol::Tcp | LbProtocol::Udp => Ok(()),
        other => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {key}. Value: '{}'. Protocol {} is not supported yet: Strato load balancers are L4 (TCP, UDP).",
            other.as_str(),
            other.as_str()
        ))),
    }
}

/// The pool a listener may take as its default: the same load balancer, a
/// compatible protocol, not another listener's default.
fn default_pool<'s>(
    state: &'s State,
    auth: &Auth,
    l: &Listener,
    pool_id: &str,
) -> Result<&'s Pool, ApiError> {
    let p = super::pool(state, auth, pool_id)?;
    if p.loadbalancer_id != l.loadbalancer_id {
        return Err(ApiError::bad_request(format!(
            "Pool {pool_id} is not on load balancer {}.",
            l.loadbalancer_id
        )));
    }
    if p.protocol != l.protocol {
        return Err(ApiError::bad_request(format!(
            "The pool protocol '{}' is invalid while the listener protocol is '{}'.",
            p.protocol.as_str(),
            l.protocol.as_str()
        )));
    }
    if let Some(other) = p.listener_id.as_deref().filter(|o| *o != l.meta.id) {
        return Err(ApiError::conflict(
            "DuplicatePoolEntry",
            format!("Pool {pool_id} is already the default pool of listener {other}."),
        ));
    }
    Ok(p)
}

/// The change that makes `p` the default pool of `listener` (`None`: of
/// no listener).
fn default_of(p: &Pool, listener: Option<&str>) -> Change {
    let mut p = p.clone();
    p.listener_id = listener.map(str::to_owned);
    touch(&mut p.meta);
    p.put()
}

fn timeouts(a: &mut Attrs<'_>, l: &mut Listener) -> Result<(), ApiError> {
    for (key, slot) in [
        ("timeout_client_data", &mut l.timeout_client_data),
        ("timeout_member_connect", &mut l.timeout_member_connect),
        ("timeout_member_data", &mut l.timeout_member_data),
        ("timeout_tcp_inspect", &mut l.timeout_tcp_inspect),
    ] {
        if a.is_null(key) {
            a.raw(key);
            continue;
        }
        if let Some(v) = a.integer(key, 0, MAX_TIMEOUT_MS)? {
            *slot = v as u32;
        }
    }
    if a.is_null("connection_drain_timeout") {
        a.raw("connection_drain_timeout");
    } else if let Some(v) = a.integer("connection_drain_timeout", 0, MAX_DRAIN_TIMEOUT_MS)? {
        l.connection_drain_timeout = v as u32;
    }
    if a.is_null("connection_limit") {
        a.raw("connection_limit");
    } else if let Some(v) = a.integer("connection_limit", -1, i32::MAX as i64)? {
        l.connection_limit = v;
    }
    Ok(())
}

/// Attributes of TLS and L7 listeners: accepted when empty (clients send
/// them null), refused otherwise.
const L7_ATTRS: &[&str] = &[
    "default_tls_container_ref",
    "sni_container_refs",
    "insert_headers",
    "client_ca_tls_container_ref",
    "client_authentication",
    "client_crl_container_ref",
    "tls_ciphers",
    "tls_versions",
    "alpn_protocols",
    "allowed_cidrs",
];

fn reject_l7(a: &mut Attrs<'_>) -> Result<(), ApiError> {
    for k in L7_ATTRS {
        match a.raw(k) {
            None | Some(Value::Null) => {}
            Some(Value::Array(v)) if v.is_empty() => {}
            Some(Value::Object(v)) if v.is_empty() => {}
            Some(Value::String(s)) if *k == "client_authentication" && s == "NONE" => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for field/attribute {k}. Value: '{v}'. It is not supported yet (TLS and L7 listeners)."
                )))
            }
        }
    }
    Ok(())
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<Listener> {
    require_write(auth)?;
    let mut a = Attrs::from_body(body, "listener")?;
    let lb_id = a
        .string("loadbalancer_id", 36)?
        .ok_or_else(|| mandatory("loadbalancer_id"))?;
    let protocol = wire(&mut a, "protocol", LbProtocol::ALL, LbProtocol::as_str)?
        .ok_or_else(|| mandatory("protocol"))?;
    let port = port_number(&mut a, "protocol_port")?.ok_or_else(|| mandatory("protocol_port"))?;
    let name = a.nullable_string("name", 255)?.flatten();
    let description = a.nullable_string("description", 255)?.flatten();
    let admin_state_up = a.boolean("admin_state_up")?.unwrap_or(true);
    let pool_id = a.nullable_string("default_pool_id", 36)?.flatten();
    let lb = load_balancer(state, auth, &lb_id)?;
    let project = child_owner(&mut a, lb)?;
    let mut l = Listener {
        meta: new_meta(project.clone(), name, description),
        loadbalancer_id: lb_id.clone(),
        protocol,
        protocol_port: port,
        connection_limit: -1,
        default_pool_id: None,
        admin_state_up,
        timeout_client_data: DEFAULT_TIMEOUT_CLIENT_DATA,
        timeout_member_connect: DEFAULT_TIMEOUT_MEMBER_CONNECT,
        timeout_member_data: DEFAULT_TIMEOUT_MEMBER_DATA,
        timeout_tcp_inspect: DEFAULT_TIMEOUT_TCP_INSPECT,
        connection_drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        provisioning_status: ProvisioningStatus::PendingCreate,
        at_limit: false,
    };
    timeouts(&mut a, &mut l)?;
    reject_l7(&mut a)?;
    a.finish()?;
    check_l4("protocol", protocol)?;
    check_mutable(lb)?;
    if state
        .listeners
        .values()
        .any(|o| o.loadbalancer_id == lb_id && o.protocol == protocol && o.protocol_port == port)
    {
        return Err(ApiError::conflict(
            "DuplicateListenerEntry",
            format!("Another Listener on this Load Balancer is already using protocol_port {port}"),
        ));
    }
    quotas::check(state, &project, Kind::Listener, 1)?;
    let mut changes = Vec::new();
    if let Some(pid) = &pool_id {
        let p = default_pool(state, auth, &l, pid)?;
        l.default_pool_id = Some(pid.clone());
        changes.push(default_of(p, Some(&l.meta.id)));
    }
    tracing::info!(listener = %l.meta.id, loadbalancer = %lb_id, protocol = protocol.as_str(), port, "listener created");
    created(state, l, changes)
}

pub fn update(state: &State, auth: &Auth, id: &str, body: &Value) -> Made<Listener> {
    let mut l = writable(state, auth, || listener(state, auth, id))?;
    let specific = [
        "loadbalancer_id",
        "loadbalancers",
        "protocol",
        "protocol_port",
    ];
    let pool = update_attrs(body, "listener", &read_only(&specific), |a| {
        a.rename_nullable(&mut l.meta, true)?;
        if let Some(v) = a.boolean("admin_state_up")? {
            l.admin_state_up = v;
        }
        let pool = if a.has("default_pool_id") {
            Some(a.nullable_string("default_pool_id", 36)?.flatten())
        } else {
            None
        };
        timeouts(a, &mut l)?;
        reject_l7(a)?;
        Ok(pool)
    })?;
    let mut changes = Vec::new();
    if let Some(new) = pool {
        if new != l.default_pool_id {
            if let Some(old) = l
                .default_pool_id
                .as_deref()
                .and_then(|p| state.pools.get(p))
            {
                changes.push(default_of(old, None));
            }
            if let Some(pid) = &new {
                let p = default_pool(state, auth, &l, pid)?;
                changes.push(default_of(p, Some(&l.meta.id)));
            }
            l.default_pool_id = new;
        }
    }
    updated(state, l, changes)
}

/// Deletes a listener; its default pool stays (no longer a default).
pub fn delete(state: &State, auth: &Auth, id: &str) -> Made<()> {
    require_write(auth)?;
    let l = listener(state, auth, id)?;
    let lb = state
        .load_balancers
        .get(&l.loadbalancer_id)
        .ok_or_else(|| not_found("Load Balancer", &l.loadbalancer_id))?;
    check_mutable(lb)?;
    let mut changes = Vec::new();
    if let Some(p) = l
        .default_pool_id
        .as_deref()
        .and_then(|p| state.pools.get(p))
    {
        changes.push(default_of(p, None));
    }
    changes.push(Change::Delete(Kind::Listener, id.to_owned()));
    changes.extend(parent_pending(state, &l.loadbalancer_id));
    tracing::info!(listener = id, "listener deleted");
    Ok((changes, ()))
}

pub fn render(state: &State, health: &LbHealth, l: &Listener) -> Map<String, Value> {
    let mut o = render_base(l, l.admin_state_up, health.listener_status(state, l));
    o.insert("protocol".into(), l.protocol.as_str().into());
    o.insert("protocol_port".into(), l.protocol_port.into());
    o.insert("connection_limit".into(), l.connection_limit.into());
    o.insert("default_pool_id".into(), json!(l.default_pool_id));
    o.insert(
        "loadbalancers".into(),
        id_refs([l.loadbalancer_id.as_str()]),
    );
    o.insert("timeout_client_data".into(), l.timeout_client_data.into());
    o.insert(
        "timeout_member_connect".into(),
        l.timeout_member_connect.into(),
    );
    o.insert("timeout_member_data".into(), l.timeout_member_data.into());
    o.insert("timeout_tcp_inspect".into(), l.timeout_tcp_inspect.into());
    o.insert(
        "connection_drain_timeout".into(),
        l.connection_drain_timeout.into(),
    );
    o.insert("default_tls_container_ref".into(), Value::Null);
    o.insert("sni_container_refs".into(), json!([]));
    o.insert("l7policies".into(), json!([]));
    o.insert("insert_headers".into(), json!({}));
    o.insert("allowed_cidrs".into(), Value::Null);
    o.insert("client_ca_tls_container_ref".into(), Value::Null);
    o.insert("client_authentication".into(), "NONE".into());
    o.insert("client_crl_container_ref".into(), Value::Null);
    o.insert("tls_ciphers".into(), Value::Null);
    o.insert("tls_versions".into(), Value::Null);
    o.insert("alpn_protocols".into(), Value::Null);
    o
}
