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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::compile::{SecurityGroupEntry, SgRuleEntry};
use dataplane_common::{DIR_EGRESS, DIR_INGRESS};

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

/// Class contents -> (class id, entries with their rule numbers).
type Classes = HashMap<Vec<PortMatch>, (u32, Vec<(PortMatch, u32)>)>;

/// A policy as written to the maps. Its trie id stays for as long as its
/// set of groups is in use; changes are written in place as a diff.
#[derive(Clone, Debug)]
pub struct Installed {
    /// Key of its `POLICY_ADDR` entries, and what tracked connections
    /// record: a new id whenever the policy stops allowing something.
    pub id: u32,
    pub stateless: bool,
    /// Rules flattened (for logs).
    pub rules: usize,
    classes: Classes,
    /// (direction, remote prefix) -> class id.
    addr: HashMap<(u32, Ipv4Network), u32>,
    /// What it was built from (compared when groups or members change).
    inputs: Inputs,
    /// For additions in place (`add_members`): each prefix's own matches,
    /// the rules naming each remote group, addresses per class.
    own: HashMap<(u32, Ipv4Network), Vec<(PortMatch, u32)>>,
    remote_rules: HashMap<String, Vec<(u32, Vec<PortMatch>, u32)>>,
    refs: HashMap<u32, usize>,
}

impl Installed {
    /// Entries in `POLICY_ADDR` (prefixes) and `POLICY_HOST` (/32s).
    pub fn addr_entries(&self) -> (usize, usize) {
        let hosts = self.addr.keys().filter(|(_, n)| n.prefix() == 32).count();
        (self.addr.len() - hosts, hosts)
    }

    /// Entries in `POLICY_PORT` (ranges, any port) and `POLICY_EXACT`.
    pub fn port_entries(&self) -> (usize, usize) {
        let all: usize = self.classes.values().map(|(_, e)| e.len()).sum();
        let exact = self
            .classes
            .values()
            .flat_map(|(_, e)| e.iter())
            .filter(|(m, _)| m.proto.is_some() && m.plen == 16)
            .count();
        (all - exact, exact)
    }

    pub fn class_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.classes.values().map(|(id, _)| *id)
    }

    /// The writes that remove it (addresses first).
    fn removal(&self) -> PolicyOps {
        PolicyOps {
            id: self.id,
            addr_deletes: self.addr.keys().copied().collect(),
            class_deletes: self
                .classes
                .iter()
                .map(|(s, (id, _))| (*id, s.clone()))
                .collect(),
            ..PolicyOps::default()
        }
    }
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

#[derive(Clone, Debug, PartialEq, Eq)]
struct Inputs {
    groups: Vec<SecurityGroupEntry>,
    /// Remote group -> member port -> its addresses.
    members: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

/// The agent's policies: one per distinct set of groups among its ports.
/// A change that only adds (members joining, rules added) is written in
/// place as the difference; one that takes anything away is written under
/// a new id, the ports moved to it and the old one removed, so tracked
/// connections are checked against the new rules at their next packet.
#[derive(Debug, Default)]
pub struct Policies {
    next_id: u32,
    next_class: u32,
    by_groups: HashMap<Vec<String>, Installed>,
    /// Removals of policies no port uses any more: applied after the
    /// ports moved off them.
    pub retired: Vec<PolicyOps>,
}

/// What [`Policies::plan`] decided.
#[derive(Debug, Default)]
pub struct Plan {
    /// Map writes, before the ports refer to the result.
    pub ops: Vec<PolicyOps>,
    /// Ports whose policy id changed.
    pub moved_ports: Vec<String>,
}

fn subset(a: &[PortMatch], b: &[PortMatch]) -> bool {
    a.iter().all(|m| b.contains(m))
}

impl Policies {
    /// Continues numbering above what the maps may already hold.
    pub fn start_after(&mut self, max_id: u32, max_class: u32) {
        self.next_id = self.next_id.max(max_id + 1).max(1);
        self.next_class = self.next_class.max(max_class + 1).max(1);
    }

