//! The VPC's configuration as a host needs it: its ports, their networks
//! and subnets, the routers joining them, and the ports on other hosts it
//! may talk to.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub destination: String,
    pub nexthop: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPair {
    pub ip_address: String,
    pub mac_address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortEntry {
    pub id: String,
    /// The host device (Nova tap name) the agent attaches to.
    pub tap: String,
    pub network_id: String,
    pub vni: u32,
    pub mtu: u32,
    pub mac: String,
    /// (subnet id, address)
    pub ips: Vec<(String, String)>,
    pub port_security_enabled: bool,
    pub allowed_address_pairs: Vec<AddressPair>,
    pub admin_state_up: bool,
    /// The port's security groups, sorted (empty when port security is
    /// off: nothing is filtered).
    #[serde(default)]
    pub security_groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetEntry {
    pub id: String,
    pub cidr: String,
    pub gateway_ip: Option<String>,
    /// MAC of the router interface holding the gateway address, if attached.
    pub gateway_mac: Option<String>,
    pub enable_dhcp: bool,
    pub dns_nameservers: Vec<String>,
    pub host_routes: Vec<HostRoute>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEntry {
    pub id: String,
    pub vni: u32,
    pub mtu: u32,
    pub admin_state_up: bool,
    /// The router (routing domain) this network is attached to, if any.
    pub router_id: Option<String>,
    pub subnets: Vec<SubnetEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterInterface {
    pub port_id: String,
    pub subnet_id: String,
    pub network_id: String,
    pub vni: u32,
    pub cidr: String,
    pub ip: String,
    pub mac: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterEntry {
    pub id: String,
    pub admin_state_up: bool,
    pub interfaces: Vec<RouterInterface>,
    pub routes: Vec<HostRoute>,
    /// The router's external gateway, if it has one.
    #[serde(default)]
    pub external: Option<super::RouterExternal>,
}

/// A port on another host that local ports may talk to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEntry {
    pub port_id: String,
    pub network_id: String,
    pub vni: u32,
    pub mac: String,
    pub ips: Vec<String>,
    pub allowed_address_pairs: Vec<AddressPair>,
    pub host: String,
    pub underlay_ip: String,
    /// Administratively down ports receive nothing.
    #[serde(default = "yes")]
    pub admin_state_up: bool,
}

fn yes() -> bool {
    true
}
