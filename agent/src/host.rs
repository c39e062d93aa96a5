//! Host networking around the dataplane: the uplink's underlay address, its
//! next hop kept resolved in the kernel's neighbour table, and the DHCP
//! leases the DHCP thread answers with.
//!
//! Lease computation ([`lease_for`], [`leases`]) is pure and tested here.
//! This module never writes eBPF maps and never allocates addresses: a
//! lease is a port's configured address.

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use strato_dataplane::tables::Tables;
use strato_proto::{
    config::{Entry, PortEntry},
    naming::parse_mac,
};

use crate::{dhcp, sys};

/// Lease time handed to VMs (Neutron's default).
const LEASE_SECS: u32 = 86_400;

/// DHCP leases by tap ifindex, shared with the DHCP server thread.
pub(crate) type Leases = Arc<RwLock<HashMap<u32, dhcp::Lease>>>;

#[derive(Default)]
pub(crate) struct HostNet {
    /// The uplink's IPv4 address, refreshed on every full reconcile (a
    /// netlink dump is too costly to repeat on every update).
    pub underlay_ip: Option<String>,
    /// When the uplink's next hop was last checked.
    neighbour_checked: Option<Instant>,
    pub leases: Leases,
}

impl HostNet {
    /// Reads the first uplink's address again.
    pub fn refresh_underlay(&mut self, uplinks: &[String]) {
        self.underlay_ip = uplinks
            .iter()
            .find_map(|u| sys::ipv4_of(u))
            .map(|ip| ip.to_string());
    }

    /// Keeps the uplink's next hop resolved in the kernel's neighbour table,
    /// where the encapsulation path (`bpf_fib_lookup`) reads it: the host
    /// itself sends nothing on the underlay, so nothing else would.
    pub fn warm_neighbour<'a>(&mut self, ifaces: impl Iterator<Item = &'a String>) {
        if self
            .neighbour_checked
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        self.neighbour_checked = Some(Instant::now());
        for up in ifaces {
            let Some(gw) = sys::gateways_of(up).into_iter().next() else {
                continue;
            };
            if sys::neighbour_resolved(up, gw) {
                continue;
            }
            // Any datagram makes the kernel resolve the next hop; the discard
            // port of the fabric router (a namespace of this region).
            if let Ok(sock) = std::net::UdpSocket::bind("0.0.0.0:0") {
                let _ = sock.send_to(b"strato", (gw, 9));
                tracing::debug!(uplink = %up, gateway = %gw, "resolving the underlay next hop");
            }
        }
    }

    /// Replaces every lease.
    pub fn set_leases(&self, all: HashMap<u32, dhcp::Lease>) {
        *self.leases.write().expect("leases lock poisoned") = all;
    }

    /// Sets (or, with `None`, removes) the lease of one tap.
    pub fn set_lease(&self, ifindex: u32, lease: Option<dhcp::Lease>) {
        let mut leases = self.leases.write().expect("leases lock poisoned");
        match lease {
            Some(l) => leases.insert(ifindex, l),
            None => leases.remove(&ifindex),
        };
    }
}

/// The DHCP lease of every written port whose subnet has DHCP enabled.
pub(crate) fn leases(
    desired: &BTreeMap<String, Entry>,
    have: &Tables,
) -> HashMap<u32, dhcp::Lease> {
    let by_mac: BTreeMap<[u8; 6], u32> = have.ports.iter().map(|(i, p)| (p.mac, *i)).collect();
    let mut out = HashMap::new();
    for e in desired.values() {
        let Entry::Port(p) = e else { continue };
        let Some(ifindex) = parse_mac(&p.mac).and_then(|m| by_mac.get(&m).copied()) else {
            continue;
        };
        if let Some(l) = lease_for(desired, p) {
            out.insert(ifindex, l);
        }
    }
    out
}

