//! The desired state's objects, as the controller stores them. These are the
//! internal (storage) forms: the API layer renders them (Keystone/Neutron
//! JSON, `tenant_id` mirrors, field filters), the compiler reads them. Every
//! mutation is a list of [`Change`]s committed atomically under one global
//! revision (see `store` and `state`).

use serde::{Deserialize, Serialize};
pub use strato_proto::{
    config::{AddressPair, HostRoute},
    time::{now_unix, timestamp},
};

/// Kinds of stored objects (the `kind` column of the store).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Project,
    User,
    Role,
    Assignment,
    Token,
    Network,
    Subnet,
    Port,
    Router,
    Quota,
    Host,
    SecurityGroup,
    SecurityGroupRule,
    FloatingIp,
    QosPolicy,
    LoadBalancer,
    Listener,
    Pool,
    Member,
    HealthMonitor,
    Amphora,
    // Key Manager (Barbican).
    Secret,
    SecretContainer,
    // L7 load balancing (lbaas::l7policies, lbaas::l7rules).
    L7Policy,
    L7Rule,
    // VPNaaS (vpnaas).
    IkePolicy,
    IpsecPolicy,
    VpnService,
    EndpointGroup,
    IpsecSiteConnection,
}

impl Kind {
    pub const ALL: [Kind; 30] = [
        Kind::Project,
        Kind::User,
        Kind::Role,
        Kind::Assignment,
        Kind::Token,
        Kind::Network,
        Kind::Subnet,
        Kind::Port,
        Kind::Router,
        Kind::Quota,
        Kind::Host,
        Kind::SecurityGroup,
        Kind::SecurityGroupRule,
        Kind::FloatingIp,
        Kind::QosPolicy,
        Kind::LoadBalancer,
        Kind::Listener,
        Kind::Pool,
        Kind::Member,
        Kind::HealthMonitor,
        Kind::Amphora,
        Kind::Secret,
        Kind::SecretContainer,
        Kind::L7Policy,
        Kind::L7Rule,
        Kind::IkePolicy,
        Kind::IpsecPolicy,
        Kind::VpnService,
        Kind::EndpointGroup,
        Kind::IpsecSiteConnection,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Project => "project",
            Kind::User => "user",
            Kind::Role => "role",
            Kind::Assignment => "assignment",
            Kind::Token => "token",
            Kind::Network => "network",
            Kind::Subnet => "subnet",
            Kind::Port => "port",
            Kind::Router => "router",
            Kind::Quota => "quota",
            Kind::Host => "host",
            Kind::SecurityGroup => "security_group",
            Kind::SecurityGroupRule => "security_group_rule",
            Kind::FloatingIp => "floating_ip",
            Kind::QosPolicy => "qos_policy",
            Kind::LoadBalancer => "load_balancer",
            Kind::Listener => "listener",
            Kind::Pool => "pool",
            Kind::Member => "member",
            Kind::HealthMonitor => "health_monitor",
            Kind::Amphora => "amphora",
            Kind::Secret => "secret",
            Kind::SecretContainer => "secret_container",
            Kind::L7Policy => "l7policy",
            Kind::L7Rule => "l7rule",
            Kind::IkePolicy => "ikepolicy",
            Kind::IpsecPolicy => "ipsecpolicy",
            Kind::VpnService => "vpnservice",
            Kind::EndpointGroup => "endpoint_group",
            Kind::IpsecSiteConnection => "ipsec_site_connection",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

/// Common bookkeeping of every Neutron resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub description: String,
    /// Increments on every change of this resource.
    pub revision_number: u64,
    /// RFC 3339, second precision, UTC (`2026-11-23T16:20:00Z`).
    pub created_at: String,
    pub updated_at: String,
}

// ------------------------------------------------------------------ identity

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub description: String,
    pub domain_id: String,
    pub enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
    /// PHC string (argon2id); the password itself is never stored or logged.
    pub password_hash: String,
    pub default_project_id: Option<String>,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub id: String,
    /// `admin`, `member` or `reader` (the roles that mean something here).
    pub name: String,
}

/// A role of a user on a project. Id: `<project>:<user>:<role>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub project_id: String,
    pub user_id: String,
    pub role_id: String,
}

impl Assignment {
    pub fn id(&self) -> String {
        format!("{}:{}:{}", self.project_id, self.user_id, self.role_id)
    }
}

/// An issued token. Stored by the SHA-256 of the token (hex), never the
/// token itself, so a leaked database does not leak live credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id_hash: String,
    pub user_id: String,
    pub project_id: String,
    /// Role names at issue time.
    pub roles: Vec<String>,
    pub issued_at: String,
    pub expires_at: String,
    /// Unix seconds, for cheap comparisons.
    pub expires_unix: u64,
}

