//! Security groups as a host needs them: the groups its ports use, with
//! their rules, and the members of the groups those rules name.

use serde::{Deserialize, Serialize};

/// A security group some local port uses, with its rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupEntry {
    pub id: String,
    pub stateful: bool,
    /// Sorted by id.
    pub rules: Vec<SgRuleEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgRuleEntry {
    pub id: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// `IPv4` or `IPv6`.
    pub ethertype: String,
    /// Protocol number; `None`: any.
    pub protocol: Option<u8>,
    pub port_range_min: Option<u32>,
    pub port_range_max: Option<u32>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
}

impl SgRuleEntry {
    /// An IPv4 rule (fixtures, tests and benchmarks build rules with it).
    pub fn ipv4(
        id: &str,
        direction: &str,
        protocol: Option<u8>,
        (port_range_min, port_range_max): (Option<u32>, Option<u32>),
        remote_ip_prefix: Option<&str>,
        remote_group_id: Option<&str>,
    ) -> SgRuleEntry {
        SgRuleEntry {
            id: id.into(),
            direction: direction.into(),
            ethertype: "IPv4".into(),
            protocol,
            port_range_min,
            port_range_max,
            remote_ip_prefix: remote_ip_prefix.map(str::to_owned),
            remote_group_id: remote_group_id.map(str::to_owned),
        }
    }
}

/// One member port of a group that a local port's rules name as
/// `remote_group_id`: its addresses (fixed IPs and address pairs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgMemberEntry {
    pub group_id: String,
    pub port_id: String,
    pub ips: Vec<String>,
}