    pub fn is_live(&self, id: u32) -> bool {
        self.by_groups.values().any(|p| p.id == id)
    }

    /// Every class id in use.
    pub fn live_classes(&self) -> std::collections::HashSet<u32> {
        self.by_groups
            .values()
            .flat_map(Installed::class_ids)
            .collect()
    }

    /// The installed policy of a group set.
    pub fn of(&self, groups: &[String]) -> Option<&Installed> {
        self.by_groups.get(groups)
    }

    pub fn installed(&self) -> impl Iterator<Item = (&Vec<String>, &Installed)> {
        self.by_groups.iter()
    }

    /// The installed policy of every port in `desired` with port security
    /// (by port id): what its `PORTS` entry carries.
    pub fn port_policies(
        &self,
        desired: &BTreeMap<String, crate::compile::Entry>,
    ) -> HashMap<String, crate::tables::PortPolicy> {
        desired
            .values()
            .filter_map(|e| match e {
                crate::compile::Entry::Port(p) if p.port_security_enabled => {
                    let pol = self.of(&p.security_groups)?;
                    Some((
                        p.id.clone(),
                        crate::tables::PortPolicy {
                            id: pol.id,
                            stateless: pol.stateless,
                        },
                    ))
                }
                _ => None,
            })
            .collect()
    }

    /// The writes from `old` to `flat` (under `old.id`), the resulting
    /// classes and addresses, and whether anything allowed is taken away.
    fn diff(
        &mut self,
        old: &Installed,
        flat: &Flattened,
    ) -> (PolicyOps, Classes, HashMap<(u32, Ipv4Network), u32>, bool) {
        let mut ops = PolicyOps {
            id: old.id,
            ..PolicyOps::default()
        };
        // Classes by content: unchanged ones keep their id and entries.
        let mut classes: Classes = HashMap::new();
        let mut global = Vec::with_capacity(flat.classes.len());
        for entries in &flat.classes {
            let shape: Vec<PortMatch> = entries.iter().map(|(m, _)| *m).collect();
            let (id, kept) = match old.classes.get(&shape) {
                Some((id, e)) => (*id, e.clone()),
                None => {
                    let id = self.next_class;
                    self.next_class += 1;
                    ops.new_classes.push((id, entries.clone()));
                    (id, entries.clone())
                }
            };
            global.push(id);
            classes.insert(shape, (id, kept));
        }
        let old_shape: HashMap<u32, &Vec<PortMatch>> =
            old.classes.iter().map(|(s, (id, _))| (*id, s)).collect();
        let new_shape: HashMap<u32, &Vec<PortMatch>> =
            classes.iter().map(|(s, (id, _))| (*id, s)).collect();
        let mut addr: HashMap<(u32, Ipv4Network), u32> = HashMap::new();
        let mut shrank = false;
        for (dir, net, local) in &flat.addr {
            let c = global[*local as usize];
            addr.insert((*dir, *net), c);
            match old.addr.get(&(*dir, *net)) {
                Some(o) if *o == c => {}
                Some(o) => {
                    ops.addr_upserts.push((*dir, *net, c));
                    shrank |= match (old_shape.get(o), new_shape.get(&c)) {
                        (Some(a), Some(b)) => !subset(a, b),
                        _ => true,
                    };
                }
                None => ops.addr_upserts.push((*dir, *net, c)),
            }
        }
        for k in old.addr.keys() {
            if !addr.contains_key(k) {
                ops.addr_deletes.push(*k);
                shrank = true;
            }
        }
        let used: std::collections::HashSet<u32> = addr.values().copied().collect();
        for (shape, (id, _)) in &old.classes {
            if !used.contains(id) {
                ops.class_deletes.push((*id, shape.clone()));
            }
        }
        classes.retain(|_, (id, _)| used.contains(id));
        (ops, classes, addr, shrank)
    }

