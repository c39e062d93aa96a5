//! What the agent tells the controller: full host reports, status reports
//! with the ports whose state changed, load balancer health and counters;
//! all queued to one sender task that delivers them in order.
//!
//! [`Reporter`] owns the port states, what the controller holds of them,
//! and when the last full report went out; it decides which report is due
//! ([`Reporter::due`]). The pieces of a full report ([`interface_reports`],
//! [`map_sizes`], [`conntrack_report`]) are built from given state by pure
//! functions. This module never reads or writes maps itself (the agent
//! passes what it read) and never changes what is realised.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use dataplane_common::{maps, CtStats};
use strato_dataplane::{tables::Tables, Counters};
use strato_proto::{
    client::{self, Endpoint},
    report::{
        ConntrackReport, DropReport, HostReport, IfCounters, InterfaceReport, PortReport,
        StatusReport,
    },
};

use crate::{interfaces::Interfaces, security_groups::Policies};

/// A report queued for the controller.
pub(crate) enum Outgoing {
    Full(Box<HostReport>),
    Status(StatusReport),
    /// Health of the members this host checks.
    LbHealth(strato_proto::lb::HealthReport),
    /// Load balancer counters of this host.
    LbStats(strato_proto::lb::StatsReport),
}

/// Which report goes out next.
#[derive(Debug, PartialEq)]
pub(crate) enum Due {
    Nothing,
    Status(StatusReport),
    Full,
}

pub(crate) struct Reporter {
    /// Every configured port's state, by port id.
    pub ports: BTreeMap<String, PortReport>,
    /// The port states the controller holds (`None`: send a full report).
    reported: Option<BTreeMap<String, PortReport>>,
    last_full: Option<Instant>,
    /// Counters read off the agent's loop (see `Agent::run`).
    pub counters: Arc<Mutex<Option<Counters>>>,
    /// Reports go out through one task, in order, off the loop.
    pub outbox: Option<tokio::sync::mpsc::UnboundedSender<Outgoing>>,
    /// Set by the sender when the controller must get a full report.
    pub need_full: Arc<AtomicBool>,
    pub started_at_ms: u64,
}

impl Reporter {
    pub fn new(started_at_ms: u64) -> Reporter {
        Reporter {
            ports: BTreeMap::new(),
            reported: None,
            last_full: None,
            counters: Arc::new(Mutex::new(None)),
            outbox: None,
            need_full: Arc::new(AtomicBool::new(false)),
            started_at_ms,
        }
    }

    /// Queues `msg` if there is a controller to send it to.
    pub fn queue(&self, msg: Outgoing) {
        if let Some(outbox) = &self.outbox {
            let _ = outbox.send(msg);
        }
    }

    /// Which report is due: a full one when `full_every` passed since the
    /// last (or the controller lacks one), else a status report with the
    /// ports whose state changed; with `only_if_changed`, nothing when
    /// nothing changed. A status report counts as delivered.
    pub fn due(
        &mut self,
        only_if_changed: bool,
        full_every: Duration,
        host: &str,
        revision: u64,
    ) -> Due {
        if self.need_full.swap(false, Ordering::SeqCst) {
            self.reported = None;
        }
        let full_due = self.last_full.is_none_or(|t| t.elapsed() >= full_every);
        let (Some(reported), false) = (&self.reported, full_due) else {
            return Due::Full;
        };
        let (changed, removed) = status_delta(&self.ports, reported);
        if only_if_changed && changed.is_empty() && removed.is_empty() {
            return Due::Nothing;
        }
        self.reported = Some(self.ports.clone());
        Due::Status(StatusReport {
            host: host.to_owned(),
            realised_revision: revision,
            changed,
            removed,
        })
    }

    /// A full report went out.
    pub fn sent_full(&mut self) {
        self.reported = Some(self.ports.clone());
        self.last_full = Some(Instant::now());
    }
}

/// Ports whose state differs from what the controller holds, and ports it
/// holds that are gone.
fn status_delta(
    ports: &BTreeMap<String, PortReport>,
    reported: &BTreeMap<String, PortReport>,
) -> (Vec<PortReport>, Vec<String>) {
    let changed = ports
        .iter()
        .filter(|(id, p)| reported.get(*id) != Some(*p))
        .map(|(_, p)| p.clone())
        .collect();
    let removed = reported
        .keys()
        .filter(|id| !ports.contains_key(*id))
        .cloned()
        .collect();
    (changed, removed)
}

