//! The agent's configuration: who it is, where its controller and pinned
//! state are, which interfaces are its uplink and ports, and its limits.
//! Set once at start (from `strato-agent`'s flags); never changed.

use std::{path::PathBuf, time::Duration};

use strato_proto::client::Endpoint;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub host: String,
    pub controller: Option<Endpoint>,
    pub uplinks: Vec<String>,
    /// Interfaces whose name starts with one of these are VM ports.
    pub port_prefixes: Vec<String>,
    pub pin_root: PathBuf,
    pub interval: Duration,
    /// How often a full report (every interface's counters, every port)
    /// goes out; in between, status reports carry only what changed.
    pub full_report_interval: Duration,
    /// Size of the connection tracking table (flows); `None`: the default
    /// (`dataplane_common::maps::CT_MAX_DEFAULT`).
    pub ct_max: Option<u32>,
    /// Availability zone of this host (reported; the controller picks the
    /// gateway hosts of a VM's zone for its internet traffic).
    pub az: String,
    /// Gateway hosts: the interface towards the internet (external network).
    pub external: Option<String>,
    /// Where the agent writes what it observes for operators: the load
    /// balancer access log and metrics (`lb::access_log`). `None`: nothing written.
    pub state_dir: Option<PathBuf>,
    /// The `strato-l7` executable the host's L7 instances run.
    pub l7_binary: PathBuf,
}

impl AgentConfig {
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(&self.host)
    }
}