    /// Brings the policies in line with `desired`. `check_inputs`: groups
    /// or members changed since the last plan (else only group sets not
    /// installed yet are built).
    pub fn plan(
        &mut self,
        desired: &BTreeMap<String, crate::compile::Entry>,
        check_inputs: bool,
    ) -> Plan {
        use crate::compile::Entry;
        let mut plan = Plan::default();
        let mut users: HashMap<Vec<String>, Vec<String>> = HashMap::new();
        for e in desired.values() {
            if let Entry::Port(p) = e {
                if p.port_security_enabled {
                    users
                        .entry(p.security_groups.clone())
                        .or_default()
                        .push(p.id.clone());
                }
            }
        }
        let groups: HashMap<&str, &SecurityGroupEntry> = desired
            .values()
            .filter_map(|e| match e {
                Entry::SecurityGroup(g) => Some((g.id.as_str(), g)),
                _ => None,
            })
            .collect();
        let mut members: HashMap<&str, BTreeMap<&str, &Vec<String>>> = HashMap::new();
        if check_inputs || users.keys().any(|k| !self.by_groups.contains_key(k)) {
            for e in desired.values() {
                if let Entry::SgMember(m) = e {
                    members
                        .entry(m.group_id.as_str())
                        .or_default()
                        .insert(m.port_id.as_str(), &m.ips);
                }
            }
        }
        for (set, ports) in &users {
            let have = self.by_groups.get(set);
            if have.is_some() && !check_inputs {
                continue;
            }
            let gs: Vec<&SecurityGroupEntry> = set
                .iter()
                .filter_map(|g| groups.get(g.as_str()).copied())
                .collect();
            let mut inputs = Inputs {
                groups: gs.iter().map(|g| (*g).clone()).collect(),
                members: BTreeMap::new(),
            };
            for g in &gs {
                for r in g.rules.iter().filter_map(|r| r.remote_group_id.as_deref()) {
                    let ports: BTreeMap<String, Vec<String>> = members
                        .get(r)
                        .map(|m| {
                            m.iter()
                                .map(|(p, ips)| ((*p).to_owned(), (*ips).clone()))
                                .collect()
                        })
                        .unwrap_or_default();
                    inputs.members.insert(r.to_owned(), ports);
                }
            }
            if have.is_some_and(|h| h.inputs == inputs) {
                continue;
            }
            let prefixes: HashMap<&str, Vec<Ipv4Network>> = inputs
                .members
                .iter()
                .map(|(g, ports)| {
                    let ips: Vec<String> = ports.values().flatten().cloned().collect();
                    (g.as_str(), member_prefixes(&ips))
                })
                .collect();
            let flat = flatten(&gs, &prefixes);
            let old = self.by_groups.remove(set);
            // In place when the change only adds (remote-group members
            // joining, rules added): same id, tracked connections stay
            // valid. Anything taken away: a new id written beside the old
            // one, the ports moved to it, the old one removed; tracked
            // connections are then checked again at their next packet.
            let mut done = None;
            if let Some(o) = &old {
                let (ops, classes, addr, shrank) = self.diff(o, &flat);
                if !shrank && o.stateless == flat.stateless {
                    done = Some((o.id, ops, classes, addr, false));
                }
            }
            let (id, ops, classes, addr, moved) = match done {
                Some(d) => d,
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    let empty = Installed {
                        id,
                        stateless: flat.stateless,
                        rules: 0,
                        classes: HashMap::new(),
                        addr: HashMap::new(),
                        inputs: inputs.clone(),
                        own: HashMap::new(),
                        remote_rules: HashMap::new(),
                        refs: HashMap::new(),
                    };
                    let (ops, classes, addr, _) = self.diff(&empty, &flat);
                    if let Some(o) = old {
                        self.retired.push(o.removal());
                    }
                    (id, ops, classes, addr, true)
                }
            };
            if moved {
                plan.moved_ports.extend(ports.iter().cloned());
            }
            if !ops.is_empty() {
                plan.ops.push(ops);
            }
            let mut refs: HashMap<u32, usize> = HashMap::new();
            for c in addr.values() {
                *refs.entry(*c).or_default() += 1;
            }
            let mut remote_rules: HashMap<String, Vec<(u32, Vec<PortMatch>, u32)>> = HashMap::new();
            for (g, dir, m, n) in flat.remote_rules {
                remote_rules.entry(g).or_default().push((dir, m, n));
            }
            self.by_groups.insert(
                set.clone(),
                Installed {
                    id,
                    stateless: flat.stateless,
                    rules: flat.rules.len(),
                    classes,
                    addr,
                    inputs,
                    own: flat.own.into_iter().collect(),
                    remote_rules,
                    refs,
                },
            );
        }
        // Sets no port uses any more: removed after the ports moved.
        let unused: Vec<Vec<String>> = self
            .by_groups
            .keys()
            .filter(|k| !users.contains_key(*k))
            .cloned()
            .collect();
        for k in unused {
            if let Some(old) = self.by_groups.remove(&k) {
                self.retired.push(old.removal());
            }
        }
        plan
    }

