//! Security group rules -> the two policy tries the packet path looks up.
//!
//! A port's policy is the union of the allow rules of its groups. The
//! packet path answers "does any rule allow (direction, remote address,
//! protocol, port)?" with two longest-prefix lookups, whatever the number of
//! rules:
//!
//! 1. `POLICY_ADDR[(policy, direction), remote]` -> class. Every distinct
//!    remote prefix of the rules (a remote group contributes its members'
//!    addresses) is one entry. Its class is the set of (protocol, port)
//!    matches of every rule whose prefix *contains* it: the longest match
//!    then carries everything the shorter ones allow (flattening). Prefixes
//!    with identical sets share a class, so 100,000 addresses allowed on
//!    one port cost one class.
//! 2. `POLICY_PORT[class, protocol, port]` -> the allowing rule. "Any
//!    protocol" is a 32-bit prefix (the class alone), "any port of a
//!    protocol" 40 bits, a port range is split into aligned prefixes of the
//!    16-bit port (ICMP: type in the high byte, code in the low one). All
//!    entries are allows, so overlapping ranges need no merging: any hit
//!    allows, and the longest names the most specific rule.
//!
//! The cost of the flattening is memory in the worst case (many nested
//! prefixes each with many port ranges); the lookup stays two tries.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use std::collections::BTreeMap;

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    HashMap as BpfHashMap, MapData, MapError, PerCpuArray,
};
use dataplane_common::{
    maps, CtEntry, CtKey, CtStats, PolicyAddrKey, PolicyAllow, PolicyClass, PolicyPortKey,
};

use crate::{coarse_now_ns, map_access::gone, map_err, Dataplane, DataplaneError};

use dataplane_common::{DIR_EGRESS, DIR_INGRESS};
use strato_proto::config::{SecurityGroupEntry, SgRuleEntry};

/// One (protocol, port prefix) a class allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortMatch {
    /// `None`: any protocol (port ignored).
    pub proto: Option<u8>,
    pub port: u16,
    /// Bits of `port` that must match (0: any port of `proto`).
    pub plen: u8,
}

impl PortMatch {
    /// LPM prefix length of the `POLICY_PORT` key.
    pub fn key_prefix_len(&self) -> u32 {
        match self.proto {
            None => 32,
            Some(_) => 40 + self.plen as u32,
        }
    }
}

/// (direction, remote prefix).
pub type AddrKey = (u32, Ipv4Network);

/// A rule and its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    pub id: String,
    pub group: String,
}

/// A policy flattened into trie entries, with class numbers local to it
/// (`0..classes.len()`); the agent offsets them to make them unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flattened {
    /// (direction, remote prefix) -> local class.
    pub addr: Vec<(u32, Ipv4Network, u32)>,
    /// Per local class: (match, allowing rule number).
    pub classes: Vec<Vec<(PortMatch, u32)>>,
    /// Rule numbers (1-based, as stored in `PolicyAllow::rule`) -> rule.
    pub rules: Vec<RuleRef>,
    /// Every group is stateless (no connection tracking).
    pub stateless: bool,
    /// (direction, remote prefix) -> the matches of the rules naming that
    /// prefix itself (before flattening): what an incremental addition
    /// extends.
    pub own: Vec<(AddrKey, Vec<(PortMatch, u32)>)>,
    /// Remote group -> the rules naming it: (direction, matches, number).
    pub remote_rules: Vec<(String, u32, Vec<PortMatch>, u32)>,
}

impl Flattened {
    pub fn port_entries(&self) -> usize {
        self.classes.iter().map(Vec::len).sum()
    }
}

/// The aligned prefixes covering `lo..=hi` of the 16-bit port space.
pub fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (lo as u32, hi as u32);
    while lo <= hi {
        let mut bits = lo.trailing_zeros().min(16);
        while bits > 0 && lo + (1 << bits) - 1 > hi {
            bits -= 1;
        }
        out.push((lo as u16, 16 - bits as u8));
        lo += 1 << bits;
    }
    out
}

