//! The VPC, realised: from a host's configuration entries to the contents
//! of its VPC maps (ports, endpoints, routes, VNIs, MACs, allowed
//! addresses, elastic IPs, SNAT, bandwidth buckets) as a [`Tables`] value.
//!
//! Pure: the agent calls [`build`] with its desired entries, the ifindex of
//! every attached tap and the counter slots it handed out, and writes the
//! difference between the result and what the maps hold ([`Tables::diff`]).
//!
//! Routing domains: a router and every network attached to it are one
//! domain (the VPC); a network without a router is a domain of its own. The
//! domain id is the smallest VNI of its networks: unique (VNIs are), stable
//! while the domain's networks stay, and the same on every host without
//! coordination.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use dataplane_common::{
    AllowedMac, EipEntry, EipOut, Endpoint, EpKey, MacKey, PortInfo, QosBucket, QosKey, Route,
    SnatRouter, VniInfo, DIR_EGRESS, DIR_INGRESS, EIP_F_LB, EIP_F_LOCAL, EIP_F_QOS, EIP_F_SNAT,
    EIP_F_STEER, EP_EXTERNAL, EP_F_DOWN, EP_F_SNAT, EP_GATEWAY, EP_LOCAL, EP_REMOTE, EP_VIP,
    MACS_DOWN, PORT_F_ADMIN_UP, PORT_F_LB_MEMBER, PORT_F_PRESENT, PORT_F_SECURITY, ROUTE_CONNECTED,
    ROUTE_EXTERNAL, ROUTE_NEXTHOP, VNI_F_EXTERNAL, VNI_F_SNAT,
};
use ipnetwork::Ipv4Network;

use strato_dataplane::tables::{LpmKey, Tables};
use strato_proto::{
    config::{Entry, NetworkEntry, SubnetEntry},
    naming::parse_mac,
};

fn ip4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

/// Domain id of every network the host knows.
pub fn domains(desired: &BTreeMap<String, Entry>) -> BTreeMap<String, u32> {
    let mut by_router: BTreeMap<&str, u32> = BTreeMap::new();
    for e in desired.values() {
        if let Entry::Network(n) = e {
            if let Some(r) = &n.router_id {
                let d = by_router.entry(r.as_str()).or_insert(n.vni);
                *d = (*d).min(n.vni);
            }
        }
    }
    desired
        .values()
        .filter_map(|e| match e {
            Entry::Network(n) => Some((
                n.id.clone(),
                n.router_id
                    .as_deref()
                    .and_then(|r| by_router.get(r).copied())
                    .unwrap_or(n.vni),
            )),
            _ => None,
        })
        .collect()
}

/// The subnet of `net` holding `ip`.
fn subnet_of(net: &NetworkEntry, ip: Ipv4Addr) -> Option<&SubnetEntry> {
    net.subnets
        .iter()
        .find(|s| s.cidr.parse::<Ipv4Network>().is_ok_and(|c| c.contains(ip)))
}

/// Gateway MAC of the subnet holding `ip` (its router interface), if routed.
fn gw_mac_for(net: &NetworkEntry, ip: Ipv4Addr) -> [u8; 6] {
    subnet_of(net, ip)
        .and_then(|s| s.gateway_mac.as_deref())
        .and_then(parse_mac)
        .unwrap_or_default()
}

/// What a remote port contributes to `ENDPOINTS` (its addresses and the
/// single addresses among its pairs), given the domains and networks.
pub fn remote_endpoints(
    doms: &BTreeMap<String, u32>,
    nets: &BTreeMap<&str, &NetworkEntry>,
    r: &strato_proto::config::RemoteEntry,
) -> Vec<(EpKey, Endpoint)> {
    let (Some(n), Some(under), Some(mac)) = (
        nets.get(r.network_id.as_str()),
        ip4(&r.underlay_ip),
        parse_mac(&r.mac),
    ) else {
        return Vec::new();
    };
    let Some(&domain) = doms.get(&n.id) else {
        return Vec::new();
    };
    let mut addrs: Vec<(Ipv4Addr, [u8; 6])> = r
        .ips
        .iter()
        .filter_map(|s| ip4(s))
        .map(|ip| (ip, mac))
        .collect();
    addrs.extend(pair_hosts(&r.allowed_address_pairs, mac));
    addrs
        .into_iter()
        .map(|(ip, m)| {
            (
                EpKey {
                    domain,
                    ip: ip.octets(),
                },
                Endpoint {
                    mac: m,
                    gw_mac: gw_mac_for(n, ip),
                    kind: EP_REMOTE,
                    flags: if r.admin_state_up && n.admin_state_up {
                        0
                    } else {
                        EP_F_DOWN
                    },
                    mtu: n.mtu as u16,
                    vni: n.vni,
                    ifindex: 0,
                    underlay: under.octets(),
                },
            )
        })
        .collect()
}

