//! Security groups, realised: one policy per distinct set of groups among
//! the host's ports, planned as map writes ([`Plan`]) from what is
//! installed and what the ports' groups now are. How rules become trie
//! entries (flattening) is the dataplane's encoding
//! ([`strato_dataplane::security_groups`]); this module decides ids, what
//! changes in place and what moves to a new policy.

use std::collections::{BTreeMap, HashMap};

use ipnetwork::Ipv4Network;
use strato_dataplane::security_groups::{
    flatten, member_prefixes, Flattened, PolicyOps, PortMatch,
};
use strato_proto::config::SecurityGroupEntry;

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
        desired: &BTreeMap<String, strato_proto::config::Entry>,
    ) -> HashMap<String, crate::vpc::PortPolicy> {
        desired
            .values()
            .filter_map(|e| match e {
                strato_proto::config::Entry::Port(p) if p.port_security_enabled => {
                    let pol = self.of(&p.security_groups)?;
                    Some((
                        p.id.clone(),
                        crate::vpc::PortPolicy {
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
        desired: &BTreeMap<String, strato_proto::config::Entry>,
        check_inputs: bool,
    ) -> Plan {
        use strato_proto::config::Entry;
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
    use strato_proto::config::SgRuleEntry;

    use super::*;
    fn desired(
        members: &[&str],
        rule_ports: &[u32],
    ) -> BTreeMap<String, strato_proto::config::Entry> {
        use strato_proto::config::{Entry, PortEntry, SgMemberEntry};
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
        use strato_proto::config::{Entry, SgMemberEntry};
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