/// What a rule allows of protocols and ports. IPv4 rules only (the
/// dataplane carries no IPv6).
fn matches(r: &SgRuleEntry) -> Vec<PortMatch> {
    let Some(p) = r.protocol else {
        return vec![PortMatch {
            proto: None,
            port: 0,
            plen: 0,
        }];
    };
    let any = PortMatch {
        proto: Some(p),
        port: 0,
        plen: 0,
    };
    match p {
        // ICMP: type in port_range_min, code in port_range_max.
        1 => match (r.port_range_min, r.port_range_max) {
            (Some(t), Some(c)) => vec![PortMatch {
                proto: Some(p),
                port: ((t as u16) << 8) | (c as u16 & 0xff),
                plen: 16,
            }],
            (Some(t), None) => vec![PortMatch {
                proto: Some(p),
                port: (t as u16) << 8,
                plen: 8,
            }],
            _ => vec![any],
        },
        _ => match (r.port_range_min, r.port_range_max) {
            (Some(lo), Some(hi)) if lo <= hi && hi <= 65_535 => port_prefixes(lo as u16, hi as u16)
                .into_iter()
                .map(|(port, plen)| PortMatch {
                    proto: Some(p),
                    port,
                    plen,
                })
                .collect(),
            (Some(lo), None) if lo <= 65_535 => vec![PortMatch {
                proto: Some(p),
                port: lo as u16,
                plen: 16,
            }],
            _ => vec![any],
        },
    }
}

/// The remote prefixes of a rule: its prefix, its remote group's members,
/// or everything.
fn remotes(r: &SgRuleEntry, members: &HashMap<&str, Vec<Ipv4Network>>) -> Vec<Ipv4Network> {
    if let Some(g) = &r.remote_group_id {
        return members.get(g.as_str()).cloned().unwrap_or_default();
    }
    match &r.remote_ip_prefix {
        Some(p) => p
            .parse::<Ipv4Network>()
            .ok()
            .and_then(|n| Ipv4Network::new(n.network(), n.prefix()).ok())
            .into_iter()
            .collect(),
        None => vec![Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("0/0")],
    }
}

/// Parses member addresses (`a.b.c.d` or a CIDR) into prefixes.
pub fn member_prefixes(ips: &[String]) -> Vec<Ipv4Network> {
    ips.iter()
        .filter_map(|s| {
            s.parse::<Ipv4Network>()
                .ok()
                .or_else(|| s.parse::<Ipv4Addr>().ok().map(Ipv4Network::from))
        })
        .filter_map(|n| Ipv4Network::new(n.network(), n.prefix()).ok())
        .collect()
}

