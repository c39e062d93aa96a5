//! The way out of a VPC: a router's external gateway, the gateway hosts
//! doing SNAT, elastic IPs (1:1 NAT) and their bandwidth limits.

use serde::{Deserialize, Serialize};

/// How traffic leaves a VPC whose router has an external gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterExternal {
    pub network_id: String,
    /// The external network's VNI (tunnels to and from gateway hosts).
    pub vni: u32,
    pub mtu: u32,
    pub enable_snat: bool,
    /// The gateway port's address (the SNAT source) and MAC.
    pub ip: Option<String>,
    pub mac: String,
    /// Available gateway hosts for this host's traffic, preferred first
    /// (those of the host's own availability zone).
    pub gateways: Vec<GatewayHost>,
    /// The gateway host doing this router's SNAT (none: SNAT off, or no
    /// gateway host available).
    #[serde(default)]
    pub snat_gateway: Option<GatewayHost>,
}

/// A router's SNAT as a gateway host needs it: on the host doing it
/// (`local`), the router's address and networks; on the others, where to
/// steer replies that the internet's ECMP sent to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnatEntry {
    pub router_id: String,
    /// The router's gateway port address (the translated source).
    pub ip: String,
    /// VNI of the external network.
    pub ext_vni: u32,
    /// VNIs of the router's networks (the smallest is the domain id).
    pub vnis: Vec<u32>,
    /// The gateway host doing it.
    pub host: String,
    pub underlay_ip: String,
    pub local: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayHost {
    pub name: String,
    pub az: String,
    pub underlay_ip: String,
}

/// A bound elastic IP, on the host of its port (which translates) and on
/// every gateway host (which steer its inbound traffic to that host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIpEntry {
    pub id: String,
    pub floating_ip_address: String,
    pub fixed_ip_address: String,
    pub port_id: String,
    /// The external network and its VNI.
    pub network_id: String,
    pub vni: u32,
    /// The bound port's host and its underlay address.
    pub host: String,
    pub underlay_ip: String,
    /// Compiled for a gateway host: steer (the port's host translates).
    pub steer: bool,
    /// Its QoS policy, and that policy's bandwidth limits.
    #[serde(default)]
    pub qos_policy_id: Option<String>,
    #[serde(default)]
    pub limits: Vec<BandwidthLimit>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthLimit {
    /// `ingress` (towards the VM) or `egress`.
    pub direction: String,
    pub max_kbps: u64,
    /// 0: the default depth (see the agent's `vpc::qos_bucket`).
    pub max_burst_kbps: u64,
}
