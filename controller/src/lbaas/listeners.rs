//! Listeners: a protocol and port on a load balancer's VIP, with its
//! default pool, connection limit, timeouts and connection draining
//! timeout. `TCP` and `UDP` are balanced by the L4 dataplane, and so is
//! `HTTPS` (TLS passed through to the members, balanced like TCP); `HTTP`
//! and `TERMINATED_HTTPS` by L7 proxy instances (`l7config`), with
//! Octavia's `insert_headers`, TLS certificates (references stored as
//! given, resolved when compiled: [`check_certificates`]), `tls_versions`,
//! `alpn_protocols`, `allowed_cidrs` and L7 policies. One listener per (load
//! balancer, L4 protocol, port): TCP and UDP may share a port number, TCP,
//! HTTP, HTTPS and TERMINATED_HTTPS may not.

use serde_json::{json, Map, Value};

use super::{
    check_mutable, child_owner, created, health::LbHealth, id_refs, l7check, l7policies, listener,
    load_balancer, mandatory, not_found, parent_pending, port_number, quotas, read_only,
    render_base, updated, wire, writable,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{
        Change, Kind, LbProtocol, Listener, ListenerL7, LoadBalancer, Pool, ProvisioningStatus,
    },
    network::{new_meta, require_write, touch, update_attrs, Attrs, Made},
    state::Resource as _,
    state::State,
};

use super::Provisioned as _;

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

/// Octavia's protocols Strato does not have: known, so the answer says
/// "not supported" rather than "unknown".
const UNSUPPORTED_PROTOCOLS: &[&str] = &["PROXY", "PROXYV2", "SCTP", "PROMETHEUS"];

/// A listener's (`pool: false`) or pool's `protocol` attribute: `TCP`,
/// `UDP`, `HTTP`, `HTTPS`, and for listeners `TERMINATED_HTTPS`; Octavia's
/// other protocols get a 400 saying they are not supported.
pub fn protocol_attr(a: &mut Attrs<'_>, pool: bool) -> Result<Option<LbProtocol>, ApiError> {
    let ours: &[LbProtocol] = if pool {
        &[
            LbProtocol::Tcp,
            LbProtocol::Udp,
            LbProtocol::Http,
            LbProtocol::Https,
        ]
    } else {
        LbProtocol::ALL
    };
    if let Some(Value::String(p)) = a.raw("protocol") {
        if UNSUPPORTED_PROTOCOLS.contains(&p.as_str()) {
            let names: Vec<&str> = ours.iter().map(|p| p.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute protocol. Value: '{p}'. Protocol {p} is not supported: Strato {} are {}.",
                if pool { "pools" } else { "listeners" },
                names.join(", ")
            )));
        }
    }
    wire(a, "protocol", ours, LbProtocol::as_str)
}

/// The transport a protocol's listeners take a port of: listeners of one
/// load balancer may not share a port on the same one.
fn l4(p: LbProtocol) -> &'static str {
    match p {
        LbProtocol::Udp => "UDP",
        _ => "TCP",
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
    if !l7check::pool_protocol_allowed(l.protocol, p.protocol) {
        return Err(l7check::protocol_mismatch(p.protocol, l.protocol));
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

/// Octavia's `SUPPORTED_HTTP_HEADERS`: the headers Strato inserts.
pub const HTTP_HEADERS: &[&str] = &["X-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Proto"];
/// Octavia's `SUPPORTED_SSL_HEADERS` (client certificates): known, refused.
pub const SSL_HEADERS: &[&str] = &[
    "X-SSL-Client-Verify",
    "X-SSL-Client-Has-Cert",
    "X-SSL-Client-DN",
    "X-SSL-Client-CN",
    "X-SSL-Issuer",
    "X-SSL-Client-SHA1",
    "X-SSL-Client-Not-Before",
    "X-SSL-Client-Not-After",
];
/// Octavia's `TLS_ALL_VERSIONS`, oldest first, and the oldest Strato
/// serves (rustls has TLS 1.2 and 1.3 only).
pub const TLS_VERSIONS: &[&str] = &["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];
pub const MIN_TLS_VERSION: &str = "TLSv1.2";
/// Octavia's defaults for new TERMINATED_HTTPS listeners.
pub const DEFAULT_TLS_VERSIONS: &[&str] = &["TLSv1.2", "TLSv1.3"];
pub const ALPN_PROTOCOLS: &[&str] = &["h2", "http/1.1", "http/1.0"];

/// Listener attributes Strato does not have (client certificates, cipher
/// strings, HSTS): accepted when empty (clients send them null), refused
/// otherwise.
const UNSUPPORTED_ATTRS: &[&str] = &[
    "client_ca_tls_container_ref",
    "client_authentication",
    "client_crl_container_ref",
    "tls_ciphers",
    "hsts_max_age",
    "hsts_include_subdomains",
    "hsts_preload",
];

fn reject_unsupported(a: &mut Attrs<'_>) -> Result<(), ApiError> {
    for k in UNSUPPORTED_ATTRS {
        match a.raw(k) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::String(s)) if *k == "client_authentication" && s == "NONE" => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for field/attribute {k}. Value: '{v}'. It is not supported: Strato listeners do not authenticate clients by certificate, choose no ciphers and send no HSTS header."
                )))
            }
        }
    }
    Ok(())
}

