//! What the controller compiles for each host and the agent realises: the
//! host's configuration as keyed entries ([`Entry`]), delivered as a
//! snapshot or a delta ([`Update`]), grouped by feature.

mod external;
mod lb;
mod security_groups;
mod vpc;

pub use external::*;
pub use lb::*;
pub use security_groups::*;
pub use vpc::*;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    Port(PortEntry),
    Network(NetworkEntry),
    Router(RouterEntry),
    Remote(RemoteEntry),
    SecurityGroup(SecurityGroupEntry),
    SgMember(SgMemberEntry),
    FloatingIp(FloatingIpEntry),
    Snat(SnatEntry),
    LoadBalancer(LoadBalancerEntry),
    L7Instance(L7InstanceEntry),
}

impl Entry {
    /// Stable key: `<type>/<id>`.
    pub fn key(&self) -> String {
        match self {
            Entry::Port(p) => format!("port/{}", p.id),
            Entry::Network(n) => format!("network/{}", n.id),
            Entry::Router(r) => format!("router/{}", r.id),
            Entry::Remote(r) => format!("remote/{}", r.port_id),
            Entry::SecurityGroup(g) => format!("sg/{}", g.id),
            Entry::SgMember(m) => format!("sgmember/{}/{}", m.group_id, m.port_id),
            Entry::FloatingIp(f) => format!("fip/{}", f.id),
            Entry::Snat(n) => format!("snat/{}", n.router_id),
            Entry::LoadBalancer(l) => format!("lb/{}", l.id),
            Entry::L7Instance(i) => format!("l7/{}", i.id),
        }
    }
}

/// What an agent receives: a full snapshot, or the changes since `from`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// `snapshot` replaces everything; `delta` applies on top of `from`.
    pub kind: UpdateKind,
    pub host: String,
    /// The host's configuration revision before (delta) this update.
    pub from: u64,
    /// The revision the agent has once it applied this update.
    pub revision: u64,
    pub upserts: Vec<Entry>,
    /// Keys removed.
    pub deletes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateKind {
    Snapshot,
    Delta,
}
