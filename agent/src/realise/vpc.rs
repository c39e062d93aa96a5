//! The VPC realiser: keeps the VPC maps (`PORTS`, `ENDPOINTS`, `ROUTES`,
//! `VNIS`, `MACS`, `ALLOWED`, elastic IPs, SNAT), the host record
//! (`HOST[0]`) and the interfaces' counter slots in step with the desired
//! entries.
//!
//! Owns what those maps hold (adopted at start), who provides each
//! endpoint, and which remote and local ports changed since the last pass.
//! A change to anything but ports is realised by a full rebuild
//! ([`VpcRealiser::plan_full`], [`VpcRealiser::apply_full`]); a change to
//! ports only by recomputing just their contributions
//! ([`VpcRealiser::incremental`]), checked against a full build in debug
//! builds. It never writes policies or load balancer maps and never
//! reports: it says what it wrote, the agent reports it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context as _;
use dataplane_common::{Endpoint as Ep, EpKey, HostInfo};
use strato_dataplane::{
    tables::{Diff, Tables},
    Dataplane,
};
use strato_proto::{
    config::{Entry, NetworkEntry},
    report::Role,
};

use crate::{
    interfaces::Interfaces,
    sys,
    vpc::{self, MacOrLpm, PortPart, PortPolicy, Providers},
};

/// Policy of every local port, by port id.
pub(crate) type PortPolicies = HashMap<String, PortPolicy>;

pub(crate) struct VpcRealiser {
    /// What the pinned VPC maps hold (read once at start: adopted).
    pub have: Tables,
    /// Who provides each endpoint (from the last full build, kept current).
    providers: Providers,
    /// Counter slot of every interface that has one (ports, uplink).
    slots: BTreeMap<u32, u32>,
    /// What `HOST[0]` holds.
    host_info: HostInfo,
    /// Something other than remote ports changed (or taps did): the next
    /// pass rebuilds every table; otherwise only the remote ports in
    /// `dirty_remotes` and local ones in `dirty_ports` are recomputed.
    pub full_needed: bool,
    dirty_remotes: BTreeSet<String>,
    pub dirty_ports: BTreeSet<String>,
}

/// What an incremental pass wrote, for the agent's leases and reports.
pub(crate) struct Written {
    /// Ifindexes whose port entry was removed.
    pub removed: Vec<u32>,
    /// Every changed `port/` key, with the ifindex of its entry if written.
    pub ports: Vec<(String, Option<u32>)>,
}

/// The writes an incremental pass plans, before slots are allocated.
#[derive(Default)]
struct Pending {
    ep_ups: BTreeMap<EpKey, Ep>,
    ep_dels: BTreeSet<EpKey>,
    diff: Diff,
    /// Several entries claim one address: a full build must decide.
    conflict: bool,
    /// Changed ports: their new part, and whether it still needs a slot.
    ports: Vec<(String, Option<(PortPart, bool)>)>,
}

impl Pending {
    /// Endpoint `e` loses one provider; removed if it was the only one.
    fn release(&mut self, prov: &mut Providers, e: EpKey) {
        let sole = match prov.count.get(&e).copied() {
            Some(1) => {
                prov.count.remove(&e);
                self.ep_dels.insert(e);
                true
            }
            Some(_) => false,
            None => true,
        };
        self.conflict |= !sole;
    }

    /// Endpoint `ek` gets a provider.
    fn provide(&mut self, prov: &mut Providers, ek: EpKey, ev: Ep) {
        self.conflict |= prov.count.contains_key(&ek);
        prov.count.insert(ek, 1);
        self.ep_dels.remove(&ek);
        self.ep_ups.insert(ek, ev);
    }
}

/// What the planners need of the desired entries.
struct View<'a> {
    desired: &'a BTreeMap<String, Entry>,
    doms: BTreeMap<String, u32>,
    nets: BTreeMap<&'a str, &'a NetworkEntry>,
}