/// Flattens the union of `groups` (remote groups resolved through
/// `members`: group id -> member prefixes).
pub fn flatten(
    groups: &[&SecurityGroupEntry],
    members: &HashMap<&str, Vec<Ipv4Network>>,
) -> Flattened {
    let mut out = Flattened {
        stateless: !groups.is_empty() && groups.iter().all(|g| !g.stateful),
        ..Flattened::default()
    };
    // (direction) -> prefix -> matches with their rule numbers.
    let mut own: [BTreeMap<Ipv4Network, Vec<(PortMatch, u32)>>; 2] =
        [BTreeMap::new(), BTreeMap::new()];
    for g in groups {
        for r in &g.rules {
            if r.ethertype != "IPv4" {
                continue;
            }
            let dir = match r.direction.as_str() {
                "ingress" => DIR_INGRESS,
                "egress" => DIR_EGRESS,
                _ => continue,
            };
            out.rules.push(RuleRef {
                id: r.id.clone(),
                group: g.id.clone(),
            });
            let number = out.rules.len() as u32;
            let m = matches(r);
            if let Some(rg) = &r.remote_group_id {
                out.remote_rules.push((rg.clone(), dir, m.clone(), number));
            }
            for net in remotes(r, members) {
                own[dir as usize]
                    .entry(net)
                    .or_default()
                    .extend(m.iter().map(|x| (*x, number)));
            }
        }
    }
    out.own = own
        .iter()
        .enumerate()
        .flat_map(|(dir, p)| p.iter().map(move |(n, v)| ((dir as u32, *n), v.clone())))
        .collect();
    let mut class_of: HashMap<Vec<PortMatch>, u32> = HashMap::new();
    for (dir, prefixes) in own.iter().enumerate() {
        let present: HashSet<Ipv4Network> = prefixes.keys().copied().collect();
        // Shorter prefixes first, so a parent's closure is ready.
        let mut order: Vec<&Ipv4Network> = prefixes.keys().collect();
        order.sort_by_key(|n| (n.prefix(), u32::from(n.network())));
        let mut closure: HashMap<Ipv4Network, Vec<(PortMatch, u32)>> = HashMap::new();
        for net in order {
            let mut set: BTreeMap<PortMatch, u32> = BTreeMap::new();
            for (m, rule) in &prefixes[net] {
                let e = set.entry(*m).or_insert(*rule);
                *e = (*e).min(*rule);
            }
            // The nearest enclosing prefix already holds its own parents'.
            let parent = (0..net.prefix()).rev().find_map(|len| {
                let p = Ipv4Network::new(net.network(), len).ok()?;
                let p = Ipv4Network::new(p.network(), len).ok()?;
                present.contains(&p).then_some(p)
            });
            if let Some(p) = parent {
                for (m, rule) in &closure[&p] {
                    let e = set.entry(*m).or_insert(*rule);
                    *e = (*e).min(*rule);
                }
            }
            let list: Vec<(PortMatch, u32)> = set.into_iter().collect();
            // Classes are shared by what they allow; the rule numbers are
            // those of the first prefix with the class (for counters and
            // trace they name *a* rule allowing the port, the agent's rule
            // table resolves the exact one).
            let shape: Vec<PortMatch> = list.iter().map(|(m, _)| *m).collect();
            let next = out.classes.len() as u32;
            let class = *class_of.entry(shape).or_insert_with(|| {
                out.classes.push(list.clone());
                next
            });
            out.addr.push((dir as u32, *net, class));
            closure.insert(*net, list);
        }
    }
    out
}

/// Map writes that bring one policy from what the maps hold to what it
/// should be, in this order: new classes' ports, addresses upserted,
/// addresses deleted, unused classes' ports deleted. A packet never finds
/// an address without its class, and every map update is atomic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyOps {
    pub id: u32,
    pub new_classes: Vec<(u32, Vec<(PortMatch, u32)>)>,
    pub addr_upserts: Vec<(u32, Ipv4Network, u32)>,
    pub addr_deletes: Vec<(u32, Ipv4Network)>,
    pub class_deletes: Vec<(u32, Vec<PortMatch>)>,
}

impl PolicyOps {
    pub fn is_empty(&self) -> bool {
        self.new_classes.is_empty()
            && self.addr_upserts.is_empty()
            && self.addr_deletes.is_empty()
            && self.class_deletes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.new_classes.iter().map(|(_, e)| e.len()).sum::<usize>()
            + self.addr_upserts.len()
            + self.addr_deletes.len()
            + self
                .class_deletes
                .iter()
                .map(|(_, e)| e.len())
                .sum::<usize>()
    }
}

/// A `POLICY_ADDR` key.
pub(crate) fn policy_addr_key(policy: u32, dir: u32, net: Ipv4Network) -> Key<PolicyAddrKey> {
    Key::new(
        32 + net.prefix() as u32,
        PolicyAddrKey {
            policy_dir: ((policy << 1) | dir).to_be_bytes(),
            ip: net.network().octets(),
        },
    )
}

/// A `POLICY_PORT` key.
pub(crate) fn policy_port_key(
    class: u32,
    m: &crate::security_groups::PortMatch,
) -> Key<PolicyPortKey> {
    Key::new(
        m.key_prefix_len(),
        PolicyPortKey {
            class: class.to_be_bytes(),
            proto: m.proto.unwrap_or(0),
            port: m.port.to_be_bytes(),
            _pad: 0,
        },
    )
}