// ------------------------------------------------------------------- network

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub meta: Meta,
    pub admin_state_up: bool,
    pub shared: bool,
    pub mtu: u32,
    pub port_security_enabled: bool,
    /// VXLAN network identifier, allocated by the controller.
    pub vni: u32,
    /// `router:external`: the operator's network towards the internet,
    /// whose subnets' allocation pools are the elastic IP pool. Visible to
    /// every project; only administrators create or change it.
    #[serde(default)]
    pub external: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationPool {
    pub start: String,
    pub end: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub meta: Meta,
    pub network_id: String,
    pub ip_version: u8,
    pub cidr: String,
    pub gateway_ip: Option<String>,
    pub allocation_pools: Vec<AllocationPool>,
    pub enable_dhcp: bool,
    pub dns_nameservers: Vec<String>,
    pub host_routes: Vec<HostRoute>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    pub subnet_id: String,
    pub ip_address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub meta: Meta,
    pub network_id: String,
    pub mac_address: String,
    pub fixed_ips: Vec<FixedIp>,
    pub security_groups: Vec<String>,
    pub port_security_enabled: bool,
    pub allowed_address_pairs: Vec<AddressPair>,
    pub binding_host_id: String,
    pub device_id: String,
    pub device_owner: String,
    pub admin_state_up: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Router {
    pub meta: Meta,
    pub admin_state_up: bool,
    pub routes: Vec<HostRoute>,
    /// `external_gateway_info`: the router's leg on an external network.
    #[serde(default)]
    pub gateway: Option<RouterGateway>,
}

/// A router's external gateway: a port on an external network (device
/// owner `network:router_gateway`) whose address is the source of SNAT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterGateway {
    pub network_id: String,
    /// VMs without an elastic IP reach the external network through SNAT
    /// to the gateway port's address.
    pub enable_snat: bool,
    /// The `network:router_gateway` port (its fixed IPs are
    /// `external_fixed_ips`).
    pub port_id: String,
}

/// Device owner of a router's external gateway port.
pub const OWNER_ROUTER_GATEWAY: &str = "network:router_gateway";
/// Device owner of the port that holds a floating IP's address.
pub const OWNER_FLOATING_IP: &str = "network:floatingip";

/// An elastic IP (Neutron floating IP): an address of an external network,
/// allocated to a project, bound (1:1 NAT) to one fixed IP of a port or
/// unbound. It stays allocated when its port is deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIp {
    /// `meta.name` is unused (Neutron floating IPs have none).
    pub meta: Meta,
    pub floating_network_id: String,
    pub floating_ip_address: String,
    /// The `network:floatingip` port on the external network that holds
    /// the address (so IP allocation and in-use checks are the ports').
    pub floating_port_id: String,
    /// Bound: the port and which of its fixed IPs.
    pub port_id: Option<String>,
    pub fixed_ip_address: Option<String>,
    /// Bound: the router joining the port's subnet to the external network.
    pub router_id: Option<String>,
    pub qos_policy_id: Option<String>,
}

/// A QoS policy: bandwidth limits applied to what uses it (floating IPs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosPolicy {
    pub meta: Meta,
    pub shared: bool,
    pub is_default: bool,
    /// At most one per direction.
    pub bandwidth_limit_rules: Vec<BandwidthLimitRule>,
}

/// `bandwidth_limit_rules` of a QoS policy. Direction as Neutron: `egress`
/// is what leaves the VM (towards the internet), `ingress` what reaches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthLimitRule {
    pub id: String,
    /// 1,000 (1 Mbit/s) to 1,000,000 (1 Gbit/s).
    pub max_kbps: u64,
    /// Bucket depth in kilobits; 0: the dataplane's default (see the agent).
    pub max_burst_kbps: u64,
    pub direction: Direction,
}

/// Traffic direction of a security group rule, seen from the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Ethertype {
    IPv4,
    IPv6,
}

impl Ethertype {
    pub fn as_str(self) -> &'static str {
        match self {
            Ethertype::IPv4 => "IPv4",
            Ethertype::IPv6 => "IPv6",
        }
    }
}

/// A security group: a named set of allow rules. A port's policy is the
/// union of its groups' rules; what no rule allows is dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub meta: Meta,
    /// Stateful groups track connections (replies pass without rules);
    /// stateless ones evaluate every packet in both directions.
    pub stateful: bool,
}

/// One allow rule of a security group. `meta.name` is unused (Neutron rules
/// have none); `meta.project_id` is the group's project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupRule {
    pub meta: Meta,
    pub security_group_id: String,
    pub direction: Direction,
    pub ethertype: Ethertype,
    /// As the request gave it, names lower-cased (`tcp`, `6`, `icmp`);
    /// `None` is any protocol.
    pub protocol: Option<String>,
    /// Ports for TCP/UDP/SCTP/UDP-Lite/DCCP; ICMP type (min) and code (max).
    pub port_range_min: Option<u32>,
    pub port_range_max: Option<u32>,
    /// Normalised CIDR (host bits cleared); `None` with no remote group is
    /// any address.
    pub remote_ip_prefix: Option<String>,
    /// The rule matches addresses of this group's member ports.
    pub remote_group_id: Option<String>,
}

/// IANA protocol names Neutron accepts in security group rules.
pub const PROTOCOL_NAMES: &[(&str, u8)] = &[
    ("hopopt", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ipip", 4),
    ("tcp", 6),
    ("egp", 8),
    ("udp", 17),
    ("ipv6-encap", 41),
    ("ipv6-route", 43),
    ("ipv6-frag", 44),
    ("rsvp", 46),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("ipv6-icmp", 58),
    ("icmpv6", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ospf", 89),
    ("pgm", 113),
    ("vrrp", 112),
    ("sctp", 132),
    ("udplite", 136),
    ("dccp", 33),
];

/// Protocol number of a rule's `protocol` (a name or a number).
pub fn protocol_number(p: &str) -> Option<u8> {
    PROTOCOL_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(p))
        .map(|(_, v)| *v)
        .or_else(|| p.parse().ok())
}

impl SecurityGroupRule {
    /// `None`: any protocol.
    pub fn protocol_number(&self) -> Option<u8> {
        self.protocol.as_deref().and_then(protocol_number)
    }
}

// ------------------------------------------------------------ load balancers

/// An enum whose values travel as Octavia spells them (`"TCP"`,
/// `"ROUND_ROBIN"`, `"UDP-CONNECT"`): serde, `as_str` and `parse` agree.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|x| x.as_str() == s)
            }
        }
    };
}