/// On a gateway host, a public load balancer: its floating IP balanced
/// here (`EIP_F_LB`), and where its members are.
fn public_load_balancer(t: &mut Tables, l: &strato_proto::config::LoadBalancerEntry) {
    let (Some((_, fip)), Some(vip)) = (&l.floating_ip, ip4(&l.vip_address)) else {
        return;
    };
    let Some(eip) = ip4(fip) else { return };
    t.eips.insert(
        eip.octets(),
        EipEntry {
            fixed: vip.octets(),
            domain: l.domain,
            flags: EIP_F_LB,
            ..EipEntry::default()
        },
    );
    for m in l.listeners.iter().flat_map(|x| &x.members) {
        let Some(loc) = &m.location else { continue };
        let (Some(ip), Some(mac), Some(gw_mac), Some(underlay)) = (
            ip4(&m.address),
            parse_mac(&loc.mac),
            parse_mac(&loc.gw_mac),
            ip4(&loc.underlay_ip),
        ) else {
            continue;
        };
        t.endpoints
            .entry(EpKey {
                domain: l.domain,
                ip: ip.octets(),
            })
            .or_insert(Endpoint {
                mac,
                gw_mac,
                kind: EP_REMOTE,
                flags: 0,
                mtu: loc.mtu as u16,
                vni: loc.vni,
                ifindex: 0,
                underlay: underlay.octets(),
            });
    }
}

/// The (domain, address) of every load balancer member: a local port
/// with one of these addresses gets `PORT_F_LB_MEMBER`.
pub fn lb_members(
    desired: &BTreeMap<String, Entry>,
    doms: &BTreeMap<String, u32>,
) -> BTreeSet<EpKey> {
    let mut out = BTreeSet::new();
    for e in desired.values() {
        let Entry::LoadBalancer(l) = e else { continue };
        let Some(&domain) = doms.get(&l.vip_network_id) else {
            continue;
        };
        for m in l.listeners.iter().flat_map(|x| &x.members) {
            if let Some(ip) = ip4(&m.address) {
                out.insert(EpKey {
                    domain,
                    ip: ip.octets(),
                });
            }
        }
    }
    out
}

/// Builds the tables. `tap_ifindex`: the ifindex of an attached, working
/// tap (ports without one are left out: nothing can be delivered to them);
/// `slot`: the counter slot of an ifindex.
pub fn build(
    desired: &BTreeMap<String, Entry>,
    tap_ifindex: &dyn Fn(&str) -> Option<u32>,
    slot: &mut dyn FnMut(u32) -> u32,
    policy_of: PolicyOf<'_>,
) -> Tables {
    build_parts(desired, tap_ifindex, slot, policy_of).0
}

/// A port's installed policy: its id and whether it is stateless.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortPolicy {
    pub id: u32,
    pub stateless: bool,
}

/// The installed policy of a port (by port id); the default for none.
pub type PolicyOf<'a> = &'a dyn Fn(&str) -> PortPolicy;

/// No port has a policy (tests of the VPC tables alone).
pub fn no_policy(_: &str) -> PortPolicy {
    PortPolicy::default()
}

/// Which entries provide each `ENDPOINTS` key: what the incremental path
/// needs to change one remote port without rebuilding everything.
#[derive(Clone, Debug, Default)]
pub struct Providers {
    /// Remote entry key -> the endpoint keys it provides.
    pub remote: std::collections::HashMap<String, Vec<EpKey>>,
    /// Endpoint key -> how many entries (remote, local, gateway) provide it.
    pub count: std::collections::HashMap<EpKey, u32>,
    /// Port entry key -> what the local port contributes.
    pub ports: std::collections::HashMap<String, PortPart>,
}

/// A key of `MACS` or of an LPM table (for the agent's incremental path).
pub enum MacOrLpm {
    Mac(MacKey),
    Lpm(LpmKey),
}

/// What one local port contributes to the tables.
#[derive(Clone, Debug, PartialEq)]
pub struct PortPart {
    pub ifindex: u32,
    pub info: PortInfo,
    pub endpoints: Vec<(EpKey, Endpoint)>,
    pub macs: Vec<(MacKey, u32)>,
    pub allowed: Vec<(LpmKey, AllowedMac)>,
}