/// Connection tracking state, read by the agent's garbage collection and
/// `stratoctl`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CtSummary {
    pub entries: u64,
    pub expired_removed: u64,
    pub stats: CtStats,
}

impl Dataplane {
    /// Applies one policy's writes in their safe order (see
    /// [`crate::security_groups::PolicyOps`]).
    pub fn policy_apply(
        &mut self,
        ops: &crate::security_groups::PolicyOps,
    ) -> Result<(), DataplaneError> {
        // Host addresses and single ports go to the hashes, the rest to the
        // tries (`lookup` in the programs tries the hash first).
        let exact = |pm: &crate::security_groups::PortMatch| pm.proto.is_some() && pm.plen == 16;
        for (class, entries) in &ops.new_classes {
            for (pm, rule) in entries {
                let v = PolicyAllow { rule: *rule };
                let mut in_hash = false;
                if exact(pm) {
                    let name = maps::POLICY_EXACT;
                    let mut m: BpfHashMap<&mut MapData, PolicyPortKey, PolicyAllow> =
                        self.map_mut(name)?.try_into().map_err(map_err(name))?;
                    // Full: the trie takes it (the lookup falls back to it).
                    in_hash = m.insert(policy_port_key(*class, pm).data(), v, 0).is_ok();
                }
                if !in_hash {
                    let name = maps::POLICY_PORT;
                    let mut m: LpmTrie<&mut MapData, PolicyPortKey, PolicyAllow> =
                        self.map_mut(name)?.try_into().map_err(map_err(name))?;
                    m.insert(&policy_port_key(*class, pm), v, 0)
                        .map_err(map_err(name))?;
                }
            }
        }
        for (dir, net, class) in &ops.addr_upserts {
            let k = policy_addr_key(ops.id, *dir, *net);
            let v = PolicyClass { class: *class };
            let mut in_hash = false;
            if net.prefix() == 32 {
                let name = maps::POLICY_HOST;
                let mut m: BpfHashMap<&mut MapData, PolicyAddrKey, PolicyClass> =
                    self.map_mut(name)?.try_into().map_err(map_err(name))?;
                // Full: the trie takes it (the lookup falls back to it).
                in_hash = m.insert(k.data(), v, 0).is_ok();
            }
            if !in_hash {
                let name = maps::POLICY_ADDR;
                let mut m: LpmTrie<&mut MapData, PolicyAddrKey, PolicyClass> =
                    self.map_mut(name)?.try_into().map_err(map_err(name))?;
                m.insert(&k, v, 0).map_err(map_err(name))?;
            }
        }
        for (dir, net) in &ops.addr_deletes {
            // From the hash and the trie: a host address may have
            // overflowed into the trie.
            let k = policy_addr_key(ops.id, *dir, *net);
            if net.prefix() == 32 {
                let name = maps::POLICY_HOST;
                let mut m: BpfHashMap<&mut MapData, PolicyAddrKey, PolicyClass> =
                    self.map_mut(name)?.try_into().map_err(map_err(name))?;
                gone(m.remove(&k.data()), name)?;
            }
            let name = maps::POLICY_ADDR;
            let mut m: LpmTrie<&mut MapData, PolicyAddrKey, PolicyClass> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            gone(m.remove(&k), name)?;
        }
        for (class, shape) in &ops.class_deletes {
            for pm in shape {
                let k = policy_port_key(*class, pm);
                if exact(pm) {
                    let name = maps::POLICY_EXACT;
                    let mut m: BpfHashMap<&mut MapData, PolicyPortKey, PolicyAllow> =
                        self.map_mut(name)?.try_into().map_err(map_err(name))?;
                    gone(m.remove(&k.data()), name)?;
                }
                let name = maps::POLICY_PORT;
                let mut m: LpmTrie<&mut MapData, PolicyPortKey, PolicyAllow> =
                    self.map_mut(name)?.try_into().map_err(map_err(name))?;
                gone(m.remove(&k), name)?;
            }
        }
        Ok(())
    }

