//! Health monitors: how the agents check a pool's members (one monitor
//! per pool). `PING`, `TCP` and `HTTP` for TCP pools; `UDP-CONNECT`, `TCP`
//! and `HTTP` for UDP pools; `PING`, `TCP`, `HTTP` and `HTTPS` for HTTP
//! and HTTPS pools (Octavia's combinations; `TLS-HELLO` and `SCTP` are
//! refused). The HTTP attributes (`http_method`, `url_path`,
//! `expected_codes`, `http_version` 1.0 or 1.1, `domain_name` with 1.1)
//! belong to HTTP and HTTPS monitors only.

use serde_json::{json, Map, Value};

use super::{
    check_mutable, child_owner, created, health_monitor, id_refs, load_balancer, mandatory,
    parent_pending, pool, pool_monitor, quotas, read_only, render_base, updated, wire, writable,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{Change, HealthMonitor, Kind, LbProtocol, MonitorType, ProvisioningStatus},
    network::{new_meta, require_write, update_attrs, Attrs, Made},
    state::State,
};

/// Longest delay and timeout, s (a day).
pub const MAX_DELAY: i64 = 86_400;
pub const DEFAULT_MAX_RETRIES_DOWN: u8 = 3;
pub const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH",
];

/// Attributes a health monitor renders besides `network::STANDARD_ATTRS` (what
/// filters and sort keys may name).
pub const ATTRS: &[&str] = &[
    "admin_state_up",
    "provisioning_status",
    "operating_status",
    "type",
    "delay",
    "timeout",
    "max_retries",
    "max_retries_down",
    "http_method",
    "url_path",
    "expected_codes",
    "pools",
    "http_version",
    "domain_name",
];

/// A monitor's own operating status: ONLINE when it runs, OFFLINE when it
/// is administratively down.
pub fn operating_status(m: &HealthMonitor) -> &'static str {
    if m.admin_state_up {
        "ONLINE"
    } else {
        "OFFLINE"
    }
}

fn bad(key: &str, v: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Invalid input for field/attribute {key}. Value: '{v}'. {why}"
    ))
}

/// `expected_codes`: `200`, `200,202` or `200-204`, codes 100..=599.
pub fn check_expected_codes(v: &str) -> Result<(), ApiError> {
    let code = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c) && s.len() == 3)
    };
    let ok = if let Some((a, b)) = v.split_once('-') {
        matches!((code(a), code(b)), (Some(a), Some(b)) if a <= b)
    } else {
        !v.is_empty() && v.split(',').all(|c| code(c).is_some())
    };
    if ok {
        Ok(())
    } else {
        Err(bad(
            "expected_codes",
            v,
            "Value should be a status code (100-599), a comma-separated list of them (200,202) or a range (200-204).",
        ))
    }
}

fn check_url_path(v: &str) -> Result<(), ApiError> {
    if v.starts_with('/') && !v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Ok(())
    } else {
        Err(bad(
            "url_path",
            v,
            "Value should be a URL path starting with '/'.",
        ))
    }
}