/// A local port's contribution: its `PORTS` entry, its addresses (fixed
/// IPs, single-address pairs), where decapsulated frames for its MACs go,
/// and the sources it may use besides its first address. None when its
/// network is unknown or its MAC malformed.
pub fn port_part(
    doms: &BTreeMap<String, u32>,
    nets: &BTreeMap<&str, &NetworkEntry>,
    p: &strato_proto::config::PortEntry,
    ifindex: u32,
    slot: u32,
    policy: PortPolicy,
) -> Option<PortPart> {
    let n = nets.get(p.network_id.as_str())?;
    let mac = parse_mac(&p.mac)?;
    let domain = *doms.get(&n.id)?;
    let ips: Vec<(Ipv4Addr, Option<&SubnetEntry>)> = p
        .ips
        .iter()
        .filter_map(|(sid, ip)| Some((ip4(ip)?, n.subnets.iter().find(|s| &s.id == sid))))
        .collect();
    let (ipv4, subnet) = ips
        .first()
        .copied()
        .unwrap_or((Ipv4Addr::UNSPECIFIED, None));
    let gw_mac = subnet
        .and_then(|s| s.gateway_mac.as_deref())
        .and_then(parse_mac)
        .unwrap_or_default();
    let gw_ip = subnet
        .and_then(|s| s.gateway_ip.as_deref())
        .and_then(ip4)
        .filter(|_| gw_mac != [0; 6])
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let prefix_len = subnet
        .and_then(|s| s.cidr.parse::<Ipv4Network>().ok())
        .map_or(32, |c| c.prefix());
    let mut flags = PORT_F_PRESENT;
    if p.port_security_enabled {
        flags |= PORT_F_SECURITY;
    }
    let up = p.admin_state_up && n.admin_state_up;
    if up {
        flags |= PORT_F_ADMIN_UP;
    }
    // Port security off: nothing filtered, whatever is installed.
    let policy = if p.port_security_enabled {
        policy
    } else {
        PortPolicy::default()
    };
    if policy.stateless && policy.id != 0 {
        flags |= dataplane_common::PORT_F_STATELESS;
    }
    let info = PortInfo {
        vni: n.vni,
        flags,
        mac,
        mtu: n.mtu as u16,
        ipv4: ipv4.octets(),
        gw_ip: gw_ip.octets(),
        gw_mac,
        prefix_len,
        _pad: 0,
        slot,
        domain,
        policy: policy.id,
    };
    let mut addrs: Vec<(Ipv4Addr, [u8; 6])> = ips.iter().map(|(ip, _)| (*ip, mac)).collect();
    addrs.extend(pair_hosts(&p.allowed_address_pairs, mac));
    // Where decapsulated frames for this port go: its MAC, and the MACs of
    // its address pairs, on its network's VNI.
    let pair_macs = p
        .allowed_address_pairs
        .iter()
        .filter_map(|a| parse_mac(&a.mac_address));
    let mut macs: Vec<(MacKey, u32)> = Vec::new();
    for m in std::iter::once(mac).chain(pair_macs) {
        let k = MacKey {
            vni: n.vni,
            mac: m,
            _pad: [0; 2],
        };
        if !macs.iter().any(|(x, _)| *x == k) {
            macs.push((k, if up { ifindex } else { MACS_DOWN }));
        }
    }
    let mut endpoints: Vec<(EpKey, Endpoint)> = Vec::new();
    for (ip, m) in addrs {
        let k = EpKey {
            domain,
            ip: ip.octets(),
        };
        if endpoints.iter().any(|(x, _)| *x == k) {
            continue;
        }
        endpoints.push((
            k,
            Endpoint {
                mac: m,
                gw_mac: gw_mac_for(n, ip),
                kind: EP_LOCAL,
                flags: if up { 0 } else { EP_F_DOWN },
                mtu: n.mtu as u16,
                vni: n.vni,
                ifindex,
                underlay: [0; 4],
            },
        ));
    }
    let mut allowed: BTreeMap<LpmKey, AllowedMac> = BTreeMap::new();
    // Sources the port may use besides its primary address.
    for (ip, _) in ips.iter().skip(1) {
        allowed.insert(
            (ifindex, Ipv4Network::new(*ip, 32).expect("/32")),
            AllowedMac { mac, _pad: [0; 2] },
        );
    }
    for pair in &p.allowed_address_pairs {
        let Some(net) = pair_net(&pair.ip_address) else {
            continue;
        };
        let m = parse_mac(&pair.mac_address).unwrap_or(mac);
        allowed.insert(
            (ifindex, net),
            AllowedMac {
                mac: m,
                _pad: [0; 2],
            },
        );
    }
    Some(PortPart {
        ifindex,
        info,
        endpoints,
        macs,
        allowed: allowed.into_iter().collect(),
    })
}

/// What every step of [`build_parts`] reads: the entries, the routing
/// domain of every network, and the networks by id.
struct Known<'e> {
    desired: &'e BTreeMap<String, Entry>,
    doms: BTreeMap<String, u32>,
    nets: BTreeMap<&'e str, &'e NetworkEntry>,
}

/// As [`build`], also returning who provides each endpoint. The steps run
/// in this order, which decides who wins a key two of them write: remote
/// ports only fill what routers left, local ports overwrite remote claims,
/// VIPs overwrite both.
pub fn build_parts(
    desired: &BTreeMap<String, Entry>,
    tap_ifindex: &dyn Fn(&str) -> Option<u32>,
    slot: &mut dyn FnMut(u32) -> u32,
    policy_of: PolicyOf<'_>,
) -> (Tables, Providers) {
    let mut prov = Providers::default();
    let mut t = Tables::default();
    let k = Known {
        desired,
        doms: domains(desired),
        nets: desired
            .values()
            .filter_map(|e| match e {
                Entry::Network(n) => Some((n.id.as_str(), n)),
                _ => None,
            })
            .collect(),
    };
    networks(&mut t, &k);
    routers_and_remotes(&mut t, &mut prov, &k);
    local_ports(&mut t, &mut prov, &k, tap_ifindex, slot, policy_of);
    load_balancers(&mut t, &k);
    elastic_ips(&mut t, &k);
    router_snat(&mut t, &k);
    count_providers(&t, &mut prov);
    (t, prov)
}