fn invalid(key: &str, v: &impl std::fmt::Display, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Invalid input for field/attribute {key}. Value: '{v}'. {why}"
    ))
}

fn validation(detail: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Validation failure: {detail}"))
}

/// The L7 attributes a request gave (`Some`: present; null is
/// `Some(None)` or an empty value).
#[derive(Default)]
struct GivenL7 {
    insert_headers: Option<std::collections::BTreeMap<String, String>>,
    default_tls_container_ref: Option<Option<String>>,
    sni_container_refs: Option<Vec<String>>,
    tls_versions: Option<Option<Vec<String>>>,
    alpn_protocols: Option<Option<Vec<String>>>,
    allowed_cidrs: Option<Vec<String>>,
}

impl GivenL7 {
    fn certificates(&self) -> bool {
        self.default_tls_container_ref
            .as_ref()
            .is_some_and(|r| r.is_some())
            || self
                .sni_container_refs
                .as_ref()
                .is_some_and(|v| !v.is_empty())
    }
}

fn string_list(a: &mut Attrs<'_>, key: &str, max: usize) -> Result<Option<Vec<String>>, ApiError> {
    if a.is_null(key) {
        a.raw(key);
        return Ok(Some(vec![]));
    }
    let Some(v) = a.strings(key)? else {
        return Ok(None);
    };
    if let Some(s) = v.iter().find(|s| s.chars().count() > max) {
        return Err(invalid(
            key,
            s,
            &format!("Value should have a maximum character requirement of {max}"),
        ));
    }
    Ok(Some(v))
}

/// Reads the L7 and TLS attributes (types only; [`check_l7`] judges them).
fn read_l7(a: &mut Attrs<'_>) -> Result<GivenL7, ApiError> {
    reject_unsupported(a)?;
    let mut g = GivenL7::default();
    match a.raw("insert_headers") {
        None => {}
        Some(Value::Null) => g.insert_headers = Some(Default::default()),
        Some(Value::Object(o)) => {
            let mut m = std::collections::BTreeMap::new();
            for (k, v) in o {
                match v {
                    Value::String(s) if s.chars().count() <= 255 => {
                        m.insert(k.clone(), s.clone());
                    }
                    _ => {
                        return Err(invalid(
                            "insert_headers",
                            &Value::Object(o.clone()),
                            "Value should be a dictionary of header names to strings (\"true\" or \"false\").",
                        ))
                    }
                }
            }
            g.insert_headers = Some(m);
        }
        Some(v) => {
            return Err(invalid(
                "insert_headers",
                v,
                "Value should be a dictionary of header names to strings (\"true\" or \"false\").",
            ))
        }
    }
    g.default_tls_container_ref = a.nullable_string("default_tls_container_ref", 255)?;
    g.sni_container_refs = string_list(a, "sni_container_refs", 255)?;
    for (key, slot) in [
        ("tls_versions", &mut g.tls_versions),
        ("alpn_protocols", &mut g.alpn_protocols),
    ] {
        if a.is_null(key) {
            a.raw(key);
            *slot = Some(None);
        } else if let Some(v) = string_list(a, key, 32)? {
            *slot = Some(Some(v));
        }
    }
    if let Some(Some(v)) = &g.alpn_protocols {
        if let Some(p) = v.iter().find(|p| !ALPN_PROTOCOLS.contains(&p.as_str())) {
            return Err(invalid(
                "alpn_protocols",
                p,
                &format!("Value should be one of: {}", ALPN_PROTOCOLS.join(", ")),
            ));
        }
    }
    g.allowed_cidrs = string_list(a, "allowed_cidrs", 64)?;
    for c in g.allowed_cidrs.iter().flatten() {
        if c.parse::<ipnetwork::IpNetwork>().is_err() {
            return Err(invalid(
                "allowed_cidrs",
                c,
                "Value should be IPv4 or IPv6 CIDR format",
            ));
        }
    }
    Ok(g)
}

fn python_list(v: &[&str]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", items.join(", "))
}

