//! Program tests for elastic IPs (1:1 NAT): compiled configuration -> maps
//! -> packet, one fixture row per behaviour.
//!
//! The world: VPC router r1 with net a (VNI 100, 10.1.0.0/24, gateway
//! 10.1.0.1) and an external gateway on the external network (VNI 900,
//! gateway port 198.51.100.2), leaving through the gateway host 198.18.2.2.
//! a1 on tp1 (10.1.0.5) has the elastic IP 198.51.100.10; a2 on tp2
//! (10.1.0.6) has none. The internet client is 203.0.113.5.
//!
//! Expected outputs are built from scratch with etherparse (which computes
//! every checksum over the translated packet), never with the dataplane's
//! code: a wrong incremental update shows as a byte difference.

use dataplane_common::{DropReason::*, HostInfo, HOST_F_GATEWAY};
use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type, PacketBuilder};
use strato::dataplane::Attach;
use strato_tests::packets::{self, L3};
use strato_tests::progtest::{
    Expect, Expected, Fixture, Net, Port, ProgramTester, Router, World, OTHER_LINK,
    OTHER_LINK_NEXTHOP_MAC, OTHER_LINK_UNDERLAY, UNDERLAY_IP, UNDERLAY_NEXTHOP_MAC, UPLINK,
    UPLINK_MAC,
};

const fn mac(tail: [u8; 3]) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, tail[0], tail[1], tail[2]]
}

const GW_A_MAC: [u8; 6] = mac([0xa0, 0, 1]);
const A1_MAC: [u8; 6] = mac([0, 1, 5]);
const A1: [u8; 4] = [10, 1, 0, 5];
const A2_MAC: [u8; 6] = mac([0, 1, 6]);
const A2: [u8; 4] = [10, 1, 0, 6];
const EXT_VNI: u32 = 900;
/// The router's gateway port on the external network.
const EXT_PORT_MAC: [u8; 6] = mac([0xe0, 0, 1]);
const EXT_PORT_IP: [u8; 4] = [198, 51, 100, 2];
const EIP: [u8; 4] = [198, 51, 100, 10];
/// An elastic IP bound on another host (gateway rows).
const EIP_REMOTE: [u8; 4] = [198, 51, 100, 11];
const HOST_REMOTE: [u8; 4] = [198, 18, 2, 9];
const GATEWAY_HOST: [u8; 4] = [198, 18, 2, 2];
const CLIENT: [u8; 4] = [203, 0, 113, 5];
/// The MACs of a frame as a gateway host tunnels it (the external network's).
const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x09, 0x09, 0x09];
const PEER_HOST_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x02, 0x02, 0x02];

const PAYLOAD: &[u8] = b"strato elastic ip payload";

fn world(gateway: bool) -> World {
    World::new()
        .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
        .router(Router::new("r1").interface("sa", GW_A_MAC).external(
            EXT_VNI,
            EXT_PORT_IP,
            EXT_PORT_MAC,
            GATEWAY_HOST,
        ))
        .port(Port::local("a1", "a", "tp1", A1_MAC, A1))
        .port(Port::local("a2", "a", "tp2", A2_MAC, A2))
        .floating_ip(EIP, EXT_VNI, "a1", A1, UNDERLAY_IP, gateway)
        .floating_ip(EIP_REMOTE, EXT_VNI, "a2", A2, HOST_REMOTE, true)
}

fn tester(gateway: bool) -> ProgramTester {
    let mut t = ProgramTester::in_test_net();
    t.install(&world(gateway));
    t
}

fn run_rows(t: &mut ProgramTester, rows: Vec<Fixture>) {
    eprintln!("{} rows", rows.len());
    for f in rows {
        t.check(&f);
    }
}

fn port(t: &ProgramTester, d: &str, from: &str, input: Vec<u8>, expect: Expect) -> Fixture {
    Fixture::new(d, input, expect)
        .on(Attach::Port)
        .at(t.ifindex(from))
}

fn uplink(t: &ProgramTester, d: &str, input: Vec<u8>, expect: Expect) -> Fixture {
    Fixture::new(d, input, expect)
        .on(Attach::Uplink)
        .at(t.ifindex(UPLINK))
}

fn udp(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
    packets::udp4(src_mac, dst_mac, src, dst, ttl, 40000, 5000, PAYLOAD)
}

fn tcp(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
    packets::tcp4(src_mac, dst_mac, src, dst, ttl, 443, PAYLOAD)
}

fn ping(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
    packets::ping4(src_mac, dst_mac, src, dst, ttl, 7, 1, PAYLOAD)
}