impl<'a> View<'a> {
    fn new(desired: &'a BTreeMap<String, Entry>) -> View<'a> {
        let nets = desired
            .values()
            .filter_map(|e| match e {
                Entry::Network(n) => Some((n.id.as_str(), n)),
                _ => None,
            })
            .collect();
        View {
            desired,
            doms: vpc::domains(desired),
            nets,
        }
    }
}

impl VpcRealiser {
    /// Starts from what the pinned maps hold.
    pub fn adopt(have: Tables, host_info: HostInfo) -> VpcRealiser {
        let mut slots: BTreeMap<u32, u32> = have.ports.iter().map(|(i, p)| (*i, p.slot)).collect();
        if host_info.uplink_ifindex != 0 {
            slots.insert(host_info.uplink_ifindex, host_info.uplink_slot);
        }
        if host_info.ext_ifindex != 0 {
            slots.insert(host_info.ext_ifindex, host_info.ext_slot);
        }
        VpcRealiser {
            have,
            providers: Providers::default(),
            slots,
            host_info,
            full_needed: true,
            dirty_remotes: BTreeSet::new(),
            dirty_ports: BTreeSet::new(),
        }
    }

    /// Marks what a delta changed.
    pub fn mark(&mut self, remotes: BTreeSet<String>, ports: BTreeSet<String>, full: bool) {
        self.dirty_remotes.extend(remotes);
        self.dirty_ports.extend(ports);
        self.full_needed |= full;
    }

    /// Whether anything changed since the last pass.
    pub fn dirty(&self) -> bool {
        self.full_needed || !self.dirty_remotes.is_empty() || !self.dirty_ports.is_empty()
    }

    /// Only ports changed: an incremental pass may do.
    pub fn only_ports_changed(&self, have_snapshot: bool) -> bool {
        have_snapshot
            && !self.full_needed
            && !(self.dirty_remotes.is_empty() && self.dirty_ports.is_empty())
    }

    /// Nothing changed (after a snapshot): the tables are as they were.
    pub fn unchanged(&self, have_snapshot: bool) -> bool {
        have_snapshot
            && !self.full_needed
            && self.dirty_remotes.is_empty()
            && self.dirty_ports.is_empty()
    }

    /// A counter slot for `ifindex` (new ones start from zero).
    pub fn slot_for(&mut self, dp: &mut Dataplane, ifindex: u32) -> u32 {
        if let Some(s) = self.slots.get(&ifindex) {
            return *s;
        }
        let used: BTreeSet<u32> = self.slots.values().copied().collect();
        let slot = (1..dataplane_common::maps::IF_STATS_MAX)
            .find(|s| !used.contains(s))
            .unwrap_or(0);
        if slot != 0 {
            if let Err(e) = dp.reset_slot(slot) {
                tracing::warn!(slot, error = %e, "cannot reset a counter slot");
            }
        }
        self.slots.insert(ifindex, slot);
        slot
    }

    /// Writes `HOST[0]` when the uplink (ifindex, address) changed.
    pub fn write_host(&mut self, dp: &mut Dataplane, ifaces: &Interfaces, has_lb: bool) {
        let Some((name, ifindex)) = ifaces.working(Role::Uplink) else {
            return;
        };
        let ip = sys::ipv4_of(&name).map(|i| i.octets()).unwrap_or([0; 4]);
        sys::enable_forwarding(&name);
        let slot = self.slot_for(dp, ifindex);
        let mut want = HostInfo {
            underlay_ip: ip,
            uplink_ifindex: ifindex,
            uplink_slot: slot,
            ..HostInfo::default()
        };
        if has_lb {
            want.flags |= dataplane_common::HOST_F_LB;
        }
        // A gateway host: its external interface, once attached.
        if let Some((ext, ext_ifindex)) = ifaces.working(Role::External) {
            sys::enable_forwarding(&ext);
            want.flags |= dataplane_common::HOST_F_GATEWAY;
            want.ext_ifindex = ext_ifindex;
            want.ext_slot = self.slot_for(dp, ext_ifindex);
            want.ext_mac = sys::mac_of(&ext).unwrap_or([0; 6]);
        }
        if want != self.host_info {
            match dp.set_host(want) {
                Ok(()) => {
                    tracing::info!(uplink = %name, ifindex, underlay = %std::net::Ipv4Addr::from(ip), "host underlay written");
                    self.host_info = want;
                }
                Err(e) => tracing::warn!(error = %e, "cannot write the host record"),
            }
        }
    }