    /// Removes every policy entry whose policy id is not `live` (ids) and
    /// every class not in `live_classes` (an agent adopting the tables of a
    /// previous one). Returns the largest policy id and class seen.
    pub fn policy_sweep(
        &mut self,
        live: &dyn Fn(u32) -> bool,
        live_class: &dyn Fn(u32) -> bool,
    ) -> Result<(u32, u32), DataplaneError> {
        let (mut max_id, mut max_class) = (0, 0);
        {
            let name = maps::POLICY_ADDR;
            let mut m: LpmTrie<&mut MapData, PolicyAddrKey, PolicyClass> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            let keys: Vec<Key<PolicyAddrKey>> = m.keys().filter_map(Result::ok).collect();
            for k in keys {
                let id = u32::from_be_bytes(k.data().policy_dir) >> 1;
                max_id = max_id.max(id);
                if !live(id) {
                    gone(m.remove(&k), name)?;
                }
            }
        }
        {
            let name = maps::POLICY_HOST;
            let mut m: BpfHashMap<&mut MapData, PolicyAddrKey, PolicyClass> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            let keys: Vec<PolicyAddrKey> = m.keys().filter_map(Result::ok).collect();
            for k in keys {
                let id = u32::from_be_bytes(k.policy_dir) >> 1;
                max_id = max_id.max(id);
                if !live(id) {
                    gone(m.remove(&k), name)?;
                }
            }
        }
        {
            let name = maps::POLICY_EXACT;
            let mut m: BpfHashMap<&mut MapData, PolicyPortKey, PolicyAllow> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            let keys: Vec<PolicyPortKey> = m.keys().filter_map(Result::ok).collect();
            for k in keys {
                let c = u32::from_be_bytes(k.class);
                max_class = max_class.max(c);
                if !live_class(c) {
                    gone(m.remove(&k), name)?;
                }
            }
        }
        let name = maps::POLICY_PORT;
        let mut m: LpmTrie<&mut MapData, PolicyPortKey, PolicyAllow> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        let keys: Vec<Key<PolicyPortKey>> = m.keys().filter_map(Result::ok).collect();
        for k in keys {
            let c = u32::from_be_bytes(k.data().class);
            max_class = max_class.max(c);
            if !live_class(c) {
                gone(m.remove(&k), name)?;
            }
        }
        Ok((max_id, max_class))
    }

    /// Connection tracking counters, summed over CPUs.
    pub fn ct_stats(&self) -> Result<CtStats, DataplaneError> {
        let name = maps::CT_STATS;
        let m: PerCpuArray<&MapData, CtStats> =
            self.map_ref(name)?.try_into().map_err(map_err(name))?;
        let mut total = CtStats::default();
        for v in m.get(&0, 0).map_err(map_err(name))?.iter() {
            total.accumulate(v);
        }
        Ok(total)
    }

    /// One garbage collection pass over the connection table: removes
    /// entries past their state's timeout (at `now_ns`, the coarse
    /// monotonic clock the programs use) and those of zones (routing domains)
    /// `drop_zone` says are gone. Returns the live entries left and those removed.
    pub fn ct_gc(
        &mut self,
        now_ns: u64,
        drop_zone: &dyn Fn(u32) -> bool,
    ) -> Result<(u64, u64), DataplaneError> {
        let name = maps::CT;
        let mut m: BpfHashMap<&mut MapData, CtKey, CtEntry> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        let mut dead = Vec::new();
        let mut live = 0u64;
        for kv in m.iter() {
            let Ok((k, e)) = kv else { continue };
            let age = now_ns.saturating_sub(e.last_seen);
            if drop_zone(k.zone)
                || age > dataplane_common::ct_timeout_secs(e.state, e.flags) * 1_000_000_000
            {
                dead.push(k);
            } else {
                live += 1;
            }
        }
        for k in &dead {
            gone(m.remove(k), name)?;
        }
        Ok((live, dead.len() as u64))
    }

