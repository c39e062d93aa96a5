//! Layer-4 load balancers as a host needs them: VIP, listeners, members
//! (with their state and, on gateway hosts, their location) and health
//! monitors.

use serde::{Deserialize, Serialize};

/// A load balancer, on every host with ports in its VIP's routing domain
/// (clients are balanced on their own host): its VIP and, per listener,
/// the members that may take connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancerEntry {
    pub id: String,
    /// The VIP port's network (its VNI and routing domain) and MAC.
    pub vip_network_id: String,
    pub vip_address: String,
    pub vip_mac: String,
    pub admin_state_up: bool,
    /// Sorted by id.
    pub listeners: Vec<ListenerEntry>,
    /// The VIP's routing domain as the tables number it (the smallest VNI
    /// of the VPC's networks): gateway hosts have no network entries.
    #[serde(default)]
    pub domain: u32,
    /// A public load balancer: the floating IP on its VIP port (its id and
    /// address).
    #[serde(default)]
    pub floating_ip: Option<(String, String)>,
    /// Compiled for a gateway host: it balances what arrives for the
    /// floating IP and tunnels it to members (`MemberEntry::location`).
    #[serde(default)]
    pub gateway: bool,
    /// Pools the L4 tier does not balance (the L7 instances do) that have
    /// a health monitor: their members are checked by their hosts' agents
    /// all the same, and the results reach the instances through the
    /// controller. Sorted by id.
    #[serde(default)]
    pub checked_pools: Vec<CheckedPool>,
}

/// A pool whose members are checked although no listener entry carries
/// them (see [`LoadBalancerEntry::checked_pools`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedPool {
    pub id: String,
    pub monitor: MonitorEntry,
    /// Sorted by id.
    pub members: Vec<MemberEntry>,
}

/// Where a member's port is, for gateway hosts: the tunnel to its host and
/// the MACs of a packet routed to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberLocation {
    pub port_id: String,
    pub vni: u32,
    pub mtu: u32,
    pub mac: String,
    /// The router interface MAC on the member's subnet.
    pub gw_mac: String,
    pub host: String,
    pub underlay_ip: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerEntry {
    pub id: String,
    /// `TCP` or `UDP`.
    pub protocol: String,
    pub protocol_port: u16,
    /// A connection idle this long is forgotten (seconds).
    pub idle_timeout_s: u32,
    /// How long connections to a removed or disabled member go on
    /// (seconds).
    pub drain_timeout_s: u32,
    /// Session persistence by source address.
    pub source_ip: bool,
    /// The default pool.
    pub pool_id: Option<String>,
    /// The listener is at its `connection_limit` (region-wide, as the
    /// controller counts the hosts' open connections): new connections
    /// are refused, established ones go on.
    #[serde(default)]
    pub at_limit: bool,
    /// The pool's health monitor, when it has one that is up: the agents
    /// of the members' hosts run it.
    #[serde(default)]
    pub monitor: Option<MonitorEntry>,
    /// The default pool's members, sorted by id (none: every connection
    /// is refused).
    pub members: Vec<MemberEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    pub id: String,
    pub address: String,
    pub protocol_port: u16,
    pub weight: u16,
    pub backup: bool,
    /// `active` (takes new connections), `draining` (admin down or weight
    /// 0: existing connections go on until the drain timeout), `down`
    /// (failed its health check: existing connections are reset).
    pub state: String,
    /// Where health checks go instead of `address` / `protocol_port`.
    #[serde(default)]
    pub monitor_address: Option<String>,
    #[serde(default)]
    pub monitor_port: Option<u16>,
    /// Gateway hosts only: where the member's port is.
    #[serde(default)]
    pub location: Option<MemberLocation>,
}

/// A pool's health monitor as the checking agents need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorEntry {
    pub id: String,
    /// `PING`, `TCP`, `UDP-CONNECT` or `HTTP`.
    pub kind: String,
    /// Seconds between checks, and for one check.
    pub delay: u32,
    pub timeout: u32,
    pub max_retries: u8,
    pub max_retries_down: u8,
    pub http_method: String,
    pub url_path: String,
    pub expected_codes: String,
}

/// An L7 instance (Octavia's amphora) on the host it runs on: the agent
/// plugs a namespace into its port like a VM (`port_id`'s tap, the port's
/// MAC and address, the subnet's gateway as its default route) and runs
/// `strato-l7` there with `config` (see `crate::l7`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct L7InstanceEntry {
    pub id: String,
    pub loadbalancer_id: String,
    pub port_id: String,
    pub mac: String,
    /// The instance's address and its subnet's prefix length.
    pub address: String,
    pub prefix_len: u8,
    pub gateway_ip: Option<String>,
    pub mtu: u32,
    /// Being removed: the agent stops the process gracefully (it finishes
    /// what is in flight) and removes its namespace once it exited.
    #[serde(default)]
    pub draining: bool,
    pub config: crate::l7::L7Config,
}