/// The HTTP attributes of `a` applied to `m` (400 for a non-HTTP monitor).
fn http_attrs(a: &mut Attrs<'_>, m: &mut HealthMonitor) -> Result<(), ApiError> {
    let method = a.nullable_string("http_method", 16)?.flatten();
    let path = a.nullable_string("url_path", 255)?.flatten();
    let codes = a.nullable_string("expected_codes", 64)?.flatten();
    let version = match a.raw("http_version") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => match v.as_f64() {
            Some(1.0) => Some(Some("1.0".to_owned())),
            Some(1.1) => Some(Some("1.1".to_owned())),
            _ => {
                return Err(bad(
                    "http_version",
                    &v.to_string(),
                    "Value should be one of: 1.0, 1.1",
                ))
            }
        },
    };
    let domain = a.nullable_string("domain_name", 255)?;
    if let Some(Some(d)) = &domain {
        if !super::l7check::domain_name(d) {
            return Err(bad(
                "domain_name",
                d,
                "Value should match the pattern ^(?=.{1,253}\\.?$)(?:(?!-|[^.]+_)[A-Za-z0-9-_]{1,63}(?<!-)(?:\\.|$))+$",
            ));
        }
    }
    let http = matches!(m.kind, MonitorType::Http | MonitorType::Https);
    if !http
        && (method.is_some()
            || path.is_some()
            || codes.is_some()
            || matches!(version, Some(Some(_)))
            || matches!(domain, Some(Some(_))))
    {
        return Err(ApiError::bad_request(format!(
            "http_method, url_path, expected_codes, http_version and domain_name are for HTTP and HTTPS health monitors, not {}.",
            m.kind.as_str()
        )));
    }
    if let Some(v) = version {
        m.http_version = v;
    }
    if let Some(d) = domain {
        m.domain_name = d;
    }
    if m.domain_name.is_some() && m.http_version.is_none() {
        return Err(ApiError::bad_request(
            "Validation failure: 'http_version' must be specified when 'domain_name' is provided.",
        ));
    }
    if m.domain_name.is_some() && m.http_version.as_deref() == Some("1.0") {
        return Err(ApiError::bad_request(
            "http_version 1.0 is not a valid option for health monitors HTTP 1.1 domain name health check",
        ));
    }
    if let Some(v) = method {
        if !HTTP_METHODS.contains(&v.as_str()) {
            return Err(bad(
                "http_method",
                &v,
                &format!("Value should be one of: {}.", HTTP_METHODS.join(", ")),
            ));
        }
        m.http_method = v;
    }
    if let Some(v) = path {
        check_url_path(&v)?;
        m.url_path = v;
    }
    if let Some(v) = codes {
        check_expected_codes(&v)?;
        m.expected_codes = v;
    }
    Ok(())
}