    /// One connection table entry.
    pub fn ct_get(&self, key: &CtKey) -> Result<Option<CtEntry>, DataplaneError> {
        let name = maps::CT;
        let m: BpfHashMap<&MapData, CtKey, CtEntry> =
            self.map_ref(name)?.try_into().map_err(map_err(name))?;
        match m.get(key, 0) {
            Ok(e) => Ok(Some(e)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(name)(e)),
        }
    }

    /// Every connection table entry (tests, `stratoctl`).
    pub fn ct_entries(&self) -> Result<Vec<(CtKey, CtEntry)>, DataplaneError> {
        let name = maps::CT;
        let m: BpfHashMap<&MapData, CtKey, CtEntry> =
            self.map_ref(name)?.try_into().map_err(map_err(name))?;
        Ok(m.iter().filter_map(Result::ok).collect())
    }

    /// Benchmarks: fills the connection table with `n` entries of zone
    /// `zone` (synthetic flows 198.51.x.y, fresh) from user space.
    pub fn ct_fill(&mut self, zone: u32, n: u32) -> Result<(), DataplaneError> {
        let name = maps::CT;
        let now = coarse_now_ns();
        let mut m: BpfHashMap<&mut MapData, CtKey, CtEntry> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        for i in 0..n {
            let (k, _) = CtKey::of_flow(
                zone,
                [198, 51, (i >> 16) as u8, (i >> 8) as u8],
                [203, 0, 113, i as u8],
                40_000,
                443,
                17,
            );
            let e = CtEntry {
                last_seen: now,
                state: dataplane_common::CT_UDP,
                ..CtEntry::default()
            };
            m.insert(k, e, 0).map_err(map_err(name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: does any rule allow it? (evaluated directly)
    fn reference(
        g: &SecurityGroupEntry,
        members: &HashMap<&str, Vec<Ipv4Network>>,
        dir: &str,
        remote: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> bool {
        g.rules.iter().any(|r| {
            r.ethertype == "IPv4"
                && r.direction == dir
                && remotes(r, members).iter().any(|n| n.contains(remote))
                && matches(r).iter().any(|m| match m.proto {
                    None => true,
                    Some(p) => {
                        p == proto
                            && (m.plen == 0
                                || (port >> (16 - m.plen as u32))
                                    == (m.port >> (16 - m.plen as u32)))
                    }
                })
        })
    }

    /// The flattened tries, looked up the way the packet path does.
    fn lookup(f: &Flattened, dir: u32, remote: Ipv4Addr, proto: u8, port: u16) -> bool {
        let Some((_, _, class)) = f
            .addr
            .iter()
            .filter(|(d, n, _)| *d == dir && n.contains(remote))
            .max_by_key(|(_, n, _)| n.prefix())
        else {
            return false;
        };
        f.classes[*class as usize]
            .iter()
            .any(|(m, _)| match m.proto {
                None => true,
                Some(p) => {
                    p == proto
                        && (m.plen == 0
                            || (port >> (16 - m.plen as u32)) == (m.port >> (16 - m.plen as u32)))
                }
            })
    }

    #[test]
    fn port_ranges_split_into_aligned_prefixes() {
        assert_eq!(port_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(port_prefixes(0, 65_535), vec![(0, 0)]);
        assert_eq!(port_prefixes(1, 65_535).len(), 16);
        assert_eq!(port_prefixes(1024, 2047), vec![(1024, 6)]);
        for (lo, hi) in [
            (1u16, 1u16),
            (3, 17),
            (1000, 1999),
            (65_000, 65_535),
            (0, 1),
        ] {
            let ps = port_prefixes(lo, hi);
            for p in 0..=65_535u32 {
                let inside = ps
                    .iter()
                    .filter(|(b, l)| {
                        *l == 0 || (p >> (16 - *l as u32)) == (*b as u32 >> (16 - *l as u32))
                    })
                    .count();
                assert_eq!(
                    inside,
                    ((lo as u32..=hi as u32).contains(&p)) as usize,
                    "{lo}-{hi} at {p}"
                );
            }
        }
    }

    #[test]
    fn flattened_lookup_equals_direct_evaluation() {
        let members: HashMap<&str, Vec<Ipv4Network>> = HashMap::from([(
            "web",
            member_prefixes(&["10.0.1.5".into(), "10.0.1.6".into()]),
        )]);
        let g = SecurityGroupEntry {
            id: "g".into(),
            stateful: true,
            rules: vec![
                SgRuleEntry::ipv4(
                    "a",
                    "ingress",
                    Some(6),
                    (Some(22), Some(22)),
                    Some("10.0.0.0/16"),
                    None,
                ),
                SgRuleEntry::ipv4(
                    "b",
                    "ingress",
                    Some(6),
                    (Some(80), Some(90)),
                    Some("10.0.1.0/24"),
                    None,
                ),
                SgRuleEntry::ipv4(
                    "c",
                    "ingress",
                    Some(17),
                    (None, None),
                    Some("10.0.1.128/25"),
                    None,
                ),
                SgRuleEntry::ipv4("d", "ingress", Some(1), (Some(8), None), None, None),
                SgRuleEntry::ipv4(
                    "e",
                    "ingress",
                    Some(6),
                    (Some(5432), Some(5432)),
                    None,
                    Some("web"),
                ),
                SgRuleEntry::ipv4("f", "egress", None, (None, None), None, None),
                SgRuleEntry::ipv4(
                    "g",
                    "ingress",
                    Some(1),
                    (Some(3), Some(4)),
                    Some("192.168.0.0/16"),
                    None,
                ),
            ],
        };
        let f = flatten(&[&g], &members);
        let addrs = [
            "10.0.0.1",
            "10.0.1.1",
            "10.0.1.5",
            "10.0.1.6",
            "10.0.1.200",
            "10.1.0.1",
            "192.168.3.3",
            "8.8.8.8",
        ];
        for a in addrs {
            let ip: Ipv4Addr = a.parse().unwrap();
            for (proto, port) in [
                (6, 22),
                (6, 80),
                (6, 85),
                (6, 91),
                (6, 5432),
                (17, 53),
                (1, 0x0800),
                (1, 0x0304),
                (1, 0x0303),
                (1, 0x0000),
                (47, 0),
            ] {
                for (dir, name) in [(DIR_INGRESS, "ingress"), (DIR_EGRESS, "egress")] {
                    assert_eq!(
                        lookup(&f, dir, ip, proto, port),
                        reference(&g, &members, name, ip, proto, port),
                        "{name} {a} proto {proto} port {port}"
                    );
                }
            }
        }
    }

    #[test]
    fn many_addresses_with_one_port_share_one_class() {
        let rules: Vec<SgRuleEntry> = (0..10_000u32)
            .map(|i| {
                let ip = Ipv4Addr::from(0x0a00_0000 + i);
                SgRuleEntry::ipv4(
                    &format!("r{i}"),
                    "ingress",
                    Some(6),
                    (Some(443), Some(443)),
                    Some(&format!("{ip}/32")),
                    None,
                )
            })
            .collect();
        let g = SecurityGroupEntry {
            id: "g".into(),
            stateful: true,
            rules,
        };
        let f = flatten(&[&g], &HashMap::new());
        assert_eq!(f.addr.len(), 10_000);
        assert_eq!(f.classes.len(), 1);
        assert!(!f.stateless);
    }

    #[test]
    fn ipv6_rules_and_empty_remote_groups_allow_nothing() {
        let mut r = SgRuleEntry::ipv4("a", "ingress", None, (None, None), None, None);
        r.ethertype = "IPv6".into();
        let g = SecurityGroupEntry {
            id: "g".into(),
            stateful: false,
            rules: vec![
                r,
                SgRuleEntry::ipv4("b", "ingress", None, (None, None), None, Some("empty")),
            ],
        };
        let f = flatten(&[&g], &HashMap::new());
        assert!(f.addr.is_empty());
        assert!(f.stateless);
    }
}