/// Octavia's listener validation of the L7 and TLS attributes, in its
/// order, applied to `l7` (the listener's current values on update).
fn check_l7(
    protocol: LbProtocol,
    lb: &LoadBalancer,
    g: GivenL7,
    l7: &mut ListenerL7,
) -> Result<(), ApiError> {
    let p = protocol.as_str();
    let http = matches!(protocol, LbProtocol::Http | LbProtocol::TerminatedHttps);
    let terminated = protocol == LbProtocol::TerminatedHttps;
    if let Some(h) = g.insert_headers.as_ref().filter(|h| !h.is_empty()) {
        if !http {
            return Err(ApiError::bad_request(format!(
                "insert-headers is not a valid option for a {p} protocol listener."
            )));
        }
        let keys: Vec<&str> = h.keys().map(String::as_str).collect();
        if keys
            .iter()
            .any(|k| !HTTP_HEADERS.contains(k) && !SSL_HEADERS.contains(k))
        {
            return Err(ApiError::bad_request(format!(
                "{} is not a valid option for insert_headers",
                python_list(&keys)
            )));
        }
        let ssl: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| SSL_HEADERS.contains(k))
            .collect();
        if !ssl.is_empty() {
            if !terminated {
                return Err(ApiError::bad_request(format!(
                    "{} is not a valid option for {p} protocol listener.",
                    python_list(&ssl)
                )));
            }
            return Err(ApiError::bad_request(format!(
                "insert_headers {} are not supported: Strato listeners do not authenticate clients by certificate (supported: {}).",
                ssl.join(", "),
                HTTP_HEADERS.join(", ")
            )));
        }
    }
    if protocol == LbProtocol::Udp
        && (g.certificates() || g.insert_headers.as_ref().is_some_and(|h| !h.is_empty()))
    {
        return Err(validation(format!(
            "{p} protocol listener does not support TLS."
        )));
    }
    if !terminated && g.certificates() {
        return Err(validation(format!(
            "Certificate container references are not allowed on {p} protocol listeners."
        )));
    }
    if let Some(h) = g.insert_headers {
        l7.insert_headers = h;
    }
    if let Some(r) = g.default_tls_container_ref {
        l7.default_tls_container_ref = r;
    }
    if let Some(r) = g.sni_container_refs {
        l7.sni_container_refs = r;
    }
    if terminated && l7.default_tls_container_ref.is_none() && l7.sni_container_refs.is_empty() {
        return Err(validation(format!(
            "An SNI or default certificate container reference must be provided for {p} protocol listeners."
        )));
    }
    if let Some(cidrs) = g.allowed_cidrs {
        if !http && !cidrs.is_empty() {
            return Err(validation(format!(
                "allowed_cidrs is not supported on {p} listeners: the L7 proxy enforces it, on HTTP and TERMINATED_HTTPS listeners only."
            )));
        }
        if let Some(c) = cidrs.iter().find(|c| c.contains(':')) {
            return Err(validation(format!(
                "CIDR {c} IP version incompatible with all VIPs ['{}'] IP version.",
                lb.vip_address
            )));
        }
        let mut cidrs = cidrs;
        cidrs.dedup();
        l7.allowed_cidrs = cidrs;
    }
    for (key, given) in [
        ("tls_versions", &g.tls_versions),
        ("alpn_protocols", &g.alpn_protocols),
    ] {
        if !terminated && matches!(given, Some(Some(v)) if !v.is_empty()) {
            return Err(validation(format!(
                "{key} is only for TERMINATED_HTTPS listeners, not {p}."
            )));
        }
    }
    if terminated {
        match g.tls_versions {
            Some(Some(v)) if v.is_empty() => return Err(validation(
                "Empty TLS version list. Either specify at least one TLS version or remove this parameter to use the default.",
            )),
            Some(Some(v)) => {
                let bad: Vec<&str> = v.iter().map(String::as_str).filter(|x| !TLS_VERSIONS.contains(x)).collect();
                if !bad.is_empty() {
                    return Err(validation(format!("Invalid TLS versions: {}", bad.join(", "))));
                }
                let min = TLS_VERSIONS.iter().position(|x| *x == MIN_TLS_VERSION).unwrap_or(0);
                let old: Vec<&str> = v
                    .iter()
                    .map(String::as_str)
                    .filter(|x| TLS_VERSIONS.iter().position(|y| y == x).unwrap_or(0) < min)
                    .collect();
                if !old.is_empty() {
                    return Err(validation(format!(
                        "Requested TLS versions are less than the minimum: {} < {MIN_TLS_VERSION}",
                        old.join(", ")
                    )));
                }
                l7.tls_versions = Some(v);
            }
            Some(None) => l7.tls_versions = None,
            None => {}
        }
        match g.alpn_protocols {
            Some(Some(v)) if v.is_empty() => return Err(validation(
                "Empty ALPN protocol list. Either specify at least one ALPN protocol or remove this parameter to use the default.",
            )),
            Some(v) => l7.alpn_protocols = v,
            None => {}
        }
        if l7.tls_versions.is_none() {
            l7.tls_versions = Some(DEFAULT_TLS_VERSIONS.iter().map(|s| s.to_string()).collect());
        }
        if l7.alpn_protocols.is_none() {
            l7.alpn_protocols = Some(ALPN_PROTOCOLS.iter().map(|s| s.to_string()).collect());
        }
    } else {
        l7.tls_versions = None;
        l7.alpn_protocols = None;
    }
    Ok(())
}