/// Every attached interface with its counters, and the drops on them.
pub(crate) fn interface_reports(
    ifaces: &Interfaces,
    counters: &Counters,
) -> (Vec<InterfaceReport>, Vec<DropReport>) {
    let names: BTreeMap<u32, &str> = ifaces
        .attached
        .iter()
        .map(|(n, a)| (a.ifindex, n.as_str()))
        .collect();
    let interfaces = ifaces
        .attached
        .iter()
        .map(|(name, a)| InterfaceReport {
            name: name.clone(),
            ifindex: a.ifindex,
            role: a.role.clone(),
            error: a.error.clone(),
            counters: counters
                .interfaces
                .get(&a.ifindex)
                .copied()
                .map(IfCounters::from)
                .unwrap_or_default(),
        })
        .collect();
    let drops = counters
        .drops
        .iter()
        .filter_map(|((ifindex, reason), s)| {
            names.get(ifindex).map(|n| DropReport::new(n, *reason, *s))
        })
        .collect();
    (interfaces, drops)
}

/// Entries of every map the agent writes, by map name.
pub(crate) fn map_sizes(
    have: &Tables,
    counters: &Counters,
    policies: &Policies,
    ct_live: u64,
) -> BTreeMap<String, u64> {
    let mut sizes = BTreeMap::new();
    for (name, n) in [
        (maps::PORTS, have.ports.len()),
        (maps::ENDPOINTS, have.endpoints.len()),
        (maps::ROUTES, have.routes.len()),
        (maps::VNIS, have.vnis.len()),
        (maps::MACS, have.macs.len()),
        (maps::ALLOWED, have.allowed.len()),
    ] {
        sizes.insert(name.to_owned(), n as u64);
    }
    sizes.insert(maps::IF_STATS.to_owned(), counters.interfaces.len() as u64);
    sizes.insert(maps::DROP_STATS.to_owned(), counters.drops.len() as u64);
    let (mut addr, mut host, mut port, mut exact) = (0u64, 0u64, 0u64, 0u64);
    for (_, p) in policies.installed() {
        let (a, h) = p.addr_entries();
        let (r, e) = p.port_entries();
        addr += a as u64;
        host += h as u64;
        port += r as u64;
        exact += e as u64;
    }
    sizes.insert(maps::POLICY_ADDR.to_owned(), addr);
    sizes.insert(maps::POLICY_HOST.to_owned(), host);
    sizes.insert(maps::POLICY_PORT.to_owned(), port);
    sizes.insert(maps::POLICY_EXACT.to_owned(), exact);
    sizes.insert(maps::CT.to_owned(), ct_live);
    sizes
}

/// The connection table's state: the programs' counters `s`, the live
/// entries at the last sweep and the entries sweeps removed.
pub(crate) fn conntrack_report(
    s: CtStats,
    ct_live: u64,
    ct_swept: u64,
    capacity: u32,
) -> ConntrackReport {
    ConntrackReport {
        entries: ct_live,
        capacity: capacity as u64,
        inserts: s.inserts,
        insert_failures: s.insert_failures,
        evictions: s.inserts.saturating_sub(s.removed + ct_swept + ct_live),
        expired: ct_swept,
        revoked: s.removed,
        hits: s.hits,
        policy_lookups: s.policy_lookups,
        related: s.related,
        rechecked: s.rechecked,
    }
}

