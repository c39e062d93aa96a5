//! Layer-7 load balancing: what one L7 instance (the `strato-l7` proxy,
//! `lb/proxy/`) runs and what it tells back.
//!
//! An L7 load balancer's HTTP and TERMINATED_HTTPS listeners are served by
//! instances: processes, each with a port of its own in the VIP's subnet,
//! which the L4 tier balances the VIP over (the instances are the L4
//! listener's members, so the client's address reaches them unchanged).
//! The controller compiles an [`L7Config`] per instance into the entries of
//! the host it runs on; that host's agent writes it as JSON to the
//! instance's state directory and sends the process `SIGHUP` to re-read it
//! (listeners come and go, pools and members change in place, a member
//! that leaves drains: no new request, requests in flight finish, its
//! keep-alive connections close after their current request). `SIGTERM`
//! drains the whole instance: it stops accepting, finishes what is in
//! flight (closing keep-alive connections after their current request)
//! and exits.
//!
//! The instance serves, on a Unix socket in its state directory
//! ([`CONTROL_SOCKET`]), `GET /metrics` (Prometheus text) and `GET /stats`
//! ([`L7Stats`], JSON), and appends one [`L7AccessLine`] per request to its
//! access log ([`ACCESS_LOG`]).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// File names in an instance's state directory.
pub const CONFIG_FILE: &str = "l7.json";
pub const CONTROL_SOCKET: &str = "l7.sock";
pub const ACCESS_LOG: &str = "l7-access.log";

/// Everything one instance serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7Config {
    /// The instance (Octavia's amphora id).
    pub instance_id: String,
    pub loadbalancer_id: String,
    /// The instance's own address: its listeners bind it, and it connects
    /// to members from it.
    pub address: String,
    /// Sorted by id.
    pub listeners: Vec<L7Listener>,
    /// Every pool a listener or policy of this load balancer names, sorted
    /// by id.
    pub pools: Vec<L7Pool>,
}

/// An HTTP or TERMINATED_HTTPS listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7Listener {
    pub id: String,
    /// `HTTP` or `TERMINATED_HTTPS`.
    pub protocol: String,
    pub protocol_port: u16,
    /// Concurrent client connections this instance accepts for the
    /// listener (its share of the listener's `connection_limit`); -1:
    /// unlimited. Over it, new connections are closed at once.
    pub connection_limit: i64,
    /// Idle time of a client connection (between requests, or while a
    /// request or response body stalls), ms.
    pub timeout_client_data_ms: u32,
    /// Time to connect to a member, ms.
    pub timeout_member_connect_ms: u32,
    /// Idle time of a member connection (waiting for the response head or
    /// while its body stalls), ms.
    pub timeout_member_data_ms: u32,
    /// Octavia's `insert_headers`: the headers to set on requests to
    /// members.
    #[serde(default)]
    pub insert_headers: InsertHeaders,
    /// TERMINATED_HTTPS only.
    #[serde(default)]
    pub tls: Option<L7Tls>,
    /// Where requests no policy takes go; `None`: 503.
    pub default_pool_id: Option<String>,
    /// Enabled policies, in `position` order (first match wins).
    #[serde(default)]
    pub policies: Vec<L7Policy>,
    /// Clients allowed to connect (CIDRs); empty: everyone.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
}

/// The `X-Forwarded-*` headers a listener adds (each replaces any value
/// the client sent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsertHeaders {
    /// The client's address.
    #[serde(default)]
    pub x_forwarded_for: bool,
    /// The listener's port.
    #[serde(default)]
    pub x_forwarded_port: bool,
    /// `http` or `https`.
    #[serde(default)]
    pub x_forwarded_proto: bool,
}

/// A TERMINATED_HTTPS listener's TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7Tls {
    /// Served when the client's SNI matches no SNI certificate (or it sent
    /// none).
    pub default_certificate: L7Certificate,
    /// Chosen by the client's SNI against each certificate's names
    /// (subject alternative names, else the common name; `*.` wildcards).
    #[serde(default)]
    pub sni_certificates: Vec<L7Certificate>,
    /// `TLSv1.2`, `TLSv1.3` (what rustls has); empty: both.
    #[serde(default)]
    pub versions: Vec<String>,
    /// ALPN protocols offered, in preference order (`h2`, `http/1.1`);
    /// empty: `h2`, `http/1.1`.
    #[serde(default)]
    pub alpn_protocols: Vec<String>,
}

/// A certificate with its key, PEM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7Certificate {
    /// The reference it came from (a Barbican container or secret URL).
    pub reference: String,
    /// The leaf certificate, then any intermediates.
    pub chain_pem: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