/// Delay, timeout and retries of `a` applied to `m`; the timeout may not
/// exceed the delay.
fn timing(a: &mut Attrs<'_>, m: &mut HealthMonitor) -> Result<(), ApiError> {
    if let Some(v) = a.integer("delay", 1, MAX_DELAY)? {
        m.delay = v as u32;
    }
    if let Some(v) = a.integer("timeout", 1, MAX_DELAY)? {
        m.timeout = v as u32;
    }
    if let Some(v) = a.integer("max_retries", 1, 10)? {
        m.max_retries = v as u8;
    }
    if let Some(v) = a.integer("max_retries_down", 1, 10)? {
        m.max_retries_down = v as u8;
    }
    if m.timeout > m.delay {
        return Err(ApiError::bad_request(format!(
            "Validation failure: The request delay value {} should be larger than the request timeout value {}.",
            m.delay, m.timeout
        )));
    }
    Ok(())
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<HealthMonitor> {
    require_write(auth)?;
    let mut a = Attrs::from_body(body, "healthmonitor")?;
    let pool_id = a
        .string("pool_id", 36)?
        .ok_or_else(|| mandatory("pool_id"))?;
    let kind = wire(&mut a, "type", MonitorType::ALL, MonitorType::as_str)?
        .ok_or_else(|| mandatory("type"))?;
    for k in ["delay", "timeout", "max_retries"] {
        if !a.has(k) {
            return Err(mandatory(k));
        }
    }
    let name = a.nullable_string("name", 255)?.flatten();
    let admin_state_up = a.boolean("admin_state_up")?.unwrap_or(true);
    let p = pool(state, auth, &pool_id)?;
    let lb = load_balancer(state, auth, &p.loadbalancer_id)?;
    let project = child_owner(&mut a, lb)?;
    let mut m = HealthMonitor {
        meta: new_meta(project.clone(), name, None),
        pool_id: pool_id.clone(),
        kind,
        delay: 0,
        timeout: 0,
        max_retries: 0,
        max_retries_down: DEFAULT_MAX_RETRIES_DOWN,
        http_method: "GET".into(),
        url_path: "/".into(),
        expected_codes: "200".into(),
        http_version: None,
        domain_name: None,
        admin_state_up,
        provisioning_status: ProvisioningStatus::PendingCreate,
    };
    timing(&mut a, &mut m)?;
    http_attrs(&mut a, &mut m)?;
    a.finish()?;
    let allowed: &[MonitorType] = match p.protocol {
        LbProtocol::Udp => &[MonitorType::UdpConnect, MonitorType::Tcp, MonitorType::Http],
        LbProtocol::Http | LbProtocol::Https => &[
            MonitorType::Ping,
            MonitorType::Tcp,
            MonitorType::Http,
            MonitorType::Https,
        ],
        _ => &[MonitorType::Ping, MonitorType::Tcp, MonitorType::Http],
    };
    if matches!(kind, MonitorType::TlsHello | MonitorType::Sctp) {
        return Err(bad(
            "type",
            kind.as_str(),
            "It is not supported yet (PING, TCP, UDP-CONNECT, HTTP, HTTPS are).",
        ));
    }
    if !allowed.contains(&kind) {
        let names: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
        return Err(ApiError::bad_request(format!(
            "Validation failure: The associated pool protocol is {}, so only a {} health monitor is supported.",
            p.protocol.as_str(),
            names.join(", ")
        )));
    }
    check_mutable(lb)?;
    if let Some(other) = pool_monitor(state, &pool_id) {
        return Err(ApiError::conflict(
            "DuplicateHealthMonitor",
            format!(
                "This pool already has a health monitor ({}).",
                other.meta.id
            ),
        ));
    }
    quotas::check(state, &project, Kind::HealthMonitor, 1)?;
    tracing::info!(healthmonitor = %m.meta.id, pool = %pool_id, kind = kind.as_str(), "health monitor created");
    created(state, m, vec![])
}

pub fn update(state: &State, auth: &Auth, id: &str, body: &Value) -> Made<HealthMonitor> {
    let mut m = writable(state, auth, || health_monitor(state, auth, id))?;
    let specific = ["pool_id", "pools", "type"];
    update_attrs(body, "healthmonitor", &read_only(&specific), |a| {
        a.rename_nullable(&mut m.meta, false)?;
        if let Some(v) = a.boolean("admin_state_up")? {
            m.admin_state_up = v;
        }
        timing(a, &mut m)?;
        http_attrs(a, &mut m)
    })?;
    updated(state, m, vec![])
}

pub fn delete(state: &State, auth: &Auth, id: &str) -> Made<()> {
    require_write(auth)?;
    let m = health_monitor(state, auth, id)?;
    let lb_id = state
        .pools
        .get(&m.pool_id)
        .map(|p| p.loadbalancer_id.clone())
        .unwrap_or_default();
    if let Some(lb) = state.load_balancers.get(&lb_id) {
        check_mutable(lb)?;
    }
    let mut changes = vec![Change::Delete(Kind::HealthMonitor, id.to_owned())];
    changes.extend(parent_pending(state, &lb_id));
    tracing::info!(healthmonitor = id, "health monitor deleted");
    Ok((changes, ()))
}

pub fn render(m: &HealthMonitor) -> Map<String, Value> {
    let mut o = render_base(m, m.admin_state_up, operating_status(m));
    o.remove("description");
    o.insert("type".into(), m.kind.as_str().into());
    o.insert("delay".into(), m.delay.into());
    o.insert("timeout".into(), m.timeout.into());
    o.insert("max_retries".into(), m.max_retries.into());
    o.insert("max_retries_down".into(), m.max_retries_down.into());
    let http = matches!(m.kind, MonitorType::Http | MonitorType::Https);
    let s = |v: &str| if http { json!(v) } else { Value::Null };
    o.insert("http_method".into(), s(&m.http_method));
    o.insert("url_path".into(), s(&m.url_path));
    o.insert("expected_codes".into(), s(&m.expected_codes));
    o.insert(
        "http_version".into(),
        json!(m
            .http_version
            .as_deref()
            .and_then(|v| v.parse::<f64>().ok())),
    );
    o.insert("domain_name".into(), json!(m.domain_name));
    o.insert("pools".into(), id_refs([m.pool_id.as_str()]));
    o
}