/// Each network's VNI and the connected routes of its routed subnets.
fn networks(t: &mut Tables, k: &Known<'_>) {
    let (doms, nets) = (&k.doms, &k.nets);
    for n in nets.values() {
        let domain = doms[&n.id];
        t.vnis.insert(n.vni, VniInfo { domain, flags: 0 });
        // Connected routes only for subnets with a router interface: the
        // others are reachable on their network, not routed to.
        for s in n.subnets.iter().filter(|s| s.gateway_mac.is_some()) {
            if let Ok(c) = s.cidr.parse::<Ipv4Network>() {
                t.routes.insert(
                    (
                        domain,
                        Ipv4Network::new(c.network(), c.prefix()).expect("valid"),
                    ),
                    Route {
                        kind: ROUTE_CONNECTED,
                        nexthop: [0; 4],
                    },
                );
            }
        }
    }
}

/// Routers' interfaces (gateway endpoints), static routes and way out;
/// the ports on other hosts, counted as providers of their keys.
fn routers_and_remotes(t: &mut Tables, prov: &mut Providers, k: &Known<'_>) {
    let Known {
        desired,
        doms,
        nets,
    } = k;
    let mut routers_seen = BTreeSet::new();
    for e in desired.values() {
        match e {
            Entry::Router(r) => {
                if !routers_seen.insert(r.id.as_str()) {
                    continue;
                }
                let Some(domain) = r
                    .interfaces
                    .iter()
                    .find_map(|i| doms.get(&i.network_id).copied())
                else {
                    continue;
                };
                for i in &r.interfaces {
                    let (Some(ip), Some(mac)) = (ip4(&i.ip), parse_mac(&i.mac)) else {
                        continue;
                    };
                    let mtu = nets.get(i.network_id.as_str()).map_or(0, |n| n.mtu as u16);
                    t.endpoints.insert(
                        EpKey {
                            domain,
                            ip: ip.octets(),
                        },
                        Endpoint {
                            mac,
                            gw_mac: mac,
                            kind: EP_GATEWAY,
                            flags: 0,
                            mtu,
                            vni: i.vni,
                            ifindex: 0,
                            underlay: [0; 4],
                        },
                    );
                }
                for rt in &r.routes {
                    let (Ok(dst), Some(nh)) =
                        (rt.destination.parse::<Ipv4Network>(), ip4(&rt.nexthop))
                    else {
                        continue;
                    };
                    let dst = Ipv4Network::new(dst.network(), dst.prefix()).expect("valid");
                    // A static route never hides a connected subnet.
                    t.routes.entry((domain, dst)).or_insert(Route {
                        kind: ROUTE_NEXTHOP,
                        nexthop: nh.octets(),
                    });
                }
                if let Some(x) = &r.external {
                    external_exit(t, domain, x);
                }
            }
            Entry::Remote(r) => {
                let eps = remote_endpoints(doms, nets, r);
                let mut keys = Vec::with_capacity(eps.len());
                for (k, v) in eps {
                    *prov.count.entry(k).or_default() += 1;
                    keys.push(k);
                    t.endpoints.entry(k).or_insert(v);
                }
                prov.remote.insert(e.key(), keys);
            }
            _ => {}
        }
    }
}

/// This host's ports whose taps exist: their port record, MACs, allowed
/// sources and endpoints (over any remote claim of the same address).
fn local_ports(
    t: &mut Tables,
    prov: &mut Providers,
    k: &Known<'_>,
    tap_ifindex: &dyn Fn(&str) -> Option<u32>,
    slot: &mut dyn FnMut(u32) -> u32,
    policy_of: PolicyOf<'_>,
) {
    let Known {
        desired,
        doms,
        nets,
    } = k;
    for e in desired.values() {
        let Entry::Port(p) = e else { continue };
        let Some(ifindex) = tap_ifindex(&p.tap) else {
            continue;
        };
        let Some(part) = port_part(doms, nets, p, ifindex, slot(ifindex), policy_of(&p.id)) else {
            continue;
        };
        t.ports.insert(part.ifindex, part.info);
        t.macs.extend(part.macs.iter().copied());
        t.allowed.extend(part.allowed.iter().copied());
        // Local ports win over a remote claim of the same address.
        t.endpoints.extend(part.endpoints.iter().copied());
        prov.ports.insert(e.key(), part);
    }
}