/// Where a listener's certificate references are checked, on create and
/// update (inside `Core::mutate`, after every other check passed).
///
/// It must: resolve `l7.default_tls_container_ref` and every
/// `l7.sni_container_refs` entry through the key manager (Barbican) as
/// `project` (the listener's project) sees it, and refuse the request if
/// one does not resolve (Octavia: 400 "Could not retrieve certificate:
/// <ref>") or holds no certificate with a matching private key. It must
/// not store anything: the references are stored as given, and resolved
/// again when the listener is compiled (`l7config::l7_config`'s `certs`).
pub fn check_certificates(state: &State, project: &str, l7: &ListenerL7) -> Result<(), ApiError> {
    for r in l7
        .default_tls_container_ref
        .iter()
        .chain(l7.sni_container_refs.iter())
    {
        crate::keymanager::certificate(state, project, r)?;
    }
    Ok(())
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<Listener> {
    require_write(auth)?;
    let mut a = Attrs::from_body(body, "listener")?;
    let lb_id = a
        .string("loadbalancer_id", 36)?
        .ok_or_else(|| mandatory("loadbalancer_id"))?;
    let protocol = protocol_attr(&mut a, false)?.ok_or_else(|| mandatory("protocol"))?;
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
        l7: ListenerL7::default(),
    };
    timeouts(&mut a, &mut l)?;
    let given = read_l7(&mut a)?;
    // Inline children (Octavia's single-call create): none here.
    for k in ["l7policies", "default_pool"] {
        match a.raw(k) {
            None | Some(Value::Null) => {}
            Some(Value::Array(v)) if v.is_empty() => {}
            Some(v) => return Err(invalid(
                k,
                v,
                "Creating children with their listener is not supported: create them one by one.",
            )),
        }
    }
    a.finish()?;
    check_l7(protocol, lb, given, &mut l.l7)?;
    check_mutable(lb)?;
    if let Some(o) = state.listeners.values().find(|o| {
        o.loadbalancer_id == lb_id && l4(o.protocol) == l4(protocol) && o.protocol_port == port
    }) {
        return Err(ApiError::conflict(
            "DuplicateListenerEntry",
            format!(
                "Another Listener on this Load Balancer is already using protocol {} and protocol_port {port}",
                o.protocol.as_str()
            ),
        ));
    }
    quotas::check(state, &project, Kind::Listener, 1)?;
    check_certificates(state, &project, &l.l7)?;
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
    let (pool, given) = update_attrs(body, "listener", &read_only(&specific), |a| {
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
        Ok((pool, read_l7(a)?))
    })?;
    let lb = l.load_balancer(state, auth)?;
    check_l7(l.protocol, lb, given, &mut l.l7)?;
    check_certificates(state, &l.meta.project_id, &l.l7)?;
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

/// Deletes a listener with its L7 policies and their rules; its default
/// pool stays (no longer a default), as do the pools its policies
/// redirected to.
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
    changes.extend(l7policies::removal_of_listener(state, id));
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
    o.insert(
        "default_tls_container_ref".into(),
        json!(l.l7.default_tls_container_ref),
    );
    o.insert("sni_container_refs".into(), json!(l.l7.sni_container_refs));
    o.insert(
        "l7policies".into(),
        id_refs(
            super::listener_policies(state, &l.meta.id)
                .into_iter()
                .map(|p| p.meta.id.as_str()),
        ),
    );
    o.insert("insert_headers".into(), json!(l.l7.insert_headers));
    o.insert(
        "allowed_cidrs".into(),
        if l.l7.allowed_cidrs.is_empty() {
            Value::Null
        } else {
            json!(l.l7.allowed_cidrs)
        },
    );
    o.insert("client_ca_tls_container_ref".into(), Value::Null);
    o.insert("client_authentication".into(), "NONE".into());
    o.insert("client_crl_container_ref".into(), Value::Null);
    o.insert("tls_ciphers".into(), Value::Null);
    o.insert("tls_versions".into(), json!(l.l7.tls_versions));
    o.insert("alpn_protocols".into(), json!(l.l7.alpn_protocols));
    o.insert("hsts_max_age".into(), Value::Null);
    o.insert("hsts_include_subdomains".into(), false.into());
    o.insert("hsts_preload".into(), false.into());
    o
}