    /// Ports joining remote groups (`(group, port, addresses)`, new member
    /// entries only), written in place without flattening anything again:
    /// each new address gets its own matches plus its nearest enclosing
    /// prefix's, and a class by that content. `None`, with nothing changed,
    /// when an addition is not that simple (a prefix rather than a host
    /// address, or a port already a member): the caller plans in full.
    pub fn add_members(
        &mut self,
        adds: &[(String, String, Vec<String>)],
    ) -> Option<Vec<PolicyOps>> {
        // Decided before anything changes: all or nothing.
        for (g, port, ips) in adds {
            if member_prefixes(ips).iter().any(|q| q.prefix() < 32) {
                return None;
            }
            let known = self.by_groups.values().any(|inst| {
                inst.remote_rules.contains_key(g)
                    && inst
                        .inputs
                        .members
                        .get(g)
                        .is_some_and(|m| m.contains_key(port))
            });
            if known {
                return None;
            }
        }
        let mut out = Vec::new();
        for inst in self.by_groups.values_mut() {
            let mut ops = PolicyOps {
                id: inst.id,
                ..PolicyOps::default()
            };
            for (g, port, ips) in adds {
                let Some(rules) = inst.remote_rules.get(g) else {
                    continue;
                };
                inst.inputs
                    .members
                    .entry(g.clone())
                    .or_default()
                    .insert(port.clone(), ips.clone());
                // Host addresses only (checked above): none encloses another.
                for q in member_prefixes(ips) {
                    for (dir, m, number) in rules {
                        let (dir, number) = (*dir, *number);
                        let own = inst.own.entry((dir, q)).or_default();
                        own.extend(m.iter().map(|x| (*x, number)));
                        let mut set: BTreeMap<PortMatch, u32> = BTreeMap::new();
                        for (x, rule) in own.iter() {
                            let e = set.entry(*x).or_insert(*rule);
                            *e = (*e).min(*rule);
                        }
                        // The nearest enclosing prefix carries its own
                        // parents' matches already.
                        let parent = (0..q.prefix()).rev().find_map(|len| {
                            let p = Ipv4Network::new(q.network(), len).ok()?;
                            let p = Ipv4Network::new(p.network(), len).ok()?;
                            inst.addr.get(&(dir, p)).copied()
                        });
                        if let Some(pc) = parent {
                            let entries = inst
                                .classes
                                .values()
                                .find(|(id, _)| *id == pc)
                                .map(|(_, e)| e.clone())
                                .unwrap_or_default();
                            for (x, rule) in entries {
                                let e = set.entry(x).or_insert(rule);
                                *e = (*e).min(rule);
                            }
                        }
                        let list: Vec<(PortMatch, u32)> = set.into_iter().collect();
                        let shape: Vec<PortMatch> = list.iter().map(|(x, _)| *x).collect();
                        let class = match inst.classes.get(&shape) {
                            Some((id, _)) => *id,
                            None => {
                                let id = self.next_class;
                                self.next_class += 1;
                                ops.new_classes.push((id, list.clone()));
                                inst.classes.insert(shape, (id, list));
                                id
                            }
                        };
                        let old = inst.addr.insert((dir, q), class);
                        if old == Some(class) {
                            continue;
                        }
                        ops.addr_upserts.push((dir, q, class));
                        *inst.refs.entry(class).or_default() += 1;
                        if let Some(o) = old {
                            let n = inst.refs.entry(o).or_default();
                            *n = n.saturating_sub(1);
                            if *n == 0 {
                                inst.refs.remove(&o);
                                if let Some(shape) = inst
                                    .classes
                                    .iter()
                                    .find(|(_, (id, _))| *id == o)
                                    .map(|(s, _)| s.clone())
                                {
                                    inst.classes.remove(&shape);
                                    ops.class_deletes.push((o, shape));
                                }
                            }
                        }
                    }
                }
            }
            if !ops.is_empty() {
                out.push(ops);
            }
        }
        Some(out)
    }

