//! What the agents report about load balancing, kept in memory (never
//! stored: it is observed, not desired): member health ([`LbHealth`]) and
//! traffic counters ([`LbStats`]), fed by `PUT /internal/v1/hosts/{host}/
//! lb-health` and `.../lb-stats` on the agents' socket. The operating
//! status of members, pools, listeners and load balancers is derived from
//! them at render time.
//!
//! Member operating status, in order:
//! - `OFFLINE`: the member is administratively down;
//! - `DRAINING`: weight 0 (no new connections, established ones continue);
//! - `NO_MONITOR`: its pool has no health monitor, or the monitor is
//!   administratively down (nothing checks it; traffic goes to it);
//! - `ONLINE` / `ERROR`: the latest report from any host says up / down;
//! - `ERROR` too when the hosts that checked it are down (their reports
//!   are dropped and the member is stored down: it takes no new
//!   connection until a live host reports it up);
//! - `OFFLINE` before any host reported on it: a monitored member is not
//!   known healthy yet (Octavia shows a new member of a monitored pool
//!   `OFFLINE` until its first health message, not `ONLINE`, and not
//!   `NO_MONITOR`, which would claim there is no monitor).
//!
//! Pools, listeners and load balancers (OFFLINE if administratively down)
//! aggregate their children's statuses, ignoring OFFLINE and DRAINING
//! children: `ERROR` if every counted child is ERROR, `DEGRADED` if some
//! are ERROR or DEGRADED, `ONLINE` otherwise (also with no children). A
//! listener's child is its default pool; a load balancer's, its listeners.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use strato_proto::lb::{Counters, CountersOf, StatsReport};

use super::{members, pool_members, pool_monitor};
use crate::{
    model::{Listener, LoadBalancer, Member, Pool},
    state::State,
};

/// What each host last said of one member: host -> (up, when reported).
type MemberReports = HashMap<String, (bool, Instant)>;

/// Member health as the hosts report it.
#[derive(Default)]
pub struct LbHealth {
    /// member id -> its reports.
    reports: Mutex<HashMap<String, MemberReports>>,
}

impl LbHealth {
    pub fn new() -> LbHealth {
        LbHealth::default()
    }

    /// `host` says `member_id` is up (or down) as of `at`.
    pub fn report(&self, host: &str, member_id: &str, up: bool, at: Instant) {
        self.reports
            .lock()
            .expect("health lock poisoned")
            .entry(member_id.to_owned())
            .or_default()
            .insert(host.to_owned(), (up, at));
    }

    /// Forgets members for which `keep` is false (deleted ones).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.reports
            .lock()
            .expect("health lock poisoned")
            .retain(|id, _| keep(id));
    }

    /// Drops the reports of hosts for which `gone` is true (a host that is
    /// down checks nothing: what it said last is no longer known). Returns
    /// the members that are left with no report at all: nothing checks
    /// them any more.
    pub fn forget_hosts(&self, gone: impl Fn(&str) -> bool) -> Vec<String> {
        let mut reports = self.reports.lock().expect("health lock poisoned");
        let mut unchecked = Vec::new();
        for (member, by_host) in reports.iter_mut() {
            let before = by_host.len();
            by_host.retain(|host, _| !gone(host));
            if before > 0 && by_host.is_empty() {
                unchecked.push(member.clone());
            }
        }
        reports.retain(|_, by_host| !by_host.is_empty());
        unchecked
    }

    /// The latest report on a member, from any host.
    pub fn latest(&self, member_id: &str) -> Option<bool> {
        self.reports
            .lock()
            .expect("health lock poisoned")
            .get(member_id)
            .and_then(|h| h.values().max_by_key(|(_, at)| *at).map(|(up, _)| *up))
    }

    /// A member's operating status (see the module's documentation).
    /// `has_monitor`: its pool has a health monitor that is up.
    pub fn member_status(&self, m: &Member, has_monitor: bool) -> &'static str {
        if !m.admin_state_up {
            return "OFFLINE";
        }
        if m.weight == 0 {
            return "DRAINING";
        }
        if !has_monitor {
            return "NO_MONITOR";
        }
        match self.latest(&m.meta.id) {
            Some(true) => "ONLINE",
            Some(false) => "ERROR",
            // Known down, and no host checks it now (its checker failed).
            None if m.health_down => "ERROR",
            None => "OFFLINE",
        }
    }

    pub fn pool_status(&self, state: &State, p: &Pool) -> &'static str {
        if !p.admin_state_up {
            return "OFFLINE";
        }
        let monitored = members::monitored(pool_monitor(state, &p.meta.id));
        aggregate(pool_members(state, &p.meta.id).map(|m| self.member_status(m, monitored)))
    }

    pub fn listener_status(&self, state: &State, l: &Listener) -> &'static str {
        if !l.admin_state_up {
            return "OFFLINE";
        }
        aggregate(
            l.default_pool_id
                .as_deref()
                .and_then(|p| state.pools.get(p))
                .map(|p| self.pool_status(state, p)),
        )
    }

    pub fn lb_status(&self, state: &State, lb: &LoadBalancer) -> &'static str {
        if !lb.admin_state_up {
            return "OFFLINE";
        }
        aggregate(
            state
                .listeners
                .values()
                .filter(|l| l.loadbalancer_id == lb.meta.id)
                .map(|l| self.listener_status(state, l)),
        )
    }
}

/// Children's statuses to their parent's (OFFLINE and DRAINING children
/// do not count).
/// The members of `ids` (left unchecked: see [`LbHealth::forget_hosts`])
/// stored down, those not down already.
pub fn unchecked_down(state: &State, ids: &[String]) -> Vec<crate::model::Change> {
    ids.iter()
        .filter_map(|id| state.members.get(id))
        .filter(|m| !m.health_down)
        .map(|m| {
            let mut m = m.clone();
            m.health_down = true;
            crate::model::Change::Put(crate::model::Object::Member(m))
        })
        .collect()
}