wire_enum! {
    /// Octavia's `provisioning_status`: where the control plane is with a
    /// resource. Stored; `PENDING_*` until the agents acknowledge the
    /// revision that carries it (`lbaas::mark_active`).
    ProvisioningStatus {
        Active = "ACTIVE",
        PendingCreate = "PENDING_CREATE",
        PendingUpdate = "PENDING_UPDATE",
        PendingDelete = "PENDING_DELETE",
        Error = "ERROR",
    }
}

impl ProvisioningStatus {
    /// `PENDING_CREATE`, `PENDING_UPDATE` or `PENDING_DELETE`.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            ProvisioningStatus::PendingCreate
                | ProvisioningStatus::PendingUpdate
                | ProvisioningStatus::PendingDelete
        )
    }
}

wire_enum! {
    /// Listener and pool protocols. The L4 dataplane balances `TCP` and
    /// `UDP`; the L7 ones are known (so the API can say "not supported
    /// yet") but refused until L7 load balancing lands.
    LbProtocol {
        Tcp = "TCP",
        Udp = "UDP",
        Http = "HTTP",
        Https = "HTTPS",
        TerminatedHttps = "TERMINATED_HTTPS",
    }
}

wire_enum! {
    /// How a pool picks a member for a new connection.
    LbAlgorithm {
        RoundRobin = "ROUND_ROBIN",
        LeastConnections = "LEAST_CONNECTIONS",
        SourceIp = "SOURCE_IP",
    }
}

wire_enum! {
    /// Session persistence types; only `SOURCE_IP` is accepted (the cookie
    /// types need L7).
    PersistenceType {
        SourceIp = "SOURCE_IP",
        HttpCookie = "HTTP_COOKIE",
        AppCookie = "APP_COOKIE",
    }
}

wire_enum! {
    /// Health monitor types. `PING`, `TCP`, `UDP-CONNECT` and `HTTP` are
    /// accepted; the others are refused (400).
    MonitorType {
        Ping = "PING",
        Tcp = "TCP",
        UdpConnect = "UDP-CONNECT",
        Http = "HTTP",
        Https = "HTTPS",
        TlsHello = "TLS-HELLO",
        Sctp = "SCTP",
    }
}

/// A load balancer: a virtual IP (VIP) in a tenant subnet, held by a port
/// (device owner `Octavia`, device id `lb-<id>`, unless the user supplied
/// the port), under which listeners accept connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub meta: Meta,
    /// The subnet the VIP address is in.
    pub vip_subnet_id: String,
    /// That subnet's network.
    pub vip_network_id: String,
    /// The port holding the VIP address.
    pub vip_port_id: String,
    /// The VIP (IPv4, dotted quad).
    pub vip_address: String,
    /// False: the load balancer answers nothing (operating status OFFLINE).
    pub admin_state_up: bool,
    /// Availability zone the user asked for (informational for now).
    pub availability_zone: Option<String>,
    /// Always `"strato"` (the only provider).
    pub provider: String,
    /// `PENDING_CREATE` when created, `PENDING_UPDATE` when it or a child
    /// changed, `ACTIVE` once the agents report it programmed.
    pub provisioning_status: ProvisioningStatus,
    /// Why `provisioning_status` is `ERROR`, when it is.
    pub error_reason: Option<String>,
}

/// A listener: a protocol and port on its load balancer's VIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub meta: Meta,
    /// The load balancer whose VIP it listens on (immutable).
    pub loadbalancer_id: String,
    /// `TCP` or `UDP` (immutable).
    pub protocol: LbProtocol,
    /// 1..=65535, unique per (load balancer, protocol) (immutable).
    pub protocol_port: u16,
    /// Maximum concurrent connections; -1 is unlimited.
    pub connection_limit: i64,
    /// The pool connections go to; `None`: connections are refused.
    pub default_pool_id: Option<String>,
    /// False: the listener accepts nothing (operating status OFFLINE).
    pub admin_state_up: bool,
    /// Idle timeout of the client side, ms (0..=86,400,000; default 50,000).
    pub timeout_client_data: u32,
    /// Time to connect to a member, ms (default 5,000).
    pub timeout_member_connect: u32,
    /// Idle timeout of the member side, ms (default 50,000).
    pub timeout_member_data: u32,
    /// Time to wait for content inspection, ms (default 0; L7 only).
    pub timeout_tcp_inspect: u32,
    /// Connection draining (Strato extension attribute
    /// `connection_drain_timeout`): how long connections established to a
    /// member that is removed, disabled or set to weight 0 may continue,
    /// ms (0..=3,600,000; default 60,000). New connections never go to it.
    pub connection_drain_timeout: u32,
    /// See [`LoadBalancer::provisioning_status`].
    pub provisioning_status: ProvisioningStatus,
    /// Its open connections, summed over the hosts' reports, reached
    /// `connection_limit` (kept by the controller, not an API attribute):
    /// new connections are refused until they fall below 90% of it.
    #[serde(default)]
    pub at_limit: bool,
    /// HTTP and TERMINATED_HTTPS listeners, and their TLS (`lbaas::listeners`).
    #[serde(flatten)]
    pub l7: ListenerL7,
}