    /// Forgets a policy whose writes failed: the next plan builds it anew
    /// (under a new id; the agent sweeps what the failed one left).
    pub fn forget(&mut self, id: u32) {
        self.by_groups.retain(|_, p| p.id != id);
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

    fn desired(members: &[&str], rule_ports: &[u32]) -> BTreeMap<String, crate::compile::Entry> {
        use crate::compile::{Entry, PortEntry, SgMemberEntry};
        let mut rules = vec![SgRuleEntry::ipv4(
            "self",
            "ingress",
            None,
            (None, None),
            None,
            Some("g"),
        )];
        for p in rule_ports {
            rules.push(SgRuleEntry::ipv4(
                &format!("p{p}"),
                "ingress",
                Some(6),
                (Some(*p), Some(*p)),
                None,
                None,
            ));
        }
        let mut v = vec![
            Entry::SecurityGroup(SecurityGroupEntry {
                id: "g".into(),
                stateful: true,
                rules,
            }),
            Entry::Port(PortEntry {
                id: "local".into(),
                tap: "tapx".into(),
                network_id: "n".into(),
                vni: 1,
                mtu: 1450,
                mac: "fa:16:3e:00:00:01".into(),
                ips: vec![],
                port_security_enabled: true,
                allowed_address_pairs: vec![],
                admin_state_up: true,
                security_groups: vec!["g".into()],
            }),
        ];
        for m in members {
            v.push(Entry::SgMember(SgMemberEntry {
                group_id: "g".into(),
                port_id: m.to_string(),
                ips: vec![format!("10.0.0.{}", m.trim_start_matches('m'))],
            }));
        }
        v.into_iter().map(|e| (e.key(), e)).collect()
    }

    #[test]
    fn additions_are_written_in_place_removals_under_a_new_id() {
        let mut p = Policies::default();
        p.start_after(0, 0);
        let plan = p.plan(&desired(&["m1", "m2"], &[80]), true);
        assert_eq!(plan.moved_ports, vec!["local".to_owned()]);
        let id = p.of(&["g".to_owned()]).unwrap().id;
        // A member joins, a rule is added: in place, only what is new.
        let plan = p.plan(&desired(&["m1", "m2", "m3"], &[80, 443]), true);
        assert!(plan.moved_ports.is_empty());
        assert_eq!(p.of(&["g".to_owned()]).unwrap().id, id);
        let ops = &plan.ops[0];
        assert_eq!(ops.id, id);
        assert!(
            ops.addr_deletes.is_empty() && p.retired.is_empty(),
            "{ops:?}"
        );
        // Unchanged input: nothing to write.
        assert!(p
            .plan(&desired(&["m1", "m2", "m3"], &[80, 443]), true)
            .ops
            .is_empty());
        // A member leaves: a new id, the ports move, the old one goes.
        let plan = p.plan(&desired(&["m1", "m3"], &[80, 443]), true);
        assert_eq!(plan.moved_ports, vec!["local".to_owned()]);
        let new = p.of(&["g".to_owned()]).unwrap().id;
        assert_ne!(new, id);
        assert_eq!(p.retired.len(), 1);
        assert_eq!(p.retired[0].id, id);
        assert_eq!(plan.ops[0].id, new);
    }

    /// Each address's allowed matches (its class's shape), per direction.
    fn shapes(i: &Installed) -> BTreeMap<(u32, Ipv4Network), Vec<PortMatch>> {
        let by_id: HashMap<u32, &Vec<PortMatch>> =
            i.classes.iter().map(|(s, (id, _))| (*id, s)).collect();
        i.addr.iter().map(|(k, c)| (*k, by_id[c].clone())).collect()
    }

    /// Ports joining one by one, written in place by `add_members`, give
    /// the same policy as planning everything afresh; a later full plan
    /// finds nothing to write; a prefix member falls back (nothing changed).
    #[test]
    fn members_added_in_place_equal_a_full_plan() {
        use crate::compile::{Entry, SgMemberEntry};
        let member = |i: u32| -> (String, String) {
            // Some inside 10.0.0.0/24 (under the web rule's prefix), some not.
            let ip = if i.is_multiple_of(3) {
                format!("10.0.0.{}", (i * 7) % 250 + 1)
            } else {
                format!("10.{}.{}.{}", 1 + i % 5, (i * 13) % 250, (i * 31) % 250 + 1)
            };
            (format!("m{i}"), ip)
        };
        let build = |n: u32| -> BTreeMap<String, Entry> {
            let mut d = desired(&[], &[]);
            if let Some(Entry::SecurityGroup(g)) = d.get_mut("sg/g") {
                g.rules.push(SgRuleEntry::ipv4(
                    "web",
                    "ingress",
                    Some(6),
                    (Some(80), Some(80)),
                    Some("10.0.0.0/24"),
                    None,
                ));
                g.rules.push(SgRuleEntry::ipv4(
                    "dns",
                    "ingress",
                    Some(17),
                    (Some(53), Some(53)),
                    None,
                    Some("g"),
                ));
            }
            for i in 0..n {
                let (port, ip) = member(i);
                let e = Entry::SgMember(SgMemberEntry {
                    group_id: "g".into(),
                    port_id: port,
                    ips: vec![ip],
                });
                d.insert(e.key(), e);
            }
            d
        };
        let set = vec!["g".to_owned()];
        let mut p = Policies::default();
        p.start_after(0, 0);
        p.plan(&build(5), true);
        let id = p.of(&set).unwrap().id;
        for n in 5..60 {
            let (port, ip) = member(n);
            let ops = p
                .add_members(&[("g".into(), port, vec![ip])])
                .expect("a host address is added in place");
            assert!(ops.iter().all(|o| o.id == id && o.addr_deletes.is_empty()));
            let mut fresh = Policies::default();
            fresh.start_after(0, 0);
            fresh.plan(&build(n + 1), true);
            assert_eq!(
                shapes(p.of(&set).unwrap()),
                shapes(fresh.of(&set).unwrap()),
                "after {} members",
                n + 1
            );
            assert!(p.plan(&build(n + 1), true).ops.is_empty());
        }
        assert_eq!(p.of(&set).unwrap().id, id, "never a new policy id");
        // A prefix, or a port already known: not in place, nothing changed.
        let before = shapes(p.of(&set).unwrap());
        assert!(p
            .add_members(&[("g".into(), "mx".into(), vec!["10.9.0.0/24".into()])])
            .is_none());
        assert!(p
            .add_members(&[("g".into(), "m1".into(), vec!["10.9.9.9".into()])])
            .is_none());
        assert_eq!(shapes(p.of(&set).unwrap()), before);
    }
}