    /// Only ports changed (remote ones, or local ones without a change to
    /// networks or routers): recompute just their contributions and write
    /// the difference, instead of rebuilding every table (whose cost grows
    /// with the ports in the host's VPCs). Returns `None` when a full
    /// rebuild is needed after all (an address with several providers is
    /// involved); the full rebuild then recomputes the providers.
    pub fn incremental(
        &mut self,
        dp: &mut Dataplane,
        desired: &BTreeMap<String, Entry>,
        ifaces: &Interfaces,
        pols: &PortPolicies,
    ) -> anyhow::Result<Option<Written>> {
        let view = View::new(desired);
        let mut prov = std::mem::take(&mut self.providers);
        let mut pending = Pending::default();
        self.plan_remotes(&view, &mut prov, &mut pending);
        self.plan_ports(&view, ifaces, pols, &mut prov, &mut pending);
        if pending.conflict {
            // Several entries claim one address: let a full build decide.
            return Ok(None);
        }
        let parts = self.allocate_new_slots(dp, std::mem::take(&mut pending.ports));
        let diff = self.finish_diff(&mut pending, &parts);
        dp.apply(&diff).context("writing changed ports")?;
        self.record(&diff, pending, &parts);
        let written = Written {
            removed: diff.ports.1.clone(),
            ports: self
                .dirty_ports
                .iter()
                .map(|k| {
                    let part = parts.iter().find(|(pk, _)| pk == k);
                    (k.clone(), part.map(|(_, p)| p.ifindex))
                })
                .collect(),
        };
        for (k, part) in parts {
            prov.ports.insert(k, part);
        }
        self.providers = prov;
        if !diff.is_empty() {
            tracing::debug!(
                operations = diff.len(),
                remotes = self.dirty_remotes.len(),
                ports = self.dirty_ports.len(),
                "changed ports written"
            );
        }
        self.dirty_remotes.clear();
        self.dirty_ports.clear();
        // Debug builds (every test tier) check the incremental result
        // against a full build.
        #[cfg(debug_assertions)]
        self.check_against_full(desired, ifaces, pols);
        Ok(Some(written))
    }

    /// The endpoints of changed remote ports.
    fn plan_remotes(&self, view: &View, prov: &mut Providers, pending: &mut Pending) {
        for k in &self.dirty_remotes {
            for e in prov.remote.remove(k).unwrap_or_default() {
                pending.release(prov, e);
            }
            let Some(Entry::Remote(r)) = view.desired.get(k) else {
                continue;
            };
            let eps = vpc::remote_endpoints(&view.doms, &view.nets, r);
            let mut keys = Vec::with_capacity(eps.len());
            for (ek, ev) in eps {
                pending.provide(prov, ek, ev);
                keys.push(ek);
            }
            prov.remote.insert(k.clone(), keys);
        }
    }

    /// The new part of every changed local port, and the removals of what
    /// its old part had that the new one lacks.
    fn plan_ports(
        &self,
        view: &View,
        ifaces: &Interfaces,
        pols: &PortPolicies,
        prov: &mut Providers,
        pending: &mut Pending,
    ) {
        let members = vpc::lb_members(view.desired, &view.doms);
        for k in &self.dirty_ports {
            let old = prov.ports.remove(k);
            let new = match view.desired.get(k) {
                Some(Entry::Port(p)) => ifaces.port_ifindex(&p.tap).and_then(|ifindex| {
                    let slot = self.slots.get(&ifindex).copied();
                    let pol = pols.get(&p.id).copied().unwrap_or_default();
                    vpc::port_part(&view.doms, &view.nets, p, ifindex, slot.unwrap_or(0), pol).map(
                        |mut part| {
                            let key = EpKey {
                                domain: part.info.domain,
                                ip: part.info.ipv4,
                            };
                            if members.contains(&key) {
                                part.info.flags |= dataplane_common::PORT_F_LB_MEMBER;
                            }
                            (part, slot.is_none())
                        },
                    )
                }),
                _ => None,
            };
            if let Some(o) = &old {
                let new_part = new.as_ref().map(|(n, _)| n);
                pending_removals(pending, prov, o, new_part);
            }
            if let Some((n, _)) = &new {
                for (ek, ev) in &n.endpoints {
                    pending.provide(prov, *ek, *ev);
                }
            }
            pending.ports.push((k.clone(), new));
        }
    }

    /// Slots for new ports (their parts were built with slot 0).
    fn allocate_new_slots(
        &mut self,
        dp: &mut Dataplane,
        ports: Vec<(String, Option<(PortPart, bool)>)>,
    ) -> Vec<(String, PortPart)> {
        let mut parts = Vec::new();
        for (k, new) in ports {
            if let Some((mut part, needs_slot)) = new {
                if needs_slot {
                    part.info.slot = self.slot_for(dp, part.ifindex);
                }
                parts.push((k, part));
            }
        }
        parts
    }