/// What HTTP and TERMINATED_HTTPS listeners add (all empty for the others).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerL7 {
    /// Octavia's `insert_headers`, as given (`{"X-Forwarded-For": "true"}`):
    /// a header is inserted when its value is `true` in any case.
    #[serde(default)]
    pub insert_headers: std::collections::BTreeMap<String, String>,
    /// TERMINATED_HTTPS: the certificate served by default (a Barbican
    /// reference, stored as given; resolved when compiled).
    #[serde(default)]
    pub default_tls_container_ref: Option<String>,
    /// TERMINATED_HTTPS: certificates chosen by the client's SNI.
    #[serde(default)]
    pub sni_container_refs: Vec<String>,
    /// TERMINATED_HTTPS: `TLSv1.2`, `TLSv1.3` (default both); `None` for
    /// the other protocols.
    #[serde(default)]
    pub tls_versions: Option<Vec<String>>,
    /// TERMINATED_HTTPS: `h2`, `http/1.1`, `http/1.0` (default all three).
    #[serde(default)]
    pub alpn_protocols: Option<Vec<String>>,
    /// HTTP and TERMINATED_HTTPS: clients allowed (IPv4 CIDRs); empty:
    /// everyone.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
}

/// Session persistence of a pool: connections from one client stick to one
/// member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPersistence {
    /// `SOURCE_IP` (any pool); `HTTP_COOKIE`, `APP_COOKIE` (HTTP pools).
    #[serde(rename = "type")]
    pub kind: PersistenceType,
    /// How long a client's stickiness outlives its last connection, s
    /// (default 360).
    pub persistence_timeout: u32,
    /// Netmask applied to the client address before sticking (e.g.
    /// `255.255.255.0`: a /24 sticks together); `None`: the whole address.
    pub persistence_granularity: Option<String>,
    /// `APP_COOKIE`: the member's cookie that sticks a client.
    #[serde(default)]
    pub cookie_name: Option<String>,
}

/// A pool of members that connections are balanced over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub meta: Meta,
    /// Its load balancer (immutable).
    pub loadbalancer_id: String,
    /// The listener whose default pool it is, if any (a listener has at
    /// most one default pool, a pool is the default of at most one
    /// listener; kept in step with `Listener::default_pool_id`).
    pub listener_id: Option<String>,
    /// `TCP` or `UDP`, the listener's (immutable).
    pub protocol: LbProtocol,
    /// Member selection.
    pub lb_algorithm: LbAlgorithm,
    /// Stickiness; `None`: none.
    pub session_persistence: Option<SessionPersistence>,
    /// False: the pool sends nothing to its members (OFFLINE).
    pub admin_state_up: bool,
    /// See [`LoadBalancer::provisioning_status`].
    pub provisioning_status: ProvisioningStatus,
}

/// A backend of a pool: an address and port in a subnet routable from the
/// VIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub meta: Meta,
    /// Its pool.
    pub pool_id: String,
    /// IPv4 address inside `subnet_id` (immutable).
    pub address: String,
    /// 1..=65535 (immutable).
    pub protocol_port: u16,
    /// Relative share of new connections, 0..=256 (default 1). 0: no new
    /// connections (draining); established ones continue.
    pub weight: u16,
    /// The member's subnet: in the VIP's network or attached to a router
    /// the VIP's subnet is attached to (immutable).
    pub subnet_id: String,
    /// False: no traffic (operating status OFFLINE).
    pub admin_state_up: bool,
    /// A backup member only receives traffic when every non-backup member
    /// is down.
    pub backup: bool,
    /// Where health checks go instead of `address`, if set.
    pub monitor_address: Option<String>,
    /// Where health checks go instead of `protocol_port`, if set.
    pub monitor_port: Option<u16>,
    /// See [`LoadBalancer::provisioning_status`].
    pub provisioning_status: ProvisioningStatus,
    /// The agents' health checks find it down (kept by the controller
    /// from their reports, not an API attribute): no new connections, its
    /// connections are reset. Only while its pool has a monitor that is up.
    #[serde(default)]
    pub health_down: bool,
}

/// The health check of a pool's members (one per pool).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthMonitor {
    pub meta: Meta,
    /// Its pool (immutable).
    pub pool_id: String,
    /// `PING`, `TCP`, `UDP-CONNECT` or `HTTP` (immutable).
    #[serde(rename = "type")]
    pub kind: MonitorType,
    /// Seconds between checks of a member (1..=86,400).
    pub delay: u32,
    /// Seconds a check may take (1..=`delay`).
    pub timeout: u32,
    /// Consecutive successes that bring a member ONLINE (1..=10).
    pub max_retries: u8,
    /// Consecutive failures that take a member to ERROR (1..=10, default 3).
    pub max_retries_down: u8,
    /// HTTP monitors: the method (default `GET`).
    pub http_method: String,
    /// HTTP monitors: the path requested (default `/`).
    pub url_path: String,
    /// HTTP monitors: the statuses that mean healthy, as Octavia writes
    /// them: `200`, `200,202`, `200-204` (default `200`).
    pub expected_codes: String,
    /// HTTP(S) monitors: `1.0` or `1.1` (Octavia's float, kept as text);
    /// `None`: 1.0.
    #[serde(default)]
    pub http_version: Option<String>,
    /// HTTP(S) monitors, with `http_version` 1.1: the `Host` header sent.
    #[serde(default)]
    pub domain_name: Option<String>,
    /// False: members are not checked (they show NO_MONITOR).
    pub admin_state_up: bool,
    /// See [`LoadBalancer::provisioning_status`].
    pub provisioning_status: ProvisioningStatus,
}