/// Local ports that are load balancer members, and the VIPs.
fn load_balancers(t: &mut Tables, k: &Known<'_>) {
    let Known {
        desired,
        doms,
        nets,
    } = k;
    // Load balancers: their VIPs, and the local ports that are members
    // (their packets to local ports may be replies to translate back).
    let members = lb_members(desired, doms);
    for info in t.ports.values_mut() {
        if members.contains(&EpKey {
            domain: info.domain,
            ip: info.ipv4,
        }) {
            info.flags |= PORT_F_LB_MEMBER;
        }
    }
    for e in desired.values() {
        let Entry::LoadBalancer(l) = e else { continue };
        if l.gateway {
            public_load_balancer(t, l);
        }
        let (Some(&domain), Some(n), Some(vip), Some(mac)) = (
            doms.get(&l.vip_network_id),
            nets.get(l.vip_network_id.as_str()),
            ip4(&l.vip_address),
            parse_mac(&l.vip_mac),
        ) else {
            continue;
        };
        let gw_mac = n
            .subnets
            .iter()
            .find(|s| s.cidr.parse::<Ipv4Network>().is_ok_and(|c| c.contains(vip)))
            .and_then(|s| s.gateway_mac.as_deref())
            .and_then(parse_mac)
            .unwrap_or([0; 6]);
        t.endpoints.insert(
            EpKey {
                domain,
                ip: vip.octets(),
            },
            Endpoint {
                mac,
                gw_mac,
                kind: EP_VIP,
                flags: 0,
                mtu: n.mtu as u16,
                vni: n.vni,
                ifindex: 0,
                underlay: [0; 4],
            },
        );
    }
}

/// Elastic IPs: translated here (with their bandwidth buckets) or steered.
fn elastic_ips(t: &mut Tables, k: &Known<'_>) {
    let Known { desired, doms, .. } = k;
    // Elastic IPs.
    for e in desired.values() {
        let Entry::FloatingIp(f) = e else { continue };
        let (Some(eip), Some(fixed)) = (ip4(&f.floating_ip_address), ip4(&f.fixed_ip_address))
        else {
            continue;
        };
        t.vnis.insert(
            f.vni,
            VniInfo {
                domain: 0,
                flags: VNI_F_EXTERNAL,
            },
        );
        if f.steer {
            let Some(underlay) = ip4(&f.underlay_ip) else {
                continue;
            };
            t.eips.insert(
                eip.octets(),
                EipEntry {
                    fixed: [0; 4],
                    domain: 0,
                    underlay: underlay.octets(),
                    vni: f.vni,
                    flags: EIP_F_STEER,
                },
            );
            continue;
        }
        let Some(Entry::Port(p)) = desired.get(&format!("port/{}", f.port_id)) else {
            continue;
        };
        let Some(&domain) = doms.get(&p.network_id) else {
            continue;
        };
        let (mut in_flags, mut out_flags) = (EIP_F_LOCAL, 0);
        for l in &f.limits {
            let direction = if l.direction == "ingress" {
                in_flags |= EIP_F_QOS;
                DIR_INGRESS
            } else {
                out_flags |= EIP_F_QOS;
                DIR_EGRESS
            };
            t.eip_qos.insert(
                QosKey {
                    eip: eip.octets(),
                    direction,
                },
                qos_bucket(l.max_kbps, l.max_burst_kbps),
            );
        }
        t.eips.insert(
            eip.octets(),
            EipEntry {
                fixed: fixed.octets(),
                domain,
                underlay: [0; 4],
                vni: f.vni,
                flags: in_flags,
            },
        );
        t.eip_out.insert(
            EpKey {
                domain,
                ip: fixed.octets(),
            },
            EipOut {
                eip: eip.octets(),
                flags: out_flags,
            },
        );
    }
}

/// Routers' SNAT on gateway hosts: done here, or steered to the host doing it.
fn router_snat(t: &mut Tables, k: &Known<'_>) {
    let Known { desired, .. } = k;
    // Routers' SNAT (gateway hosts).
    for e in desired.values() {
        let Entry::Snat(n) = e else { continue };
        let (Some(ip), Some(&domain)) = (ip4(&n.ip), n.vnis.iter().min()) else {
            continue;
        };
        t.vnis.insert(
            n.ext_vni,
            VniInfo {
                domain: 0,
                flags: VNI_F_EXTERNAL,
            },
        );
        if n.local {
            t.snat_routers.insert(
                domain,
                SnatRouter {
                    ext_ip: ip.octets(),
                    flags: 0,
                },
            );
            for v in &n.vnis {
                t.vnis.insert(
                    *v,
                    VniInfo {
                        domain,
                        flags: VNI_F_SNAT,
                    },
                );
            }
            t.eips.insert(
                ip.octets(),
                EipEntry {
                    flags: EIP_F_SNAT,
                    ..EipEntry::default()
                },
            );
        } else if let Some(owner) = ip4(&n.underlay_ip) {
            t.eips.insert(
                ip.octets(),
                EipEntry {
                    underlay: owner.octets(),
                    vni: n.ext_vni,
                    flags: EIP_F_STEER,
                    ..EipEntry::default()
                },
            );
        }
    }
}