    /// The additions of the new parts that the maps lack, and the
    /// endpoints' changes.
    fn finish_diff(&self, pending: &mut Pending, parts: &[(String, PortPart)]) -> Diff {
        let mut diff = std::mem::take(&mut pending.diff);
        for (_, part) in parts {
            if self.have.ports.get(&part.ifindex) != Some(&part.info) {
                diff.ports.0.push((part.ifindex, part.info));
            }
            for (m, v) in &part.macs {
                if self.have.macs.get(m) != Some(v) {
                    diff.macs.0.push((*m, *v));
                }
            }
            for (a, v) in &part.allowed {
                if self.have.allowed.get(a) != Some(v) {
                    diff.allowed.0.push((*a, *v));
                }
            }
        }
        diff.ports
            .1
            .retain(|i| !parts.iter().any(|(_, p)| p.ifindex == *i));
        diff.endpoints = (
            pending
                .ep_ups
                .iter()
                .filter(|(k, v)| self.have.endpoints.get(k) != Some(v))
                .map(|(k, v)| (*k, *v))
                .collect(),
            pending.ep_dels.iter().copied().collect(),
        );
        diff
    }

    /// Records a written incremental diff in `have`.
    fn record(&mut self, diff: &Diff, pending: Pending, parts: &[(String, PortPart)]) {
        for k in &pending.ep_dels {
            self.have.endpoints.remove(k);
        }
        self.have.endpoints.extend(pending.ep_ups);
        for i in &diff.ports.1 {
            self.have.ports.remove(i);
            self.slots.remove(i);
        }
        for m in &diff.macs.1 {
            self.have.macs.remove(m);
        }
        for a in &diff.allowed.1 {
            self.have.allowed.remove(a);
        }
        for (_, part) in parts {
            self.have.ports.insert(part.ifindex, part.info);
            self.have.macs.extend(part.macs.iter().copied());
            self.have.allowed.extend(part.allowed.iter().copied());
        }
    }

    #[cfg(debug_assertions)]
    fn check_against_full(
        &self,
        desired: &BTreeMap<String, Entry>,
        ifaces: &Interfaces,
        pols: &PortPolicies,
    ) {
        let taps = ifaces.port_taps();
        let slots = self.slots.clone();
        let full = vpc::build(
            desired,
            &|t| taps.get(t).copied(),
            &mut |i| slots.get(&i).copied().unwrap_or(0),
            &|id| pols.get(id).copied().unwrap_or_default(),
        );
        let d = full.diff(&self.have);
        assert!(
            d.is_empty(),
            "incremental tables differ from a full build: {d:?}"
        );
    }

    /// Slots for every attached tap of a configured port, allocated before
    /// the build (which only reads them).
    pub fn allocate_slots(
        &mut self,
        dp: &mut Dataplane,
        desired: &BTreeMap<String, Entry>,
        taps: &BTreeMap<String, u32>,
    ) {
        let wanted_taps: Vec<u32> = desired
            .values()
            .filter_map(|e| match e {
                Entry::Port(p) => taps.get(&p.tap).copied(),
                _ => None,
            })
            .collect();
        for i in wanted_taps {
            self.slot_for(dp, i);
        }
    }

    /// Every table as the desired entries make it, and who provides what.
    pub fn plan_full(
        &self,
        desired: &BTreeMap<String, Entry>,
        taps: &BTreeMap<String, u32>,
        pols: &PortPolicies,
    ) -> (Tables, Providers) {
        let slots = &self.slots;
        vpc::build_parts(
            desired,
            &|tap| taps.get(tap).copied(),
            &mut |i| slots.get(&i).copied().unwrap_or(0),
            &|id| pols.get(id).copied().unwrap_or_default(),
        )
    }