wire_enum! {
    /// The life of an L7 instance (Octavia's amphora statuses).
    AmphoraStatus {
        /// Placed: its port exists and its host's agent starts it; not
        /// taking connections until its first successful check.
        Booting = "BOOTING",
        /// Passes its checks: the L4 tier sends it connections.
        Ready = "READY",
        /// Failed its checks, or its host stopped reporting: no new
        /// connections; replaced after [`crate::lbaas::amphorae::REPLACE_AFTER_S`].
        Error = "ERROR",
        /// Being removed (scaled in, or its load balancer no longer has L7
        /// listeners): no new connections, the process drains, then it
        /// and its port are deleted.
        PendingDelete = "PENDING_DELETE",
    }
}

/// An L7 instance (Octavia's amphora): a `strato-l7` process on a compute
/// host, with a port of its own in the VIP's subnet (owned by the load
/// balancing service's project, so tenants do not see it), serving its
/// load balancer's HTTP and TERMINATED_HTTPS listeners. The L4 tier
/// balances those listeners over the instances. Made and removed by the
/// controller (`reconcile::l7_instances`), never by an API call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amphora {
    /// `project_id` is the load balancer's (for visibility rules); the port
    /// is the service project's.
    pub meta: Meta,
    pub loadbalancer_id: String,
    pub port_id: String,
    /// The port's address.
    pub address: String,
    /// The compute host it runs on, and that host's zone.
    pub host: String,
    pub availability_zone: String,
    pub status: AmphoraStatus,
    /// Unix seconds of the last status change.
    pub status_since: u64,
}

// ------------------------------------------------- L7 policies and rules

wire_enum! {
    /// What an L7 policy does with a request all its rules match.
    L7Action {
        Reject = "REJECT",
        RedirectToUrl = "REDIRECT_TO_URL",
        RedirectToPool = "REDIRECT_TO_POOL",
        RedirectPrefix = "REDIRECT_PREFIX",
    }
}

wire_enum! {
    /// What an L7 rule looks at. The `SSL_*` types (client certificates)
    /// are known so the API can say "not supported", and refused.
    L7RuleType {
        HostName = "HOST_NAME",
        Path = "PATH",
        FileType = "FILE_TYPE",
        Header = "HEADER",
        Cookie = "COOKIE",
        SslConnHasCert = "SSL_CONN_HAS_CERT",
        SslVerifyResult = "SSL_VERIFY_RESULT",
        SslDnField = "SSL_DN_FIELD",
    }
}

wire_enum! {
    /// How an L7 rule compares.
    L7CompareType {
        Regex = "REGEX",
        StartsWith = "STARTS_WITH",
        EndsWith = "ENDS_WITH",
        Contains = "CONTAINS",
        EqualTo = "EQUAL_TO",
    }
}

/// An L7 policy of an HTTP or TERMINATED_HTTPS listener: when all its
/// rules match a request, its action is taken (policies in `position`
/// order, first match wins).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct L7Policy {
    pub meta: Meta,
    /// Its listener (immutable).
    pub listener_id: String,
    pub action: L7Action,
    /// 1-based, contiguous per listener (`lbaas::l7policies` renumbers).
    pub position: u32,
    /// `REDIRECT_TO_POOL`: a pool of the same load balancer.
    pub redirect_pool_id: Option<String>,
    /// `REDIRECT_TO_URL`: where to.
    pub redirect_url: Option<String>,
    /// `REDIRECT_PREFIX`: prepended to the request's path and query.
    pub redirect_prefix: Option<String>,
    /// The redirects' status: 301, 302, 303, 307 or 308 (default 302).
    pub redirect_http_code: Option<u16>,
    pub admin_state_up: bool,
    pub tags: Vec<String>,
    /// See [`LoadBalancer::provisioning_status`].
    pub provisioning_status: ProvisioningStatus,
}

/// One condition of an L7 policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct L7Rule {
    pub meta: Meta,
    /// Its policy (immutable).
    pub l7policy_id: String,
    #[serde(rename = "type")]
    pub kind: L7RuleType,
    pub compare_type: L7CompareType,
    /// `HEADER` and `COOKIE`: the header or cookie name.
    pub key: Option<String>,
    pub value: String,
    /// The rule matches when the comparison does not.
    pub invert: bool,
    pub admin_state_up: bool,
    pub tags: Vec<String>,
    /// See [`LoadBalancer::provisioning_status`].
    pub provisioning_status: ProvisioningStatus,
}

// ------------------------------------------------------------------ VPNaaS

/// An IKE policy (Neutron VPNaaS `ikepolicies`): how the IKE SA is
/// negotiated. Values are Neutron's spellings; only what Strato's IKEv2
/// speaks is ever stored (`vpnaas::policy`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IkePolicy {
    pub meta: Meta,
    /// Integrity and PRF: `sha256`, `sha384`, `sha512`.
    pub auth_algorithm: String,
    /// `aes-128`, `aes-192`, `aes-256` (CBC) or `aes-*-gcm-16`.
    pub encryption_algorithm: String,
    /// `main` (IKEv2 has no phase 1 modes; Neutron's attribute is kept).
    pub phase1_negotiation_mode: String,
    /// `v2`.
    pub ike_version: String,
    /// Seconds (the API's only unit), at least 60.
    pub lifetime_s: u64,
    /// The Diffie-Hellman group: `group14`, `group19`, `group31`.
    pub pfs: String,
}

