//! The VPC maps as a whole value ([`Tables`]: ports, endpoints, routes,
//! VNIs, MACs, allowed addresses, elastic IPs, SNAT routers, bandwidth
//! buckets) and the difference between two of them ([`Diff`]): what the
//! agent's VPC realiser plans and [`crate::Dataplane::apply`] writes.

use std::collections::BTreeMap;

use dataplane_common::{
    AllowedMac, EipEntry, EipOut, Endpoint, EpKey, MacKey, PortInfo, QosBucket, QosKey, Route,
    SnatRouter, VniInfo,
};
use ipnetwork::Ipv4Network;

/// Everything the VPC maps should hold, keyed as in the maps (LPM keys as
/// (domain or ifindex, prefix)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    pub ports: BTreeMap<u32, PortInfo>,
    pub endpoints: BTreeMap<EpKey, Endpoint>,
    pub routes: BTreeMap<(u32, Ipv4Network), Route>,
    pub vnis: BTreeMap<u32, VniInfo>,
    pub macs: BTreeMap<MacKey, u32>,
    pub allowed: BTreeMap<(u32, Ipv4Network), AllowedMac>,
    /// Elastic IPs: translated here (local port) or steered (gateway).
    pub eips: BTreeMap<[u8; 4], EipEntry>,
    /// (domain, fixed IP) of a local port -> its elastic IP.
    pub eip_out: BTreeMap<EpKey, EipOut>,
    /// Gateway hosts: domain -> the router whose SNAT this host does.
    pub snat_routers: BTreeMap<u32, SnatRouter>,
    /// Bandwidth limits of local ports' elastic IPs (clocks as written:
    /// zero; [`crate::Dataplane::tables`] reads them back zeroed).
    pub eip_qos: BTreeMap<QosKey, QosBucket>,
}

/// An LPM key as the tables hold it: (domain or ifindex, prefix).
pub type LpmKey = (u32, Ipv4Network);
/// Upserts (key, value) and deletes (key) of one map.
pub type Changes<K, V> = (Vec<(K, V)>, Vec<K>);

/// Upserts and deletes that turn one [`Tables`] into another.
#[derive(Debug, Default)]
pub struct Diff {
    pub ports: Changes<u32, PortInfo>,
    pub endpoints: Changes<EpKey, Endpoint>,
    pub routes: Changes<LpmKey, Route>,
    pub vnis: Changes<u32, VniInfo>,
    pub macs: Changes<MacKey, u32>,
    pub allowed: Changes<LpmKey, AllowedMac>,
    pub eips: Changes<[u8; 4], EipEntry>,
    pub eip_out: Changes<EpKey, EipOut>,
    pub snat_routers: Changes<u32, SnatRouter>,
    pub eip_qos: Changes<QosKey, QosBucket>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Map operations in the diff.
    pub fn len(&self) -> usize {
        self.ports.0.len()
            + self.ports.1.len()
            + self.endpoints.0.len()
            + self.endpoints.1.len()
            + self.routes.0.len()
            + self.routes.1.len()
            + self.vnis.0.len()
            + self.vnis.1.len()
            + self.macs.0.len()
            + self.macs.1.len()
            + self.allowed.0.len()
            + self.allowed.1.len()
            + self.eips.0.len()
            + self.eips.1.len()
            + self.eip_out.0.len()
            + self.eip_out.1.len()
            + self.snat_routers.0.len()
            + self.snat_routers.1.len()
            + self.eip_qos.0.len()
            + self.eip_qos.1.len()
    }
}

fn diff_map<K: Ord + Copy, V: PartialEq + Copy>(
    want: &BTreeMap<K, V>,
    have: &BTreeMap<K, V>,
) -> (Vec<(K, V)>, Vec<K>) {
    let up = want
        .iter()
        .filter(|(k, v)| have.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
        .collect();
    let del = have
        .keys()
        .filter(|k| !want.contains_key(k))
        .copied()
        .collect();
    (up, del)
}

impl Tables {
    /// What to write so that maps holding `have` hold `self`.
    pub fn diff(&self, have: &Tables) -> Diff {
        Diff {
            ports: diff_map(&self.ports, &have.ports),
            endpoints: diff_map(&self.endpoints, &have.endpoints),
            routes: diff_map(&self.routes, &have.routes),
            vnis: diff_map(&self.vnis, &have.vnis),
            macs: diff_map(&self.macs, &have.macs),
            allowed: diff_map(&self.allowed, &have.allowed),
            eips: diff_map(&self.eips, &have.eips),
            eip_out: diff_map(&self.eip_out, &have.eip_out),
            snat_routers: diff_map(&self.snat_routers, &have.snat_routers),
            eip_qos: diff_map(&self.eip_qos, &have.eip_qos),
        }
    }
}
