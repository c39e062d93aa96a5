//! Pools: the members a listener's connections are balanced over, with the
//! algorithm and session persistence. A pool belongs to one load balancer;
//! created with `listener_id`, it becomes that listener's default pool in
//! the same commit (its protocol one the listener's may use, Octavia's
//! `VALID_LISTENER_POOL_PROTOCOL_MAP`). Session persistence: `SOURCE_IP`
//! on any pool, `HTTP_COOKIE` and `APP_COOKIE` (with its `cookie_name`)
//! on HTTP pools. Deleting a pool deletes its members and health monitor
//! (as Octavia does) and leaves its listener without a default pool; a
//! pool an L7 policy redirects to cannot be deleted (409, as Octavia).

use std::net::Ipv4Addr;

use serde_json::{json, Map, Value};

use super::{
    check_mutable, child_owner, health::LbHealth, id_refs, l7check, l7policies, listener,
    listeners::protocol_attr, load_balancer, mandatory, parent_pending, pending_update, pool,
    pool_members, pool_monitor, quotas, read_only, render_base, updated, wire, writable,
    Provisioned,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{
        Change, Kind, LbAlgorithm, LbProtocol, Object, PersistenceType, Pool, ProvisioningStatus,
        SessionPersistence,
    },
    network::{dict, new_meta, require_write, touch, update_attrs, Attrs, Made},
    state::Resource as _,
    state::State,
};

/// Default stickiness timeout, s.
pub const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 360;
/// Longest stickiness timeout, s (a day).
pub const MAX_PERSISTENCE_TIMEOUT: u64 = 86_400;

/// Attributes a pool renders besides `network::STANDARD_ATTRS` (what
/// filters and sort keys may name).
pub const ATTRS: &[&str] = &[
    "admin_state_up",
    "provisioning_status",
    "operating_status",
    "protocol",
    "lb_algorithm",
    "session_persistence",
    "loadbalancers",
    "listeners",
    "members",
    "healthmonitor_id",
    "tls_enabled",
];

/// `session_persistence`: null (none), `{"type": "SOURCE_IP",
/// "persistence_timeout": s, "persistence_granularity": "<netmask>"}`, or
/// on HTTP pools `{"type": "HTTP_COOKIE"}` or `{"type": "APP_COOKIE",
/// "cookie_name": "..."}` (Octavia's `check_session_persistence`).
fn parse_persistence(
    protocol: LbProtocol,
    v: &Value,
) -> Result<Option<SessionPersistence>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    let o = dict(
        "session_persistence",
        v,
        &[
            "type",
            "cookie_name",
            "persistence_timeout",
            "persistence_granularity",
        ],
    )?;
    let bad = |why: String| {
        ApiError::bad_request(format!(
            "Invalid input for field/attribute session_persistence. Value: '{v}'. {why}"
        ))
    };
    let t = o
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("'type' is mandatory.".into()))?;
    let kind = PersistenceType::parse(t).ok_or_else(|| {
        bad(format!(
            "'type' must be one of SOURCE_IP, HTTP_COOKIE, APP_COOKIE, not '{t}'."
        ))
    })?;
    let validation = |d: &str| ApiError::bad_request(format!("Validation failure: {d}"));
    if kind != PersistenceType::SourceIp && protocol != LbProtocol::Http {
        return Err(validation(&format!(
            "Session persistence of type {t} is not supported for {} protocol pools (cookies need an HTTP pool).",
            protocol.as_str()
        )));
    }
    let cookie = match o.get("cookie_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if !c.is_empty() => Some(c.clone()),
        Some(Value::String(_)) => None,
        Some(_) => return Err(bad("cookie_name must be a string.".into())),
    };
    if let Some(c) = &cookie {
        if kind != PersistenceType::AppCookie {
            return Err(validation(
                "Field \"cookie_name\" can only be specified with session persistence of type \"APP_COOKIE\".",
            ));
        }
        if !l7check::cookie_name(c) {
            return Err(validation("Supplied \"cookie_name\" is invalid."));
        }
    }
    if kind == PersistenceType::AppCookie && cookie.is_none() {
        return Err(validation(
            "Field \"cookie_name\" must be specified when using the \"APP_COOKIE\" session persistence type.",
        ));
    }
    if kind != PersistenceType::SourceIp
        && ["persistence_timeout", "persistence_granularity"]
            .iter()
            .any(|k| o.get(*k).is_some_and(|v| !v.is_null()))
    {
        return Err(validation(
            "persistence_timeout and persistence_granularity is only for UDP and SCTP protocol pools.",
        ));
    }
    let timeout = match o.get("persistence_timeout") {
        None | Some(Value::Null) => DEFAULT_PERSISTENCE_TIMEOUT,
        Some(t) => match t.as_u64() {
            Some(n) if n <= MAX_PERSISTENCE_TIMEOUT => n as u32,
            _ => {
                return Err(bad(format!(
                "persistence_timeout must be an integer 0..={MAX_PERSISTENCE_TIMEOUT} (seconds)."
            )))
            }
        },
    };
    let granularity = match o.get("persistence_granularity") {
        None | Some(Value::Null) => None,
        Some(Value::String(g)) => {
            let mask: Ipv4Addr = g
                .parse()
                .map_err(|_| bad(format!("persistence_granularity '{g}' is not a netmask.")))?;
            let m = u32::from(mask);
            if m.leading_ones() + m.trailing_zeros() != 32 {
                return Err(bad(format!(
                    "persistence_granularity '{g}' is not a netmask."
                )));
            }
            Some(g.clone())
        }
        Some(_) => return Err(bad("persistence_granularity must be a string.".into())),
    };
    Ok(Some(SessionPersistence {
        kind,
        persistence_timeout: timeout,
        persistence_granularity: granularity,
        cookie_name: cookie,
    }))
}

