//! The agent's load balancer tables: from the compiled load balancers to
//! the contents of `LB_SERVICES`, `LB_BACKENDS` and `LB_MAGLEV`.
//!
//! Unlike the VPC tables (`crate::vpc`), these are not a pure function of the
//! entries: numbers are handed out (a service per listener, a backend per
//! listener and member), Maglev tables get ranges of one shared array, and
//! a member that goes away drains for its listener's drain timeout before
//! its number is given back. [`LbState`] keeps that bookkeeping; `sync`
//! turns a new desired set into the map writes ([`LbOps`]) in an order
//! that never lets a packet see a half-written service: a new table is
//! written to a free range, then the backends, then the service is pointed
//! at the new range; the old range is reused only by a later sync.

pub mod access_log;
pub mod l7;
pub mod probe;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use dataplane_common::{
    lb_vip_bit, maps, Endpoint, EpKey, LbBackend, LbPublic, LbPublicKey, LbService, LbServiceKey,
    EP_LOCAL, EP_REMOTE, EP_VIP, LB_B_ACTIVE, LB_B_DRAINING, LB_SVC_F_FULL, LB_SVC_F_SOURCE_IP,
};
use strato_dataplane::LbOps;
use strato_lb::{
    maglev::{self, MaglevBackend},
    numbering::{Ids, Ranges},
};

use strato_proto::config::LoadBalancerEntry;

/// What a member may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Takes new connections.
    Active,
    /// Admin down or weight 0: keeps its connections until the drain
    /// timeout, takes no new ones.
    Draining,
    /// Failed its health check: its connections are reset.
    Down,
}

impl MemberState {
    pub fn parse(s: &str) -> MemberState {
        match s {
            "active" => MemberState::Active,
            "draining" => MemberState::Draining,
            _ => MemberState::Down,
        }
    }
}

/// One listener as the dataplane needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub listener_id: String,
    pub key: LbServiceKey,
    pub flags: u32,
    pub idle_timeout_s: u32,
    pub drain_timeout_s: u32,
    pub members: Vec<MemberSpec>,
    /// A public load balancer's floating IP: members answer the internet
    /// as it (`LB_PUBLIC_OUT`).
    pub public: Option<[u8; 4]>,
    /// The VIP port's network VNI (0: not known on this host) and MAC.
    pub vni: u32,
    pub mac: [u8; 6],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSpec {
    pub id: String,
    pub ip: [u8; 4],
    /// Its port's network (VNI; 0: no port known here) and MAC.
    pub vni: u32,
    pub mac: [u8; 6],
    pub port: u16,
    pub weight: u16,
    pub backup: bool,
    pub state: MemberState,
}

/// The network and MAC of the port holding `ip` in `domain`, when there
/// is one on this host or a remote one it knows; else (0, zeros).
fn port_of(endpoints: &BTreeMap<EpKey, Endpoint>, domain: u32, ip: [u8; 4]) -> (u32, [u8; 6]) {
    match endpoints.get(&EpKey { domain, ip }) {
        Some(ep) if ep.kind == EP_LOCAL || ep.kind == EP_REMOTE => (ep.vni, ep.mac),
        _ => (0, [0; 6]),
    }
}

