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

use strato_proto::{
    config::{
        BandwidthLimit, CheckedPool, Entry, FloatingIpEntry, GatewayHost, L7InstanceEntry,
        ListenerEntry, LoadBalancerEntry, MemberEntry, MemberLocation, MonitorEntry, NetworkEntry,
        PortEntry, RemoteEntry, RouterEntry, RouterExternal, RouterInterface, SecurityGroupEntry,
        SgMemberEntry, SgRuleEntry, SnatEntry, SubnetEntry, Update, UpdateKind,
    },
    naming::tap_name,
};

use crate::{
    model::{Change, Kind, Port},
    network::OWNER_ROUTER_INTERFACE,
    state::State,
};

/// How many deltas per host are kept for agents catching up.
pub const DELTA_LOG: usize = 512;

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
    /// Full host recompiles done (for tests and metrics).
    pub compiles: u64,
    /// Commits handled by the incremental path (a VM port changed).
    pub incremental: u64,
    /// Bound VM port -> (host, network), from the hosts' port entries.
    ports: HashMap<String, (String, String)>,
    /// Network -> hosts that have its entry (their routing domains include it).
    net_hosts: HashMap<String, BTreeSet<String>>,
    /// (host, network) -> local ports of the host on the network.
    local: HashMap<(String, String), usize>,
    /// (host, group) -> local ports of the host in the group.
    group_users: HashMap<(String, String), usize>,
    /// Group -> hosts whose rules name it as a remote group.
    remote_refs: HashMap<String, BTreeSet<String>>,
    /// Every VM port's groups (bound or not), as of the last commit.
    port_groups: HashMap<String, Vec<String>>,
}

/// Per-host edits of one commit: upserted entries and deleted keys.
type Edits = BTreeMap<String, (BTreeMap<String, Entry>, BTreeSet<String>)>;

fn port_entry(state: &State, p: &Port) -> Option<Entry> {
    let n = state.networks.get(&p.network_id)?;
    Some(Entry::Port(PortEntry {
        id: p.meta.id.clone(),
        tap: tap_name(&p.meta.id),
        network_id: p.network_id.clone(),
        vni: n.vni,
        mtu: n.mtu,
        mac: p.mac_address.clone(),
        ips: p
            .fixed_ips
            .iter()
            .map(|f| (f.subnet_id.clone(), f.ip_address.clone()))
            .collect(),
        port_security_enabled: p.port_security_enabled,
        allowed_address_pairs: p.allowed_address_pairs.clone(),
        admin_state_up: p.admin_state_up,
        security_groups: port_groups(p),
    }))
}

/// The groups whose rules filter a port: none without port security.
fn port_groups(p: &Port) -> Vec<String> {
    if !p.port_security_enabled {
        return Vec::new();
    }
    let mut g = p.security_groups.clone();
    g.sort();
    g.dedup();
    g
}

fn rule_entry(r: &crate::model::SecurityGroupRule) -> SgRuleEntry {
    SgRuleEntry {
        id: r.meta.id.clone(),
        direction: r.direction.as_str().to_owned(),
        ethertype: r.ethertype.as_str().to_owned(),
        protocol: r.protocol_number(),
        port_range_min: r.port_range_min,
        port_range_max: r.port_range_max,
        remote_ip_prefix: r.remote_ip_prefix.clone(),
        remote_group_id: r.remote_group_id.clone(),
    }
}

fn group_entry(state: &State, id: &str) -> Option<Entry> {
    let g = state.security_groups.get(id)?;
    let mut rules: Vec<SgRuleEntry> = state.group_rules(id).map(rule_entry).collect();
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    Some(Entry::SecurityGroup(SecurityGroupEntry {
        id: id.to_owned(),
        stateful: g.stateful,
        rules,
    }))
}

/// A port's addresses as a remote-group member: fixed IPs and address pairs.
fn member_entry(group: &str, p: &Port) -> Entry {
    let mut ips: Vec<String> = p.fixed_ips.iter().map(|f| f.ip_address.clone()).collect();
    ips.extend(p.allowed_address_pairs.iter().map(|a| a.ip_address.clone()));
    Entry::SgMember(SgMemberEntry {
        group_id: group.to_owned(),
        port_id: p.meta.id.clone(),
        ips,
    })
}

fn remote_entry(state: &State, p: &Port) -> Option<Entry> {
    let n = state.networks.get(&p.network_id)?;
    let h = state.hosts.get(&p.binding_host_id)?;
    Some(Entry::Remote(RemoteEntry {
        port_id: p.meta.id.clone(),
        network_id: p.network_id.clone(),
        vni: n.vni,
        mac: p.mac_address.clone(),
        ips: p.fixed_ips.iter().map(|f| f.ip_address.clone()).collect(),
        allowed_address_pairs: p.allowed_address_pairs.clone(),
        host: h.name.clone(),
        underlay_ip: h.underlay_ip.clone(),
        admin_state_up: p.admin_state_up,
    }))
}

/// One pass over the ports, shared by every host compiled for a commit.
pub struct Index<'s> {
    /// Router interface ports (few: one per attached subnet).
    router_ifaces: Vec<&'s Port>,
    /// Bound VM ports per network.
    vm_ports_by_net: HashMap<&'s str, Vec<&'s Port>>,
    /// Bound VM ports per host.
    vm_ports_by_host: HashMap<&'s str, Vec<&'s Port>>,
    /// VM ports (bound or not) per security group.
    ports_by_group: HashMap<&'s str, Vec<&'s Port>>,
}