/// Gateways and local ports provide their keys too.
fn count_providers(t: &Tables, prov: &mut Providers) {
    for (k, v) in &t.endpoints {
        if v.kind == EP_GATEWAY {
            *prov.count.entry(*k).or_default() += 1;
        }
    }
    for part in prov.ports.values() {
        for (k, _) in &part.endpoints {
            *prov.count.entry(*k).or_default() += 1;
        }
    }
}

/// Bucket depth when a rule gives none (`max_burst_kbps` 0): 500 ms at
/// the rate. A TCP sender that lost a burst to the policer and waited out
/// a retransmission timeout (200 ms at least) can catch up on the time it
/// lost; a sustained flow gets the rate once the first burst is spent.
pub const DEFAULT_BURST_MS: u64 = 500;

/// The token bucket of a bandwidth limit rule (see `QosBucket`).
pub fn qos_bucket(max_kbps: u64, max_burst_kbps: u64) -> QosBucket {
    let rate_bps = max_kbps.max(1) * 1000;
    let burst_ns = if max_burst_kbps == 0 {
        DEFAULT_BURST_MS * 1_000_000
    } else {
        // kbit of depth at kbit/s: seconds.
        max_burst_kbps.saturating_mul(1_000_000_000) / max_kbps.max(1)
    };
    QosBucket {
        rate_bps,
        burst_ns,
        clock_ns: 0,
    }
}

/// The way out of a VPC whose router has an external gateway: a default
/// route (unless a static one is there) to the domain's external endpoint,
/// the tunnel to the preferred gateway host.
fn external_exit(t: &mut Tables, domain: u32, x: &strato_proto::config::RouterExternal) {
    let Some(mac) = parse_mac(&x.mac) else {
        return;
    };
    let gateway = x.gateways.iter().find_map(|g| ip4(&g.underlay_ip));
    let snat = x
        .snat_gateway
        .as_ref()
        .filter(|_| x.enable_snat)
        .and_then(|g| ip4(&g.underlay_ip));
    t.routes
        .entry((
            domain,
            Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("valid"),
        ))
        .or_insert(Route {
            kind: ROUTE_EXTERNAL,
            nexthop: [0; 4],
        });
    t.endpoints.insert(
        EpKey { domain, ip: [0; 4] },
        Endpoint {
            mac,
            gw_mac: mac,
            kind: EP_EXTERNAL,
            // No gateway host registered: nothing leaves.
            flags: if gateway.is_some() { 0 } else { EP_F_DOWN }
                | if snat.is_some() { EP_F_SNAT } else { 0 },
            mtu: x.mtu.min(u16::MAX as u32) as u16,
            vni: x.vni,
            // An external endpoint's `ifindex` holds the SNAT gateway
            // host's underlay address (network order, as the bytes).
            ifindex: snat.map_or(0, |g| u32::from_ne_bytes(g.octets())),
            underlay: gateway.map_or([0; 4], |g| g.octets()),
        },
    );
    t.vnis.insert(
        x.vni,
        VniInfo {
            domain: 0,
            flags: VNI_F_EXTERNAL,
        },
    );
}

fn pair_net(s: &str) -> Option<Ipv4Network> {
    let n: Ipv4Network = if s.contains('/') {
        s.parse().ok()?
    } else {
        Ipv4Network::new(s.parse().ok()?, 32).ok()?
    };
    Ipv4Network::new(n.network(), n.prefix()).ok()
}