/// Pool attributes of TLS to members: accepted when off/empty.
fn reject_tls(a: &mut Attrs<'_>) -> Result<(), ApiError> {
    for k in [
        "tls_enabled",
        "tls_container_ref",
        "ca_tls_container_ref",
        "crl_container_ref",
        "tls_ciphers",
        "tls_versions",
        "alpn_protocols",
    ] {
        match a.raw(k) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::Array(v)) if v.is_empty() => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for field/attribute {k}. Value: '{v}'. TLS to members is not supported yet."
                )))
            }
        }
    }
    Ok(())
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<Pool> {
    require_write(auth)?;
    let mut a = Attrs::from_body(body, "pool")?;
    let lb_in = a.nullable_string("loadbalancer_id", 36)?.flatten();
    let listener_in = a.nullable_string("listener_id", 36)?.flatten();
    let protocol = protocol_attr(&mut a, true)?.ok_or_else(|| mandatory("protocol"))?;
    let algorithm = wire(
        &mut a,
        "lb_algorithm",
        LbAlgorithm::ALL,
        LbAlgorithm::as_str,
    )?
    .ok_or_else(|| mandatory("lb_algorithm"))?;
    let persistence = match a.raw("session_persistence") {
        None => None,
        Some(v) => parse_persistence(protocol, v)?,
    };
    let name = a.nullable_string("name", 255)?.flatten();
    let description = a.nullable_string("description", 255)?.flatten();
    let admin_state_up = a.boolean("admin_state_up")?.unwrap_or(true);
    reject_tls(&mut a)?;
    let l = listener_in
        .as_deref()
        .map(|id| listener(state, auth, id))
        .transpose()?;
    let lb_id = match (&lb_in, l) {
        (Some(lb), Some(l)) if *lb != l.loadbalancer_id => {
            return Err(ApiError::bad_request(format!(
                "Listener {} is not on load balancer {lb}.",
                l.meta.id
            )))
        }
        (Some(lb), _) => lb.clone(),
        (None, Some(l)) => l.loadbalancer_id.clone(),
        (None, None) => {
            return Err(ApiError::bad_request(
                "Validation failure: loadbalancer_id or listener_id must be specified.",
            ))
        }
    };
    let lb = load_balancer(state, auth, &lb_id)?;
    let project = child_owner(&mut a, lb)?;
    a.finish()?;
    check_mutable(lb)?;
    if let Some(l) = l {
        if !l7check::pool_protocol_allowed(l.protocol, protocol) {
            return Err(l7check::protocol_mismatch(protocol, l.protocol));
        }
        if let Some(p) = &l.default_pool_id {
            return Err(ApiError::conflict(
                "DuplicatePoolEntry",
                format!("Listener {} already has default pool {p}.", l.meta.id),
            ));
        }
    }
    quotas::check(state, &project, Kind::Pool, 1)?;
    let p = Pool {
        meta: new_meta(project, name, description),
        loadbalancer_id: lb_id.clone(),
        listener_id: l.map(|l| l.meta.id.clone()),
        protocol,
        lb_algorithm: algorithm,
        session_persistence: persistence,
        admin_state_up,
        provisioning_status: ProvisioningStatus::PendingCreate,
    };
    let mut changes = vec![Change::Put(Object::Pool(p.clone()))];
    if let Some(l) = l {
        let mut l = l.clone();
        l.default_pool_id = Some(p.meta.id.clone());
        touch(&mut l.meta);
        if l.provisioning_status != ProvisioningStatus::PendingCreate {
            l.provisioning_status = ProvisioningStatus::PendingUpdate;
        }
        changes.push(Change::Put(Object::Listener(l)));
    }
    changes.extend(parent_pending(state, &lb_id));
    tracing::info!(pool = %p.meta.id, loadbalancer = %lb_id, listener = ?p.listener_id, "pool created");
    Ok((changes, p))
}

