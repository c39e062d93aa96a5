//! The instance's configuration as the proxy uses it: [`L7Config`]
//! validated and compiled once per load (regexes, CIDRs, socket
//! addresses, TLS server configs, Maglev tables), and the policy match of
//! a request. Pure: never does I/O beyond parsing what it is given.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::HeaderMap;
use strato_proto::l7::{L7Config, L7Listener, L7Pool, L7Rule};

use crate::balance::{Algorithm, PoolConfig};
use crate::error::invalid;
pub use crate::error::ConfigError;
use crate::tls;

/// Which protocol a listener speaks to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerProtocol {
    Http,
    TerminatedHttps,
}

/// A listener ready to serve.
pub struct ListenerConfig {
    pub id: String,
    pub protocol: ListenerProtocol,
    pub bind: SocketAddr,
    /// `None`: unlimited.
    pub connection_limit: Option<u64>,
    /// `None` (0 in the configuration): no timeout.
    pub client_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub member_timeout: Option<Duration>,
    pub insert_headers: strato_proto::l7::InsertHeaders,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub default_pool: Option<String>,
    pub policies: Vec<Policy>,
    pub allowed: Vec<Cidr>,
}

impl ListenerConfig {
    /// Whether a client may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allowed.is_empty() || self.allowed.iter().any(|c| c.contains(ip))
    }

    /// What to do with a request: the first policy whose rules all match,
    /// else the default pool, else 503.
    pub fn route(&self, req: &RequestView<'_>) -> Route<'_> {
        for p in &self.policies {
            if p.rules.iter().all(|r| r.matches(req)) {
                return Route {
                    policy: Some(&p.id),
                    action: match &p.action {
                        Action::Pool(id) => Decision::Pool(id),
                        Action::Reject => Decision::Reject,
                        Action::RedirectUrl { url, code } => Decision::Redirect {
                            location: url.clone(),
                            code: *code,
                        },
                        Action::RedirectPrefix { prefix, code } => Decision::Redirect {
                            location: format!("{prefix}{}", req.path_and_query),
                            code: *code,
                        },
                    },
                };
            }
        }
        Route {
            policy: None,
            action: match &self.default_pool {
                Some(id) => Decision::Pool(id),
                None => Decision::NoPool,
            },
        }
    }
}

/// The result of [`ListenerConfig::route`].
#[derive(Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub policy: Option<&'a str>,
    pub action: Decision<'a>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    Pool(&'a str),
    Reject,
    Redirect { location: String, code: u16 },
    NoPool,
}

/// What the policy match sees of a request.
pub struct RequestView<'a> {
    /// Lower case, port removed.
    pub host: String,
    /// No query.
    pub path: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
}

impl<'a> RequestView<'a> {
    pub fn new(uri: &'a hyper::Uri, headers: &'a HeaderMap) -> RequestView<'a> {
        let host = headers
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        RequestView {
            host: strip_port(host).to_ascii_lowercase(),
            path: uri.path(),
            path_and_query: uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            headers,
        }
    }
}

/// `host:port`, `[v6]:port`, `host` -> the host.
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

pub struct Policy {
    pub id: String,
    pub action: Action,
    pub rules: Vec<Rule>,
}

pub enum Action {
    Reject,
    RedirectUrl { url: String, code: u16 },
    RedirectPrefix { prefix: String, code: u16 },
    Pool(String),
}

pub struct Rule {
    pub subject: Subject,
    pub compare: Compare,
    pub invert: bool,
}

pub enum Subject {
    Host,
    Path,
    FileType,
    Header(hyper::header::HeaderName),
    Cookie(String),
}

pub enum Compare {
    Regex(regex_lite::Regex),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    EqualTo(String),
}

impl Compare {
    fn matches(&self, s: &str) -> bool {
        match self {
            Compare::Regex(r) => r.is_match(s),
            Compare::StartsWith(v) => s.starts_with(v.as_str()),
            Compare::EndsWith(v) => s.ends_with(v.as_str()),
            Compare::Contains(v) => s.contains(v.as_str()),
            Compare::EqualTo(v) => s == v,
        }
    }
}

impl Rule {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        let subject: Option<std::borrow::Cow<'_, str>> = match &self.subject {
            Subject::Host => Some(req.host.as_str().into()),
            Subject::Path => Some(req.path.into()),
            Subject::FileType => Some(file_type(req.path).into()),
            Subject::Header(name) => req
                .headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes())),
            Subject::Cookie(name) => cookie(req.headers, name).map(Into::into),
        };
        let hit = subject.is_some_and(|s| self.compare.matches(&s));
        hit != self.invert
    }
}

/// The extension of a path's last segment (after its last `.`), or "".
pub fn file_type(path: &str) -> &str {
    let last = path.rsplit('/').next().unwrap_or("");
    match last.rsplit_once('.') {
        Some((_, ext)) => ext,
        None => "",
    }
}