/// An IPsec policy (`ipsecpolicies`): how Child SAs protect traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpsecPolicy {
    pub meta: Meta,
    /// `esp`.
    pub transform_protocol: String,
    pub auth_algorithm: String,
    pub encryption_algorithm: String,
    /// `tunnel`.
    pub encapsulation_mode: String,
    pub lifetime_s: u64,
    /// PFS group of CREATE_CHILD_SA rekeys.
    pub pfs: String,
}

/// Status of a VPN service or IPsec site connection, as Neutron reports
/// them: PENDING_CREATE until the gateway reports on it, then ACTIVE or
/// DOWN (ERROR when it cannot be set up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VpnStatus {
    PendingCreate,
    Active,
    Down,
    Error,
}

impl VpnStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VpnStatus::PendingCreate => "PENDING_CREATE",
            VpnStatus::Active => "ACTIVE",
            VpnStatus::Down => "DOWN",
            VpnStatus::Error => "ERROR",
        }
    }
}

/// A VPN service (`vpnservices`): a router's VPN gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpnService {
    pub meta: Meta,
    /// The router (with an external gateway); immutable.
    pub router_id: String,
    /// Neutron's legacy form: the one local subnet (connections then name
    /// `peer_cidrs`, not endpoint groups); immutable.
    pub subnet_id: Option<String>,
    pub admin_state_up: bool,
    pub status: VpnStatus,
}

/// An endpoint group (`endpoint-groups`): local subnets or peer CIDRs of
/// IPsec site connections. Endpoints are immutable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointGroup {
    pub meta: Meta,
    /// `subnet`, `cidr`, `network`, `router` or `vlan` (connections use
    /// `subnet` locally and `cidr` for the peer).
    #[serde(rename = "type")]
    pub kind: String,
    pub endpoints: Vec<String>,
}

/// An IPsec site connection (`ipsec-site-connections`): a tunnel from a
/// VPN service to a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpsecSiteConnection {
    pub meta: Meta,
    /// Immutable, as in Neutron.
    pub vpnservice_id: String,
    pub ikepolicy_id: String,
    pub ipsecpolicy_id: String,
    /// The peer's IPv4 address.
    pub peer_address: String,
    /// The peer's IKE identity.
    pub peer_id: String,
    /// Our IKE identity (empty: the gateway's external address).
    pub local_id: String,
    /// Legacy form (a service with a subnet): the peer's CIDRs.
    pub peer_cidrs: Vec<String>,
    /// Endpoint-group form: local subnets and peer CIDRs.
    pub local_ep_group_id: Option<String>,
    pub peer_ep_group_id: Option<String>,
    pub mtu: u32,
    /// `bi-directional` or `response-only`.
    pub initiator: String,
    pub psk: String,
    /// Dead peer detection: `hold`, `clear`, `disabled`, `restart`,
    /// `restart-by-peer`; seconds.
    pub dpd_action: String,
    pub dpd_interval: u32,
    pub dpd_timeout: u32,
    pub admin_state_up: bool,
    pub status: VpnStatus,
}

/// Per-project limits; absent projects use [`Quota::default_for`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub project_id: String,
    pub network: i64,
    pub subnet: i64,
    pub port: i64,
    pub router: i64,
    #[serde(default = "default_security_group_quota")]
    pub security_group: i64,
    #[serde(default = "default_security_group_rule_quota")]
    pub security_group_rule: i64,
    #[serde(default = "default_floatingip_quota")]
    pub floatingip: i64,
    /// Octavia quotas (see `lbaas::quotas`): load balancers, listeners,
    /// pools, members and health monitors per project (-1: unlimited).
    #[serde(default = "default_loadbalancer_quota")]
    pub loadbalancer: i64,
    #[serde(default = "default_listener_quota")]
    pub listener: i64,
    #[serde(default = "default_pool_quota")]
    pub pool: i64,
    #[serde(default = "default_member_quota")]
    pub member: i64,
    #[serde(default = "default_healthmonitor_quota")]
    pub healthmonitor: i64,
    #[serde(default = "default_l7policy_quota")]
    pub l7policy: i64,
    #[serde(default = "default_l7rule_quota")]
    pub l7rule: i64,
    /// VPNaaS quotas (Neutron's resource names).
    #[serde(default = "default_vpn_quota")]
    pub ikepolicy: i64,
    #[serde(default = "default_vpn_quota")]
    pub ipsecpolicy: i64,
    #[serde(default = "default_vpnservice_quota")]
    pub vpnservice: i64,
    #[serde(default = "default_vpn_quota")]
    pub endpoint_group: i64,
    #[serde(default = "default_vpn_quota")]
    pub ipsec_site_connection: i64,
    /// VPN subnets: the local subnets and peer CIDRs of all of a project's
    /// IPsec site connections (the seeds' limit: 1,000 per tenant).
    #[serde(default = "default_vpn_subnet_quota")]
    pub vpn_subnet: i64,
}

// Octavia's own defaults are -1 (unlimited); a public cloud bounds what one
// project can make the dataplane hold (every member is a Maglev table slot
// on every host of the VPC).
fn default_loadbalancer_quota() -> i64 {
    10
}