/// Sends queued reports in order. After a failure (or a 404 for a status
/// report: the controller lost this host) it drops status reports until the
/// agent queues a full one.
pub(crate) async fn sender(
    ep: Endpoint,
    host: String,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
    need_full: Arc<AtomicBool>,
) {
    let mut ok: Option<bool> = None;
    let mut skipping = false;
    while let Some(msg) = rx.recv().await {
        let r = match msg {
            Outgoing::Status(_) if skipping => continue,
            Outgoing::Status(s) => {
                client::put_json(&ep, &format!("/internal/v1/hosts/{host}/status"), &s).await
            }
            Outgoing::Full(r) => {
                skipping = false;
                client::put_json(&ep, &format!("/internal/v1/hosts/{host}"), &r).await
            }
            // Observations: one lost is replaced by the next.
            Outgoing::LbHealth(h) => {
                if let Err(e) =
                    client::put_json(&ep, &format!("/internal/v1/hosts/{host}/lb-health"), &h).await
                {
                    tracing::debug!(error = %e, "health report not delivered");
                }
                continue;
            }
            Outgoing::LbStats(s) => {
                if let Err(e) =
                    client::put_json(&ep, &format!("/internal/v1/hosts/{host}/lb-stats"), &s).await
                {
                    tracing::debug!(error = %e, "load balancer counters not delivered");
                }
                continue;
            }
        };
        match r {
            Ok(()) => {
                if ok != Some(true) {
                    tracing::info!(controller = %ep, "reporting to the controller");
                }
                ok = Some(true);
            }
            Err(e) => {
                let lost_host = matches!(&e, client::ClientError::Status { status, .. } if *status == client::StatusCode::NOT_FOUND);
                if !lost_host && ok != Some(false) {
                    // Keep forwarding with what is loaded; say so once per outage.
                    tracing::warn!(controller = %ep, error = %e, "controller unreachable; forwarding goes on");
                    ok = Some(false);
                }
                skipping = true;
                need_full.store(true, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strato_proto::report::{PortState, Role};

    fn port(id: &str, state: PortState) -> (String, PortReport) {
        let r = PortReport {
            id: id.to_owned(),
            tap: format!("tap-{id}"),
            ifindex: Some(7),
            state,
            error: None,
        };
        (id.to_owned(), r)
    }

    const EVERY: Duration = Duration::from_secs(3600);

    #[test]
    fn the_first_report_is_full_then_status_reports_carry_changes() {
        let mut r = Reporter::new(1);
        r.ports = [port("p1", PortState::Waiting)].into();
        assert_eq!(r.due(true, EVERY, "h1", 3), Due::Full);
        assert_eq!(
            r.due(false, EVERY, "h1", 3),
            Due::Full,
            "until one went out"
        );
        r.sent_full();
        assert_eq!(r.due(true, EVERY, "h1", 3), Due::Nothing);
        let Due::Status(s) = r.due(false, EVERY, "h1", 3) else {
            panic!("a periodic status report goes out even without changes");
        };
        assert!(s.changed.is_empty() && s.removed.is_empty());
        r.ports = [
            port("p1", PortState::Active),
            port("p2", PortState::Waiting),
        ]
        .into();
        let Due::Status(s) = r.due(true, EVERY, "h1", 4) else {
            panic!("changed ports make a status report");
        };
        assert_eq!((s.host.as_str(), s.realised_revision), ("h1", 4));
        let ids: Vec<_> = s.changed.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["p1", "p2"]);
        assert_eq!(
            r.due(true, EVERY, "h1", 4),
            Due::Nothing,
            "a status report counts as held"
        );
        r.ports.remove("p1");
        let Due::Status(s) = r.due(true, EVERY, "h1", 5) else {
            panic!("a removed port makes a status report");
        };
        assert_eq!(s.removed, ["p1"]);
        assert!(s.changed.is_empty());
    }

    #[test]
    fn a_full_report_is_due_after_its_interval_or_when_the_controller_asks() {
        let mut r = Reporter::new(1);
        r.sent_full();
        assert_eq!(r.due(true, Duration::ZERO, "h1", 1), Due::Full);
        r.sent_full();
        r.need_full.store(true, Ordering::SeqCst);
        assert_eq!(r.due(true, EVERY, "h1", 1), Due::Full);
        assert!(!r.need_full.load(Ordering::SeqCst), "the request is taken");
        assert_eq!(r.due(true, EVERY, "h1", 1), Due::Full, "still nothing held");
    }

    #[test]
    fn interfaces_carry_their_counters_and_drops_only_known_ones() {
        use crate::interfaces::Attached;
        let mut ifaces = Interfaces::default();
        ifaces.attached.insert(
            "eth0".into(),
            Attached {
                ifindex: 2,
                role: Role::Uplink,
                error: None,
            },
        );
        let mut c = Counters::default();
        let stats = dataplane_common::IfStats {
            rx_packets: 5,
            ..Default::default()
        };
        c.interfaces.insert(2, stats);
        let d = dataplane_common::DropStats {
            packets: 3,
            ..Default::default()
        };
        c.drops
            .insert((2, dataplane_common::DropReason::TruncatedEthernet), d);
        c.drops
            .insert((9, dataplane_common::DropReason::TruncatedEthernet), d);
        let (ifs, drops) = interface_reports(&ifaces, &c);
        assert_eq!(ifs.len(), 1);
        assert_eq!((ifs[0].name.as_str(), ifs[0].ifindex), ("eth0", 2));
        assert_eq!(ifs[0].counters, IfCounters::from(stats));
        assert_eq!(drops.len(), 1, "drops on an unknown interface are left out");
        assert_eq!(drops[0].interface, "eth0");
    }

    #[test]
    fn map_sizes_and_conntrack_figures() {
        let mut have = Tables::default();
        have.ports.insert(7, Default::default());
        have.ports.insert(8, Default::default());
        let sizes = map_sizes(&have, &Counters::default(), &Policies::default(), 42);
        assert_eq!(sizes[maps::PORTS], 2);
        assert_eq!(sizes[maps::ENDPOINTS], 0);
        assert_eq!(sizes[maps::CT], 42);
        assert_eq!(sizes[maps::POLICY_ADDR], 0);
        let s = CtStats {
            inserts: 100,
            removed: 10,
            hits: 7,
            ..Default::default()
        };
        let ct = conntrack_report(s, 40, 30, 1000);
        assert_eq!(
            (ct.entries, ct.capacity, ct.expired, ct.revoked),
            (40, 1000, 30, 10)
        );
        assert_eq!(
            ct.evictions, 20,
            "inserts not removed, swept nor live were evicted"
        );
        let ct = conntrack_report(
            CtStats {
                inserts: 5,
                ..Default::default()
            },
            40,
            30,
            1000,
        );
        assert_eq!(ct.evictions, 0, "never negative");
    }
}