/// The services of these load balancers; `domains` maps a network to its
/// routing domain (`vpc::domains`), `endpoints` are this host's
/// (`vpc::build`: the VIPs' and the members' networks and MACs). Load
/// balancers whose network is not known here, or that are administratively
/// down, have none (their VIP refuses every connection).
pub fn specs<'e>(
    entries: impl Iterator<Item = &'e LoadBalancerEntry>,
    domains: &BTreeMap<String, u32>,
    endpoints: &BTreeMap<EpKey, Endpoint>,
) -> Vec<ServiceSpec> {
    let mut out = Vec::new();
    for lb in entries {
        // Gateway hosts know the domain only from the entry.
        let domain = domains.get(&lb.vip_network_id).copied().or(Some(lb.domain));
        let (Some(domain), Ok(vip)) = (
            domain.filter(|d| *d != 0),
            lb.vip_address.parse::<Ipv4Addr>(),
        ) else {
            continue;
        };
        let public = lb
            .floating_ip
            .as_ref()
            .and_then(|(_, a)| a.parse::<Ipv4Addr>().ok())
            .map(|a| a.octets());
        if !lb.admin_state_up {
            continue;
        }
        let (vip_vni, vip_mac) = match endpoints.get(&EpKey {
            domain,
            ip: vip.octets(),
        }) {
            Some(ep) if ep.kind == EP_VIP => (ep.vni, ep.mac),
            _ => (0, [0; 6]),
        };
        for l in &lb.listeners {
            let proto = match l.protocol.as_str() {
                "TCP" => 6,
                "UDP" => 17,
                _ => continue,
            };
            let members = l
                .members
                .iter()
                .filter_map(|m| {
                    let ip = m.address.parse::<Ipv4Addr>().ok()?.octets();
                    let (vni, mac) = port_of(endpoints, domain, ip);
                    Some(MemberSpec {
                        id: m.id.clone(),
                        ip,
                        vni,
                        mac,
                        port: m.protocol_port,
                        weight: m.weight,
                        backup: m.backup,
                        state: MemberState::parse(&m.state),
                    })
                })
                .collect();
            out.push(ServiceSpec {
                listener_id: l.id.clone(),
                key: LbServiceKey {
                    domain,
                    vip: vip.octets(),
                    port: l.protocol_port,
                    proto,
                    _pad: 0,
                },
                flags: if l.source_ip { LB_SVC_F_SOURCE_IP } else { 0 }
                    | if l.at_limit { LB_SVC_F_FULL } else { 0 },
                idle_timeout_s: l.idle_timeout_s.max(1),
                drain_timeout_s: l.drain_timeout_s,
                members,
                public,
                vni: vip_vni,
                mac: vip_mac,
            });
        }
    }
    out
}

#[derive(Clone, Debug)]
struct Svc {
    id: u32,
    key: LbServiceKey,
    value: LbService,
    /// (member key hash, weight, backend id) the table was built from.
    sig: Vec<(u64, u32, u32)>,
    range: Option<(u32, u32)>,
}

#[derive(Clone, Debug)]
struct Backend {
    id: u32,
    value: LbBackend,
    drain_timeout_s: u32,
}

/// The numbers, ranges and drains of one host's load balancers.
#[derive(Debug)]
pub struct LbState {
    /// By listener id.
    services: BTreeMap<String, Svc>,
    /// By (listener id, member id).
    backends: BTreeMap<(String, String), Backend>,
    /// Removed members still draining: (backend id, until), and what they
    /// were (for stats: listener, member).
    retired: Vec<(u32, u64, (String, String))>,
    service_ids: Ids,
    backend_ids: Ids,
    ranges: Ranges,
    public_out: BTreeMap<LbPublicKey, LbPublic>,
    /// The non-zero words of `LB_VIP_FILTER`.
    filter: BTreeMap<u32, u64>,
}

impl Default for LbState {
    fn default() -> LbState {
        LbState {
            services: BTreeMap::new(),
            backends: BTreeMap::new(),
            retired: Vec::new(),
            service_ids: Ids::new(maps::LB_SERVICES_MAX),
            backend_ids: Ids::new(maps::LB_BACKENDS_MAX),
            ranges: Ranges::new(maps::LB_MAGLEV_MAX),
            public_out: BTreeMap::new(),
            filter: BTreeMap::new(),
        }
    }
}