pub fn update(state: &State, auth: &Auth, id: &str, body: &Value) -> Made<Pool> {
    let mut p = writable(state, auth, || pool(state, auth, id))?;
    let specific = [
        "loadbalancer_id",
        "listener_id",
        "loadbalancers",
        "listeners",
        "members",
        "healthmonitor_id",
        "protocol",
    ];
    update_attrs(body, "pool", &read_only(&specific), |a| {
        a.rename_nullable(&mut p.meta, true)?;
        if let Some(v) = a.boolean("admin_state_up")? {
            p.admin_state_up = v;
        }
        if let Some(v) = wire(a, "lb_algorithm", LbAlgorithm::ALL, LbAlgorithm::as_str)? {
            p.lb_algorithm = v;
        }
        if let Some(v) = a.raw("session_persistence") {
            p.session_persistence = parse_persistence(p.protocol, v)?;
        }
        reject_tls(a)
    })?;
    updated(state, p, vec![])
}

/// The changes that remove a pool with its members and monitor, and free
/// its listener.
pub fn removal(state: &State, p: &Pool) -> Vec<Change> {
    let mut changes: Vec<Change> = pool_members(state, &p.meta.id)
        .map(|m| Change::Delete(Kind::Member, m.meta.id.clone()))
        .collect();
    if let Some(hm) = pool_monitor(state, &p.meta.id) {
        changes.push(Change::Delete(Kind::HealthMonitor, hm.meta.id.clone()));
    }
    if let Some(l) = p
        .listener_id
        .as_deref()
        .and_then(|l| state.listeners.get(l))
    {
        let mut l = l.clone();
        l.default_pool_id = None;
        pending_update(&mut l);
        changes.push(l.put());
    }
    changes.push(Change::Delete(Kind::Pool, p.meta.id.clone()));
    changes
}

pub fn delete(state: &State, auth: &Auth, id: &str) -> Made<()> {
    require_write(auth)?;
    let p = pool(state, auth, id)?;
    check_mutable(p.load_balancer(state, auth)?)?;
    if let Some(policy) = l7policies::redirecting_to(state, id) {
        return Err(ApiError::conflict(
            "PoolInUseByL7Policy",
            format!("Pool {id} is in use by L7 policy {}", policy.meta.id),
        ));
    }
    let mut changes = removal(state, p);
    changes.extend(parent_pending(state, &p.loadbalancer_id));
    tracing::info!(pool = id, "pool deleted");
    Ok((changes, ()))
}

pub fn render_persistence(sp: &Option<SessionPersistence>) -> Value {
    match sp {
        None => Value::Null,
        // The cookie types have no timeout or granularity (Octavia: null).
        Some(s) if s.kind != PersistenceType::SourceIp => json!({
            "type": s.kind.as_str(), "cookie_name": s.cookie_name,
            "persistence_timeout": null, "persistence_granularity": null,
        }),
        Some(s) => json!({
            "type": s.kind.as_str(), "cookie_name": s.cookie_name,
            "persistence_timeout": s.persistence_timeout,
            "persistence_granularity": s.persistence_granularity,
        }),
    }
}

pub fn render(state: &State, health: &LbHealth, p: &Pool) -> Map<String, Value> {
    let mut o = render_base(p, p.admin_state_up, health.pool_status(state, p));
    o.insert("protocol".into(), p.protocol.as_str().into());
    o.insert("lb_algorithm".into(), p.lb_algorithm.as_str().into());
    o.insert(
        "session_persistence".into(),
        render_persistence(&p.session_persistence),
    );
    o.insert(
        "loadbalancers".into(),
        id_refs([p.loadbalancer_id.as_str()]),
    );
    o.insert("listeners".into(), id_refs(p.listener_id.as_deref()));
    o.insert(
        "members".into(),
        id_refs(pool_members(state, &p.meta.id).map(|m| m.meta.id.as_str())),
    );
    o.insert(
        "healthmonitor_id".into(),
        json!(pool_monitor(state, &p.meta.id).map(|m| m.meta.id.clone())),
    );
    o.insert("tls_enabled".into(), false.into());
    o.insert("tls_container_ref".into(), Value::Null);
    o.insert("ca_tls_container_ref".into(), Value::Null);
    o.insert("crl_container_ref".into(), Value::Null);
    o.insert("tls_ciphers".into(), Value::Null);
    o.insert("tls_versions".into(), Value::Null);
    o.insert("alpn_protocols".into(), Value::Null);
    o
}
