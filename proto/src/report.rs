//! What an agent reports to the controller about its host: which interfaces
//! carry which program, and their counters. Serialized as JSON on
//! `PUT /internal/v1/hosts/{host}`; `stratoctl host` prints it.

use dataplane_common::{DropStats, IfStats};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostReport {
    pub host: String,
    pub agent_version: String,
    pub pid: u32,
    /// Unix time (ms) the agent process started.
    pub started_at_ms: u64,
    /// Pin directory of this host's maps and links.
    pub pin_dir: String,
    pub interfaces: Vec<InterfaceReport>,
    pub drops: Vec<DropReport>,
    /// The host's tunnel endpoint address (its uplink's IPv4 address).
    #[serde(default)]
    pub underlay_ip: Option<String>,
    /// Availability zone the host is in (`--az`).
    #[serde(default)]
    pub az: String,
    /// The external interface (`--external`), on gateway hosts only.
    #[serde(default)]
    pub external: Option<String>,
    /// Configuration revision the agent has applied.
    #[serde(default)]
    pub realised_revision: u64,
    /// Every port the configuration binds to this host, and how it is.
    #[serde(default)]
    pub ports: Vec<PortReport>,
    /// Entries per pinned map.
    #[serde(default)]
    pub maps: std::collections::BTreeMap<String, u64>,
    /// The connection tracking table.
    #[serde(default)]
    pub conntrack: Option<ConntrackReport>,
}

/// Connection tracking of a host: the table's fill and the packet path's
/// counters (since the table was created).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackReport {
    /// Live entries at the last sweep, and the table's size.
    pub entries: u64,
    pub capacity: u64,
    pub inserts: u64,
    pub insert_failures: u64,
    /// Entries evicted by the LRU to make room, estimated: inserted and not
    /// revoked, swept or live at the last sweep. An entry re-created over
    /// an expired or closed one counts here too, and the live count is up
    /// to a sweep interval old, so small figures are noise.
    pub evictions: u64,
    /// Removed by the agent's sweeps (expired, or their port gone) since
    /// the agent started.
    pub expired: u64,
    /// Removed by the packet path (revoked by a rule change).
    pub revoked: u64,
    pub hits: u64,
    pub policy_lookups: u64,
    pub related: u64,
    pub rechecked: u64,
}

/// Between full reports (which carry every interface's counters): liveness,
/// the realised revision, and only the ports whose state changed. Cheap at
/// any number of ports, so agents send it right after applying an update.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub host: String,
    pub realised_revision: u64,
    #[serde(default)]
    pub changed: Vec<PortReport>,
    #[serde(default)]
    pub removed: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    /// Tap found, program attached, maps written.
    Active,
    /// No tap device of that name on the host (yet).
    Waiting,
    /// Attaching or writing maps failed (see `error`).
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortReport {
    pub id: String,
    pub tap: String,
    pub ifindex: Option<u32>,
    pub state: PortState,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Uplink,
    Port,
    /// A gateway host's interface on the external network.
    External,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceReport {
    pub name: String,
    pub ifindex: u32,
    pub role: Role,
    /// `None` while attached fine; the error text when attaching failed.
    pub error: Option<String>,
    pub counters: IfCounters,
}

/// [`IfStats`] summed over CPUs, as JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IfCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub ipv4: u64,
    pub ipv6: u64,
    pub arp: u64,
    pub other: u64,
    pub passed: u64,
    pub dropped: u64,
}

impl From<IfStats> for IfCounters {
    fn from(s: IfStats) -> Self {
        IfCounters {
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            ipv4: s.ipv4,
            ipv6: s.ipv6,
            arp: s.arp,
            other: s.other,
            passed: s.passed,
            dropped: s.dropped,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropReport {
    pub interface: String,
    /// A `DropReason` label (snake_case).
    pub reason: String,
    pub packets: u64,
    pub bytes: u64,
}

impl DropReport {
    pub fn new(interface: &str, reason: dataplane_common::DropReason, s: DropStats) -> DropReport {
        DropReport {
            interface: interface.to_owned(),
            reason: reason.label().to_owned(),
            packets: s.packets,
            bytes: s.bytes,
        }
    }
}

/// What the controller answers about a host: the last report and its age.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub host: String,
    /// Milliseconds since the last report.
    pub last_seen_ms_ago: u64,
    /// `up` when reported within the liveness window, else `down`.
    pub state: String,
    pub report: HostReport,
}