/// The DHCP lease of one port, if its subnet has DHCP enabled.
pub(crate) fn lease_for(desired: &BTreeMap<String, Entry>, p: &PortEntry) -> Option<dhcp::Lease> {
    let Some(Entry::Network(n)) = desired.get(&format!("network/{}", p.network_id)) else {
        return None;
    };
    let mac = parse_mac(&p.mac)?;
    let (sid, ip) = p.ips.first()?;
    let s = n.subnets.iter().find(|s| &s.id == sid)?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let cidr: ipnetwork::Ipv4Network = s.cidr.parse().ok()?;
    if !s.enable_dhcp {
        return None;
    }
    let gateway = s.gateway_ip.as_deref().and_then(|g| g.parse().ok());
    let server_mac = s
        .gateway_mac
        .as_deref()
        .and_then(parse_mac)
        .unwrap_or([0xfa, 0x16, 0x3e, 0xff, 0xff, 0xfe]);
    Some(dhcp::Lease {
        client_mac: mac,
        ip,
        prefix_len: cidr.prefix(),
        gateway,
        server_ip: gateway.unwrap_or_else(|| cidr.nth(1).unwrap_or(cidr.ip())),
        server_mac,
        dns: s
            .dns_nameservers
            .iter()
            .filter_map(|d| d.parse().ok())
            .collect(),
        routes: s
            .host_routes
            .iter()
            .filter_map(|r| Some((r.destination.parse().ok()?, r.nexthop.parse().ok()?)))
            .collect(),
        mtu: n.mtu as u16,
        lease_secs: LEASE_SECS,
        domain_name: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::tests::{network, port};

    fn desired(entries: Vec<Entry>) -> BTreeMap<String, Entry> {
        entries.into_iter().map(|e| (e.key(), e)).collect()
    }

    #[test]
    fn a_lease_is_the_ports_address_in_its_subnet() {
        let d = desired(vec![network("n1", "10.0.0.0/24", true)]);
        let Entry::Port(p) = port("p1", "n1", "tap1", "fa:16:3e:00:00:01", "10.0.0.5") else {
            unreachable!()
        };
        let l = lease_for(&d, &p).expect("a DHCP-enabled subnet gives a lease");
        assert_eq!(l.client_mac, [0xfa, 0x16, 0x3e, 0, 0, 1]);
        assert_eq!(l.ip, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(l.prefix_len, 24);
        assert_eq!(l.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(l.server_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(l.server_mac, [0xfa, 0x16, 0x3e, 0, 0, 0xfe]);
        assert_eq!(
            l.dns,
            vec![Ipv4Addr::new(10, 9, 9, 9)],
            "unparsable servers skipped"
        );
        assert_eq!((l.mtu, l.lease_secs), (1450, LEASE_SECS));
    }

    #[test]
    fn no_lease_without_dhcp_network_or_valid_mac() {
        let Entry::Port(p) = port("p1", "n1", "tap1", "fa:16:3e:00:00:01", "10.0.0.5") else {
            unreachable!()
        };
        assert!(lease_for(&desired(vec![network("n1", "10.0.0.0/24", false)]), &p).is_none());
        assert!(lease_for(&desired(vec![]), &p).is_none(), "network missing");
        let d = desired(vec![network("n1", "10.0.0.0/24", true)]);
        let mut bad = p.clone();
        bad.mac = "not a mac".into();
        assert!(lease_for(&d, &bad).is_none());
        let mut other = p.clone();
        other.ips = vec![("sub-2".into(), "10.0.0.5".into())];
        assert!(lease_for(&d, &other).is_none(), "subnet not in the network");
    }

    #[test]
    fn a_subnet_without_gateway_is_served_from_its_first_address() {
        let mut net = network("n1", "10.0.0.0/24", true);
        if let Entry::Network(n) = &mut net {
            n.subnets[0].gateway_ip = None;
            n.subnets[0].gateway_mac = None;
        }
        let Entry::Port(p) = port("p1", "n1", "tap1", "fa:16:3e:00:00:01", "10.0.0.5") else {
            unreachable!()
        };
        let l = lease_for(&desired(vec![net]), &p).expect("a lease");
        assert_eq!(l.gateway, None);
        assert_eq!(l.server_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(l.server_mac, [0xfa, 0x16, 0x3e, 0xff, 0xff, 0xfe]);
    }

    #[test]
    fn leases_go_to_the_taps_of_written_ports_only() {
        let d = desired(vec![
            network("n1", "10.0.0.0/24", true),
            port("p1", "n1", "tap1", "fa:16:3e:00:00:01", "10.0.0.5"),
            port("p2", "n1", "tap2", "fa:16:3e:00:00:02", "10.0.0.6"),
        ]);
        let mut have = Tables::default();
        let info = dataplane_common::PortInfo {
            mac: [0xfa, 0x16, 0x3e, 0, 0, 1],
            ..Default::default()
        };
        have.ports.insert(7, info);
        let l = leases(&d, &have);
        assert_eq!(l.len(), 1, "p2 is not written");
        assert_eq!(l[&7].ip, Ipv4Addr::new(10, 0, 0, 5));
    }
}