/// An L7 policy: when all its rules match, its action is taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7Policy {
    pub id: String,
    pub position: u32,
    /// `REJECT` (403), `REDIRECT_TO_URL` (to `redirect_url`),
    /// `REDIRECT_PREFIX` (`redirect_prefix` + the request's path and
    /// query), `REDIRECT_TO_POOL` (to `redirect_pool_id`).
    pub action: String,
    #[serde(default)]
    pub redirect_pool_id: Option<String>,
    #[serde(default)]
    pub redirect_url: Option<String>,
    #[serde(default)]
    pub redirect_prefix: Option<String>,
    /// 301, 302, 303, 307 or 308 (redirects; default 302).
    #[serde(default)]
    pub redirect_http_code: Option<u16>,
    /// Enabled rules, all of which must match (none: the policy always
    /// matches).
    #[serde(default)]
    pub rules: Vec<L7Rule>,
}

/// One condition of a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7Rule {
    pub id: String,
    /// `HOST_NAME` (the Host header or the `:authority`, port removed),
    /// `PATH` (the path, no query), `FILE_TYPE` (the path's extension
    /// after its last `.`, e.g. `jpg`), `HEADER` (header `key`), `COOKIE`
    /// (cookie `key`). A missing header or cookie matches nothing
    /// (before `invert`).
    #[serde(rename = "type")]
    pub kind: String,
    /// `REGEX` (unanchored search), `STARTS_WITH`, `ENDS_WITH`,
    /// `CONTAINS`, `EQUAL_TO` (case-sensitive, except `HOST_NAME`, which
    /// is compared in lower case).
    pub compare_type: String,
    #[serde(default)]
    pub key: Option<String>,
    pub value: String,
    /// The rule matches when the comparison does not.
    #[serde(default)]
    pub invert: bool,
}

/// A pool as an instance balances it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7Pool {
    pub id: String,
    /// `ROUND_ROBIN` (weighted), `LEAST_CONNECTIONS` (this instance's
    /// requests in flight to each member, divided by its weight),
    /// `SOURCE_IP` (a hash of the client address).
    pub lb_algorithm: String,
    #[serde(default)]
    pub session_persistence: Option<L7Persistence>,
    /// Sorted by id.
    pub members: Vec<L7Member>,
}

/// Session persistence of an L7 pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7Persistence {
    /// `SOURCE_IP`: a client address sticks to a member (for
    /// `timeout_s` after its last request); `HTTP_COOKIE`: the instance
    /// sets a cookie naming the member ([`PERSISTENCE_COOKIE`]) and sends
    /// requests that carry it there; `APP_COOKIE`: the member's own cookie
    /// `cookie_name`: its value, once the member set it, maps to that
    /// member.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub cookie_name: Option<String>,
    /// Seconds a stickiness outlives its last use.
    pub timeout_s: u32,
}

/// The cookie an `HTTP_COOKIE` pool sets.
pub const PERSISTENCE_COOKIE: &str = "STRATO_LB";

/// A member of an L7 pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7Member {
    pub id: String,
    pub address: String,
    pub protocol_port: u16,
    pub weight: u16,
    /// Takes requests only when no other member is active.
    #[serde(default)]
    pub backup: bool,
    /// `active` (takes new requests), `draining` (admin down, weight 0, or
    /// removed: no new request, not even a sticky one; requests in flight
    /// finish; its idle keep-alive connections are closed), `down` (failed
    /// its health check: no new request).
    pub state: String,
}

/// `GET /stats` on an instance's control socket: totals since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L7Stats {
    pub listeners: Vec<L7ListenerStats>,
    pub members: Vec<L7MemberStats>,
    /// CPU time the process used since it started, µs (the scaling
    /// signal's source, with the wall time it is read at).
    pub cpu_us: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L7ListenerStats {
    pub id: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub active_connections: u64,
    pub total_connections: u64,
    /// Requests answered with an error by the instance itself (no member,
    /// member failed, timeouts, malformed requests), not members' errors.
    pub request_errors: u64,
    pub requests: u64,
    /// Responses by class: 1xx..5xx.
    pub responses: [u64; 5],
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L7MemberStats {
    pub id: String,
    pub pool_id: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Requests in flight to it.
    pub active_requests: u64,
    pub total_requests: u64,
    pub request_errors: u64,
}

/// One request in an instance's access log (a JSON object per line).
/// Text fields borrow where they can (the proxy writes a line per request
/// without copying its configuration's names); read back, they are owned
/// (`L7AccessLine<'static>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct L7AccessLine<'a> {
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub time: Cow<'a, str>,
    pub instance: Cow<'a, str>,
    pub listener: Cow<'a, str>,
    /// Empty when no pool took the request (reject, redirect, 503).
    pub pool: Cow<'a, str>,
    pub member: Cow<'a, str>,
    /// `address:port`.
    pub client: Cow<'a, str>,
    pub method: Cow<'a, str>,
    pub host: Cow<'a, str>,
    pub path: Cow<'a, str>,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub version: Cow<'a, str>,
    pub status: u16,
    /// Request and response bytes (head and body) on the client side.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Arrival to the response head sent, ms.
    pub request_ms: f64,
    /// Arrival to the last response byte sent, ms.
    pub response_ms: f64,
    /// TERMINATED_HTTPS: `TLSv1.3`, ... and the client's SNI.
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub tls_version: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub sni: Cow<'a, str>,
    /// Which policy decided, if one did.
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub policy: Cow<'a, str>,
}