pub fn aggregate(children: impl IntoIterator<Item = &'static str>) -> &'static str {
    let (mut counted, mut error, mut degraded) = (0, 0, 0);
    for s in children {
        match s {
            "OFFLINE" | "DRAINING" => continue,
            "ERROR" => error += 1,
            "DEGRADED" => degraded += 1,
            _ => {}
        }
        counted += 1;
    }
    if counted > 0 && error == counted {
        "ERROR"
    } else if error > 0 || degraded > 0 {
        "DEGRADED"
    } else {
        "ONLINE"
    }
}

/// The latest stats report of every host.
#[derive(Default)]
pub struct LbStats {
    hosts: Mutex<HashMap<String, StatsReport>>,
    /// L7 instances' CPU use, from their CPU time in the reports.
    loads: Mutex<HashMap<String, Load>>,
}

/// An instance's CPU use: its last sample and the smoothed utilisation
/// (cores).
#[derive(Clone, Copy, Debug)]
struct Load {
    cpu_us: u64,
    at: Instant,
    utilisation: Option<f64>,
}

/// Samples closer than this are not compared (an agent refreshes its
/// instances' stats every two seconds and reports more often).
const LOAD_WINDOW: std::time::Duration = std::time::Duration::from_secs(4);

impl LbStats {
    pub fn new() -> LbStats {
        LbStats::default()
    }

    /// Replaces `host`'s report.
    pub fn report(&self, host: &str, r: StatsReport) {
        self.sample_loads(&r, Instant::now());
        self.hosts
            .lock()
            .expect("stats lock poisoned")
            .insert(host.to_owned(), r);
    }

    /// Folds the instances' CPU times into their utilisation: over at
    /// least [`LOAD_WINDOW`], CPU time used / wall time, smoothed (half
    /// the new window, half the past). A process that restarted (its CPU
    /// time went down) starts over.
    fn sample_loads(&self, r: &StatsReport, now: Instant) {
        let mut loads = self.loads.lock().expect("loads lock poisoned");
        for i in &r.instances {
            match loads.get_mut(&i.id) {
                Some(l) if i.cpu_us >= l.cpu_us => {
                    let dt = now.saturating_duration_since(l.at);
                    if dt >= LOAD_WINDOW {
                        let u = (i.cpu_us - l.cpu_us) as f64 / dt.as_micros() as f64;
                        l.utilisation = Some(l.utilisation.map_or(u, |old| (old + u) / 2.0));
                        l.cpu_us = i.cpu_us;
                        l.at = now;
                    }
                }
                _ => {
                    loads.insert(
                        i.id.clone(),
                        Load {
                            cpu_us: i.cpu_us,
                            at: now,
                            utilisation: None,
                        },
                    );
                }
            }
        }
    }

    /// An L7 instance's CPU use in cores (smoothed), once known.
    pub fn utilisation(&self, instance: &str) -> Option<f64> {
        self.loads
            .lock()
            .expect("loads lock poisoned")
            .get(instance)
            .and_then(|l| l.utilisation)
    }

    /// Forgets instances for which `keep` is false.
    pub fn retain_loads(&self, keep: impl Fn(&str) -> bool) {
        self.loads
            .lock()
            .expect("loads lock poisoned")
            .retain(|id, _| keep(id));
    }

    /// A listener's counters, summed over hosts.
    pub fn listener(&self, id: &str) -> Counters {
        self.sum(|r| &r.listeners, id)
    }

    /// A member's counters, summed over hosts.
    pub fn member(&self, id: &str) -> Counters {
        self.sum(|r| &r.members, id)
    }

    /// A load balancer's: the sum of its listeners'.
    pub fn load_balancer(&self, state: &State, lb_id: &str) -> Counters {
        let mut c = Counters::default();
        for l in state
            .listeners
            .values()
            .filter(|l| l.loadbalancer_id == lb_id)
        {
            c.add(&self.listener(&l.meta.id));
        }
        c
    }

    fn sum(&self, pick: impl Fn(&StatsReport) -> &Vec<CountersOf>, id: &str) -> Counters {
        let mut c = Counters::default();
        for r in self.hosts.lock().expect("stats lock poisoned").values() {
            for e in pick(r).iter().filter(|e| e.id == id) {
                c.add(&e.counters());
            }
        }
        c
    }
}

/// Listeners whose connection limit state flips with the latest counts:
/// at the limit when their open connections (summed over the hosts'
/// reports) reach `connection_limit`; no longer when they fall below 90%
/// of it (so a listener at the edge does not flip at every report), or
/// when the limit is gone. Each flip is a stored change: the hosts'
/// dataplanes refuse (or accept again) new connections.
pub fn limit_changes(state: &State, stats: &LbStats) -> Vec<crate::model::Change> {
    state
        .listeners
        .values()
        .filter_map(|l| {
            let open = stats.listener(&l.meta.id).active_connections as i64;
            let at = if l.connection_limit <= 0 {
                // -1: unlimited (0 is refused by the API).
                false
            } else if l.at_limit {
                open * 10 >= l.connection_limit * 9
            } else {
                open >= l.connection_limit
            };
            (at != l.at_limit).then(|| {
                tracing::info!(listener = %l.meta.id, open, limit = l.connection_limit, at_limit = at, "listener connection limit");
                let mut l = l.clone();
                l.at_limit = at;
                crate::model::Change::Put(crate::model::Object::Listener(l))
            })
        })
        .collect()
}
