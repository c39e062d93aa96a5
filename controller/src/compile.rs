//! The compiler: desired state -> what each host's dataplane needs, as a set
//! of keyed entries per host, versioned by the global revision.
//!
//! A host needs its own (bound) ports, the networks of its routing domains
//! (a router and every network attached to it form one domain, the VPC),
//! those routers, and the other hosts' ports in those networks (where to
//! tunnel to). After every commit only the hosts the change can concern are
//! recompiled (those whose entries mention a touched object, and those with
//! ports in the touched objects' domains); their new entries are diffed
//! against the old ones and the difference kept as a delta, so an agent
//! receives only what changed, or a snapshot when it is too far behind.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::{
    model::{AddressPair, Change, HostRoute, Kind, Port},
    network::{ports::tap_name, OWNER_ROUTER_INTERFACE},
    state::State,
};

/// How many deltas per host are kept for agents catching up.
pub const DELTA_LOG: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortEntry {
    pub id: String,
    /// The host device (Nova tap name) the agent attaches to.
    pub tap: String,
    pub network_id: String,
    pub vni: u32,
    pub mtu: u32,
    pub mac: String,
    /// (subnet id, address)
    pub ips: Vec<(String, String)>,
    pub port_security_enabled: bool,
    pub allowed_address_pairs: Vec<AddressPair>,
    pub admin_state_up: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetEntry {
    pub id: String,
    pub cidr: String,
    pub gateway_ip: Option<String>,
    /// MAC of the router interface holding the gateway address, if attached.
    pub gateway_mac: Option<String>,
    pub enable_dhcp: bool,
    pub dns_nameservers: Vec<String>,
    pub host_routes: Vec<HostRoute>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEntry {
    pub id: String,
    pub vni: u32,
    pub mtu: u32,
    pub admin_state_up: bool,
    /// The router (routing domain) this network is attached to, if any.
    pub router_id: Option<String>,
    pub subnets: Vec<SubnetEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterInterface {
    pub port_id: String,
    pub subnet_id: String,
    pub network_id: String,
    pub vni: u32,
    pub cidr: String,
    pub ip: String,
    pub mac: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterEntry {
    pub id: String,
    pub admin_state_up: bool,
    pub interfaces: Vec<RouterInterface>,
    pub routes: Vec<HostRoute>,
}

/// A port on another host that local ports may talk to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEntry {
    pub port_id: String,
    pub network_id: String,
    pub vni: u32,
    pub mac: String,
    pub ips: Vec<String>,
    pub allowed_address_pairs: Vec<AddressPair>,
    pub host: String,
    pub underlay_ip: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    Port(PortEntry),
    Network(NetworkEntry),
    Router(RouterEntry),
    Remote(RemoteEntry),
}

impl Entry {
    /// Stable key: `<type>/<id>`.
    pub fn key(&self) -> String {
        match self {
            Entry::Port(p) => format!("port/{}", p.id),
            Entry::Network(n) => format!("network/{}", n.id),
            Entry::Router(r) => format!("router/{}", r.id),
            Entry::Remote(r) => format!("remote/{}", r.port_id),
        }
    }
}

/// What an agent receives: a full snapshot, or the changes since `from`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// `snapshot` replaces everything; `delta` applies on top of `from`.
    pub kind: UpdateKind,
    pub host: String,
    /// The host's configuration revision before (delta) this update.
    pub from: u64,
    /// The revision the agent has once it applied this update.
    pub revision: u64,
    pub upserts: Vec<Entry>,
    /// Keys removed.
    pub deletes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateKind {
    Snapshot,
    Delta,
}

struct HostConfig {
    /// Global revision of the last change to this host's entries.
    revision: u64,
    entries: BTreeMap<String, Entry>,
    /// (revision, upserted keys, deleted keys), oldest first.
    log: VecDeque<(u64, BTreeSet<String>, BTreeSet<String>)>,
    /// Deltas at or below this revision were dropped from the log (or never
    /// recorded: the configuration was built at start-up).
    truncated: u64,
}

/// Compiled configuration of every host.
#[derive(Default)]
pub struct Compiler {
    hosts: HashMap<String, HostConfig>,
    /// Recompiles done (for tests and metrics).
    pub compiles: u64,
}

/// One pass over the ports, shared by every host compiled for a commit.
pub struct Index<'s> {
    /// Router interface ports (few: one per attached subnet).
    router_ifaces: Vec<&'s Port>,
    /// Bound VM ports per network.
    vm_ports_by_net: HashMap<&'s str, Vec<&'s Port>>,
    /// Bound VM ports per host.
    vm_ports_by_host: HashMap<&'s str, Vec<&'s Port>>,
}

impl<'s> Index<'s> {
    pub fn new(state: &'s State) -> Index<'s> {
        let mut ix = Index { router_ifaces: Vec::new(), vm_ports_by_net: HashMap::new(), vm_ports_by_host: HashMap::new() };
        for p in state.ports.values() {
            if p.device_owner == OWNER_ROUTER_INTERFACE {
                ix.router_ifaces.push(p);
            } else if !p.binding_host_id.is_empty() {
                ix.vm_ports_by_net.entry(p.network_id.as_str()).or_default().push(p);
                ix.vm_ports_by_host.entry(p.binding_host_id.as_str()).or_default().push(p);
            }
        }
        ix
    }

    /// The routing domain of a network: the network itself, or every
    /// network attached to its router.
    fn domain(&self, network_id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::from([network_id.to_owned()]);
        let routers: BTreeSet<&str> =
            self.router_ifaces.iter().filter(|p| p.network_id == network_id).map(|p| p.device_id.as_str()).collect();
        for p in &self.router_ifaces {
            if routers.contains(p.device_id.as_str()) {
                out.insert(p.network_id.clone());
            }
        }
        out
    }

    fn router_of(&self, network_id: &str) -> Option<String> {
        self.router_ifaces.iter().find(|p| p.network_id == network_id).map(|p| p.device_id.clone())
    }
}

fn is_vm_port(p: &Port) -> bool {
    p.device_owner != OWNER_ROUTER_INTERFACE && !p.binding_host_id.is_empty()
}

/// Compiles one host from scratch.
pub fn compile_host(state: &State, ix: &Index<'_>, host: &str) -> BTreeMap<String, Entry> {
    let mut entries = BTreeMap::new();
    let local: &[&Port] = ix.vm_ports_by_host.get(host).map(Vec::as_slice).unwrap_or(&[]);
    let mut networks = BTreeSet::new();
    let mut seen_nets = BTreeSet::new();
    for p in local {
        if seen_nets.insert(p.network_id.as_str()) {
            networks.extend(ix.domain(&p.network_id));
        }
    }
    for p in local {
        let Some(n) = state.networks.get(&p.network_id) else { continue };
        let e = Entry::Port(PortEntry {
            id: p.meta.id.clone(),
            tap: tap_name(&p.meta.id),
            network_id: p.network_id.clone(),
            vni: n.vni,
            mtu: n.mtu,
            mac: p.mac_address.clone(),
            ips: p.fixed_ips.iter().map(|f| (f.subnet_id.clone(), f.ip_address.clone())).collect(),
            port_security_enabled: p.port_security_enabled,
            allowed_address_pairs: p.allowed_address_pairs.clone(),
            admin_state_up: p.admin_state_up,
        });
        entries.insert(e.key(), e);
    }
    let mut routers = BTreeSet::new();
    for nid in &networks {
        let Some(n) = state.networks.get(nid) else { continue };
        let router_id = ix.router_of(nid);
        if let Some(r) = &router_id {
            routers.insert(r.clone());
        }
        let mut subnets: Vec<SubnetEntry> = state
            .subnets
            .values()
            .filter(|s| &s.network_id == nid)
            .map(|s| SubnetEntry {
                id: s.meta.id.clone(),
                cidr: s.cidr.clone(),
                gateway_ip: s.gateway_ip.clone(),
                gateway_mac: ix
                    .router_ifaces
                    .iter()
                    .find(|p| p.fixed_ips.iter().any(|f| f.subnet_id == s.meta.id))
                    .map(|p| p.mac_address.clone()),
                enable_dhcp: s.enable_dhcp,
                dns_nameservers: s.dns_nameservers.clone(),
                host_routes: s.host_routes.clone(),
            })
            .collect();
        subnets.sort_by(|a, b| a.id.cmp(&b.id));
        let e = Entry::Network(NetworkEntry { id: nid.clone(), vni: n.vni, mtu: n.mtu, admin_state_up: n.admin_state_up, router_id, subnets });
        entries.insert(e.key(), e);
        for p in ix.vm_ports_by_net.get(nid.as_str()).into_iter().flatten().filter(|p| p.binding_host_id != host) {
            let Some(h) = state.hosts.get(&p.binding_host_id) else { continue };
            let e = Entry::Remote(RemoteEntry {
                port_id: p.meta.id.clone(),
                network_id: nid.clone(),
                vni: n.vni,
                mac: p.mac_address.clone(),
                ips: p.fixed_ips.iter().map(|f| f.ip_address.clone()).collect(),
                allowed_address_pairs: p.allowed_address_pairs.clone(),
                host: h.name.clone(),
                underlay_ip: h.underlay_ip.clone(),
            });
            entries.insert(e.key(), e);
        }
    }
    for rid in routers {
        let Some(r) = state.routers.get(&rid) else { continue };
        let mut interfaces: Vec<RouterInterface> = ix
            .router_ifaces
            .iter()
            .filter(|p| p.device_id == rid)
            .filter_map(|p| {
                let f = p.fixed_ips.first()?;
                let s = state.subnets.get(&f.subnet_id)?;
                Some(RouterInterface {
                    port_id: p.meta.id.clone(),
                    subnet_id: f.subnet_id.clone(),
                    network_id: p.network_id.clone(),
                    vni: state.networks.get(&p.network_id)?.vni,
                    cidr: s.cidr.clone(),
                    ip: f.ip_address.clone(),
                    mac: p.mac_address.clone(),
                })
            })
            .collect();
        interfaces.sort_by(|a, b| a.subnet_id.cmp(&b.subnet_id));
        let e = Entry::Router(RouterEntry { id: rid.clone(), admin_state_up: r.admin_state_up, interfaces, routes: r.routes.clone() });
        entries.insert(e.key(), e);
    }
    entries
}

/// Ids an entry depends on (a change to any of them may change the entry).
fn mentions(e: &Entry) -> Vec<&str> {
    match e {
        Entry::Port(p) => {
            let mut v = vec![p.id.as_str(), p.network_id.as_str()];
            v.extend(p.ips.iter().map(|(s, _)| s.as_str()));
            v
        }
        Entry::Network(n) => {
            let mut v = vec![n.id.as_str()];
            v.extend(n.subnets.iter().map(|s| s.id.as_str()));
            v.extend(n.router_id.as_deref());
            v
        }
        Entry::Router(r) => {
            let mut v = vec![r.id.as_str()];
            v.extend(r.interfaces.iter().map(|i| i.port_id.as_str()));
            v
        }
        Entry::Remote(r) => vec![r.port_id.as_str(), r.network_id.as_str(), r.host.as_str()],
    }
}

impl Compiler {
    /// Builds every host's configuration from the state (start-up).
    pub fn new(state: &State) -> Compiler {
        let mut c = Compiler::default();
        let hosts: BTreeSet<String> = state.ports.values().filter(|p| is_vm_port(p)).map(|p| p.binding_host_id.clone()).chain(state.hosts.keys().cloned()).collect();
        let ix = Index::new(state);
        for h in hosts {
            let entries = compile_host(state, &ix, &h);
            c.compiles += 1;
            c.hosts.insert(h, HostConfig { revision: state.revision, entries, log: VecDeque::new(), truncated: state.revision });
        }
        c
    }

    /// Hosts a commit can concern.
    fn affected(&self, ix: &Index<'_>, changes: &[Change]) -> BTreeSet<String> {
        let touched: BTreeSet<String> = changes.iter().map(Change::id).collect();
        let mut out = BTreeSet::new();
        // Hosts whose current entries mention a touched object.
        for (h, cfg) in &self.hosts {
            if cfg.entries.values().any(|e| mentions(e).iter().any(|id| touched.contains(*id))) {
                out.insert(h.clone());
            }
        }
        // Hosts with ports in the (new) domains of touched objects.
        let mut networks = BTreeSet::new();
        for c in changes {
            match (c.kind(), c) {
                (Kind::Port, Change::Put(crate::model::Object::Port(p))) => {
                    if is_vm_port(p) {
                        out.insert(p.binding_host_id.clone());
                    }
                    networks.insert(p.network_id.clone());
                }
                (Kind::Network, _) => drop(networks.insert(c.id())),
                (Kind::Subnet, Change::Put(crate::model::Object::Subnet(s))) => drop(networks.insert(s.network_id.clone())),
                (Kind::Router, _) => {
                    for p in ix.router_ifaces.iter().filter(|p| p.device_id == c.id()) {
                        networks.insert(p.network_id.clone());
                    }
                }
                (Kind::Host, _) => {
                    // A host's (new) underlay address concerns everyone who
                    // shares a network with it, and the host itself.
                    out.insert(c.id());
                    for p in ix.vm_ports_by_host.get(c.id().as_str()).into_iter().flatten() {
                        networks.insert(p.network_id.clone());
                    }
                }
                _ => {}
            }
        }
        let mut domains = BTreeSet::new();
        for n in &networks {
            domains.extend(ix.domain(n));
        }
        for d in &domains {
            for p in ix.vm_ports_by_net.get(d.as_str()).into_iter().flatten() {
                out.insert(p.binding_host_id.clone());
            }
        }
        out
    }

    /// Recompiles the hosts `changes` (committed as `state.revision`) concern.
    pub fn on_commit(&mut self, state: &State, changes: &[Change]) {
        let ix = Index::new(state);
        let affected = self.affected(&ix, changes);
        for h in affected {
            let new = compile_host(state, &ix, &h);
            self.compiles += 1;
            let cfg = self.hosts.entry(h.clone()).or_insert_with(|| HostConfig { revision: 0, entries: BTreeMap::new(), log: VecDeque::new(), truncated: 0 });
            let mut upserts = BTreeSet::new();
            let mut deletes = BTreeSet::new();
            for (k, e) in &new {
                if cfg.entries.get(k) != Some(e) {
                    upserts.insert(k.clone());
                }
            }
            for k in cfg.entries.keys() {
                if !new.contains_key(k) {
                    deletes.insert(k.clone());
                }
            }
            if upserts.is_empty() && deletes.is_empty() {
                continue;
            }
            tracing::debug!(host = %h, revision = state.revision, upserts = upserts.len(), deletes = deletes.len(), "host recompiled");
            cfg.entries = new;
            cfg.revision = state.revision;
            cfg.log.push_back((state.revision, upserts, deletes));
            while cfg.log.len() > DELTA_LOG {
                if let Some((r, _, _)) = cfg.log.pop_front() {
                    cfg.truncated = r;
                }
            }
        }
    }

    /// The host's configuration revision (0: nothing for it yet).
    pub fn revision(&self, host: &str) -> u64 {
        self.hosts.get(host).map(|c| c.revision).unwrap_or(0)
    }

    /// What an agent at `since` needs: with `snapshot`, the whole
    /// configuration; otherwise `None` if it is up to date, a delta if the
    /// log reaches back to `since`, else a snapshot.
    pub fn update(&self, host: &str, since: u64, snapshot: bool) -> Option<Update> {
        let empty = HostConfig { revision: 0, entries: BTreeMap::new(), log: VecDeque::new(), truncated: 0 };
        let cfg = self.hosts.get(host).unwrap_or(&empty);
        if !snapshot && since == cfg.revision {
            return None;
        }
        // A delta is complete only if every change after `since` is logged.
        let reachable = !snapshot && since != 0 && since < cfg.revision && since >= cfg.truncated;
        if reachable {
            let mut up = BTreeSet::new();
            let mut del = BTreeSet::new();
            for (_, u, d) in cfg.log.iter().filter(|(r, _, _)| *r > since) {
                for k in u {
                    del.remove(k);
                    up.insert(k.clone());
                }
                for k in d {
                    up.remove(k);
                    del.insert(k.clone());
                }
            }
            let upserts = up.iter().filter_map(|k| cfg.entries.get(k).cloned()).collect();
            return Some(Update { kind: UpdateKind::Delta, host: host.to_owned(), from: since, revision: cfg.revision, upserts, deletes: del.into_iter().collect() });
        }
        Some(Update {
            kind: UpdateKind::Snapshot,
            host: host.to_owned(),
            from: since,
            revision: cfg.revision,
            upserts: cfg.entries.values().cloned().collect(),
            deletes: vec![],
        })
    }

    /// Number of entries per host (stratoctl, metrics).
    pub fn sizes(&self) -> BTreeMap<String, usize> {
        self.hosts.iter().map(|(h, c)| (h.clone(), c.entries.len())).collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        auth::Auth,
        model::{HostRecord, Object, Project},
        network::{networks, ports, routers, subnets},
        state::Core,
    };

    fn admin(p: &str) -> Auth {
        Auth { user_id: "u".into(), user_name: "u".into(), project_id: p.into(), project_name: p.into(), roles: vec!["admin".into()], expires_unix: u64::MAX }
    }

    fn setup() -> Core {
        let c = Core::open(std::path::Path::new(":memory:")).unwrap();
        c.mutate(|_| {
            let mut v = Vec::new();
            for p in ["p1", "p2"] {
                v.push(Change::Put(Object::Project(Project { id: p.into(), name: p.into(), description: String::new(), domain_id: "default".into(), enabled: true })));
            }
            for (h, ip) in [("h1", "198.18.1.1"), ("h2", "198.18.1.3"), ("h3", "198.18.2.1")] {
                v.push(Change::Put(Object::Host(HostRecord { name: h.into(), underlay_ip: ip.into() })));
            }
            Ok((v, ()))
        })
        .unwrap();
        c
    }

    /// A VPC: router with two networks; returns (net1, net2).
    fn vpc(c: &Core, a: &Auth) -> (String, String) {
        let n1 = c.mutate(|s| networks::create(s, a, &json!({"network": {}}))).unwrap().meta.id;
        let n2 = c.mutate(|s| networks::create(s, a, &json!({"network": {}}))).unwrap().meta.id;
        let s1 = c.mutate(|s| subnets::create(s, a, &json!({"subnet": {"network_id": n1, "cidr": "10.0.1.0/24"}}))).unwrap().meta.id;
        let s2 = c.mutate(|s| subnets::create(s, a, &json!({"subnet": {"network_id": n2, "cidr": "10.0.2.0/24"}}))).unwrap().meta.id;
        let r = c.mutate(|s| routers::create(s, a, &json!({"router": {}}))).unwrap().meta.id;
        c.mutate(|s| routers::add_interface(s, a, &r, &json!({"subnet_id": s1}))).unwrap();
        c.mutate(|s| routers::add_interface(s, a, &r, &json!({"subnet_id": s2}))).unwrap();
        (n1, n2)
    }

    fn bound_port(c: &Core, a: &Auth, net: &str, host: &str) -> String {
        c.mutate(|s| ports::create(s, a, &json!({"port": {"network_id": net, "binding:host_id": host}}))).unwrap().meta.id
    }

    fn keys(u: &Update) -> Vec<String> {
        u.upserts.iter().map(Entry::key).collect()
    }

    #[test]
    fn hosts_get_their_ports_domain_and_remotes() {
        let c = setup();
        let a1 = admin("p1");
        let (n1, n2) = vpc(&c, &a1);
        let pa = bound_port(&c, &a1, &n1, "h1");
        let pb = bound_port(&c, &a1, &n2, "h3");
        // Another project with the same CIDRs on h1: invisible to p1's entries.
        let a2 = admin("p2");
        let (m1, _) = vpc(&c, &a2);
        let pc = bound_port(&c, &a2, &m1, "h1");

        let u = c.host_update("h1", 0, true).expect("snapshot");
        assert_eq!(u.kind, UpdateKind::Snapshot);
        let k = keys(&u);
        assert!(k.contains(&format!("port/{pa}")) && k.contains(&format!("port/{pc}")));
        assert!(k.contains(&format!("remote/{pb}")), "h1 must know where p1's other port is: {k:?}");
        assert!(k.contains(&format!("network/{n2}")), "the whole routing domain: {k:?}");
        let remote = u.upserts.iter().find_map(|e| if let Entry::Remote(r) = e { (r.port_id == pb).then_some(r.clone()) } else { None }).unwrap();
        assert_eq!((remote.host.as_str(), remote.underlay_ip.as_str()), ("h3", "198.18.2.1"));
        let router = u.upserts.iter().find_map(|e| if let Entry::Router(r) = e { Some(r.clone()) } else { None }).unwrap();
        assert_eq!(router.interfaces.len(), 2);
        // h2 has nothing.
        assert!(c.host_update("h2", 0, true).unwrap().upserts.is_empty());
        // h3 knows p1's port on h1 but nothing of p2.
        let k3 = keys(&c.host_update("h3", 0, true).unwrap());
        assert!(k3.contains(&format!("remote/{pa}")) && !k3.iter().any(|k| k.contains(&pc)));
    }

    #[test]
    fn deltas_are_incremental_and_merge() {
        let c = setup();
        let a = admin("p1");
        let (n1, _) = vpc(&c, &a);
        let p1 = bound_port(&c, &a, &n1, "h1");
        let r1 = c.host_update("h1", 0, true).unwrap().revision;
        let r3_before = c.host_update("h3", 0, true).unwrap().revision;
        // A port on h2 in the same network: h1 gets one remote upsert, h3 nothing.
        let p2 = bound_port(&c, &a, &n1, "h2");
        let d = c.host_update("h1", r1, false).expect("delta");
        assert_eq!(d.kind, UpdateKind::Delta);
        assert_eq!(keys(&d), vec![format!("remote/{p2}")]);
        assert!(c.host_update("h3", r3_before, false).is_none(), "h3 is not concerned");
        // Delete it again: merged delta since r1 is empty upserts + delete.
        c.mutate(|s| ports::delete(s, &a, &p2, None)).unwrap();
        let d = c.host_update("h1", r1, false).expect("delta");
        assert!(d.upserts.is_empty());
        assert_eq!(d.deletes, vec![format!("remote/{p2}")]);
        // Unbinding the local port empties h1.
        c.mutate(|s| ports::update(s, &a, &p1, &json!({"port": {"binding:host_id": ""}}), None)).unwrap();
        let s = c.host_update("h1", 0, true).unwrap();
        assert!(s.upserts.is_empty(), "{:?}", keys(&s));
        // An agent from the future or from before a restart gets a snapshot.
        assert_eq!(c.host_update("h1", 9999, false).unwrap().kind, UpdateKind::Snapshot);
    }

    #[test]
    fn log_truncation_forces_snapshot() {
        let c = setup();
        let a = admin("p1");
        let (n1, _) = vpc(&c, &a);
        bound_port(&c, &a, &n1, "h1");
        let start = c.host_update("h1", 0, true).unwrap().revision;
        for _ in 0..(DELTA_LOG + 5) {
            c.mutate(|s| networks::update(s, &a, &n1, &json!({"network": {"name": format!("{}", s.revision)}}), None)).unwrap();
            // name changes do not alter compiled entries; touch the MTU instead.
            let mtu = 1000 + (c.read().revision % 400) as i64;
            c.mutate(|s| networks::update(s, &a, &n1, &json!({"network": {"mtu": mtu}}), None)).unwrap();
        }
        assert_eq!(c.host_update("h1", start, false).unwrap().kind, UpdateKind::Snapshot);
    }
}
