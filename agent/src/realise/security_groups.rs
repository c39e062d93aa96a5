//! The security group realiser: keeps the policy maps in step with the
//! groups and remote-group members of the desired entries, and sweeps the
//! connection table.
//!
//! Owns the installed policies ([`Policies`]), whether they must be
//! planned again (in full, or only for new members, written in place),
//! whether a previous agent's policies were swept, and the connection
//! table's sweep state and figures. Plans with [`SgRealiser::plan`], writes
//! with [`SgRealiser::apply`]; a failed write makes the policy be rebuilt.
//! It never writes the VPC or load balancer maps: ports whose policy
//! changed are handed back for the VPC realiser to rewrite.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use strato_dataplane::Dataplane;
use strato_proto::config::Entry;

use crate::{
    desired::MemberAdd,
    realise::vpc::PortPolicies,
    security_groups::{Plan, Policies},
};

/// Seconds between sweeps of the connection table.
const CT_GC_EVERY_S: u64 = 5;

pub(crate) struct SgRealiser {
    /// Security group policies written to the maps.
    pub policies: Policies,
    /// Groups or remote-group members changed since the last plan.
    dirty: bool,
    /// The policies must be planned in full (not only `member_adds`).
    full: bool,
    /// Ports that joined remote groups since the last plan.
    member_adds: Vec<MemberAdd>,
    /// Entries of a previous agent's policies were swept (once, after the
    /// first complete build).
    swept: bool,
    /// When the connection table was last swept of expired entries.
    ct_gc_at: Option<Instant>,
    /// Live entries at the last sweep, and entries the sweeps removed.
    pub ct_live: u64,
    pub ct_swept: u64,
}

impl SgRealiser {
    /// Policies of a previous agent stay in force until ours replace them;
    /// ours are numbered above theirs (`max_policy`, `max_class`).
    pub fn new(max_policy: u32, max_class: u32) -> SgRealiser {
        let mut policies = Policies::default();
        policies.start_after(max_policy, max_class);
        SgRealiser {
            policies,
            dirty: true,
            full: true,
            member_adds: Vec::new(),
            swept: false,
            ct_gc_at: None,
            ct_live: 0,
            ct_swept: 0,
        }
    }

    /// Everything may have changed.
    pub fn mark_all(&mut self) {
        self.dirty = true;
        self.full = true;
        self.member_adds.clear();
    }

    /// A delta changed groups or members (`changed`); `full` unless only
    /// `adds` (new members) did.
    pub fn mark(&mut self, changed: bool, full: bool, adds: Vec<MemberAdd>) {
        self.dirty |= changed;
        self.full |= full;
        self.member_adds.extend(adds);
    }

    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Policy of every local port (by port id).
    pub fn port_policies(&self, desired: &BTreeMap<String, Entry>) -> PortPolicies {
        self.policies.port_policies(desired)
    }

    /// The policy writes due, and how long planning them took (ms). Ports
    /// joining remote groups (a VM booting into the default group) are
    /// written in place, without flattening the policies again; anything
    /// else is planned in full.
    pub fn plan(&mut self, desired: &BTreeMap<String, Entry>) -> (Plan, u64) {
        let check = std::mem::take(&mut self.dirty);
        let full = std::mem::take(&mut self.full);
        let adds = std::mem::take(&mut self.member_adds);
        let planned = Instant::now();
        let mut fast = Vec::new();
        let in_place = check
            && !full
            && !adds.is_empty()
            && match self.policies.add_members(&adds) {
                Some(ops) => {
                    fast = ops;
                    true
                }
                None => false,
            };
        let mut plan = self.policies.plan(desired, check && !in_place);
        fast.append(&mut plan.ops);
        plan.ops = fast;
        let plan_ms = planned.elapsed().as_millis() as u64;
        if plan.ops.is_empty() && plan_ms >= 10 {
            tracing::debug!(plan_ms, "security policies checked, nothing to write");
        }
        (plan, plan_ms)
    }