impl<'s> Index<'s> {
    pub fn new(state: &'s State) -> Index<'s> {
        let mut ix = Index {
            router_ifaces: Vec::new(),
            vm_ports_by_net: HashMap::new(),
            vm_ports_by_host: HashMap::new(),
            ports_by_group: HashMap::new(),
        };
        for p in state.ports.values() {
            if p.device_owner != OWNER_ROUTER_INTERFACE {
                for g in &p.security_groups {
                    ix.ports_by_group.entry(g.as_str()).or_default().push(p);
                }
            }
            if p.device_owner == OWNER_ROUTER_INTERFACE {
                ix.router_ifaces.push(p);
            } else if !p.binding_host_id.is_empty() {
                ix.vm_ports_by_net
                    .entry(p.network_id.as_str())
                    .or_default()
                    .push(p);
                ix.vm_ports_by_host
                    .entry(p.binding_host_id.as_str())
                    .or_default()
                    .push(p);
            }
        }
        ix
    }

    /// The routing domain of a network: the network itself, or every
    /// network attached to its router.
    fn domain(&self, network_id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::from([network_id.to_owned()]);
        let routers: BTreeSet<&str> = self
            .router_ifaces
            .iter()
            .filter(|p| p.network_id == network_id)
            .map(|p| p.device_id.as_str())
            .collect();
        for p in &self.router_ifaces {
            if routers.contains(p.device_id.as_str()) {
                out.insert(p.network_id.clone());
            }
        }
        out
    }

    fn router_of(&self, network_id: &str) -> Option<String> {
        self.router_ifaces
            .iter()
            .find(|p| p.network_id == network_id)
            .map(|p| p.device_id.clone())
    }
}

fn is_vm_port(p: &Port) -> bool {
    p.device_owner != OWNER_ROUTER_INTERFACE && !p.binding_host_id.is_empty()
}

/// Every VM port's security groups.
fn vm_port_groups(state: &State) -> HashMap<String, Vec<String>> {
    state
        .ports
        .values()
        .filter(|p| p.device_owner != OWNER_ROUTER_INTERFACE)
        .map(|p| (p.meta.id.clone(), p.security_groups.clone()))
        .collect()
}

/// Compiles one host from scratch.
pub fn compile_host(state: &State, ix: &Index<'_>, host: &str) -> BTreeMap<String, Entry> {
    let mut entries = BTreeMap::new();
    let local: &[&Port] = ix
        .vm_ports_by_host
        .get(host)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut networks = BTreeSet::new();
    let mut seen_nets = BTreeSet::new();
    for p in local {
        if seen_nets.insert(p.network_id.as_str()) {
            networks.extend(ix.domain(&p.network_id));
        }
    }
    let mut groups = BTreeSet::new();
    for p in local {
        if let Some(e) = port_entry(state, p) {
            if let Entry::Port(pe) = &e {
                groups.extend(pe.security_groups.iter().cloned());
            }
            entries.insert(e.key(), e);
        }
    }
    let mut remote_groups = BTreeSet::new();
    for g in &groups {
        if let Some(e) = group_entry(state, g) {
            if let Entry::SecurityGroup(sg) = &e {
                remote_groups.extend(sg.rules.iter().filter_map(|r| r.remote_group_id.clone()));
            }
            entries.insert(e.key(), e);
        }
    }
    for g in &remote_groups {
        for p in ix.ports_by_group.get(g.as_str()).into_iter().flatten() {
            let e = member_entry(g, p);
            entries.insert(e.key(), e);
        }
    }
    let mut routers = BTreeSet::new();
    for nid in &networks {
        let Some(n) = state.networks.get(nid) else {
            continue;
        };
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
        let e = Entry::Network(NetworkEntry {
            id: nid.clone(),
            vni: n.vni,
            mtu: n.mtu,
            admin_state_up: n.admin_state_up,
            router_id,
            subnets,
        });
        entries.insert(e.key(), e);
        for p in ix
            .vm_ports_by_net
            .get(nid.as_str())
            .into_iter()
            .flatten()
            .filter(|p| p.binding_host_id != host)
        {
            if let Some(e) = remote_entry(state, p) {
                entries.insert(e.key(), e);
            }
        }
    }
    for rid in routers {
        let Some(r) = state.routers.get(&rid) else {
            continue;
        };
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
        let e = Entry::Router(RouterEntry {
            id: rid.clone(),
            admin_state_up: r.admin_state_up,
            interfaces,
            routes: r.routes.clone(),
            external: router_external(state, r, host),
        });
        entries.insert(e.key(), e);
    }
    // Load balancers whose VIP is in one of this host's VPCs: its VMs are
    // balanced here. Public ones on every gateway host too.
    let gateway = state.hosts.get(host).is_some_and(|h| h.gateway);
    for lb in state.load_balancers.values() {
        let public = gateway && lb_floating_ip(state, lb).is_some();
        if networks.contains(&lb.vip_network_id) || public {
            if let Some(e) = load_balancer_entry(state, ix, lb, public) {
                entries.insert(e.key(), e);
            }
        }
    }
    // L7 instances that run here.
    for a in state.amphorae.values().filter(|a| a.host == host) {
        if let Some(e) = l7_instance_entry(state, a) {
            entries.insert(e.key(), e);
        }
    }
    // Elastic IPs: those of local ports (translated here), and on a
    // gateway host every bound one (steered to its port's host); a load
    // balancer's is its entry's.
    if gateway {
        for e in snat_entries(state, ix, host) {
            entries.insert(e.key(), e);
        }
    }
    for f in state.floating_ips.values() {
        let Some(port) = f.port_id.as_deref().and_then(|p| state.ports.get(p)) else {
            continue;
        };
        if port.device_owner == crate::lbaas::OWNER_OCTAVIA {
            continue;
        }
        let local = port.binding_host_id == host;
        if !(local || gateway) {
            continue;
        }
        if let Some(e) = floating_ip_entry(state, f, port, !local) {
            entries.insert(e.key(), e);
        }
    }
    entries
}

/// A router's external gateway as `host` uses it.
fn router_external(state: &State, r: &crate::model::Router, host: &str) -> Option<RouterExternal> {
    let g = r.gateway.as_ref()?;
    let net = state.networks.get(&g.network_id)?;
    let port = state.ports.get(&g.port_id)?;
    let az = state.hosts.get(host).map(|h| h.az.as_str()).unwrap_or("");
    let mut gateways: Vec<GatewayHost> = state
        .hosts
        .values()
        .filter(|h| h.gateway && h.available)
        .map(gateway_host)
        .collect();
    // Own zone first, then by name: every host of a zone picks the same.
    gateways.sort_by(|a, b| (a.az != az, &a.name).cmp(&(b.az != az, &b.name)));
    Some(RouterExternal {
        network_id: g.network_id.clone(),
        vni: net.vni,
        mtu: net.mtu,
        enable_snat: g.enable_snat,
        ip: port.fixed_ips.first().map(|f| f.ip_address.clone()),
        mac: port.mac_address.clone(),
        gateways,
        snat_gateway: crate::network::routers::snat_host(state, r).map(gateway_host),
    })
}

fn gateway_host(h: &crate::model::HostRecord) -> GatewayHost {
    GatewayHost {
        name: h.name.clone(),
        az: h.az.clone(),
        underlay_ip: h.underlay_ip.clone(),
    }
}

/// Every router's SNAT, as gateway host `host` needs it.
fn snat_entries(state: &State, ix: &Index<'_>, host: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for r in state.routers.values() {
        let (Some(g), Some(h)) = (
            r.gateway.as_ref(),
            crate::network::routers::snat_host(state, r),
        ) else {
            continue;
        };
        let (Some(port), Some(net)) = (
            state.ports.get(&g.port_id),
            state.networks.get(&g.network_id),
        ) else {
            continue;
        };
        let Some(ip) = port.fixed_ips.first() else {
            continue;
        };
        let mut vnis: Vec<u32> = ix
            .router_ifaces
            .iter()
            .filter(|p| p.device_id == r.meta.id)
            .filter_map(|p| state.networks.get(&p.network_id).map(|n| n.vni))
            .collect();
        vnis.sort();
        vnis.dedup();
        if vnis.is_empty() {
            continue;
        }
        out.push(Entry::Snat(SnatEntry {
            router_id: r.meta.id.clone(),
            ip: ip.ip_address.clone(),
            ext_vni: net.vni,
            vnis,
            host: h.name.clone(),
            underlay_ip: h.underlay_ip.clone(),
            local: h.name == host,
        }));
    }
    out
}