/// A stable 64-bit key for a member (Maglev permutations must not depend
/// on the order or the numbers handed out): FNV-1a of its id.
fn member_key(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

impl LbState {
    /// The writes that make the maps serve `desired` (at `now_ns`, the
    /// dataplane's clock: CLOCK_MONOTONIC), in the order the maps must see
    /// them: backends, members gone, services (new tables before the
    /// services point at them), public listeners' members, the VIP filter.
    pub fn sync(&mut self, desired: &[ServiceSpec], now_ns: u64) -> LbOps {
        let mut ops = LbOps::default();
        let wanted = self.sync_backends(desired, now_ns, &mut ops);
        self.retire_members(desired, &wanted, now_ns, &mut ops);
        self.sync_services(desired, &mut ops);
        self.sync_public(desired, &mut ops);
        self.sync_filter(&mut ops);
        ops
    }

    /// Backends first: every member of every desired listener, numbered
    /// once; a drain starts once and keeps its deadline. Returns the
    /// (listener, member) pairs wanted.
    fn sync_backends(
        &mut self,
        desired: &[ServiceSpec],
        now_ns: u64,
        ops: &mut LbOps,
    ) -> BTreeSet<(String, String)> {
        let mut wanted = BTreeSet::new();
        for s in desired {
            for m in &s.members {
                let k = (s.listener_id.clone(), m.id.clone());
                wanted.insert(k.clone());
                let old = self.backends.get(&k);
                let (flags, until) = match m.state {
                    MemberState::Active if m.weight > 0 => (LB_B_ACTIVE, 0),
                    MemberState::Active | MemberState::Draining => {
                        // A drain starts once and keeps its deadline.
                        let until = match old {
                            Some(b) if b.value.flags == LB_B_DRAINING => b.value.drain_until_ns,
                            _ => now_ns + s.drain_timeout_s as u64 * 1_000_000_000,
                        };
                        (LB_B_DRAINING, until)
                    }
                    MemberState::Down => (0, 0),
                };
                let value = LbBackend {
                    ip: m.ip,
                    port: m.port,
                    flags,
                    drain_until_ns: until,
                    idle_timeout_s: s.idle_timeout_s,
                    vni: m.vni,
                    mac: m.mac,
                    _pad: [0; 2],
                };
                match old {
                    Some(b) if b.value == value => {}
                    Some(b) => {
                        let id = b.id;
                        ops.backends.push((id, value));
                        self.backends.insert(
                            k,
                            Backend {
                                id,
                                value,
                                drain_timeout_s: s.drain_timeout_s,
                            },
                        );
                    }
                    None => {
                        let Some(id) = self.backend_ids.take() else {
                            continue;
                        };
                        ops.new_backends.push(id);
                        ops.backends.push((id, value));
                        self.backends.insert(
                            k,
                            Backend {
                                id,
                                value,
                                drain_timeout_s: s.drain_timeout_s,
                            },
                        );
                    }
                }
            }
        }
        wanted
    }

    /// Members gone: drained for their listener's timeout, then released
    /// by `tick`; those of a listener that is gone too are reset at once
    /// (nothing listens any more).
    fn retire_members(
        &mut self,
        desired: &[ServiceSpec],
        wanted: &BTreeSet<(String, String)>,
        now_ns: u64,
        ops: &mut LbOps,
    ) {
        let listening: BTreeSet<&str> = desired.iter().map(|s| s.listener_id.as_str()).collect();
        let gone: Vec<_> = self
            .backends
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            let Some(b) = self.backends.remove(&k) else {
                continue;
            };
            let until = if !listening.contains(k.0.as_str()) || b.value.flags == 0 {
                now_ns
            } else if b.value.flags == LB_B_DRAINING {
                b.value.drain_until_ns
            } else {
                now_ns + b.drain_timeout_s as u64 * 1_000_000_000
            };
            let value = LbBackend {
                flags: if until > now_ns { LB_B_DRAINING } else { 0 },
                drain_until_ns: until,
                ..b.value
            };
            ops.backends.push((b.id, value));
            self.retired.push((b.id, until, k));
        }
    }

    /// Services: a number per listener, a Maglev table in a free range when
    /// its members changed; ranges and numbers of what went away given back.
    fn sync_services(&mut self, desired: &[ServiceSpec], ops: &mut LbOps) {
        let mut freed_ranges = Vec::new();
        // Services.
        let mut want_services = BTreeSet::new();
        for s in desired {
            want_services.insert(s.listener_id.clone());
            let sig = self.signature(s);
            let old = self.services.get(&s.listener_id).cloned();
            let id = match &old {
                Some(o) => o.id,
                None => match self.service_ids.take() {
                    Some(id) => {
                        ops.new_services.push(id);
                        id
                    }
                    None => continue,
                },
            };
            let mut range = old.as_ref().and_then(|o| o.range);
            if old.as_ref().is_none_or(|o| o.sig != sig) {
                let sized = s.members.iter().filter(|m| m.weight > 0).count().max(1);
                let new_range = if sig.is_empty() {
                    None
                } else {
                    // Keep the size while it has 100 slots per member: a
                    // new size would move nearly every flow.
                    let size = match range {
                        Some((_, size)) if (sized as u64) * 100 <= size as u64 => size,
                        _ => maglev::table_size(sized),
                    };
                    let backends: Vec<MaglevBackend> = sig
                        .iter()
                        .map(|&(key, weight, _)| MaglevBackend { key, weight })
                        .collect();
                    match (maglev::build(&backends, size), self.ranges.take(size)) {
                        (Some(t), Some(off)) => {
                            ops.tables
                                .push((off, t.iter().map(|&i| sig[i as usize].2).collect()));
                            Some((off, size))
                        }
                        (_, Some(off)) => {
                            self.ranges.give(off, size);
                            None
                        }
                        _ => None,
                    }
                };
                freed_ranges.extend(range);
                range = new_range;
            }
            let value = LbService {
                id,
                flags: s.flags,
                table_off: range.map_or(0, |r| r.0),
                table_size: range.map_or(0, |r| r.1),
                idle_timeout_s: s.idle_timeout_s,
                vni: s.vni,
                mac: s.mac,
                _pad: [0; 2],
            };
            if let Some(o) = &old {
                if o.key != s.key {
                    ops.service_deletes.push(o.key);
                }
            }
            if old
                .as_ref()
                .is_none_or(|o| o.key != s.key || o.value != value)
            {
                ops.services.push((s.key, value));
            }
            self.services.insert(
                s.listener_id.clone(),
                Svc {
                    id,
                    key: s.key,
                    value,
                    sig,
                    range,
                },
            );
        }
        let gone: Vec<String> = self
            .services
            .keys()
            .filter(|k| !want_services.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(s) = self.services.remove(&k) {
                ops.service_deletes.push(s.key);
                freed_ranges.extend(s.range);
                self.service_ids.give(s.id);
            }
        }
        for (off, size) in freed_ranges {
            self.ranges.give(off, size);
        }
    }

    /// Members of public listeners answer as the floating IP (by member
    /// and listener port: one member port may serve several listeners).
    fn sync_public(&mut self, desired: &[ServiceSpec], ops: &mut LbOps) {
        let mut public = BTreeMap::new();
        for s in desired {
            let (Some(eip), Some(svc)) = (s.public, self.services.get(&s.listener_id)) else {
                continue;
            };
            for m in &s.members {
                let k = LbPublicKey {
                    domain: s.key.domain,
                    member: m.ip,
                    member_port: m.port,
                    listener_port: s.key.port,
                    proto: s.key.proto,
                    _pad: [0; 3],
                };
                public.entry(k).or_insert(LbPublic {
                    eip,
                    port: s.key.port,
                    _pad: 0,
                    service: svc.id,
                });
            }
        }
        for (k, v) in &public {
            if self.public_out.get(k) != Some(v) {
                ops.public_out.push((*k, *v));
            }
        }
        for k in self.public_out.keys() {
            if !public.contains_key(k) {
                ops.public_deletes.push(*k);
            }
        }
        self.public_out = public;
    }

    /// The VIP filter: a bit per listener's (domain, VIP).
    fn sync_filter(&mut self, ops: &mut LbOps) {
        let mut filter: BTreeMap<u32, u64> = BTreeMap::new();
        for s in self.services.values() {
            let (word, bit) = lb_vip_bit(s.key.domain, s.key.vip);
            *filter.entry(word).or_default() |= bit;
        }
        for (w, bits) in &filter {
            if self.filter.get(w) != Some(bits) {
                ops.filter.push((*w, *bits));
            }
        }
        for w in self.filter.keys() {
            if !filter.contains_key(w) {
                ops.filter.push((*w, 0));
            }
        }
        self.filter = filter;
    }

    /// The backends whose drain ended by `now_ns`: their entries are
    /// cleared and their numbers released.
    pub fn tick(&mut self, now_ns: u64) -> LbOps {
        let mut ops = LbOps::default();
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|(_, until, _)| *until <= now_ns);
        self.retired = keep;
        for (id, _, _) in done {
            ops.backends.push((id, LbBackend::default()));
            ops.released.push(id);
            self.backend_ids.give(id);
        }
        ops
    }

    /// The members a table is built from: the active, weighted non-backup
    /// members, or when there are none the active backup members
    /// (Octavia's `backup`), as (key, weight, backend id) sorted by key.
    fn signature(&self, s: &ServiceSpec) -> Vec<(u64, u32, u32)> {
        let pick = |backup: bool| -> Vec<(u64, u32, u32)> {
            let mut v: Vec<_> = s
                .members
                .iter()
                .filter(|m| m.backup == backup && m.state == MemberState::Active && m.weight > 0)
                .filter_map(|m| {
                    let b = self.backends.get(&(s.listener_id.clone(), m.id.clone()))?;
                    Some((member_key(&m.id), m.weight as u32, b.id))
                })
                .collect();
            v.sort_unstable();
            v
        };
        let primary = pick(false);
        if primary.is_empty() {
            pick(true)
        } else {
            primary
        }
    }

    /// Idle timeout (seconds) of each service number.
    pub fn service_idle(&self) -> BTreeMap<u32, u32> {
        self.services
            .values()
            .map(|s| (s.id, s.value.idle_timeout_s))
            .collect()
    }

    /// Listener of each service number.
    pub fn services(&self) -> BTreeMap<u32, String> {
        self.services
            .iter()
            .map(|(l, s)| (s.id, l.clone()))
            .collect()
    }

    /// (listener, member) of each backend number, drained ones included.
    pub fn backends(&self) -> BTreeMap<u32, (String, String)> {
        let mut m: BTreeMap<u32, (String, String)> = self
            .backends
            .iter()
            .map(|(k, b)| (b.id, k.clone()))
            .collect();
        for (id, _, k) in &self.retired {
            m.insert(*id, k.clone());
        }
        m
    }

    /// The services' table ranges (tests: no two overlap).
    pub fn ranges(&self) -> Vec<(u32, u32)> {
        self.services.values().filter_map(|s| s.range).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, last: u8, weight: u16, state: MemberState) -> MemberSpec {
        MemberSpec {
            id: id.into(),
            ip: [10, 0, 0, last],
            vni: 5,
            mac: [2, 0, 0, 0, 0, last],
            port: 80,
            weight,
            backup: false,
            state,
        }
    }

    fn service(listener: &str, port: u16, members: Vec<MemberSpec>) -> ServiceSpec {
        ServiceSpec {
            listener_id: listener.into(),
            key: LbServiceKey {
                domain: 7,
                vip: [10, 0, 0, 100],
                port,
                proto: 6,
                _pad: 0,
            },
            flags: 0,
            idle_timeout_s: 50,
            drain_timeout_s: 10,
            members,
            public: None,
            vni: 5,
            mac: [2, 0, 0, 0, 0, 100],
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_listener_gets_a_table_of_its_active_members() {
        let mut st = LbState::default();
        let d = [service(
            "l1",
            80,
            vec![
                member("a", 1, 1, MemberState::Active),
                member("b", 2, 3, MemberState::Active),
                member("c", 3, 1, MemberState::Draining),
            ],
        )];
        let ops = st.sync(&d, 100 * S);
        assert_eq!(ops.new_backends.len(), 3);
        assert_eq!(ops.new_services, vec![1]);
        assert_eq!(ops.tables.len(), 1);
        let (off, table) = &ops.tables[0];
        assert_eq!(table.len() as u32, maglev::table_size(3));
        let svc = ops.services[0].1;
        assert_eq!((svc.table_off, svc.table_size), (*off, table.len() as u32));
        // Weighted 1:3, the draining member absent.
        let ids: BTreeMap<_, _> = st
            .backends()
            .into_iter()
            .map(|(i, (_, m))| (m, i))
            .collect();
        let count = |m: &str| table.iter().filter(|&&i| i == ids[m]).count() as f64;
        assert_eq!(count("c"), 0.0);
        assert!((count("b") / count("a") - 3.0).abs() < 0.05);
        let drained = ops.backends.iter().find(|(i, _)| *i == ids["c"]).unwrap().1;
        assert_eq!(drained.flags, LB_B_DRAINING);
        assert_eq!(drained.drain_until_ns, 110 * S);
        // The same desired state again: nothing to write.
        assert!(st.sync(&d, 101 * S).is_empty());
    }

    #[test]
    fn a_removed_listener_resets_its_connections_at_once() {
        let mut st = LbState::default();
        let d = [service(
            "l1",
            80,
            vec![member("a", 1, 1, MemberState::Active)],
        )];
        st.sync(&d, 0);
        let ops = st.sync(&[], 5 * S);
        // No drain: nothing listens any more (a known connection needs no
        // listener lookup in the programs, so its backend says so).
        assert_eq!(ops.backends.len(), 1);
        assert_eq!(ops.backends[0].1.flags, 0);
        assert_eq!(ops.service_deletes.len(), 1);
        assert_eq!(st.tick(5 * S).released.len(), 1);
    }

    #[test]
    fn backends_carry_the_idle_timeout_and_the_member_port() {
        let mut st = LbState::default();
        let mut d = [service(
            "l1",
            80,
            vec![member("a", 1, 1, MemberState::Active)],
        )];
        let ops = st.sync(&d, 0);
        let b = ops.backends[0].1;
        assert_eq!(
            (b.idle_timeout_s, b.vni, b.mac),
            (50, 5, [2, 0, 0, 0, 0, 1])
        );
        let svc = ops.services[0].1;
        assert_eq!((svc.vni, svc.mac), (5, [2, 0, 0, 0, 0, 100]));
        // A new idle timeout reaches the backends.
        d[0].idle_timeout_s = 7;
        let ops = st.sync(&d, 0);
        assert_eq!(ops.backends.len(), 1);
        assert_eq!(ops.backends[0].1.idle_timeout_s, 7);
    }

    #[test]
    fn the_vip_filter_has_a_bit_per_vip() {
        let mut st = LbState::default();
        let a = service("l1", 80, vec![member("a", 1, 1, MemberState::Active)]);
        let mut b = service("l2", 81, vec![member("a", 1, 1, MemberState::Active)]);
        b.key.vip = [10, 0, 0, 101];
        let ops = st.sync(&[a.clone(), b.clone()], 0);
        let (wa, ba) = lb_vip_bit(7, [10, 0, 0, 100]);
        let (wb, bb) = lb_vip_bit(7, [10, 0, 0, 101]);
        let word =
            |ops: &LbOps, w: u32| ops.filter.iter().rev().find(|(i, _)| *i == w).map(|x| x.1);
        assert_eq!(word(&ops, wa).unwrap() & ba, ba);
        assert_eq!(word(&ops, wb).unwrap() & bb, bb);
        // A second listener on the same VIP changes nothing; removing
        // every listener of a VIP clears its bit (unless it shares it).
        let mut a2 = service("l3", 82, vec![member("a", 1, 1, MemberState::Active)]);
        a2.key.vip = a.key.vip;
        assert!(st.sync(&[a.clone(), b.clone(), a2], 0).filter.is_empty());
        let ops = st.sync(&[a], 0);
        if wa != wb {
            assert_eq!(word(&ops, wb), Some(0));
        }
        let ops = st.sync(&[], 0);
        assert_eq!(word(&ops, wa), Some(0));
    }

    #[test]
    fn a_removed_member_drains_then_is_released() {
        let mut st = LbState::default();
        let both = [service(
            "l1",
            80,
            vec![
                member("a", 1, 1, MemberState::Active),
                member("b", 2, 1, MemberState::Active),
            ],
        )];
        st.sync(&both, 0);
        let b_id = st
            .backends()
            .into_iter()
            .find(|(_, (_, m))| m == "b")
            .unwrap()
            .0;
        let one = [service(
            "l1",
            80,
            vec![member("a", 1, 1, MemberState::Active)],
        )];
        let ops = st.sync(&one, 5 * S);
        let (_, v) = ops.backends.iter().find(|(i, _)| *i == b_id).unwrap();
        assert_eq!((v.flags, v.drain_until_ns), (LB_B_DRAINING, 15 * S));
        // A new table without b, same size (no mass remapping).
        let (_, t) = &ops.tables[0];
        assert!(!t.contains(&b_id));
        assert_eq!(t.len() as u32, maglev::table_size(2));
        assert!(st.tick(14 * S).is_empty());
        let ops = st.tick(15 * S);
        assert_eq!(ops.released, vec![b_id]);
        assert_eq!(ops.backends, vec![(b_id, LbBackend::default())]);
        // The number is handed out again only after its release.
        let again = [service(
            "l1",
            80,
            vec![
                member("a", 1, 1, MemberState::Active),
                member("z", 9, 1, MemberState::Active),
            ],
        )];
        let ops = st.sync(&again, 16 * S);
        assert_eq!(ops.new_backends, vec![b_id]);
    }

    #[test]
    fn no_active_member_means_no_table_and_backups_stand_in() {
        let mut st = LbState::default();
        let mut down = member("a", 1, 1, MemberState::Down);
        let mut backup = member("b", 2, 1, MemberState::Active);
        backup.backup = true;
        let ops = st.sync(&[service("l1", 80, vec![down.clone(), backup.clone()])], 0);
        let b_id = st
            .backends()
            .into_iter()
            .find(|(_, (_, m))| m == "b")
            .unwrap()
            .0;
        assert!(ops.tables[0].1.iter().all(|&i| i == b_id));
        backup.state = MemberState::Down;
        let ops = st.sync(&[service("l1", 80, vec![down.clone(), backup])], 1);
        assert_eq!(ops.services[0].1.table_size, 0);
        assert!(ops.tables.is_empty());
        down.state = MemberState::Active;
        let ops = st.sync(&[service("l1", 80, vec![down])], 2);
        assert_eq!(ops.services[0].1.table_size, maglev::table_size(1));
    }

    #[test]
    fn ranges_never_overlap_and_are_reused() {
        let mut st = LbState::default();
        let mut d = Vec::new();
        for i in 0..20u16 {
            let ms = (0..(i % 5 + 1))
                .map(|j| member(&format!("m{i}-{j}"), j as u8, 1, MemberState::Active))
                .collect();
            d.push(service(&format!("l{i}"), 1000 + i, ms));
        }
        st.sync(&d, 0);
        let mut r = st.ranges();
        r.sort();
        assert_eq!(r.len(), 20);
        for w in r.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{w:?} overlap");
        }
        // Everything removed, then added again: the same space serves.
        assert_eq!(st.sync(&[], 1).service_deletes.len(), 20);
        assert_eq!(st.ranges.free_runs().len(), 1);
        st.sync(&d, 2);
        assert_eq!(st.ranges().len(), 20);
    }

    #[test]
    fn a_health_flap_keeps_the_table_size() {
        let mut st = LbState::default();
        let ms = |s| {
            (0..4)
                .map(|j| {
                    member(
                        &format!("m{j}"),
                        j,
                        1,
                        if j == 0 { s } else { MemberState::Active },
                    )
                })
                .collect::<Vec<_>>()
        };
        let a = st.sync(&[service("l", 80, ms(MemberState::Active))], 0);
        let b = st.sync(&[service("l", 80, ms(MemberState::Down))], 1);
        assert_eq!(a.tables[0].1.len(), b.tables[0].1.len());
        // Only the failed member's slots moved (Maglev).
        let moved = a.tables[0]
            .1
            .iter()
            .zip(&b.tables[0].1)
            .filter(|(x, y)| x != y)
            .count() as f64
            / a.tables[0].1.len() as f64;
        assert!(moved < 0.25 * 1.5, "{moved}");
    }
}