/// An ICMP port unreachable `src` -> `dst` quoting the first 28 bytes
/// (IPv4 + UDP headers) of the UDP packet `quoted_src` -> `quoted_dst`.
fn port_unreachable(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    quoted_src: [u8; 4],
    quoted_dst: [u8; 4],
) -> Vec<u8> {
    let quoted = udp(ROUTER_MAC, ROUTER_MAC, quoted_src, quoted_dst, 60);
    let quote = &quoted[L3..L3 + 28];
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, ttl)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Port,
        ));
    let mut out = Vec::new();
    b.write(&mut out, quote).expect("icmp error");
    out
}

/// A non-first fragment (offset 8 units, no L4 header: its data is the same
/// bytes whatever the addresses) of a UDP datagram.
fn later_fragment(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
) -> Vec<u8> {
    let mut f = udp(src_mac, dst_mac, A1, CLIENT, ttl);
    f[L3 + 6] = 0x00;
    f[L3 + 7] = 8;
    f[L3 + 12..L3 + 16].copy_from_slice(&src);
    f[L3 + 16..L3 + 20].copy_from_slice(&dst);
    packets::fix_ipv4_checksum(&mut f);
    f
}

/// `inner` tunnelled on `vni` to `underlay` by this host (see
/// program_vpc.rs for the outer header's rules).
fn encapsulated(inner: &[u8], vni: u32, underlay: [u8; 4]) -> Expected {
    let udp_len = 8 + 8 + inner.len();
    let mut ip = etherparse::Ipv4Header::new(
        udp_len as u16,
        64,
        etherparse::IpNumber::UDP,
        UNDERLAY_IP,
        underlay,
    )
    .expect("small");
    ip.dont_fragment = true;
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = UNDERLAY_NEXTHOP_MAC.to_vec();
    out.extend_from_slice(&UPLINK_MAC);
    out.extend_from_slice(&[0x08, 0x00]);
    out.extend_from_slice(&ip.to_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&4789u16.to_be_bytes());
    out.extend_from_slice(&(udp_len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&packets::vxlan_header(0x08, vni));
    out.extend_from_slice(inner);
    Expected::from(out).any(34..36)
}

/// A VXLAN frame from another host to this one.
fn vxlan_in(vni: u32, inner: &[u8]) -> Vec<u8> {
    packets::vxlan(
        PEER_HOST_MAC,
        UPLINK_MAC,
        GATEWAY_HOST,
        UNDERLAY_IP,
        51234,
        0x08,
        vni,
        inner,
    )
}

#[test]
fn outbound_source_becomes_the_elastic_ip() {
    let mut t = tester(false);
    let up = t.ifindex(UPLINK);
    let out = |inner: Vec<u8>| encapsulated(&inner, EXT_VNI, GATEWAY_HOST);
    let rows = vec![
        port(&t, "a1 -> internet UDP: source 198.51.100.10, TTL-1, tunnelled on VNI 900 to the gateway host", "tp1",
            udp(A1_MAC, GW_A_MAC, A1, CLIENT, 64), Expect::Forward)
            .output(out(udp(EXT_PORT_MAC, EXT_PORT_MAC, EIP, CLIENT, 63))).to(up),
        port(&t, "a1 -> internet TCP: TCP checksum follows the pseudo-header", "tp1",
            tcp(A1_MAC, GW_A_MAC, A1, CLIENT, 64), Expect::Forward)
            .output(out(tcp(EXT_PORT_MAC, EXT_PORT_MAC, EIP, CLIENT, 63))).to(up),
        port(&t, "a1 -> internet ICMP echo: only the IPv4 header changes", "tp1",
            ping(A1_MAC, GW_A_MAC, A1, CLIENT, 64), Expect::Forward)
            .output(out(ping(EXT_PORT_MAC, EXT_PORT_MAC, EIP, CLIENT, 63))).to(up),
        port(&t, "a1's ICMP error about a datagram the client sent to its EIP: outer source and quoted destination become the EIP", "tp1",
            port_unreachable(A1_MAC, GW_A_MAC, A1, CLIENT, 64, CLIENT, A1), Expect::Forward)
            .output(out(port_unreachable(EXT_PORT_MAC, EXT_PORT_MAC, EIP, CLIENT, 63, CLIENT, EIP))).to(up),
        port(&t, "a1 -> internet, a later fragment (no L4 header): translated, IPv4 checksum only", "tp1",
            later_fragment(A1_MAC, GW_A_MAC, A1, CLIENT, 64), Expect::Forward)
            .output(out(later_fragment(EXT_PORT_MAC, EXT_PORT_MAC, EIP, CLIENT, 63))).to(up),
        port(&t, "a2 (no elastic IP, no SNAT yet) -> internet: dropped", "tp2",
            udp(A2_MAC, GW_A_MAC, A2, CLIENT, 64), Expect::Drop(NoElasticIp)),
    ];
    run_rows(&mut t, rows);
}

#[test]
fn inbound_destination_becomes_the_fixed_ip() {
    let mut t = tester(false);
    let tp1 = t.ifindex("tp1");
    let routed = |f: Vec<u8>| Expected::from(f);
    let rows = vec![
        uplink(&t, "VNI 900 UDP to a1's EIP: destination 10.1.0.5, TTL-1, a1's MACs, to tp1",
            vxlan_in(EXT_VNI, &udp(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP, 64)), Expect::Forward)
            .output(routed(udp(GW_A_MAC, A1_MAC, CLIENT, A1, 63))).to(tp1),
        uplink(&t, "VNI 900 TCP to a1's EIP",
            vxlan_in(EXT_VNI, &tcp(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP, 64)), Expect::Forward)
            .output(routed(tcp(GW_A_MAC, A1_MAC, CLIENT, A1, 63))).to(tp1),
        uplink(&t, "VNI 900 ICMP echo to a1's EIP",
            vxlan_in(EXT_VNI, &ping(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP, 64)), Expect::Forward)
            .output(routed(ping(GW_A_MAC, A1_MAC, CLIENT, A1, 63))).to(tp1),
        uplink(&t, "VNI 900 ICMP error about a1's datagram (quoted source the EIP): both addresses back to 10.1.0.5",
            vxlan_in(EXT_VNI, &port_unreachable(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP, 64, EIP, CLIENT)), Expect::Forward)
            .output(routed(port_unreachable(GW_A_MAC, A1_MAC, CLIENT, A1, 63, A1, CLIENT))).to(tp1),
        uplink(&t, "VNI 900 later fragment to a1's EIP",
            vxlan_in(EXT_VNI, &later_fragment(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP, 64)), Expect::Forward)
            .output(routed(later_fragment(GW_A_MAC, A1_MAC, CLIENT, A1, 63))).to(tp1),
        uplink(&t, "VNI 900 to a1's EIP with TTL 1: dropped",
            vxlan_in(EXT_VNI, &udp(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP, 1)), Expect::Drop(TtlExceeded)),
        uplink(&t, "VNI 900 to an EIP bound on another host, on a host that is no gateway: dropped",
            vxlan_in(EXT_VNI, &udp(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP_REMOTE, 64)), Expect::Drop(UnknownElasticIp)),
        uplink(&t, "VNI 900 to an address that is no EIP, on a host that is no gateway: dropped",
            vxlan_in(EXT_VNI, &udp(ROUTER_MAC, EXT_PORT_MAC, EIP, CLIENT, 64)), Expect::Drop(UnknownElasticIp)),
    ];
    run_rows(&mut t, rows);
}

#[test]
fn gateway_steers_and_forwards() {
    let mut t = tester(true);
    let (up, ext) = (t.ifindex(UPLINK), t.ifindex(OTHER_LINK));
    let ext_mac: [u8; 6] = [0x02, 0x00, 0x5e, 0x0e, 0x0e, 0x0e];
    let host = HostInfo {
        flags: HOST_F_GATEWAY,
        ext_ifindex: ext,
        ext_slot: t.slot_for(ext),
        ext_mac,
        ..t.default_host()
    };
    t.set_host(host);
    let from_internet = udp(ROUTER_MAC, ext_mac, CLIENT, EIP_REMOTE, 64);
    let outbound = udp(EXT_PORT_MAC, EXT_PORT_MAC, EIP, OTHER_LINK_UNDERLAY, 63);
    let mut sent = outbound.clone();
    sent[0..6].copy_from_slice(&OTHER_LINK_NEXTHOP_MAC);
    let ext_arp = packets::arp(
        [0xff; 6], ROUTER_MAC, 1, ROUTER_MAC, CLIENT, [0; 6], EIP_REMOTE,
    );
    let ext_arp_reply = packets::arp(
        ROUTER_MAC, ext_mac, 2, ext_mac, EIP_REMOTE, ROUTER_MAC, CLIENT,
    );
    let ext_row = |d: &str, input: Vec<u8>, expect: Expect| {
        Fixture::new(d, input, expect).on(Attach::External).at(ext)
    };
    let rows = vec![
        ext_row("internet -> EIP bound on another host: tunnelled unchanged on VNI 900 to that host",
            from_internet.clone(), Expect::Forward)
            .output(encapsulated(&from_internet, EXT_VNI, HOST_REMOTE)).to(up),
        ext_row("ARP for an EIP on the external network: answered with the external interface's MAC",
            ext_arp, Expect::Answer).output(ext_arp_reply),
        ext_row("internet -> an address that is no EIP: to the gateway's own stack",
            udp(ROUTER_MAC, ext_mac, CLIENT, [198, 51, 100, 99], 64), Expect::Pass(strato_tests::progtest::Class::Ipv4)),
        uplink(&t, "VNI 900 from a VM's host (source already its EIP): out of the external interface to the FIB's next hop",
            vxlan_in(EXT_VNI, &outbound), Expect::Forward)
            .output(Expected::from(sent).any(6..12)).to(ext),
    ];
    run_rows(&mut t, rows);
}