fn floating_ip_entry(
    state: &State,
    f: &crate::model::FloatingIp,
    port: &Port,
    steer: bool,
) -> Option<Entry> {
    let h = state.hosts.get(&port.binding_host_id)?;
    let net = state.networks.get(&f.floating_network_id)?;
    Some(Entry::FloatingIp(FloatingIpEntry {
        id: f.meta.id.clone(),
        floating_ip_address: f.floating_ip_address.clone(),
        fixed_ip_address: f.fixed_ip_address.clone()?,
        port_id: port.meta.id.clone(),
        network_id: f.floating_network_id.clone(),
        vni: net.vni,
        host: h.name.clone(),
        underlay_ip: h.underlay_ip.clone(),
        steer,
        qos_policy_id: f.qos_policy_id.clone(),
        limits: f
            .qos_policy_id
            .as_deref()
            .and_then(|q| state.qos_policies.get(q))
            .filter(|_| !steer)
            .map(|q| {
                q.bandwidth_limit_rules
                    .iter()
                    .map(|r| BandwidthLimit {
                        direction: r.direction.as_str().to_owned(),
                        max_kbps: r.max_kbps,
                        max_burst_kbps: r.max_burst_kbps,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }))
}

/// The floating IP bound to a load balancer's VIP port: (id, address).
fn lb_floating_ip(state: &State, lb: &crate::model::LoadBalancer) -> Option<(String, String)> {
    state
        .floating_ips
        .values()
        .find(|f| f.port_id.as_deref() == Some(lb.vip_port_id.as_str()))
        .map(|f| (f.meta.id.clone(), f.floating_ip_address.clone()))
}

/// Where the port holding `address` in the VIP's VPC is (gateway hosts).
fn member_location(
    state: &State,
    ix: &Index<'_>,
    domain: &BTreeSet<String>,
    address: &str,
) -> Option<MemberLocation> {
    let p = domain
        .iter()
        .flat_map(|n| ix.vm_ports_by_net.get(n.as_str()).into_iter().flatten())
        .find(|p| p.fixed_ips.iter().any(|f| f.ip_address == address))?;
    let f = p.fixed_ips.iter().find(|f| f.ip_address == address)?;
    let n = state.networks.get(&p.network_id)?;
    let h = state.hosts.get(&p.binding_host_id)?;
    let gw_mac = ix
        .router_ifaces
        .iter()
        .find(|r| r.fixed_ips.iter().any(|x| x.subnet_id == f.subnet_id))
        .map(|r| r.mac_address.clone())?;
    Some(MemberLocation {
        port_id: p.meta.id.clone(),
        vni: n.vni,
        mtu: n.mtu,
        mac: p.mac_address.clone(),
        gw_mac,
        host: h.name.clone(),
        underlay_ip: h.underlay_ip.clone(),
    })
}

/// A load balancer as every host of its VPC balances it (`gateway`: as a
/// gateway host balances its floating IP's traffic).
fn load_balancer_entry(
    state: &State,
    ix: &Index<'_>,
    lb: &crate::model::LoadBalancer,
    gateway: bool,
) -> Option<Entry> {
    use crate::model::{LbAlgorithm, LbProtocol, PersistenceType};
    let vip_port = state.ports.get(&lb.vip_port_id)?;
    let domain_nets = ix.domain(&lb.vip_network_id);
    let domain = domain_nets
        .iter()
        .filter_map(|n| state.networks.get(n).map(|n| n.vni))
        .min()?;
    let mut listeners: Vec<ListenerEntry> = state
        .listeners
        .values()
        .filter(|l| l.loadbalancer_id == lb.meta.id && l.admin_state_up)
        .filter_map(|l| {
            if crate::lbaas::amphorae::is_l7(l.protocol) {
                return Some(l7_listener_entry(state, ix, lb, l, &domain_nets, gateway));
            }
            let protocol = match l.protocol {
                // HTTPS listeners pass TLS through: balanced like TCP.
                LbProtocol::Tcp | LbProtocol::Https => "TCP",
                LbProtocol::Udp => "UDP",
                _ => return None,
            };
            let pool = l.default_pool_id.as_ref().and_then(|p| state.pools.get(p));
            let monitor = pool
                .and_then(|p| crate::lbaas::pool_monitor(state, &p.meta.id))
                .filter(|m| m.admin_state_up);
            let mut members: Vec<MemberEntry> = pool
                .filter(|p| p.admin_state_up)
                .map(|p| {
                    crate::lbaas::pool_members(state, &p.meta.id)
                        .map(|m| MemberEntry {
                            id: m.meta.id.clone(),
                            address: m.address.clone(),
                            protocol_port: m.protocol_port,
                            weight: m.weight,
                            backup: m.backup,
                            state: crate::lbaas::member_state(m, monitor.is_some()).to_owned(),
                            monitor_address: m.monitor_address.clone(),
                            monitor_port: m.monitor_port,
                            location: if gateway {
                                member_location(state, ix, &domain_nets, &m.address)
                            } else {
                                None
                            },
                        })
                        .collect()
                })
                .unwrap_or_default();
            members.sort_by(|a, b| a.id.cmp(&b.id));
            let source_ip = pool.is_some_and(|p| {
                p.lb_algorithm == LbAlgorithm::SourceIp
                    || p.session_persistence
                        .as_ref()
                        .is_some_and(|s| s.kind == PersistenceType::SourceIp)
            });
            Some(ListenerEntry {
                id: l.meta.id.clone(),
                protocol: protocol.to_owned(),
                protocol_port: l.protocol_port,
                idle_timeout_s: (l.timeout_client_data / 1000).max(1),
                drain_timeout_s: l.connection_drain_timeout / 1000,
                source_ip,
                pool_id: pool.map(|p| p.meta.id.clone()),
                at_limit: l.at_limit,
                monitor: monitor.map(monitor_entry),
                members,
            })
        })
        .collect();
    listeners.sort_by(|a, b| a.id.cmp(&b.id));
    // Pools only the L7 instances balance: their members are checked here
    // all the same (by the agent of each member's host).
    let l4_pools: BTreeSet<&str> = listeners
        .iter()
        .filter_map(|l| l.pool_id.as_deref())
        .collect();
    let checked_pools: Vec<CheckedPool> = state
        .pools
        .values()
        .filter(|p| p.loadbalancer_id == lb.meta.id && p.admin_state_up)
        .filter(|p| !l4_pools.contains(p.meta.id.as_str()))
        .filter_map(|p| {
            let m = crate::lbaas::pool_monitor(state, &p.meta.id).filter(|m| m.admin_state_up)?;
            let mut members: Vec<MemberEntry> = crate::lbaas::pool_members(state, &p.meta.id)
                .map(|x| MemberEntry {
                    id: x.meta.id.clone(),
                    address: x.address.clone(),
                    protocol_port: x.protocol_port,
                    weight: x.weight,
                    backup: x.backup,
                    state: crate::lbaas::member_state(x, true).to_owned(),
                    monitor_address: x.monitor_address.clone(),
                    monitor_port: x.monitor_port,
                    location: None,
                })
                .collect();
            members.sort_by(|a, b| a.id.cmp(&b.id));
            Some(CheckedPool {
                id: p.meta.id.clone(),
                monitor: monitor_entry(m),
                members,
            })
        })
        .collect();
    Some(Entry::LoadBalancer(LoadBalancerEntry {
        id: lb.meta.id.clone(),
        vip_network_id: lb.vip_network_id.clone(),
        vip_address: lb.vip_address.clone(),
        vip_mac: vip_port.mac_address.clone(),
        admin_state_up: lb.admin_state_up,
        listeners,
        domain,
        floating_ip: lb_floating_ip(state, lb),
        gateway,
        checked_pools,
    }))
}

fn monitor_entry(m: &crate::model::HealthMonitor) -> MonitorEntry {
    MonitorEntry {
        id: m.meta.id.clone(),
        kind: m.kind.as_str().to_owned(),
        delay: m.delay,
        timeout: m.timeout,
        max_retries: m.max_retries,
        max_retries_down: m.max_retries_down,
        http_method: m.http_method.clone(),
        url_path: m.url_path.clone(),
        expected_codes: m.expected_codes.clone(),
    }
}

/// An HTTP or TERMINATED_HTTPS listener as the L4 tier balances it: over
/// the load balancer's L7 instances (`READY` ones take connections, one
/// being removed drains; their health comes from their agents). A pool with persistence or `SOURCE_IP` balancing keeps a client
/// on one instance (its stickiness table is per instance).
fn l7_listener_entry(
    state: &State,
    ix: &Index<'_>,
    lb: &crate::model::LoadBalancer,
    l: &crate::model::Listener,
    domain_nets: &BTreeSet<String>,
    gateway: bool,
) -> ListenerEntry {
    use crate::model::{AmphoraStatus, LbAlgorithm};
    let pool = l.default_pool_id.as_ref().and_then(|p| state.pools.get(p));
    let mut members: Vec<MemberEntry> = crate::lbaas::amphorae::of_lb(state, &lb.meta.id)
        .map(|a| MemberEntry {
            id: a.meta.id.clone(),
            address: a.address.clone(),
            protocol_port: l.protocol_port,
            weight: 1,
            backup: false,
            state: match a.status {
                AmphoraStatus::Ready => "active",
                AmphoraStatus::PendingDelete => "draining",
                AmphoraStatus::Booting | AmphoraStatus::Error => "down",
            }
            .to_owned(),
            monitor_address: None,
            monitor_port: None,
            location: if gateway {
                member_location(state, ix, domain_nets, &a.address)
            } else {
                None
            },
        })
        .collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    ListenerEntry {
        id: l.meta.id.clone(),
        protocol: "TCP".to_owned(),
        protocol_port: l.protocol_port,
        idle_timeout_s: (l.timeout_client_data / 1000).max(1),
        drain_timeout_s: crate::lbaas::amphorae::DRAIN_S as u32,
        source_ip: pool.is_some_and(|p| {
            p.lb_algorithm == LbAlgorithm::SourceIp || p.session_persistence.is_some()
        }),
        pool_id: None,
        at_limit: l.at_limit,
        // The instances' agents report whether each serves (see
        // `agent::lb::l7`): a TCP check would be answered by the socket
        // the agent holds for a dead process.
        monitor: None,
        members,
    }
}

/// What an instance of `lb_id` serves (`lbaas::l7config`), with its
/// certificates from the Key Manager. A listener whose certificate cannot
/// be read any more (its secret deleted since) is left out, with a
/// warning; the others are served.
fn l7_config_of(state: &State, lb_id: &str) -> strato_proto::l7::L7Config {
    use strato_proto::l7::{L7Certificate, L7Config};
    let certs = |project: &str, r: &str| crate::keymanager::certificate(state, project, r);
    let config = match crate::lbaas::l7config::l7_config(state, lb_id, &certs) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(loadbalancer = lb_id, error = %e.message, "a listener's certificate cannot be read: the listener is not served");
            let lenient = |project: &str, r: &str| {
                Ok(
                    crate::keymanager::certificate(state, project, r).unwrap_or_else(|_| {
                        L7Certificate {
                            reference: r.to_owned(),
                            ..Default::default()
                        }
                    }),
                )
            };
            crate::lbaas::l7config::l7_config(state, lb_id, &lenient)
                .ok()
                .flatten()
                .map(|mut c| {
                    c.listeners.retain(|l| {
                        l.tls.as_ref().is_none_or(|t| {
                            std::iter::once(&t.default_certificate)
                                .chain(&t.sni_certificates)
                                .all(|c| !c.chain_pem.is_empty())
                        })
                    });
                    c
                })
        }
    };
    config.unwrap_or_else(|| L7Config {
        loadbalancer_id: lb_id.to_owned(),
        ..Default::default()
    })
}

/// The id at the end of a Key Manager reference (a secret's or
/// container's), which compiled entries mention.
fn reference_id(r: &str) -> &str {
    r.trim_end_matches('/').rsplit('/').next().unwrap_or(r)
}

/// An L7 instance as its host runs it.
fn l7_instance_entry(state: &State, a: &crate::model::Amphora) -> Option<Entry> {
    let port = state.ports.get(&a.port_id)?;
    let f = port.fixed_ips.first()?;
    let subnet = state.subnets.get(&f.subnet_id)?;
    let network = state.networks.get(&port.network_id)?;
    let prefix_len = subnet.cidr.split('/').nth(1)?.parse().ok()?;
    let mut config = l7_config_of(state, &a.loadbalancer_id);
    config.instance_id = a.meta.id.clone();
    config.address = f.ip_address.clone();
    Some(Entry::L7Instance(L7InstanceEntry {
        id: a.meta.id.clone(),
        loadbalancer_id: a.loadbalancer_id.clone(),
        port_id: port.meta.id.clone(),
        mac: port.mac_address.clone(),
        address: f.ip_address.clone(),
        prefix_len,
        gateway_ip: subnet.gateway_ip.clone(),
        mtu: network.mtu,
        draining: a.status == crate::model::AmphoraStatus::PendingDelete,
        config,
    }))
}

/// The load balancer a load balancing object belongs to.
fn lb_of(state: &State, c: &Change) -> Option<String> {
    use crate::model::Object;
    let pool_lb = |pool: &str| state.pools.get(pool).map(|p| p.loadbalancer_id.clone());
    match c {
        Change::Put(Object::LoadBalancer(l)) => Some(l.meta.id.clone()),
        Change::Put(Object::Listener(l)) => Some(l.loadbalancer_id.clone()),
        Change::Put(Object::Pool(p)) => Some(p.loadbalancer_id.clone()),
        Change::Put(Object::Member(m)) => pool_lb(&m.pool_id),
        Change::Put(Object::HealthMonitor(m)) => pool_lb(&m.pool_id),
        Change::Put(Object::Amphora(a)) => Some(a.loadbalancer_id.clone()),
        Change::Put(Object::L7Policy(p)) => state
            .listeners
            .get(&p.listener_id)
            .map(|l| l.loadbalancer_id.clone()),
        Change::Put(Object::L7Rule(r)) => state
            .l7policies
            .get(&r.l7policy_id)
            .and_then(|p| state.listeners.get(&p.listener_id))
            .map(|l| l.loadbalancer_id.clone()),
        _ => None,
    }
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
            if let Some(x) = &r.external {
                v.push(x.network_id.as_str());
                v.extend(x.gateways.iter().map(|g| g.name.as_str()));
                v.extend(x.snat_gateway.iter().map(|g| g.name.as_str()));
            }
            v
        }
        Entry::Remote(r) => vec![r.port_id.as_str(), r.network_id.as_str(), r.host.as_str()],
        Entry::SecurityGroup(g) => {
            let mut v = vec![g.id.as_str()];
            for r in &g.rules {
                v.push(r.id.as_str());
                v.extend(r.remote_group_id.as_deref());
            }
            v
        }
        Entry::SgMember(m) => vec![m.group_id.as_str(), m.port_id.as_str()],
        Entry::FloatingIp(f) => {
            let mut v = vec![
                f.id.as_str(),
                f.port_id.as_str(),
                f.network_id.as_str(),
                f.host.as_str(),
            ];
            v.extend(f.qos_policy_id.as_deref());
            v
        }
        Entry::Snat(n) => vec![n.router_id.as_str(), n.host.as_str()],
        Entry::LoadBalancer(l) => {
            let mut v = vec![l.id.as_str(), l.vip_network_id.as_str()];
            v.extend(l.floating_ip.as_ref().map(|f| f.0.as_str()));
            for x in &l.listeners {
                v.push(x.id.as_str());
                v.extend(x.pool_id.as_deref());
                v.extend(x.monitor.as_ref().map(|m| m.id.as_str()));
                v.extend(x.members.iter().map(|m| m.id.as_str()));
                for m in x.members.iter().filter_map(|m| m.location.as_ref()) {
                    v.push(m.port_id.as_str());
                    v.push(m.host.as_str());
                }
            }
            for p in &l.checked_pools {
                v.push(p.id.as_str());
                v.push(p.monitor.id.as_str());
                v.extend(p.members.iter().map(|m| m.id.as_str()));
            }
            v
        }
        Entry::L7Instance(i) => {
            let mut v = vec![
                i.id.as_str(),
                i.loadbalancer_id.as_str(),
                i.port_id.as_str(),
            ];
            for l in &i.config.listeners {
                v.push(l.id.as_str());
                if let Some(t) = &l.tls {
                    v.extend(
                        std::iter::once(&t.default_certificate)
                            .chain(&t.sni_certificates)
                            .map(|c| reference_id(&c.reference)),
                    );
                }
                v.extend(l.policies.iter().map(|p| p.id.as_str()));
                v.extend(
                    l.policies
                        .iter()
                        .flat_map(|p| p.rules.iter().map(|r| r.id.as_str())),
                );
            }
            for p in &i.config.pools {
                v.push(p.id.as_str());
                v.extend(p.members.iter().map(|m| m.id.as_str()));
            }
            v
        }
    }
}