/// An IPv4 or IPv6 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l.trim().parse::<u8>().ok().filter(|l| *l <= max)?,
            None => max,
        };
        Some(Cidr { addr, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.len as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.len as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// A loaded configuration.
#[derive(Default)]
pub struct Compiled {
    pub instance_id: String,
    pub listeners: BTreeMap<String, Arc<ListenerConfig>>,
    pub pools: BTreeMap<String, Arc<PoolConfig>>,
}

impl Compiled {
    /// Reads and compiles `path`.
    pub fn load(path: &std::path::Path) -> Result<Compiled, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let raw: L7Config = serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        Compiled::compile(&raw)
    }

    /// Validates and compiles a configuration.
    pub fn compile(raw: &L7Config) -> Result<Compiled, ConfigError> {
        let address: IpAddr = raw
            .address
            .parse()
            .map_err(|_| invalid("address", format!("{:?} is not an IP address", raw.address)))?;
        let mut pools = BTreeMap::new();
        for (i, p) in raw.pools.iter().enumerate() {
            let pool = compile_pool(p, &format!("pools[{i}]"))?;
            if pools.insert(p.id.clone(), Arc::new(pool)).is_some() {
                return Err(invalid(format!("pools[{i}].id"), format!("{} twice", p.id)));
            }
        }
        let mut listeners = BTreeMap::new();
        let mut ports = BTreeSet::new();
        for (i, l) in raw.listeners.iter().enumerate() {
            let field = format!("listeners[{i}]");
            let listener = compile_listener(l, address, &pools, &field)?;
            if !ports.insert(l.protocol_port) {
                return Err(invalid(
                    format!("{field}.protocol_port"),
                    format!("{} used twice", l.protocol_port),
                ));
            }
            if listeners.insert(l.id.clone(), Arc::new(listener)).is_some() {
                return Err(invalid(format!("{field}.id"), format!("{} twice", l.id)));
            }
        }
        Ok(Compiled {
            instance_id: raw.instance_id.clone(),
            listeners,
            pools,
        })
    }
}

fn ms(v: u32) -> Option<Duration> {
    (v > 0).then(|| Duration::from_millis(v.into()))
}

fn compile_listener(
    l: &L7Listener,
    address: IpAddr,
    pools: &BTreeMap<String, Arc<PoolConfig>>,
    field: &str,
) -> Result<ListenerConfig, ConfigError> {
    if l.id.is_empty() {
        return Err(invalid(format!("{field}.id"), "empty"));
    }
    let protocol = match l.protocol.as_str() {
        "HTTP" => ListenerProtocol::Http,
        "TERMINATED_HTTPS" => ListenerProtocol::TerminatedHttps,
        other => {
            return Err(invalid(
                format!("{field}.protocol"),
                format!("{other:?} is not HTTP or TERMINATED_HTTPS"),
            ))
        }
    };
    if l.protocol_port == 0 {
        return Err(invalid(format!("{field}.protocol_port"), "0"));
    }
    let connection_limit = match l.connection_limit {
        -1 => None,
        n if n >= 0 => Some(n as u64),
        n => {
            return Err(invalid(
                format!("{field}.connection_limit"),
                format!("{n} (-1 or >= 0)"),
            ))
        }
    };
    let tls = match (protocol, &l.tls) {
        (ListenerProtocol::TerminatedHttps, Some(t)) => {
            Some(tls::server_config(t, &format!("{field}.tls"))?)
        }
        (ListenerProtocol::TerminatedHttps, None) => {
            return Err(invalid(
                format!("{field}.tls"),
                "missing on a TERMINATED_HTTPS listener",
            ))
        }
        (ListenerProtocol::Http, Some(_)) => {
            return Err(invalid(format!("{field}.tls"), "set on an HTTP listener"))
        }
        (ListenerProtocol::Http, None) => None,
    };
    let known_pool = |id: &str, f: String| -> Result<String, ConfigError> {
        if pools.contains_key(id) {
            Ok(id.to_string())
        } else {
            Err(invalid(f, format!("no pool {id:?}")))
        }
    };
    let default_pool = match &l.default_pool_id {
        Some(id) => Some(known_pool(id, format!("{field}.default_pool_id"))?),
        None => None,
    };
    let mut sorted: Vec<_> = l.policies.iter().enumerate().collect();
    sorted.sort_by_key(|(_, p)| p.position);
    let mut policies = Vec::new();
    for (i, p) in sorted {
        let pf = format!("{field}.policies[{i}]");
        let code = match p.redirect_http_code {
            None => 302,
            Some(c @ (301 | 302 | 303 | 307 | 308)) => c,
            Some(c) => {
                return Err(invalid(
                    format!("{pf}.redirect_http_code"),
                    format!("{c} (301, 302, 303, 307 or 308)"),
                ))
            }
        };
        let need = |v: &Option<String>, name: &str| -> Result<String, ConfigError> {
            v.clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(format!("{pf}.{name}"), format!("missing for {}", p.action)))
        };
        let action = match p.action.as_str() {
            "REJECT" => Action::Reject,
            "REDIRECT_TO_URL" => Action::RedirectUrl {
                url: valid_location(need(&p.redirect_url, "redirect_url")?, &pf)?,
                code,
            },
            "REDIRECT_PREFIX" => Action::RedirectPrefix {
                prefix: valid_location(need(&p.redirect_prefix, "redirect_prefix")?, &pf)?
                    .trim_end_matches('/')
                    .to_string(),
                code,
            },
            "REDIRECT_TO_POOL" => Action::Pool(known_pool(
                &need(&p.redirect_pool_id, "redirect_pool_id")?,
                format!("{pf}.redirect_pool_id"),
            )?),
            other => {
                return Err(invalid(
                    format!("{pf}.action"),
                    format!("{other:?} unknown"),
                ))
            }
        };
        let rules = p
            .rules
            .iter()
            .enumerate()
            .map(|(j, r)| compile_rule(r, &format!("{pf}.rules[{j}]")))
            .collect::<Result<_, _>>()?;
        policies.push(Policy {
            id: p.id.clone(),
            action,
            rules,
        });
    }
    let allowed = l
        .allowed_cidrs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Cidr::parse(c).ok_or_else(|| {
                invalid(
                    format!("{field}.allowed_cidrs[{i}]"),
                    format!("{c:?} is not a CIDR"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(ListenerConfig {
        id: l.id.clone(),
        protocol,
        bind: SocketAddr::new(address, l.protocol_port),
        connection_limit,
        client_timeout: ms(l.timeout_client_data_ms),
        connect_timeout: ms(l.timeout_member_connect_ms),
        member_timeout: ms(l.timeout_member_data_ms),
        insert_headers: l.insert_headers,
        tls,
        default_pool,
        policies,
        allowed,
    })
}

/// A redirect target must be a valid header value.
fn valid_location(s: String, field: &str) -> Result<String, ConfigError> {
    hyper::header::HeaderValue::from_str(&s)
        .map(|_| s.clone())
        .map_err(|_| invalid(field, format!("{s:?} is not a valid Location")))
}

fn compile_rule(r: &L7Rule, field: &str) -> Result<Rule, ConfigError> {
    let key = || {
        r.key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid(format!("{field}.key"), format!("missing for {}", r.kind)))
    };
    let subject = match r.kind.as_str() {
        "HOST_NAME" => Subject::Host,
        "PATH" => Subject::Path,
        "FILE_TYPE" => Subject::FileType,
        "HEADER" => {
            let k = key()?;
            Subject::Header(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                    invalid(
                        format!("{field}.key"),
                        format!("{k:?} is not a header name"),
                    )
                })?,
            )
        }
        "COOKIE" => Subject::Cookie(key()?),
        other => {
            return Err(invalid(
                format!("{field}.type"),
                format!("{other:?} unknown"),
            ))
        }
    };
    let value = if matches!(subject, Subject::Host) && r.compare_type != "REGEX" {
        r.value.to_ascii_lowercase()
    } else {
        r.value.clone()
    };
    let compare = match r.compare_type.as_str() {
        "REGEX" => Compare::Regex(
            regex_lite::Regex::new(&value)
                .map_err(|e| invalid(format!("{field}.value"), format!("bad regex: {e}")))?,
        ),
        "STARTS_WITH" => Compare::StartsWith(value),
        "ENDS_WITH" => Compare::EndsWith(value),
        "CONTAINS" => Compare::Contains(value),
        "EQUAL_TO" => Compare::EqualTo(value),
        other => {
            return Err(invalid(
                format!("{field}.compare_type"),
                format!("{other:?} unknown"),
            ))
        }
    };
    Ok(Rule {
        subject,
        compare,
        invert: r.invert,
    })
}

fn compile_pool(p: &L7Pool, field: &str) -> Result<PoolConfig, ConfigError> {
    if p.id.is_empty() {
        return Err(invalid(format!("{field}.id"), "empty"));
    }
    let algorithm = match p.lb_algorithm.as_str() {
        "ROUND_ROBIN" => Algorithm::RoundRobin,
        "LEAST_CONNECTIONS" => Algorithm::LeastConnections,
        "SOURCE_IP" => Algorithm::SourceIp,
        other => {
            return Err(invalid(
                format!("{field}.lb_algorithm"),
                format!("{other:?} unknown"),
            ))
        }
    };
    PoolConfig::new(p, algorithm, field)
}

#[cfg(test)]
mod tests;