    /// Writes the planned policies (before the ports refer to them).
    /// Returns the ids of the ports whose policy changed.
    pub fn apply(&mut self, dp: &mut Dataplane, plan: Plan, plan_ms: u64) -> Vec<String> {
        for ops in &plan.ops {
            let started = Instant::now();
            match dp.policy_apply(ops) {
                Ok(()) => {
                    let (rules, _) = self
                        .policies
                        .installed()
                        .find(|(_, p)| p.id == ops.id)
                        .map(|(_, p)| (p.rules, p.id))
                        .unwrap_or_default();
                    tracing::info!(
                        policy = ops.id,
                        rules,
                        writes = ops.len(),
                        addresses_added = ops.addr_upserts.len(),
                        addresses_removed = ops.addr_deletes.len(),
                        classes_added = ops.new_classes.len(),
                        plan_ms,
                        write_ms = started.elapsed().as_millis() as u64,
                        "security policy written"
                    )
                }
                Err(e) => {
                    tracing::warn!(policy = ops.id, error = %format!("{e:#}"), "cannot write a security policy; will rebuild it");
                    self.policies.forget(ops.id);
                    self.dirty = true;
                    self.full = true;
                    self.swept = false;
                }
            }
        }
        plan.moved_ports
    }

    /// Removes replaced policies (after the ports moved to their successors)
    /// and, once the tables are complete (`settled`), whatever a previous
    /// agent left.
    pub fn retire(&mut self, dp: &mut Dataplane, settled: bool) {
        for ops in std::mem::take(&mut self.policies.retired) {
            if let Err(e) = dp.policy_apply(&ops) {
                tracing::warn!(policy = ops.id, error = %format!("{e:#}"), "cannot remove an unused security policy");
                self.swept = false;
            }
        }
        if !self.swept && settled {
            let pol = &self.policies;
            let classes = pol.live_classes();
            match dp.policy_sweep(&|id| pol.is_live(id), &|c| classes.contains(&c)) {
                Ok(_) => self.swept = true,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot sweep adopted policies")
                }
            }
        }
    }

    /// Whether a connection table sweep is due (every few seconds); if so,
    /// it counts as started now.
    pub fn ct_gc_due(&mut self) -> bool {
        if self
            .ct_gc_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(CT_GC_EVERY_S))
        {
            return false;
        }
        self.ct_gc_at = Some(Instant::now());
        true
    }

    /// Drops expired connection entries and those of routing domains
    /// without local ports (`domains`: those with), and on a gateway
    /// expired SNAT mappings.
    pub fn sweep_conntrack(&mut self, dp: &mut Dataplane, domains: &HashSet<u32>, gateway: bool) {
        match dp.ct_gc(strato_dataplane::coarse_now_ns(), &|z| {
            !domains.contains(&z)
        }) {
            Ok((live, removed)) => {
                self.ct_live = live;
                self.ct_swept += removed;
                if removed > 0 {
                    tracing::debug!(live, removed, "connection table swept");
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "connection table sweep failed"),
        }
        if gateway {
            match dp.snat_gc(strato_dataplane::coarse_now_ns()) {
                Ok((live, removed)) if removed > 0 => {
                    tracing::debug!(live, removed, "SNAT mappings swept")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "SNAT sweep failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_accumulate_until_planned() {
        let mut sg = SgRealiser::new(0, 0);
        assert!(sg.dirty(), "a new agent plans once");
        let (_, _) = sg.plan(&BTreeMap::new());
        assert!(!sg.dirty() && !sg.full && sg.member_adds.is_empty());
        let add = (
            "g1".to_owned(),
            "p1".to_owned(),
            vec!["10.0.0.5".to_owned()],
        );
        sg.mark(true, false, vec![add.clone()]);
        sg.mark(false, false, vec![]);
        assert!(sg.dirty() && !sg.full);
        assert_eq!(sg.member_adds, vec![add.clone()]);
        sg.mark(true, true, vec![]);
        assert!(sg.full, "a later full change is not lost");
        assert_eq!(sg.member_adds.len(), 1);
        sg.mark_all();
        assert!(sg.dirty() && sg.full && sg.member_adds.is_empty());
    }

    #[test]
    fn the_conntrack_sweep_runs_every_few_seconds() {
        let mut sg = SgRealiser::new(0, 0);
        assert!(sg.ct_gc_due());
        assert!(!sg.ct_gc_due(), "not again right away");
        sg.ct_gc_at = Some(Instant::now() - Duration::from_secs(CT_GC_EVERY_S));
        assert!(sg.ct_gc_due());
    }
}