fn default_listener_quota() -> i64 {
    50
}

fn default_pool_quota() -> i64 {
    50
}

fn default_member_quota() -> i64 {
    500
}

fn default_healthmonitor_quota() -> i64 {
    50
}

fn default_l7policy_quota() -> i64 {
    50
}

fn default_l7rule_quota() -> i64 {
    500
}

fn default_vpn_quota() -> i64 {
    100
}

fn default_vpnservice_quota() -> i64 {
    10
}

/// The seeds: "up to 1,000 VPN subnets" per tenant.
fn default_vpn_subnet_quota() -> i64 {
    1000
}

fn default_floatingip_quota() -> i64 {
    50
}

fn default_security_group_quota() -> i64 {
    10
}

fn default_security_group_rule_quota() -> i64 {
    100
}

impl Quota {
    pub fn default_for(project_id: &str) -> Quota {
        Quota {
            project_id: project_id.to_owned(),
            network: 100,
            subnet: 100,
            port: 500,
            router: 10,
            security_group: default_security_group_quota(),
            security_group_rule: default_security_group_rule_quota(),
            floatingip: default_floatingip_quota(),
            loadbalancer: default_loadbalancer_quota(),
            listener: default_listener_quota(),
            pool: default_pool_quota(),
            member: default_member_quota(),
            healthmonitor: default_healthmonitor_quota(),
            l7policy: default_l7policy_quota(),
            l7rule: default_l7rule_quota(),
            ikepolicy: default_vpn_quota(),
            ipsecpolicy: default_vpn_quota(),
            vpnservice: default_vpnservice_quota(),
            endpoint_group: default_vpn_quota(),
            ipsec_site_connection: default_vpn_quota(),
            vpn_subnet: default_vpn_subnet_quota(),
        }
    }
}

impl Quota {
    /// The limit on `kind` (-1: unlimited; kinds without a quota have none).
    pub fn limit(&self, kind: Kind) -> i64 {
        let mut q = self.clone();
        q.slot(kind).map(|v| *v).unwrap_or(-1)
    }

    /// Where the limit on `kind` is kept, if it has one.
    pub fn slot(&mut self, kind: Kind) -> Option<&mut i64> {
        Some(match kind {
            Kind::Network => &mut self.network,
            Kind::Subnet => &mut self.subnet,
            Kind::Port => &mut self.port,
            Kind::Router => &mut self.router,
            Kind::SecurityGroup => &mut self.security_group,
            Kind::SecurityGroupRule => &mut self.security_group_rule,
            Kind::FloatingIp => &mut self.floatingip,
            Kind::LoadBalancer => &mut self.loadbalancer,
            Kind::Listener => &mut self.listener,
            Kind::Pool => &mut self.pool,
            Kind::Member => &mut self.member,
            Kind::HealthMonitor => &mut self.healthmonitor,
            Kind::L7Policy => &mut self.l7policy,
            Kind::L7Rule => &mut self.l7rule,
            Kind::IkePolicy => &mut self.ikepolicy,
            Kind::IpsecPolicy => &mut self.ipsecpolicy,
            Kind::VpnService => &mut self.vpnservice,
            Kind::EndpointGroup => &mut self.endpoint_group,
            Kind::IpsecSiteConnection => &mut self.ipsec_site_connection,
            _ => return None,
        })
    }
}

/// A hypervisor or gateway host, registered by its agent's first report:
/// the compiler needs its underlay address to tell other hosts where its
/// ports are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    /// Tunnel endpoint (VXLAN) address on the underlay.
    pub underlay_ip: String,
    /// Availability zone, as the agent reports it (empty: unknown).
    #[serde(default)]
    pub az: String,
    /// A gateway host: it has an external interface and forwards elastic IP
    /// and SNAT traffic between the internet and the overlay.
    #[serde(default)]
    pub gateway: bool,
    /// Gateway hosts: false while its agent does not report (the controller
    /// moves the routers' SNAT and the VMs' way out to other gateways).
    #[serde(default = "available_default")]
    pub available: bool,
}

fn available_default() -> bool {
    true
}

// --------------------------------------------------------------- key manager

/// A Barbican secret. Its payload is only ever held sealed (AES-256-GCM
/// under the controller's key-encryption key, `kek`), in
/// memory as in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub id: String,
    pub project_id: String,
    /// The user who stored it.
    pub creator_id: String,
    pub name: Option<String>,
    /// `opaque`, `symmetric`, `public`, `private`, `passphrase`, `certificate`.
    pub secret_type: String,
    pub algorithm: Option<String>,
    pub bit_length: Option<u64>,
    pub mode: Option<String>,
    /// RFC 3339 as given; after it the secret is gone (not found).
    pub expiration: Option<String>,
    #[serde(default)]
    pub expiration_unix: Option<u64>,
    pub created: String,
    pub updated: String,
    /// The payload's (normalized) content type; None until it has one.
    pub content_type: Option<String>,
    pub sealed: Option<Sealed>,
}

/// A sealed payload: AES-256-GCM, 96-bit random nonce, the secret's id and
/// project as associated data (a ciphertext moved to another row does not
/// open). Base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub nonce: String,
    pub ciphertext: String,
}

/// A Barbican container: named references to secrets of its project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretContainer {
    pub id: String,
    pub project_id: String,
    pub creator_id: String,
    pub name: Option<String>,
    /// `generic`, `rsa` or `certificate`.
    #[serde(rename = "type")]
    pub container_type: String,
    pub secret_refs: Vec<ContainerSecretRef>,
    pub created: String,
    pub updated: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSecretRef {
    pub name: Option<String>,
    pub secret_id: String,
}