/// Single addresses among allowed address pairs: reachable like fixed IPs.
fn pair_hosts(
    pairs: &[strato_proto::config::AddressPair],
    port_mac: [u8; 6],
) -> impl Iterator<Item = (Ipv4Addr, [u8; 6])> + '_ {
    pairs.iter().filter_map(move |p| {
        let n = pair_net(&p.ip_address)?;
        (n.prefix() == 32).then(|| (n.ip(), parse_mac(&p.mac_address).unwrap_or(port_mac)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strato_proto::config::{AddressPair, HostRoute};
    use strato_proto::config::{PortEntry, RemoteEntry, RouterEntry, RouterInterface};

    fn net(
        id: &str,
        vni: u32,
        router: Option<&str>,
        cidr: &str,
        gw: &str,
        gw_mac: Option<&str>,
    ) -> Entry {
        Entry::Network(NetworkEntry {
            id: id.into(),
            vni,
            mtu: 1450,
            admin_state_up: true,
            router_id: router.map(Into::into),
            subnets: vec![SubnetEntry {
                id: format!("s-{id}"),
                cidr: cidr.into(),
                gateway_ip: Some(gw.into()),
                gateway_mac: gw_mac.map(Into::into),
                enable_dhcp: true,
                dns_nameservers: vec![],
                host_routes: vec![],
            }],
        })
    }

    fn port(id: &str, netid: &str, mac: &str, ip: &str) -> Entry {
        Entry::Port(PortEntry {
            id: id.into(),
            tap: format!("tap{id}"),
            network_id: netid.into(),
            vni: 0,
            mtu: 1450,
            mac: mac.into(),
            ips: vec![(format!("s-{netid}"), ip.into())],
            port_security_enabled: true,
            allowed_address_pairs: vec![AddressPair {
                ip_address: "10.0.0.100/32".into(),
                mac_address: "fa:16:3e:00:00:99".into(),
            }],
            admin_state_up: true,
            security_groups: vec![],
        })
    }

    fn desired(entries: Vec<Entry>) -> BTreeMap<String, Entry> {
        entries.into_iter().map(|e| (e.key(), e)).collect()
    }

    #[test]
    fn vpc_tables() {
        let d = desired(vec![
            net(
                "a",
                200,
                Some("r"),
                "10.0.0.0/24",
                "10.0.0.1",
                Some("fa:16:3e:aa:00:01"),
            ),
            net(
                "b",
                100,
                Some("r"),
                "10.0.1.0/24",
                "10.0.1.1",
                Some("fa:16:3e:bb:00:01"),
            ),
            net("c", 300, None, "10.0.0.0/24", "10.0.0.1", None),
            port("p1", "a", "fa:16:3e:00:00:01", "10.0.0.5"),
            port("p3", "c", "fa:16:3e:00:00:03", "10.0.0.5"),
            port("px", "a", "fa:16:3e:00:00:0x", "10.0.0.6"), // bad MAC: left out
            Entry::Remote(RemoteEntry {
                port_id: "p2".into(),
                network_id: "b".into(),
                vni: 100,
                mac: "fa:16:3e:00:00:02".into(),
                ips: vec!["10.0.1.7".into()],
                allowed_address_pairs: vec![],
                host: "h2".into(),
                underlay_ip: "198.18.1.3".into(),
                admin_state_up: true,
            }),
            Entry::Router(RouterEntry {
                id: "r".into(),
                admin_state_up: true,
                interfaces: vec![
                    RouterInterface {
                        port_id: "ra".into(),
                        subnet_id: "s-a".into(),
                        network_id: "a".into(),
                        vni: 200,
                        cidr: "10.0.0.0/24".into(),
                        ip: "10.0.0.1".into(),
                        mac: "fa:16:3e:aa:00:01".into(),
                    },
                    RouterInterface {
                        port_id: "rb".into(),
                        subnet_id: "s-b".into(),
                        network_id: "b".into(),
                        vni: 100,
                        cidr: "10.0.1.0/24".into(),
                        ip: "10.0.1.1".into(),
                        mac: "fa:16:3e:bb:00:01".into(),
                    },
                ],
                routes: vec![
                    HostRoute {
                        destination: "192.168.0.0/16".into(),
                        nexthop: "10.0.1.7".into(),
                    },
                    HostRoute {
                        destination: "10.0.0.0/24".into(),
                        nexthop: "10.0.1.7".into(),
                    },
                ],
                external: None,
            }),
        ]);
        let taps = |t: &str| match t {
            "tapp1" => Some(11),
            "tapp3" => Some(13),
            "tappx" => Some(14),
            _ => None,
        };
        let mut next = 0;
        let t = build(
            &d,
            &taps,
            &mut |_| {
                next += 1;
                next
            },
            &no_policy,
        );
        // Domains: the VPC is 100 (smallest VNI), the lone network its own.
        assert_eq!(t.vnis[&200].domain, 100);
        assert_eq!(t.vnis[&100].domain, 100);
        assert_eq!(t.vnis[&300].domain, 300);
        let p1 = t.ports[&11];
        assert_eq!((p1.domain, p1.vni, p1.gw_ip), (100, 200, [10, 0, 0, 1]));
        assert_eq!(p1.gw_mac, [0xfa, 0x16, 0x3e, 0xaa, 0, 1]);
        assert_eq!(p1.flags, PORT_F_PRESENT | PORT_F_SECURITY | PORT_F_ADMIN_UP);
        let p3 = t.ports[&13];
        assert_eq!((p3.domain, p3.gw_mac, p3.gw_ip), (300, [0; 6], [0; 4]));
        assert!(
            !t.ports.contains_key(&14),
            "port with a bad MAC is left out"
        );
        // Same address in two domains: two endpoints.
        let e1 = t.endpoints[&EpKey {
            domain: 100,
            ip: [10, 0, 0, 5],
        }];
        let e3 = t.endpoints[&EpKey {
            domain: 300,
            ip: [10, 0, 0, 5],
        }];
        assert_eq!((e1.kind, e1.ifindex), (EP_LOCAL, 11));
        assert_eq!((e3.kind, e3.ifindex), (EP_LOCAL, 13));
        let r = t.endpoints[&EpKey {
            domain: 100,
            ip: [10, 0, 1, 7],
        }];
        assert_eq!(
            (r.kind, r.vni, r.underlay),
            (EP_REMOTE, 100, [198, 18, 1, 3])
        );
        assert_eq!(r.gw_mac, [0xfa, 0x16, 0x3e, 0xbb, 0, 1]);
        let g = t.endpoints[&EpKey {
            domain: 100,
            ip: [10, 0, 1, 1],
        }];
        assert_eq!(g.kind, EP_GATEWAY);
        // The /32 pair is an endpoint with its own MAC, and an allowed source.
        let pair = t.endpoints[&EpKey {
            domain: 100,
            ip: [10, 0, 0, 100],
        }];
        assert_eq!(pair.mac, [0xfa, 0x16, 0x3e, 0, 0, 0x99]);
        assert!(t
            .allowed
            .contains_key(&(11, "10.0.0.100/32".parse().unwrap())));
        // Routes: connected subnets, the static route; the static route for a
        // connected prefix does not replace it.
        assert_eq!(
            t.routes[&(100, "10.0.0.0/24".parse().unwrap())].kind,
            ROUTE_CONNECTED
        );
        let s = t.routes[&(100, "192.168.0.0/16".parse().unwrap())];
        assert_eq!((s.kind, s.nexthop), (ROUTE_NEXTHOP, [10, 0, 1, 7]));
        // A network without a router has no routes: nothing is routed there.
        assert!(!t.routes.keys().any(|(d, _)| *d == 300));

        // Diff: identical -> empty; one port gone -> its rows deleted.
        assert!(t.diff(&t).is_empty());
        let mut d2 = d.clone();
        d2.remove("port/p3");
        let t2 = build(&d2, &taps, &mut |_| 2, &no_policy);
        let diff = t2.diff(&t);
        assert_eq!(diff.ports.1, vec![13]);
        assert!(diff.endpoints.1.contains(&EpKey {
            domain: 300,
            ip: [10, 0, 0, 5]
        }));
    }
}

#[cfg(test)]
mod scale {
    use std::collections::BTreeSet;

    use super::*;
    use strato_proto::config::{NetworkEntry, RemoteEntry, SubnetEntry};

    /// 10,000 remote ports: every one becomes its endpoint, and the diff
    /// against the same tables is empty, against nothing is every entry,
    /// and after one port moved host is that one endpoint. (How long build
    /// and diff take is the benchmarks' business, not this test's.)
    #[test]
    fn ten_thousand_remote_ports() {
        let mut d = BTreeMap::new();
        let n = Entry::Network(NetworkEntry {
            id: "n".into(),
            vni: 100,
            mtu: 1450,
            admin_state_up: true,
            router_id: None,
            subnets: vec![SubnetEntry {
                id: "s".into(),
                cidr: "10.0.0.0/16".into(),
                gateway_ip: Some("10.0.0.1".into()),
                gateway_mac: None,
                enable_dhcp: true,
                dns_nameservers: vec![],
                host_routes: vec![],
            }],
        });
        d.insert(n.key(), n);
        let remote = |i: u32, underlay: &str| {
            Entry::Remote(RemoteEntry {
                port_id: format!("p{i}"),
                network_id: "n".into(),
                vni: 100,
                mac: format!("fa:16:3e:00:{:02x}:{:02x}", i >> 8, i & 0xff),
                ips: vec![format!("10.0.{}.{}", i >> 8, i & 0xff)],
                allowed_address_pairs: vec![],
                host: "h".into(),
                underlay_ip: underlay.into(),
                admin_state_up: true,
            })
        };
        for i in 0..10_000u32 {
            let e = remote(i, "198.18.1.3");
            d.insert(e.key(), e);
        }
        let a = build(&d, &|_| None, &mut |_| 0, &no_policy);
        let got: BTreeSet<_> = a
            .endpoints
            .iter()
            .filter(|(_, e)| e.kind == EP_REMOTE)
            .map(|(k, e)| (k.ip, e.mac, e.vni, e.underlay))
            .collect();
        let want: BTreeSet<_> = (0..10_000u32)
            .map(|i| {
                let (hi, lo) = ((i >> 8) as u8, (i & 0xff) as u8);
                (
                    [10, 0, hi, lo],
                    [0xfa, 0x16, 0x3e, 0, hi, lo],
                    100,
                    [198, 18, 1, 3],
                )
            })
            .collect();
        assert_eq!(got.len(), 10_000);
        assert!(got == want, "the remote endpoints are not the 10,000 ports");
        assert!(a.diff(&a).is_empty(), "no change, no write");
        let all = a.diff(&Tables::default());
        assert_eq!(all.endpoints.0.len(), a.endpoints.len());
        assert!(all.endpoints.1.is_empty());
        let gone = Tables::default().diff(&a);
        assert_eq!(gone.endpoints.1.len(), a.endpoints.len());
        // Port 4242 moved to another host: one endpoint rewritten.
        let moved = remote(4242, "198.18.1.9");
        d.insert(moved.key(), moved);
        let b = build(&d, &|_| None, &mut |_| 0, &no_policy);
        let step = b.diff(&a);
        assert_eq!(step.len(), 1, "{step:?}");
        let (k, e) = step.endpoints.0[0];
        assert_eq!((k.ip, e.underlay), ([10, 0, 16, 146], [198, 18, 1, 9]));
    }
}
