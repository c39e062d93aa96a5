//! What agents report about load balancing: member health as their probes
//! see it (`PUT /internal/v1/hosts/{host}/lb-health`) and traffic counters
//! per listener and member (`.../lb-stats`). The controller keeps them in
//! memory (see `strato_controller::lbaas::health` for how statuses are
//! derived). Also the agent's access log line ([`AccessLine`], one JSON
//! object per line in its state directory), which `stratoctl` reads.

use serde::{Deserialize, Serialize};

/// Traffic counters of a listener or member (Octavia's `stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
    #[serde(default)]
    pub active_connections: u64,
    #[serde(default)]
    pub total_connections: u64,
    #[serde(default)]
    pub request_errors: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
        self.active_connections = self.active_connections.saturating_add(o.active_connections);
        self.total_connections = self.total_connections.saturating_add(o.total_connections);
        self.request_errors = self.request_errors.saturating_add(o.request_errors);
    }
}

/// One entry of a stats report: a listener's or member's id and its
/// counters (absent ones 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountersOf {
    pub id: String,
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
    #[serde(default)]
    pub active_connections: u64,
    #[serde(default)]
    pub total_connections: u64,
    #[serde(default)]
    pub request_errors: u64,
}

impl CountersOf {
    pub fn counters(&self) -> Counters {
        Counters {
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            active_connections: self.active_connections,
            total_connections: self.total_connections,
            request_errors: self.request_errors,
        }
    }
}

/// `PUT /internal/v1/hosts/{host}/lb-stats`: a host's counters (totals
/// since its agent started, per listener and member); it replaces that
/// host's previous report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsReport {
    #[serde(default)]
    pub listeners: Vec<CountersOf>,
    #[serde(default)]
    pub members: Vec<CountersOf>,
    /// The L7 instances this host runs: the CPU time each used since it
    /// started (the controller's scaling signal).
    #[serde(default)]
    pub instances: Vec<InstanceLoad>,
}

/// An L7 instance's CPU time so far, µs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceLoad {
    pub id: String,
    pub cpu_us: u64,
}

/// One entry of a health report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberHealth {
    pub id: String,
    pub up: bool,
}

/// `PUT /internal/v1/hosts/{host}/lb-health`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthReport {
    pub members: Vec<MemberHealth>,
}

/// One access log line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLine {
    /// RFC 3339 UTC.
    pub time: String,
    /// `start` or `end`.
    pub event: String,
    pub listener: String,
    pub member: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub client: String,
    pub vip: String,
    pub backend: String,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// `end`: how long the connection lasted (first to last packet), ms.
    pub duration_ms: u64,
    /// `end`: `closed`, `idle` or `gone` (evicted, drained or removed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}