/// One stored object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Object {
    Project(Project),
    User(User),
    Role(Role),
    Assignment(Assignment),
    Token(Token),
    Network(Network),
    Subnet(Subnet),
    Port(Port),
    Router(Router),
    Quota(Quota),
    Host(HostRecord),
    SecurityGroup(SecurityGroup),
    SecurityGroupRule(SecurityGroupRule),
    FloatingIp(FloatingIp),
    QosPolicy(QosPolicy),
    LoadBalancer(LoadBalancer),
    Listener(Listener),
    Pool(Pool),
    Member(Member),
    HealthMonitor(HealthMonitor),
    Amphora(Amphora),
    // Key Manager (Barbican).
    Secret(Secret),
    SecretContainer(SecretContainer),
    L7Policy(L7Policy),
    L7Rule(L7Rule),
    IkePolicy(IkePolicy),
    IpsecPolicy(IpsecPolicy),
    VpnService(VpnService),
    EndpointGroup(EndpointGroup),
    IpsecSiteConnection(IpsecSiteConnection),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Project(_) => Kind::Project,
            Object::User(_) => Kind::User,
            Object::Role(_) => Kind::Role,
            Object::Assignment(_) => Kind::Assignment,
            Object::Token(_) => Kind::Token,
            Object::Network(_) => Kind::Network,
            Object::Subnet(_) => Kind::Subnet,
            Object::Port(_) => Kind::Port,
            Object::Router(_) => Kind::Router,
            Object::Quota(_) => Kind::Quota,
            Object::Host(_) => Kind::Host,
            Object::SecurityGroup(_) => Kind::SecurityGroup,
            Object::SecurityGroupRule(_) => Kind::SecurityGroupRule,
            Object::FloatingIp(_) => Kind::FloatingIp,
            Object::QosPolicy(_) => Kind::QosPolicy,
            Object::LoadBalancer(_) => Kind::LoadBalancer,
            Object::Listener(_) => Kind::Listener,
            Object::Pool(_) => Kind::Pool,
            Object::Member(_) => Kind::Member,
            Object::HealthMonitor(_) => Kind::HealthMonitor,
            Object::Amphora(_) => Kind::Amphora,
            Object::Secret(_) => Kind::Secret,
            Object::SecretContainer(_) => Kind::SecretContainer,
            Object::L7Policy(_) => Kind::L7Policy,
            Object::L7Rule(_) => Kind::L7Rule,
            Object::IkePolicy(_) => Kind::IkePolicy,
            Object::IpsecPolicy(_) => Kind::IpsecPolicy,
            Object::VpnService(_) => Kind::VpnService,
            Object::EndpointGroup(_) => Kind::EndpointGroup,
            Object::IpsecSiteConnection(_) => Kind::IpsecSiteConnection,
        }
    }

    pub fn id(&self) -> String {
        match self {
            Object::Project(o) => o.id.clone(),
            Object::User(o) => o.id.clone(),
            Object::Role(o) => o.id.clone(),
            Object::Assignment(o) => o.id(),
            Object::Token(o) => o.id_hash.clone(),
            Object::Network(o) => o.meta.id.clone(),
            Object::Subnet(o) => o.meta.id.clone(),
            Object::Port(o) => o.meta.id.clone(),
            Object::Router(o) => o.meta.id.clone(),
            Object::Quota(o) => o.project_id.clone(),
            Object::Host(o) => o.name.clone(),
            Object::SecurityGroup(o) => o.meta.id.clone(),
            Object::SecurityGroupRule(o) => o.meta.id.clone(),
            Object::FloatingIp(o) => o.meta.id.clone(),
            Object::QosPolicy(o) => o.meta.id.clone(),
            Object::LoadBalancer(o) => o.meta.id.clone(),
            Object::Listener(o) => o.meta.id.clone(),
            Object::Pool(o) => o.meta.id.clone(),
            Object::Member(o) => o.meta.id.clone(),
            Object::HealthMonitor(o) => o.meta.id.clone(),
            Object::Amphora(o) => o.meta.id.clone(),
            Object::Secret(o) => o.id.clone(),
            Object::SecretContainer(o) => o.id.clone(),
            Object::L7Policy(o) => o.meta.id.clone(),
            Object::L7Rule(o) => o.meta.id.clone(),
            Object::IkePolicy(o) => o.meta.id.clone(),
            Object::IpsecPolicy(o) => o.meta.id.clone(),
            Object::VpnService(o) => o.meta.id.clone(),
            Object::EndpointGroup(o) => o.meta.id.clone(),
            Object::IpsecSiteConnection(o) => o.meta.id.clone(),
        }
    }
}

/// One step of a commit. Short-lived (a request's handful of changes), so
/// the size of `Put` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Create or replace.
    Put(Object),
    Delete(Kind, String),
}

impl Change {
    pub fn kind(&self) -> Kind {
        match self {
            Change::Put(o) => o.kind(),
            Change::Delete(k, _) => *k,
        }
    }

    pub fn id(&self) -> String {
        match self {
            Change::Put(o) => o.id(),
            Change::Delete(_, id) => id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(1_795_392_000 + 3_723), "2026-11-23T01:02:03Z");
    }

    #[test]
    fn kinds_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
    }
}