impl Compiler {
    /// Builds every host's configuration from the state (start-up).
    pub fn new(state: &State) -> Compiler {
        let mut c = Compiler::default();
        let hosts: BTreeSet<String> = state
            .ports
            .values()
            .filter(|p| is_vm_port(p))
            .map(|p| p.binding_host_id.clone())
            .chain(state.hosts.keys().cloned())
            .collect();
        c.port_groups = vm_port_groups(state);
        let ix = Index::new(state);
        for h in hosts {
            let entries = compile_host(state, &ix, &h);
            c.compiles += 1;
            c.index(&h, &entries, true);
            c.hosts.insert(
                h,
                HostConfig {
                    revision: state.revision,
                    entries,
                    log: VecDeque::new(),
                    truncated: state.revision,
                },
            );
        }
        c
    }

    /// Hosts a commit can concern.
    fn affected(&self, state: &State, ix: &Index<'_>, changes: &[Change]) -> BTreeSet<String> {
        let mut touched: BTreeSet<String> = changes.iter().map(Change::id).collect();
        // A port joining or leaving a group concerns the hosts whose rules
        // name the group (remote groups) and those using it.
        for c in changes {
            if let Change::Put(crate::model::Object::Port(p)) = c {
                touched.extend(p.security_groups.iter().cloned());
            }
            if c.kind() == Kind::Port {
                touched.extend(self.port_groups.get(&c.id()).into_iter().flatten().cloned());
            }
            if let Change::Put(crate::model::Object::SecurityGroupRule(r)) = c {
                touched.insert(r.security_group_id.clone());
            }
            // A listener, pool, member or monitor changes its load
            // balancer's entry.
            touched.extend(lb_of(state, c));
        }
        let mut out = BTreeSet::new();
        // Hosts whose current entries mention a touched object.
        for (h, cfg) in &self.hosts {
            if cfg
                .entries
                .values()
                .any(|e| mentions(e).iter().any(|id| touched.contains(*id)))
            {
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
                (Kind::Network, _) => {
                    networks.insert(c.id());
                }
                (Kind::LoadBalancer, Change::Put(crate::model::Object::LoadBalancer(l))) => {
                    networks.insert(l.vip_network_id.clone());
                }
                (Kind::Subnet, Change::Put(crate::model::Object::Subnet(s))) => {
                    networks.insert(s.network_id.clone());
                }
                (Kind::Router, _) => {
                    for p in ix.router_ifaces.iter().filter(|p| p.device_id == c.id()) {
                        networks.insert(p.network_id.clone());
                    }
                    // Its SNAT (gateway and networks) is every gateway's.
                    out.extend(
                        state
                            .hosts
                            .values()
                            .filter(|h| h.gateway)
                            .map(|h| h.name.clone()),
                    );
                }
                (Kind::FloatingIp, c) => {
                    // Every gateway steers it; the bound port's host
                    // translates (a host that had it mentions its id).
                    out.extend(
                        state
                            .hosts
                            .values()
                            .filter(|h| h.gateway)
                            .map(|h| h.name.clone()),
                    );
                    if let Change::Put(crate::model::Object::FloatingIp(f)) = c {
                        if let Some(p) = f.port_id.as_deref().and_then(|p| state.ports.get(p)) {
                            if is_vm_port(p) {
                                out.insert(p.binding_host_id.clone());
                            }
                            // A load balancer's VIP: its VPC's hosts answer
                            // as the floating IP.
                            if p.device_owner == crate::lbaas::OWNER_OCTAVIA {
                                networks.insert(p.network_id.clone());
                            }
                        }
                    }
                }
                (Kind::Host, Change::Put(crate::model::Object::Host(h))) if h.gateway => {
                    // A gateway host (new or moved) concerns every host: the
                    // routers' ways out, and its own elastic IP table.
                    out.extend(self.hosts.keys().cloned());
                    out.insert(h.name.clone());
                }
                (Kind::Host, _) => {
                    // A host's (new) underlay address concerns everyone who
                    // shares a network with it, and the host itself.
                    out.insert(c.id());
                    for p in ix
                        .vm_ports_by_host
                        .get(c.id().as_str())
                        .into_iter()
                        .flatten()
                    {
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

    /// Adds (or with `add` false, removes) a host's entries to the indexes.
    fn index(&mut self, host: &str, entries: &BTreeMap<String, Entry>, add: bool) {
        for e in entries.values() {
            match e {
                Entry::Network(n) => {
                    let set = self.net_hosts.entry(n.id.clone()).or_default();
                    if add {
                        set.insert(host.to_owned());
                    } else {
                        set.remove(host);
                    }
                }
                Entry::Port(p) => self.index_port(host, p, add),
                Entry::SecurityGroup(g) => {
                    for r in g.rules.iter().filter_map(|r| r.remote_group_id.as_ref()) {
                        let set = self.remote_refs.entry(r.clone()).or_default();
                        if add {
                            set.insert(host.to_owned());
                        } else {
                            set.remove(host);
                            if set.is_empty() {
                                self.remote_refs.remove(r);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn index_port(&mut self, host: &str, p: &PortEntry, add: bool) {
        for g in &p.security_groups {
            let k = (host.to_owned(), g.clone());
            if add {
                *self.group_users.entry(k).or_default() += 1;
            } else if let Some(c) = self.group_users.get_mut(&k) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    self.group_users.remove(&k);
                }
            }
        }
        let k = (host.to_owned(), p.network_id.clone());
        if add {
            self.ports.insert(p.id.clone(), k.clone());
            *self.local.entry(k).or_default() += 1;
        } else {
            if self.ports.get(&p.id) == Some(&k) {
                self.ports.remove(&p.id);
            }
            if let Some(c) = self.local.get_mut(&k) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    self.local.remove(&k);
                }
            }
        }
    }

    fn has(&self, host: &str, key: &str) -> bool {
        self.hosts
            .get(host)
            .is_some_and(|c| c.entries.contains_key(key))
    }

    /// The common case in O(hosts of the domain): only VM ports changed and
    /// no host gains or loses a network. `None`: take the full path.
    fn incremental_edits(&self, state: &State, changes: &[Change]) -> Option<Edits> {
        let mut edits: Edits = BTreeMap::new();
        let mut local = self.local.clone();
        let upsert = |edits: &mut Edits, h: &str, e: Entry| {
            let (u, d) = edits.entry(h.to_owned()).or_default();
            let k = e.key();
            d.remove(&k);
            u.insert(k, e);
        };
        let delete = |edits: &mut Edits, h: &str, k: String| {
            let (u, d) = edits.entry(h.to_owned()).or_default();
            u.remove(&k);
            d.insert(k);
        };
        for c in changes {
            let (id, port) = match c {
                Change::Put(crate::model::Object::Port(p))
                    if p.device_owner != OWNER_ROUTER_INTERFACE =>
                {
                    (p.meta.id.as_str(), Some(p))
                }
                Change::Delete(Kind::Port, id) => (id.as_str(), None),
                _ => return None,
            };
            // A port with an elastic IP: its entries follow the port.
            if state
                .floating_ips
                .values()
                .any(|f| f.port_id.as_deref() == Some(id))
            {
                return None;
            }
            let old = self.ports.get(id).cloned();
            // Remote-group membership: the hosts whose rules name one of
            // the port's groups (before or after) get its member entry.
            let mut groups: BTreeSet<&str> = port
                .map(|p| p.security_groups.iter().map(String::as_str).collect())
                .unwrap_or_default();
            groups.extend(
                self.port_groups
                    .get(id)
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
            );
            for g in groups {
                let member = port.filter(|p| p.security_groups.iter().any(|x| x == g));
                for h in self.remote_refs.get(g).into_iter().flatten() {
                    let key = format!("sgmember/{g}/{id}");
                    match member {
                        Some(p) => upsert(&mut edits, h, member_entry(g, p)),
                        None => {
                            if self.has(h, &key)
                                || edits.get(h).is_some_and(|(u, _)| u.contains_key(&key))
                            {
                                delete(&mut edits, h, key);
                            }
                        }
                    }
                }
            }
            // The port's own groups: a host must already have them, and
            // keep them for its other ports; otherwise recompile.
            let old_groups: Vec<String> = old
                .as_ref()
                .and_then(|(h, _)| self.hosts.get(h)?.entries.get(&format!("port/{id}")))
                .map(|e| match e {
                    Entry::Port(pe) => pe.security_groups.clone(),
                    _ => Vec::new(),
                })
                .unwrap_or_default();
            let new_groups = port
                .filter(|p| is_vm_port(p))
                .map(port_groups)
                .unwrap_or_default();
            let old_host = old.as_ref().map(|(h, _)| h.as_str());
            let new_host_ref = port
                .filter(|p| is_vm_port(p))
                .map(|p| p.binding_host_id.as_str());
            if old_host == new_host_ref {
                if old_groups != new_groups {
                    return None;
                }
            } else {
                let users = |h: &str, g: &str| {
                    self.group_users
                        .get(&(h.to_owned(), g.to_owned()))
                        .copied()
                        .unwrap_or(0)
                };
                if let Some(h) = new_host_ref {
                    if new_groups.iter().any(|g| users(h, g) == 0) {
                        return None;
                    }
                }
                if let Some(h) = old_host {
                    if old_groups.iter().any(|g| users(h, g) <= 1) {
                        return None;
                    }
                }
            }
            let net = match (port, &old) {
                (Some(p), Some((_, n))) if *n != p.network_id => return None,
                (Some(p), _) => p.network_id.clone(),
                (None, Some((_, n))) => n.clone(),
                // A port without entries anywhere (unbound, or a router
                // interface, whose removal also changes its router).
                (None, None) => continue,
            };
            let new_host = port
                .filter(|p| is_vm_port(p))
                .map(|p| p.binding_host_id.clone());
            // Moving into a host that lacks the network, or out of the
            // last local port of a network, changes that host's domain.
            if let Some(h) = &new_host {
                if old.as_ref().map(|(o, _)| o) != Some(h)
                    && !self.net_hosts.get(&net).is_some_and(|s| s.contains(h))
                {
                    return None;
                }
            }
            if let Some((o, _)) = &old {
                if new_host.as_ref() != Some(o) {
                    let k = (o.clone(), net.clone());
                    if local.get(&k).copied().unwrap_or(0) <= 1 {
                        return None;
                    }
                    *local.get_mut(&k).expect("counted") -= 1;
                    delete(&mut edits, o, format!("port/{id}"));
                }
            }
            if let (Some(h), Some(p)) = (&new_host, port) {
                if old.as_ref().map(|(o, _)| o) != Some(h) {
                    *local.entry((h.clone(), net.clone())).or_default() += 1;
                }
                upsert(&mut edits, h, port_entry(state, p)?);
            }
            let remote = port
                .filter(|p| is_vm_port(p))
                .and_then(|p| remote_entry(state, p));
            for h in self.net_hosts.get(&net).into_iter().flatten() {
                let key = format!("remote/{id}");
                match (&remote, new_host.as_deref() == Some(h.as_str())) {
                    (Some(e), false) => upsert(&mut edits, h, e.clone()),
                    _ => {
                        if self.has(h, &key)
                            || edits.get(h).is_some_and(|(u, _)| u.contains_key(&key))
                        {
                            delete(&mut edits, h, key);
                        }
                    }
                }
            }
        }
        Some(edits)
    }

    /// Recompiles what `changes` (committed as `state.revision`) concern.
    pub fn on_commit(&mut self, state: &State, changes: &[Change]) {
        self.apply_commit(state, changes);
        for c in changes {
            match c {
                Change::Put(crate::model::Object::Port(p))
                    if p.device_owner != OWNER_ROUTER_INTERFACE =>
                {
                    self.port_groups
                        .insert(p.meta.id.clone(), p.security_groups.clone());
                }
                Change::Delete(Kind::Port, id) => {
                    self.port_groups.remove(id);
                }
                _ => {}
            }
        }
    }

    fn apply_commit(&mut self, state: &State, changes: &[Change]) {
        if let Some(edits) = self.incremental_edits(state, changes) {
            self.incremental += 1;
            for (h, (upserts, deletes)) in edits {
                let mut cfg = self.hosts.remove(&h).unwrap_or_else(|| HostConfig {
                    revision: 0,
                    entries: BTreeMap::new(),
                    log: VecDeque::new(),
                    truncated: 0,
                });
                let mut up_keys = BTreeSet::new();
                let mut del_keys = BTreeSet::new();
                for k in deletes {
                    if let Some(old) = cfg.entries.remove(&k) {
                        if let Entry::Port(p) = &old {
                            self.index_port(&h, p, false);
                        }
                        del_keys.insert(k);
                    }
                }
                for (k, e) in upserts {
                    if cfg.entries.get(&k) == Some(&e) {
                        continue;
                    }
                    if let Some(Entry::Port(p)) = cfg.entries.get(&k) {
                        let p = p.clone();
                        self.index_port(&h, &p, false);
                    }
                    if let Entry::Port(p) = &e {
                        self.index_port(&h, p, true);
                    }
                    cfg.entries.insert(k.clone(), e);
                    up_keys.insert(k);
                }
                self.record(&h, &mut cfg, state.revision, up_keys, del_keys);
                self.hosts.insert(h, cfg);
            }
            return;
        }
        let ix = Index::new(state);
        let affected = self.affected(state, &ix, changes);
        for h in affected {
            let new = compile_host(state, &ix, &h);
            self.compiles += 1;
            let mut cfg = self.hosts.remove(&h).unwrap_or_else(|| HostConfig {
                revision: 0,
                entries: BTreeMap::new(),
                log: VecDeque::new(),
                truncated: 0,
            });
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
            let old = std::mem::replace(&mut cfg.entries, new);
            self.index(&h, &old, false);
            self.index(&h, &cfg.entries.clone(), true);
            self.record(&h, &mut cfg, state.revision, upserts, deletes);
            self.hosts.insert(h, cfg);
        }
    }

    fn record(
        &mut self,
        h: &str,
        cfg: &mut HostConfig,
        revision: u64,
        upserts: BTreeSet<String>,
        deletes: BTreeSet<String>,
    ) {
        if upserts.is_empty() && deletes.is_empty() {
            return;
        }
        tracing::debug!(host = %h, revision, upserts = upserts.len(), deletes = deletes.len(), "host configuration changed");
        cfg.revision = revision;
        cfg.log.push_back((revision, upserts, deletes));
        while cfg.log.len() > DELTA_LOG {
            if let Some((r, _, _)) = cfg.log.pop_front() {
                cfg.truncated = r;
            }
        }
    }

    /// Every host's entries compiled from scratch equal the incremental
    /// result (tests).
    pub fn verify(&self, state: &State) -> Result<(), String> {
        let ix = Index::new(state);
        for (h, cfg) in &self.hosts {
            let fresh = compile_host(state, &ix, h);
            if fresh != cfg.entries {
                let a: BTreeSet<&String> = fresh.keys().collect();
                let b: BTreeSet<&String> = cfg.entries.keys().collect();
                return Err(format!(
                    "host {h}: missing {:?}, extra {:?}, differing {:?}",
                    a.difference(&b).collect::<Vec<_>>(),
                    b.difference(&a).collect::<Vec<_>>(),
                    a.intersection(&b)
                        .filter(|k| fresh.get(**k) != cfg.entries.get(**k))
                        .collect::<Vec<_>>()
                ));
            }
        }
        Ok(())
    }

    /// What an agent at `since` needs: with `snapshot`, the whole
    /// configuration; otherwise `None` if it is up to date, a delta if the
    /// log reaches back to `since`, else a snapshot.
    pub fn update(&self, host: &str, since: u64, snapshot: bool) -> Option<Update> {
        let empty = HostConfig {
            revision: 0,
            entries: BTreeMap::new(),
            log: VecDeque::new(),
            truncated: 0,
        };
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
            let upserts = up
                .iter()
                .filter_map(|k| cfg.entries.get(k).cloned())
                .collect();
            return Some(Update {
                kind: UpdateKind::Delta,
                host: host.to_owned(),
                from: since,
                revision: cfg.revision,
                upserts,
                deletes: del.into_iter().collect(),
            });
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
        self.hosts
            .iter()
            .map(|(h, c)| (h.clone(), c.entries.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        auth::Auth,
        commit::Core,
        model::{HostRecord, Object, Project},
        network::{networks, ports, routers, subnets},
    };

    fn admin(p: &str) -> Auth {
        Auth {
            user_id: "u".into(),
            user_name: "u".into(),
            project_id: p.into(),
            project_name: p.into(),
            roles: vec!["admin".into()],
            expires_unix: u64::MAX,
        }
    }

    fn setup() -> Core {
        let c = Core::open(std::path::Path::new(":memory:")).unwrap();
        c.mutate(|_| {
            let mut v = Vec::new();
            for p in ["p1", "p2"] {
                v.push(Change::Put(Object::Project(Project {
                    id: p.into(),
                    name: p.into(),
                    description: String::new(),
                    domain_id: "default".into(),
                    enabled: true,
                })));
            }
            for (h, ip) in [
                ("h1", "198.18.1.1"),
                ("h2", "198.18.1.3"),
                ("h3", "198.18.2.1"),
            ] {
                v.push(Change::Put(Object::Host(HostRecord {
                    name: h.into(),
                    underlay_ip: ip.into(),
                    az: String::new(),
                    gateway: false,
                    available: true,
                })));
            }
            Ok((v, ()))
        })
        .unwrap();
        c
    }

    fn network(c: &Core, a: &Auth) -> String {
        c.mutate(|s| networks::create(s, a, &json!({"network": {}})))
            .unwrap()
            .meta
            .id
    }

    fn subnet(c: &Core, a: &Auth, net: &str, cidr: &str) -> String {
        c.mutate(|s| subnets::create(s, a, &json!({"subnet": {"network_id": net, "cidr": cidr}})))
            .unwrap()
            .meta
            .id
    }

    /// A VPC: router with two networks; returns (net1, net2).
    fn vpc(c: &Core, a: &Auth) -> (String, String) {
        let (n1, n2) = (network(c, a), network(c, a));
        let s1 = subnet(c, a, &n1, "10.0.1.0/24");
        let s2 = subnet(c, a, &n2, "10.0.2.0/24");
        let r = c
            .mutate(|s| routers::create(s, a, &json!({"router": {}})))
            .unwrap()
            .meta
            .id;
        for sub in [s1, s2] {
            c.mutate(|s| routers::add_interface(s, a, &r, &json!({"subnet_id": sub})))
                .unwrap();
        }
        (n1, n2)
    }

    fn bound_port(c: &Core, a: &Auth, net: &str, host: &str) -> String {
        c.mutate(|s| {
            ports::create(
                s,
                a,
                &json!({"port": {"network_id": net, "binding:host_id": host}}),
            )
        })
        .unwrap()
        .meta
        .id
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
        assert!(
            k.contains(&format!("remote/{pb}")),
            "h1 must know where p1's other port is: {k:?}"
        );
        assert!(
            k.contains(&format!("network/{n2}")),
            "the whole routing domain: {k:?}"
        );
        let remote = u
            .upserts
            .iter()
            .find_map(|e| {
                if let Entry::Remote(r) = e {
                    (r.port_id == pb).then_some(r.clone())
                } else {
                    None
                }
            })
            .unwrap();
        assert_eq!(
            (remote.host.as_str(), remote.underlay_ip.as_str()),
            ("h3", "198.18.2.1")
        );
        let router = u
            .upserts
            .iter()
            .find_map(|e| {
                if let Entry::Router(r) = e {
                    Some(r.clone())
                } else {
                    None
                }
            })
            .unwrap();
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
        // ... and, both ports being in the project's default group (whose
        // rules name itself), p2's member entry.
        let (member, other): (Vec<String>, Vec<String>) = keys(&d)
            .into_iter()
            .partition(|k| k.starts_with("sgmember/"));
        assert_eq!(other, vec![format!("remote/{p2}")]);
        assert!(
            member.len() == 1 && member[0].ends_with(&format!("/{p2}")),
            "{member:?}"
        );
        assert!(
            c.host_update("h3", r3_before, false).is_none(),
            "h3 is not concerned"
        );
        // Delete it again: merged delta since r1 is empty upserts + delete.
        c.mutate(|s| ports::delete(s, &a, &p2, None)).unwrap();
        let d = c.host_update("h1", r1, false).expect("delta");
        assert!(d.upserts.is_empty());
        let (member, other): (Vec<&String>, Vec<&String>) =
            d.deletes.iter().partition(|k| k.starts_with("sgmember/"));
        assert_eq!(other, vec![&format!("remote/{p2}")]);
        assert_eq!(member.len(), 1);
        // Unbinding the local port empties h1.
        c.mutate(|s| ports::update(s, &a, &p1, &json!({"port": {"binding:host_id": ""}}), None))
            .unwrap();
        let s = c.host_update("h1", 0, true).unwrap();
        assert!(s.upserts.is_empty(), "{:?}", keys(&s));
        // An agent from the future or from before a restart gets a snapshot.
        assert_eq!(
            c.host_update("h1", 9999, false).unwrap().kind,
            UpdateKind::Snapshot
        );
    }

    /// Random port life cycles: after every commit the incrementally
    /// maintained configuration equals a compilation from scratch, and the
    /// common case does not recompile any host.
    #[test]
    fn incremental_equals_full_compilation() {
        let c = setup();
        let a = admin("p1");
        let (n1, n2) = vpc(&c, &a);
        let n3 = network(&c, &a); // not routed
        subnet(&c, &a, &n3, "10.0.3.0/24");
        let nets = [n1, n2, n3];
        let hosts = ["h1", "h2", "h3", ""];
        let mut ports: Vec<String> = Vec::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        for step in 0..400 {
            match next(4) {
                0 | 1 => {
                    let net = &nets[next(3)];
                    let h = hosts[next(4)];
                    let id = c
                        .mutate(|s| {
                            ports::create(
                                s,
                                &a,
                                &json!({"port": {"network_id": net, "binding:host_id": h}}),
                            )
                        })
                        .unwrap()
                        .meta
                        .id;
                    ports.push(id);
                }
                2 if !ports.is_empty() => {
                    let id = ports[next(ports.len())].clone();
                    let h = hosts[next(4)];
                    c.mutate(|s| {
                        ports::update(
                            s,
                            &a,
                            &id,
                            &json!({"port": {"binding:host_id": h, "name": format!("s{step}")}}),
                            None,
                        )
                    })
                    .unwrap();
                }
                3 if !ports.is_empty() => {
                    let id = ports.remove(next(ports.len()));
                    c.mutate(|s| ports::delete(s, &a, &id, None)).unwrap();
                }
                _ => {}
            }
            c.verify_compiled()
                .unwrap_or_else(|e| panic!("step {step}: {e}"));
        }
        let (full, incremental) = c.verify_compiled().unwrap();
        assert!(incremental > 200, "most port changes must take the incremental path: {incremental} incremental, {full} full");
    }

    #[test]
    fn log_truncation_forces_snapshot() {
        let c = setup();
        let a = admin("p1");
        let (n1, _) = vpc(&c, &a);
        bound_port(&c, &a, &n1, "h1");
        let start = c.host_update("h1", 0, true).unwrap().revision;
        for _ in 0..(DELTA_LOG + 5) {
            c.mutate(|s| {
                networks::update(
                    s,
                    &a,
                    &n1,
                    &json!({"network": {"name": format!("{}", s.revision)}}),
                    None,
                )
            })
            .unwrap();
            // name changes do not alter compiled entries; touch the MTU instead.
            let mtu = 1000 + (c.read().revision % 400) as i64;
            c.mutate(|s| networks::update(s, &a, &n1, &json!({"network": {"mtu": mtu}}), None))
                .unwrap();
        }
        assert_eq!(
            c.host_update("h1", start, false).unwrap().kind,
            UpdateKind::Snapshot
        );
    }
}