    /// Writes the difference between `want` and the maps; forgets the slots
    /// of interfaces neither a port nor in `keep_slots`. Returns the write's
    /// error (then every table is rebuilt on the next pass).
    pub fn apply_full(
        &mut self,
        dp: &mut Dataplane,
        want: Tables,
        providers: Providers,
        keep_slots: &[u32],
    ) -> Option<String> {
        let mut error = None;
        let diff = want.diff(&self.have);
        self.slots
            .retain(|i, _| want.ports.contains_key(i) || keep_slots.contains(i));
        if !diff.is_empty() {
            match dp.apply(&diff) {
                Ok(()) => {
                    tracing::info!(
                        operations = diff.len(),
                        ports = want.ports.len(),
                        endpoints = want.endpoints.len(),
                        routes = want.routes.len(),
                        "tables written"
                    );
                    self.have = want;
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    tracing::warn!(error = %msg, "cannot write the tables; will retry");
                    error = Some(msg);
                    self.have = dp.tables().unwrap_or_default();
                    self.full_needed = true;
                }
            }
        }
        if error.is_none() {
            self.providers = providers;
            self.full_needed = false;
            self.dirty_remotes.clear();
            self.dirty_ports.clear();
        }
        error
    }
}

/// What port `old` had that `new` lacks: its endpoints released, its MACs,
/// allowed addresses and (if it moved or went) its port entry removed.
fn pending_removals(
    pending: &mut Pending,
    prov: &mut Providers,
    old: &PortPart,
    new: Option<&PortPart>,
) {
    for (e, _) in &old.endpoints {
        pending.release(prov, *e);
    }
    let keep = |m: &MacOrLpm| {
        new.is_some_and(|n| match m {
            MacOrLpm::Mac(k) => n.macs.iter().any(|(x, _)| x == k),
            MacOrLpm::Lpm(k) => n.allowed.iter().any(|(x, _)| x == k),
        })
    };
    for (m, _) in &old.macs {
        if !keep(&MacOrLpm::Mac(*m)) {
            pending.diff.macs.1.push(*m);
        }
    }
    for (a, _) in &old.allowed {
        if !keep(&MacOrLpm::Lpm(*a)) {
            pending.diff.allowed.1.push(*a);
        }
    }
    if new.is_none_or(|n| n.ifindex != old.ifindex) {
        pending.diff.ports.1.push(old.ifindex);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adopted() -> VpcRealiser {
        let mut have = Tables::default();
        let info = dataplane_common::PortInfo {
            slot: 3,
            ..Default::default()
        };
        have.ports.insert(7, info);
        let host = HostInfo {
            uplink_ifindex: 2,
            uplink_slot: 1,
            ..HostInfo::default()
        };
        VpcRealiser::adopt(have, host)
    }

    fn keys(k: &[&str]) -> BTreeSet<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn adopted_slots_are_kept() {
        let v = adopted();
        assert_eq!(v.slots, [(2, 1), (7, 3)].into());
        assert!(v.full_needed, "the first pass rebuilds everything");
    }

    #[test]
    fn which_pass_a_change_needs() {
        let mut v = adopted();
        v.full_needed = false;
        assert!(!v.dirty());
        assert!(v.unchanged(true));
        assert!(!v.only_ports_changed(true));
        v.mark(keys(&["remote/r1"]), keys(&[]), false);
        assert!(v.dirty() && v.only_ports_changed(true) && !v.unchanged(true));
        assert!(
            !v.only_ports_changed(false),
            "nothing incremental before a snapshot"
        );
        v.mark(keys(&[]), keys(&["port/p1"]), false);
        assert_eq!(v.dirty_ports, keys(&["port/p1"]));
        assert!(v.only_ports_changed(true));
        v.mark(keys(&[]), keys(&[]), true);
        assert!(v.dirty() && !v.only_ports_changed(true) && !v.unchanged(true));
        v.mark(keys(&[]), keys(&[]), false);
        assert!(
            v.full_needed,
            "a later port change does not undo a full rebuild"
        );
    }

    #[test]
    fn an_address_with_two_providers_is_a_conflict() {
        let mut prov = Providers::default();
        let mut p = Pending::default();
        let k = EpKey {
            domain: 1,
            ip: [10, 0, 0, 5],
        };
        p.provide(&mut prov, k, Ep::default());
        assert!(!p.conflict);
        assert_eq!(prov.count[&k], 1);
        p.release(&mut prov, k);
        assert!(!p.conflict && p.ep_dels.contains(&k) && !prov.count.contains_key(&k));
        p.provide(&mut prov, k, Ep::default());
        assert!(!p.ep_dels.contains(&k), "provided again: not deleted");
        p.provide(&mut prov, k, Ep::default());
        assert!(p.conflict, "a second provider");
        let mut p = Pending::default();
        prov.count.insert(k, 2);
        p.release(&mut prov, k);
        assert!(p.conflict, "releasing one of several providers");
        assert!(!p.ep_dels.contains(&k));
    }
}
