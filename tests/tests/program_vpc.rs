//! Program tests for the VPC pipeline: compiled configuration -> maps ->
//! packet, one fixture row per behaviour.
//!
//! The world (written with the agent's own table builder into a fresh test
//! network, see `strato_tests::progtest`):
//!
//! - VPC "blue", router r1: net a (VNI 100, MTU 1500, 10.1.0.0/24, gateway
//!   10.1.0.1) and net b (VNI 101, MTU 1450, 10.1.1.0/24, gateway 10.1.1.1);
//!   static routes 192.168.0.0/16 via b1 and 172.16.0.0/12 via 10.1.1.99
//!   (nobody). Local ports: a1 on tp1 (allowed address pairs 10.1.0.64/28,
//!   10.1.0.200/32 with its own MAC, 10.1.0.201, 10.1.0.128/28 with its own
//!   MAC), a2 on tp2, b1 on tp3, a6 on tp6 (port security off), a7 on tp7
//!   (admin down). Remote ports: a3 and b3 behind the resolved underlay
//!   next hop, a4 behind an unresolved neighbour, a5 behind no route, a9
//!   behind a route through up1 (not the uplink), a10 on net a's second
//!   subnet 10.1.2.0/24, which no router interface is on.
//! - VPC "red", router r2, the same CIDRs: net x (VNI 200, 10.1.0.0/24) with
//!   x1 on tp4 (10.1.0.5, a1's address) and x2 on tp5 (10.1.0.6, a2's), a
//!   remote x3 (10.1.0.20); net y (VNI 201, 10.1.1.0/24) with a remote y3
//!   (10.1.1.7, b3's address) on another host than b3.
//! - tp8 is not a port.
//!
//! Expected outputs are computed here, with etherparse and by hand, never
//! with the dataplane's code. Rows whose frame leaves by redirect are also
//! sent through the program attached to their ingress interface, which
//! shows the interface they leave by.

use dataplane_common::{DropReason::*, HostInfo};
use etherparse::{
    icmpv4::{DestUnreachableHeader, TimeExceededCode},
    EtherType, Ethernet2Header, Icmpv4Header, Icmpv4Type, IpNumber, Ipv4Dscp, Ipv4Header,
};
use strato_dataplane::Attach;
use strato_tests::packets::{self, IP_TTL, L3, L4};
use strato_tests::progtest::{
    encapsulated_frame, mac, vm, Class, Expect, Expected, Net, Port, ProgramTester, Router, Vm,
    World, OTHER_LINK_UNDERLAY, UNDERLAY_IP, UNRESOLVED_UNDERLAY, UNROUTED_UNDERLAY, UPLINK,
    UPLINK_MAC,
};

// VPC blue.
const GW_A: [u8; 4] = [10, 1, 0, 1];
const GW_A_MAC: [u8; 6] = mac([0xa0, 0, 1]);
const GW_B: [u8; 4] = [10, 1, 1, 1];
const GW_B_MAC: [u8; 6] = mac([0xb0, 0, 1]);
const A1: Vm = vm([0, 1, 5], [10, 1, 0, 5], "tp1");
const A2: Vm = vm([0, 1, 6], [10, 1, 0, 6], "tp2");
const B1: Vm = vm([0, 2, 5], [10, 1, 1, 5], "tp3");
const A6: Vm = vm([0, 1, 0x0a], [10, 1, 0, 10], "tp6");
const A7: Vm = vm([0, 1, 0x0b], [10, 1, 0, 11], "tp7");
const A3: Vm = vm([0, 1, 7], [10, 1, 0, 7], "");
const B3: Vm = vm([0, 2, 7], [10, 1, 1, 7], "");
const A4: Vm = vm([0, 1, 8], [10, 1, 0, 8], "");
const A5: Vm = vm([0, 1, 9], [10, 1, 0, 9], "");
const A9: Vm = vm([0, 1, 0x0e], [10, 1, 0, 14], "");
/// On net a's second subnet, 10.1.2.0/24, which no router interface is on.
const A10: Vm = vm([0, 1, 0x10], [10, 1, 2, 5], "");
const HOST_A3: [u8; 4] = [198, 18, 2, 2];
const HOST_B3: [u8; 4] = [198, 18, 2, 3];
const PAIR_MAC_1: [u8; 6] = mac([0, 0xaa, 0xaa]);
const PAIR_MAC_2: [u8; 6] = mac([0, 0xbb, 0xbb]);
// VPC red.
const GW_X_MAC: [u8; 6] = mac([0xc0, 0, 1]);
const GW_Y_MAC: [u8; 6] = mac([0xd0, 0, 1]);
const X1: Vm = vm([0, 3, 5], [10, 1, 0, 5], "tp4");
const X2: Vm = vm([0, 3, 6], [10, 1, 0, 6], "tp5");
const X3: Vm = vm([0, 3, 0x20], [10, 1, 0, 20], "");
const Y3: Vm = vm([0, 4, 7], [10, 1, 1, 7], "");
const HOST_Y3: [u8; 4] = [198, 18, 2, 4];
/// A MAC nobody has.
const STRANGER: [u8; 6] = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];
/// A host on the underlay sending VXLAN to this one.
const PEER_HOST_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x02, 0x02, 0x02];

const PAYLOAD: &[u8] = b"strato program test payload";

fn world() -> World {
    World::new()
        .net(
            Net::new("a", 100)
                .mtu(1500)
                .subnet("sa", "10.1.0.0/24", "10.1.0.1")
                .subnet("sa2", "10.1.2.0/24", "10.1.2.1"),
        )
        .net(Net::new("b", 101).subnet("sb", "10.1.1.0/24", "10.1.1.1"))
        .router(
            Router::on("r1", &[("sa", GW_A_MAC), ("sb", GW_B_MAC)])
                .route("192.168.0.0/16", "10.1.1.5")
                .route("172.16.0.0/12", "10.1.1.99"),
        )
        .port(
            Port::local("a1", "a", A1.tap, A1.mac, A1.ip)
                .pair("10.1.0.64/28", None)
                .pair("10.1.0.200/32", Some(PAIR_MAC_1))
                .pair("10.1.0.201", None)
                .pair("10.1.0.128/28", Some(PAIR_MAC_2)),
        )
        .port(Port::local("a2", "a", A2.tap, A2.mac, A2.ip))
        .port(Port::local("b1", "b", B1.tap, B1.mac, B1.ip))
        .port(Port::local("a6", "a", A6.tap, A6.mac, A6.ip).no_security())
        .port(Port::local("a7", "a", A7.tap, A7.mac, A7.ip).admin_down())
        .port(Port::remote("a3", "a", HOST_A3, A3.mac, A3.ip))
        .port(Port::remote("b3", "b", HOST_B3, B3.mac, B3.ip))
        .port(Port::remote("a4", "a", UNRESOLVED_UNDERLAY, A4.mac, A4.ip))
        .port(Port::remote("a5", "a", UNROUTED_UNDERLAY, A5.mac, A5.ip))
        .port(Port::remote("a9", "a", OTHER_LINK_UNDERLAY, A9.mac, A9.ip))
        .port(Port::remote("a10", "a", HOST_A3, A10.mac, A10.ip))
        .net(Net::new("x", 200).subnet("sx", "10.1.0.0/24", "10.1.0.1"))
        .net(Net::new("y", 201).subnet("sy", "10.1.1.0/24", "10.1.1.1"))
        .router(Router::on("r2", &[("sx", GW_X_MAC), ("sy", GW_Y_MAC)]))
        .port(Port::local("x1", "x", X1.tap, X1.mac, X1.ip))
        .port(Port::local("x2", "x", X2.tap, X2.mac, X2.ip))
        .port(Port::remote("x3", "x", HOST_Y3, X3.mac, X3.ip))
        .port(Port::remote("y3", "y", HOST_Y3, Y3.mac, Y3.ip))
}

fn tester() -> ProgramTester {
    let mut t = ProgramTester::in_test_net();
    t.install(&world());
    t
}

// ---------------------------------------------------------------------------
// Frames and expected outputs.

fn udp(from: Vm, dst_mac: [u8; 6], dst: [u8; 4], ttl: u8) -> Vec<u8> {
    packets::udp4(from.mac, dst_mac, from.ip, dst, ttl, 40000, 5000, PAYLOAD)
}

/// A UDP frame whose IPv4 total length is `total`.
fn udp_sized(from: Vm, dst_mac: [u8; 6], dst: [u8; 4], total: usize) -> Vec<u8> {
    let payload = vec![0x5a; total - 28];
    packets::udp4(from.mac, dst_mac, from.ip, dst, 64, 40000, 5000, &payload)
}

fn ping(from: Vm, dst_mac: [u8; 6], dst: [u8; 4]) -> Vec<u8> {
    packets::ping4(from.mac, dst_mac, from.ip, dst, 64, 0x4242, 7, PAYLOAD)
}

/// who-has `target` tell `from` (broadcast).
fn who_has(from: Vm, target: [u8; 4]) -> Vec<u8> {
    who_has_from(from.mac, from.ip, target)
}

/// who-has `target` tell `sender` from `mac` (broadcast; the sender MAC
/// the Ethernet source).
fn who_has_from(mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    packets::arp([0xff; 6], mac, 1, mac, sender, [0; 6], target)
}

/// The ARP reply `owner_mac` owes the asker of `request`.
fn arp_reply(request: &[u8], owner_mac: [u8; 6]) -> Vec<u8> {
    let a = &request[14..42];
    let sha: [u8; 6] = a[8..14].try_into().expect("6");
    let spa: [u8; 4] = a[14..18].try_into().expect("4");
    let tpa: [u8; 4] = a[24..28].try_into().expect("4");
    let asker: [u8; 6] = request[6..12].try_into().expect("6");
    let mut r = packets::arp(asker, owner_mac, 2, owner_mac, tpa, sha, spa);
    r.extend_from_slice(&request[42..]);
    r
}

fn ipv4_header(f: &[u8]) -> Ipv4Header {
    Ipv4Header::from_slice(&f[L3..]).expect("an IPv4 header").0
}

fn eth(dst: [u8; 6], src: [u8; 6]) -> [u8; 14] {
    Ethernet2Header {
        source: src,
        destination: dst,
        ether_type: EtherType::IPV4,
    }
    .to_bytes()
}

/// `input` routed: TTL - 1 (header checksum recomputed), MACs rewritten.
fn routed(input: &[u8], dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let mut ip = ipv4_header(input);
    ip.time_to_live -= 1;
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = eth(dst_mac, src_mac).to_vec();
    out.extend_from_slice(&ip.to_bytes());
    out.extend_from_slice(&input[L3 + ip.header_len()..]);
    out
}

/// The echo reply to `request`: from the address and MAC it was sent to.
fn echo_reply(request: &[u8]) -> Vec<u8> {
    let req = ipv4_header(request);
    let mut ip = req.clone();
    ip.source = req.destination;
    ip.destination = req.source;
    ip.time_to_live = 64;
    ip.header_checksum = ip.calc_header_checksum();
    let (icmp, payload) = Icmpv4Header::from_slice(&request[L4..]).expect("an ICMP header");
    let Icmpv4Type::EchoRequest(echo) = icmp.icmp_type else {
        panic!("not an echo request");
    };
    let reply = Icmpv4Header::with_checksum(Icmpv4Type::EchoReply(echo), payload);
    let mut out = eth(
        request[6..12].try_into().expect("6"),
        request[0..6].try_into().expect("6"),
    )
    .to_vec();
    out.extend_from_slice(&ip.to_bytes());
    out.extend_from_slice(&reply.to_bytes());
    out.extend_from_slice(payload);
    out
}

/// The ICMP error a router interface (`gw`, `gw_mac`) sends the sender of
/// `original` (RFC 792/1812): TOS 0xc0 (internetwork control), TTL 64, the
/// original IP header and the first 20 bytes of its payload when it has
/// them (a TCP header up to its checksum), else the first 8 (at least what
/// RFC 792 asks for).
fn icmp_error(original: &[u8], ty: Icmpv4Type, gw: [u8; 4], gw_mac: [u8; 6]) -> Vec<u8> {
    let total = ipv4_header(original).total_len as usize;
    let quote = &original[L3..L3 + if total >= 40 { 40 } else { 28 }];
    let icmp = Icmpv4Header::with_checksum(ty, quote);
    let vm_ip: [u8; 4] = original[L3 + 12..L3 + 16].try_into().expect("4");
    let mut ip = Ipv4Header::new(
        (icmp.header_len() + quote.len()) as u16,
        64,
        IpNumber::ICMP,
        gw,
        vm_ip,
    )
    .expect("small");
    ip.dont_fragment = false;
    ip.dscp = Ipv4Dscp::try_new(0xc0 >> 2).expect("6 bits");
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = eth(original[6..12].try_into().expect("6"), gw_mac).to_vec();
    out.extend_from_slice(&ip.to_bytes());
    out.extend_from_slice(&icmp.to_bytes());
    out.extend_from_slice(quote);
    out
}

fn time_exceeded() -> Icmpv4Type {
    Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit)
}

fn unreachable(h: DestUnreachableHeader) -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(h)
}

/// `inner` in VXLAN `vni` to the host at `underlay`, as this host sends it
/// ([`encapsulated_frame`]), whose outer UDP source port is in the dynamic
/// range (RFC 7348 section 5) and whose IPv4 header checksums hold.
fn encapsulated(inner: &[u8], vni: u32, underlay: [u8; 4]) -> Expected {
    encapsulated_frame(inner, vni, underlay)
        .check("outer UDP source port in 49152..=65535", |f| {
            let p = u16::from_be_bytes([f[34], f[35]]);
            if p >= 49152 {
                Ok(())
            } else {
                Err(format!("source port {p}"))
            }
        })
        .check("IPv4 header checksums (outer and inner)", |f| {
            ipv4_checksum_ok(f)?;
            ipv4_checksum_ok(&f[50..])
        })
}

/// Verifies an untagged frame's IPv4 header checksum (etherparse's sum).
fn ipv4_checksum_ok(f: &[u8]) -> Result<(), String> {
    let h = Ipv4Header::from_slice(&f[L3..])
        .map_err(|e| format!("IPv4 header: {e}"))?
        .0;
    if h.header_checksum != h.calc_header_checksum() {
        return Err(format!(
            "IPv4 header checksum {:#06x}, want {:#06x}",
            h.header_checksum,
            h.calc_header_checksum()
        ));
    }
    Ok(())
}

/// IPv4 header checksum and the ICMP checksum over the ICMP message.
fn icmp_checksums_ok(f: &[u8]) -> Result<(), String> {
    ipv4_checksum_ok(f)?;
    let h = ipv4_header(f);
    let end = L3 + h.total_len as usize;
    let (icmp, payload) = Icmpv4Header::from_slice(&f[L3 + h.header_len()..end])
        .map_err(|e| format!("ICMP header: {e}"))?;
    let want = icmp.icmp_type.calc_checksum(payload);
    if icmp.checksum != want {
        return Err(format!(
            "ICMP checksum {:#06x}, want {want:#06x}",
            icmp.checksum
        ));
    }
    Ok(())
}

/// `input` routed ([`routed`]), its IPv4 header checksum verified too.
fn routed_checked(input: &[u8], dst_mac: [u8; 6], src_mac: [u8; 6]) -> Expected {
    Expected::from(routed(input, dst_mac, src_mac)).check("IPv4 checksum", ipv4_checksum_ok)
}

/// A VXLAN frame from another host's VTEP to this host.
fn vxlan_in(vni: u32, inner: &[u8]) -> Vec<u8> {
    packets::vxlan(
        PEER_HOST_MAC,
        UPLINK_MAC,
        HOST_A3,
        UNDERLAY_IP,
        51234,
        0x08,
        vni,
        inner,
    )
}

/// What a remote host sends towards `to` in its network (L2, or already
/// routed on the sender's host: source MAC the destination's gateway).
fn inner_to(to: Vm, src_mac: [u8; 6], src: [u8; 4], ttl: u8) -> Vec<u8> {
    packets::udp4(src_mac, to.mac, src, to.ip, ttl, 40000, 5000, PAYLOAD)
}

// ---------------------------------------------------------------------------
// Rows.

#[test]
fn local_switching_and_routing() {
    let mut t = tester();
    let (tp1, tp2, tp3) = (t.ifindex("tp1"), t.ifindex("tp2"), t.ifindex("tp3"));
    let l3 = udp(A1, GW_A_MAC, B1.ip, 64);
    let l3_back = udp(B1, GW_B_MAC, A1.ip, 64);
    let via_static = udp(A1, GW_A_MAC, [192, 168, 5, 5], 64);
    let l3_ttl2 = udp(A1, GW_A_MAC, B1.ip, 2);
    let at_mtu = udp_sized(A1, GW_A_MAC, B1.ip, 1450);
    #[rustfmt::skip]
    let rows = vec![
        t.port_row("L2 a1 -> a2 (same network, same host): forwarded unchanged", "tp1", udp(A1, A2.mac, A2.ip, 64), Expect::Forward).to(tp2),
        t.port_row("L2 a2 -> a1", "tp2", udp(A2, A1.mac, A1.ip, 64), Expect::Forward).to(tp1),
        t.port_row("L2 a1 -> a2 TCP", "tp1", packets::tcp4(A1.mac, A2.mac, A1.ip, A2.ip, 64, 443, PAYLOAD), Expect::Forward).to(tp2),
        t.port_row("L2 a1 -> a2 with TTL 1: switching leaves the TTL alone", "tp1", udp(A1, A2.mac, A2.ip, 1), Expect::Forward).to(tp2),
        t.port_row("L2 a1 -> a2, 1500 bytes of IP (net a MTU 1500)", "tp1", udp_sized(A1, A2.mac, A2.ip, 1500), Expect::Forward).to(tp2),
        t.port_row("L3 a1 -> b1 (other subnet of the router, same host): TTL-1, MACs rewritten", "tp1", l3.clone(), Expect::Forward).output(routed_checked(&l3, B1.mac, GW_B_MAC)).to(tp3),
        t.port_row("L3 b1 -> a1 (the other way)", "tp3", l3_back.clone(), Expect::Forward).output(routed_checked(&l3_back, A1.mac, GW_A_MAC)).to(tp1),
        t.port_row("L3 a1 -> b1 with TTL 2: leaves with TTL 1", "tp1", l3_ttl2.clone(), Expect::Forward).output(routed_checked(&l3_ttl2, B1.mac, GW_B_MAC)).to(tp3),
        t.port_row("L3 a1 -> b1 at exactly b's MTU (1450)", "tp1", at_mtu.clone(), Expect::Forward).output(routed(&at_mtu, B1.mac, GW_B_MAC)).to(tp3),
        t.port_row("static route 192.168.0.0/16 via b1: forwarded to b1's MAC", "tp1", via_static.clone(), Expect::Forward).output(routed_checked(&via_static, B1.mac, GW_B_MAC)).to(tp3),
        t.port_row("L2 to the /32 allowed address pair of a1 (its own MAC): a /32 pair is reachable", "tp2", udp(A2, PAIR_MAC_1, [10, 1, 0, 200], 64), Expect::Forward).to(tp1),
        t.port_row("L2 to an address inside a1's /28 pair: a prefix pair is a source, not a destination", "tp2", udp(A2, A1.mac, [10, 1, 0, 70], 64), Expect::Drop(UnknownDestination)),
        t.port_row("L2 a1 -> 10.1.0.99 (nobody)", "tp1", udp(A1, STRANGER, [10, 1, 0, 99], 64), Expect::Drop(UnknownDestination)),
        t.port_row("L2 a1 -> a2's address with another MAC", "tp1", udp(A1, A6.mac, A2.ip, 64), Expect::Drop(UnknownDestination)),
        t.port_row("L2 a1 -> b1 (other network, not through the router)", "tp1", udp(A1, B1.mac, B1.ip, 64), Expect::Drop(UnknownDestination)),
        t.port_row("L2 a1 -> the gateway address with a MAC that is not the router's", "tp1", udp(A1, A2.mac, GW_A, 64), Expect::Drop(UnknownDestination)),
        t.port_row("L2 a1 -> a2, 1501 bytes of IP without DF (over net a MTU 1500)", "tp1", packets::with_df(udp_sized(A1, A2.mac, A2.ip, 1501), false), Expect::Drop(TooBig)),
    ];
    t.check_rows(rows);
}

#[test]
fn encapsulation_to_remote_ports() {
    let mut t = tester();
    let up0 = t.ifindex(UPLINK);
    let l2 = udp(A1, A3.mac, A3.ip, 64);
    let l2_tcp = packets::tcp4(A1.mac, A3.mac, A1.ip, A3.ip, 64, 22, PAYLOAD);
    let l3 = udp(A1, GW_A_MAC, B3.ip, 64);
    let b_to_a = udp(B1, GW_B_MAC, A3.ip, 64);
    let l3_at_mtu = udp_sized(A1, GW_A_MAC, B3.ip, 1450);
    let to_a4 = udp(A1, A4.mac, A4.ip, 64);
    let to_a9 = udp(A1, A9.mac, A9.ip, 64);
    #[rustfmt::skip]
    let rows = vec![
        t.port_row("L2 a1 -> a3 (remote, net a): VXLAN 100 to 198.18.2.2", "tp1", l2.clone(), Expect::Forward).output(encapsulated(&l2, 100, HOST_A3)).to(up0),
        t.port_row("L2 a1 -> a3 TCP", "tp1", l2_tcp.clone(), Expect::Forward).output(encapsulated(&l2_tcp, 100, HOST_A3)).to(up0),
        t.port_row("L3 a1 -> b3 (remote, routed): inner TTL-1 and MACs rewritten, VXLAN 101 to 198.18.2.3", "tp1", l3.clone(), Expect::Forward).output(encapsulated(&routed(&l3, B3.mac, GW_B_MAC), 101, HOST_B3)).to(up0),
        t.port_row("L3 b1 -> a3 (remote, routed the other way): VXLAN 100", "tp3", b_to_a.clone(), Expect::Forward).output(encapsulated(&routed(&b_to_a, A3.mac, GW_A_MAC), 100, HOST_A3)).to(up0),
        t.port_row("L3 a1 -> b3 at b's MTU: 1500-byte outer packet fits the underlay", "tp1", l3_at_mtu.clone(), Expect::Forward).output(encapsulated(&routed(&l3_at_mtu, B3.mac, GW_B_MAC), 101, HOST_B3)).to(up0),
        t.port_row("L2 a1 -> a9, whose host is routed through up1: the lookup is pinned to the uplink, out of up0 by 198.18.0.0/16", "tp1", to_a9.clone(), Expect::Forward).output(encapsulated(&to_a9, 100, OTHER_LINK_UNDERLAY)).to(up0),
        t.port_row("L2 a1 -> a4, whose host's underlay next hop is unresolved: frame unchanged", "tp1", to_a4, Expect::Drop(UnderlayNoNeighbour)),
        t.port_row("L2 a1 -> a5, whose host has no underlay route", "tp1", udp(A1, A5.mac, A5.ip, 64), Expect::Drop(UnderlayUnreachable)),
        t.port_row("L2 a1 -> a3 with 1500 bytes of IP: 1550 outer bytes exceed the underlay MTU", "tp1", udp_sized(A1, A3.mac, A3.ip, 1500), Expect::Drop(TooBig)),
    ];
    t.check_rows(rows);
}

/// The outer UDP source port carries the inner flow's entropy (RFC 7348
/// section 5), so underlay ECMP spreads the flows of one pair of hosts.
#[test]
fn outer_source_port_follows_the_inner_flow() {
    let mut t = tester();
    let tp1 = t.ifindex("tp1");
    let mut ports = std::collections::BTreeSet::new();
    for sport in 0..32u16 {
        let f = packets::udp4(
            A1.mac,
            A3.mac,
            A1.ip,
            A3.ip,
            64,
            30000 + sport,
            5000,
            PAYLOAD,
        );
        let o = t.run(Attach::Port, tp1, &f);
        let again = t.run(Attach::Port, tp1, &f);
        assert_eq!(o.output, again.output, "one flow, one outer source port");
        ports.insert(u16::from_be_bytes([o.output[34], o.output[35]]));
    }
    assert!(
        ports.len() >= 16,
        "32 inner flows gave only {} outer source ports: {ports:?}",
        ports.len()
    );
}

#[test]
fn no_underlay_configured() {
    let mut t = tester();
    let host = HostInfo {
        underlay_ip: [0; 4],
        ..t.default_host()
    };
    t.set_host(host);
    t.check(&t.port_row(
        "L2 a1 -> a3 before the host's underlay address is known",
        "tp1",
        udp(A1, A3.mac, A3.ip, 64),
        Expect::Drop(NoUnderlay),
    ));
}

#[test]
fn decapsulation_on_the_uplink() {
    let mut t = tester();
    let (tp1, tp2, tp3, tp4) = (
        t.ifindex("tp1"),
        t.ifindex("tp2"),
        t.ifindex("tp3"),
        t.ifindex("tp4"),
    );
    let to_a1 = inner_to(A1, A3.mac, A3.ip, 64);
    let to_b1 = inner_to(B1, GW_B_MAC, A3.ip, 63);
    let to_x1 = inner_to(X1, X2.mac, X2.ip, 64);
    let by_mac = packets::udp4(A3.mac, A2.mac, A3.ip, A1.ip, 64, 1, 2, PAYLOAD);
    let to_pair = packets::udp4(
        A3.mac,
        PAIR_MAC_1,
        A3.ip,
        [10, 1, 0, 200],
        64,
        1,
        2,
        PAYLOAD,
    );
    let to_cidr_pair = packets::udp4(
        A3.mac,
        PAIR_MAC_2,
        A3.ip,
        [10, 1, 0, 140],
        64,
        1,
        2,
        PAYLOAD,
    );
    let mut no_i_flag = vxlan_in(100, &to_a1);
    no_i_flag[42] = 0;
    let mut tagged = vxlan_in(100, &to_a1);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    let with_options = {
        let mut f = vxlan_in(100, &to_a1);
        f.splice(L4..L4, [1u8, 1, 1, 0]);
        f[L3] = 0x46;
        let total = u16::from_be_bytes([f[L3 + 2], f[L3 + 3]]) + 4;
        f[L3 + 2..L3 + 4].copy_from_slice(&total.to_be_bytes());
        packets::fix_ipv4_checksum(&mut f);
        f
    };
    let later_fragment = {
        let mut f = vxlan_in(100, &to_a1);
        f[packets::IP_FLAGS] = 0x00;
        f[packets::IP_FLAGS + 1] = 0xb9; // offset 1480
        packets::fix_ipv4_checksum(&mut f);
        f
    };
    #[rustfmt::skip]
    let rows = vec![
        t.uplink_row("VXLAN 100 for a1: the inner frame to tp1", vxlan_in(100, &to_a1), Expect::Forward).output(to_a1.clone()).to(tp1),
        t.uplink_row("VXLAN 101 for b1, routed on the sender's host", vxlan_in(101, &to_b1), Expect::Forward).output(to_b1.clone()).to(tp3),
        t.uplink_row("VXLAN 200 (VPC red) for x1, whose address a1 also has in blue", vxlan_in(200, &to_x1), Expect::Forward).output(to_x1.clone()).to(tp4),
        t.uplink_row("VXLAN with an unknown VNI", vxlan_in(999, &to_a1), Expect::Drop(UnknownVni)),
        t.uplink_row("VXLAN 100 for a3 (a port of another host)", vxlan_in(100, &inner_to(A3, A1.mac, A1.ip, 64)), Expect::Drop(NotLocal)),
        t.uplink_row("VXLAN 100 for an address nobody has", vxlan_in(100, &packets::udp4(A3.mac, STRANGER, A3.ip, [10, 1, 0, 99], 64, 1, 2, PAYLOAD)), Expect::Drop(NotLocal)),
        t.uplink_row("VXLAN 100 with a2's MAC and a1's address: delivered by MAC (the sender chose the hop)", vxlan_in(100, &by_mac), Expect::Forward).output(by_mac.clone()).to(tp2),
        t.uplink_row("VXLAN 100 for the MAC of a1's /32 pair", vxlan_in(100, &to_pair), Expect::Forward).output(to_pair.clone()).to(tp1),
        t.uplink_row("VXLAN 100 for the MAC of a1's /28 pair (a static route's next hop)", vxlan_in(100, &to_cidr_pair), Expect::Forward).output(to_cidr_pair.clone()).to(tp1),
        t.uplink_row("VXLAN 101 for a1's MAC (a1 is on VNI 100)", vxlan_in(101, &inner_to(A1, GW_B_MAC, B3.ip, 63)), Expect::Drop(NotLocal)),
        t.uplink_row("VXLAN 100 for b1 (a local port of VNI 101)", vxlan_in(100, &inner_to(B1, A3.mac, A3.ip, 64)), Expect::Drop(NotLocal)),
        t.uplink_row("VXLAN 200 (red) for a2's address and MAC (blue)", vxlan_in(200, &inner_to(A2, X2.mac, X2.ip, 64)), Expect::Drop(NotLocal)),
        t.uplink_row("VXLAN without the I flag", no_i_flag, Expect::Drop(BadVxlan)),
        t.uplink_row("VXLAN whose inner frame is 20 bytes", vxlan_in(100, &to_a1[..20]), Expect::Drop(BadVxlan)),
        t.uplink_row("VXLAN with an 802.1Q-tagged outer frame", tagged, Expect::Drop(BadVxlan)),
        t.uplink_row("VXLAN with outer IP options", with_options, Expect::Drop(BadVxlan)),
        t.uplink_row("VXLAN inner ARP (hosts answer ARP locally, never tunnel it)", vxlan_in(100, &who_has(A3, A1.ip)), Expect::Drop(UnsupportedEthertype)),
        t.uplink_row("VXLAN later fragment: no UDP header, to the stack", later_fragment, Expect::Pass(Class::Ipv4)),
        t.uplink_row("VXLAN for another underlay address: to the stack", packets::vxlan(PEER_HOST_MAC, UPLINK_MAC, HOST_A3, [198, 18, 1, 5], 51234, 0x08, 100, &to_a1), Expect::Pass(Class::Ipv4)),
        t.uplink_row("underlay UDP to this host, not VXLAN (DNS): to the stack", packets::udp4(PEER_HOST_MAC, UPLINK_MAC, HOST_A3, UNDERLAY_IP, 64, 40000, 53, PAYLOAD), Expect::Pass(Class::Ipv4)),
        t.uplink_row("underlay TCP to this host: to the stack", packets::tcp4(PEER_HOST_MAC, UPLINK_MAC, HOST_A3, UNDERLAY_IP, 64, 4789, PAYLOAD), Expect::Pass(Class::Ipv4)),
        t.uplink_row("underlay ARP: to the stack", who_has_from(PEER_HOST_MAC, [198, 18, 1, 0], UNDERLAY_IP), Expect::Pass(Class::Arp)),
        t.uplink_row("underlay IPv6: to the stack", packets::ipv6_udp(PAYLOAD), Expect::Pass(Class::Ipv6)),
    ];
    t.check_rows(rows);
}

/// A fragmented outer packet is not decapsulated piecewise: the first
/// fragment holds only part of the inner frame (here 40 of its 69 bytes).
#[test]
fn decapsulation_refuses_outer_first_fragments() {
    let mut t = tester();
    let to_a1 = inner_to(A1, A3.mac, A3.ip, 64);
    let whole = vxlan_in(100, &to_a1);
    // The first fragment: 56 bytes of the UDP datagram (UDP header, VXLAN
    // header, 40 bytes of the inner frame), MF set; the UDP length still
    // covers the whole datagram.
    let mut f = whole[..L4 + 56].to_vec();
    f[L3 + 2..L3 + 4].copy_from_slice(&(20u16 + 56).to_be_bytes());
    f[packets::IP_FLAGS] = 0x20;
    packets::fix_ipv4_checksum(&mut f);
    t.check(&t.uplink_row(
        "VXLAN first fragment (MF, 40 of 69 inner bytes): not decapsulated",
        f,
        Expect::Drop(BadVxlan),
    ));
}

/// The DHCP exemption from source-address checks (a VM without an address
/// yet sends from 0.0.0.0) is for requests to the agent, not for unicast
/// to other VMs.
#[test]
fn unaddressed_dhcp_goes_to_the_agent_only() {
    let mut t = tester();
    t.check(&t.port_row(
        "UDP 0.0.0.0:68 -> a2:67 unicast to a2",
        "tp1",
        packets::dhcp(A1.mac, A2.mac, [0; 4], A2.ip, 1),
        Expect::Drop(SpoofedIp),
    ));
}

/// `Endpoint::gw_mac` is zero for an address on a subnet no router
/// interface is on ("zero when its network has no router"): such an
/// endpoint is not routable, the router has no route there.
#[test]
fn routing_stops_at_subnets_without_a_router_interface() {
    let mut t = tester();
    let f = udp(A1, GW_A_MAC, A10.ip, 64);
    t.check(
        &t.port_row(
            "routed a1 -> 10.1.2.5 (net a's subnet without a router interface)",
            "tp1",
            f.clone(),
            Expect::AnswerError(NoRoute),
        )
        .output(icmp_error(
            &f,
            unreachable(DestUnreachableHeader::Network),
            GW_A,
            GW_A_MAC,
        )),
    );
}

/// An administratively down port passes no traffic (Neutron), in either
/// direction: frames to it are not delivered.
#[test]
fn admin_down_ports_receive_nothing() {
    let mut t = tester();
    let rows = vec![
        t.port_row(
            "L2 a1 -> a7 (admin down)",
            "tp1",
            udp(A1, A7.mac, A7.ip, 64),
            Expect::Drop(PortDown),
        ),
        t.uplink_row(
            "VXLAN 100 for a7 (admin down)",
            vxlan_in(100, &inner_to(A7, A3.mac, A3.ip, 64)),
            Expect::Drop(PortDown),
        ),
    ];
    t.check_rows(rows);
}

/// The gateway cannot reassemble: a fragmented echo request is not answered
/// (answering the first fragment sends a reply with MF set that never
/// completes).
#[test]
fn fragmented_ping_to_the_gateway_is_not_answered() {
    let mut t = tester();
    let mut f = ping(A1, GW_A_MAC, GW_A);
    f[packets::IP_FLAGS] |= 0x20;
    packets::fix_ipv4_checksum(&mut f);
    t.check(&t.port_row(
        "first fragment of an echo request to 10.1.0.1",
        "tp1",
        f,
        Expect::Drop(NotForGateway),
    ));
}

#[test]
fn arp_responder() {
    let mut t = tester();
    let q_gw = who_has(A1, GW_A);
    let q_a2 = who_has(A1, A2.ip);
    let q_a3 = who_has(A1, A3.ip);
    let q_pair = who_has(A2, [10, 1, 0, 200]);
    let probe = who_has_from(A1.mac, [0; 4], A2.ip);
    let mut padded = who_has(A1, A2.ip);
    padded.resize(60, 0);
    let unicast = packets::arp(A2.mac, A1.mac, 1, A1.mac, A1.ip, A2.mac, A2.ip);
    let from_pair = who_has_from(PAIR_MAC_1, [10, 1, 0, 200], A2.ip);
    let from_cidr_pair = who_has_from(A1.mac, [10, 1, 0, 70], A2.ip);
    let unsecured = who_has_from(STRANGER, [10, 77, 0, 1], A2.ip);
    let x_q = who_has(X1, X2.ip);
    #[rustfmt::skip]
    let rows = vec![
        t.port_row("who-has the gateway 10.1.0.1: the router interface's MAC", "tp1", q_gw.clone(), Expect::Answer).output(arp_reply(&q_gw, GW_A_MAC)),
        t.port_row("who-has a2 (local, same network)", "tp1", q_a2.clone(), Expect::Answer).output(arp_reply(&q_a2, A2.mac)),
        t.port_row("who-has a3 (remote, same network)", "tp1", q_a3.clone(), Expect::Answer).output(arp_reply(&q_a3, A3.mac)),
        t.port_row("who-has 10.1.0.200, a1's /32 pair with its own MAC", "tp2", q_pair.clone(), Expect::Answer).output(arp_reply(&q_pair, PAIR_MAC_1)),
        t.port_row("who-has a2, padded to 60 bytes: the padding stays", "tp1", padded.clone(), Expect::Answer).output(arp_reply(&padded, A2.mac)),
        t.port_row("unicast who-has a2 (ARP cache refresh)", "tp1", unicast.clone(), Expect::Answer).output(arp_reply(&unicast, A2.mac)),
        t.port_row("ARP probe (sender 0.0.0.0) for a2's address: answered, the address is taken", "tp1", probe.clone(), Expect::Answer).output(arp_reply(&probe, A2.mac)),
        t.port_row("who-has from a1's /32 pair (its MAC and address)", "tp1", from_pair.clone(), Expect::Answer).output(arp_reply(&from_pair, A2.mac)),
        t.port_row("who-has from an address of a1's /28 pair", "tp1", from_cidr_pair.clone(), Expect::Answer).output(arp_reply(&from_cidr_pair, A2.mac)),
        t.port_row("who-has from a6 (port security off) with a foreign MAC and address", "tp6", unsecured.clone(), Expect::Answer).output(arp_reply(&unsecured, A2.mac)),
        t.port_row("red: who-has 10.1.0.6 from x1 is x2, not blue's a2", "tp4", x_q.clone(), Expect::Answer).output(arp_reply(&x_q, X2.mac)),
        t.port_row("who-has b1 (another network of the VPC)", "tp1", who_has(A1, B1.ip), Expect::Drop(ArpUnknownTarget)),
        t.port_row("who-has 10.1.1.1 (gateway of another network of the VPC)", "tp1", who_has(A1, GW_B), Expect::Drop(ArpUnknownTarget)),
        t.port_row("who-has 10.1.0.20 (x3, another VPC)", "tp1", who_has(A1, X3.ip), Expect::Drop(ArpUnknownTarget)),
        t.port_row("who-has 10.1.0.99 (nobody)", "tp1", who_has(A1, [10, 1, 0, 99]), Expect::Drop(ArpUnknownTarget)),
        t.port_row("ARP claiming another port's address (a2's)", "tp1", who_has_from(A1.mac, A2.ip, B1.ip), Expect::Drop(SpoofedIp)),
        t.port_row("ARP probe for the asker's own address (DAD sees silence)", "tp1", who_has_from(A1.mac, [0; 4], A1.ip), Expect::Drop(ArpUnknownTarget)),
        t.port_row("ARP reply from a VM", "tp1", packets::arp(A2.mac, A1.mac, 2, A1.mac, A1.ip, A2.mac, A2.ip), Expect::Drop(ArpNotRequest)),
        t.port_row("gratuitous ARP (sender = target address)", "tp1", who_has_from(A1.mac, A1.ip, A1.ip), Expect::Drop(ArpNotRequest)),
        t.port_row("ARP sender MAC differs from the Ethernet source", "tp1", packets::arp([0xff; 6], A1.mac, 1, STRANGER, A1.ip, [0; 6], A2.ip), Expect::Drop(SpoofedMac)),
        t.port_row("ARP from a foreign MAC", "tp1", who_has_from(STRANGER, A1.ip, A2.ip), Expect::Drop(SpoofedMac)),
        t.port_row("ARP from a foreign address", "tp1", who_has_from(A1.mac, [10, 1, 0, 99], A2.ip), Expect::Drop(SpoofedIp)),
        t.port_row("ARP probe from a foreign MAC", "tp1", who_has_from(STRANGER, [0; 4], A2.ip), Expect::Drop(SpoofedMac)),
        t.port_row("ARP from the /32 pair's address with the port's MAC (the pair has its own)", "tp1", who_has_from(A1.mac, [10, 1, 0, 200], A2.ip), Expect::Drop(SpoofedIp)),
    ];
    t.check_rows(rows);
}

/// Who-has for one of the asker's own addresses is never answered (a
/// port's own address: duplicate address detection must see silence).
/// Asked from that same address it is a gratuitous ARP (`arp_not_request`,
/// above), from 0.0.0.0 a probe (above); here from the port's other address.
#[test]
fn a_port_with_two_fixed_addresses() {
    let mut t = ProgramTester::in_test_net();
    let w = world()
        .port(Port::local("a8", "a", "tp8", mac([0, 1, 0x0c]), [10, 1, 0, 12]).ip([10, 1, 0, 13]));
    t.install(&w);
    let m = mac([0, 1, 0x0c]);
    let tp2 = t.ifindex("tp2");
    let rows = vec![
        t.port_row(
            "who-has 10.1.0.13 from 10.1.0.12, both addresses of the asker",
            "tp8",
            who_has_from(m, [10, 1, 0, 12], [10, 1, 0, 13]),
            Expect::Drop(ArpUnknownTarget),
        ),
        t.port_row(
            "IPv4 from the port's second fixed address",
            "tp8",
            packets::udp4(m, A2.mac, [10, 1, 0, 13], A2.ip, 64, 1, 2, PAYLOAD),
            Expect::Forward,
        )
        .to(tp2),
    ];
    t.check_rows(rows);
}

#[test]
fn gateway_and_broadcasts() {
    let mut t = tester();
    let ping_gw = ping(A1, GW_A_MAC, GW_A);
    let ping_far_gw = ping(A1, GW_A_MAC, GW_B);
    let ping_gw_b1 = ping(B1, GW_B_MAC, GW_B);
    let ping_x = ping(X1, GW_X_MAC, GW_A);
    let reply_check = |e: Expected| e.check("IPv4 and ICMP checksums", icmp_checksums_ok);
    let echo_reply_to_gw = {
        let mut f = ping(A1, GW_A_MAC, GW_A);
        f[L4] = 0;
        let c = Icmpv4Header::from_slice(&f[L4..]).expect("icmp").0;
        let sum = c.icmp_type.calc_checksum(&f[L4 + 8..]);
        f[L4 + 2..L4 + 4].copy_from_slice(&sum.to_be_bytes());
        f
    };
    #[rustfmt::skip]
    let rows = vec![
        t.port_row("ping the gateway: echo reply from it (addresses swapped, type 0, TTL 64)", "tp1", ping_gw.clone(), Expect::Answer).output(reply_check(echo_reply(&ping_gw).into())),
        t.port_row("ping the other subnet's gateway 10.1.1.1 through 10.1.0.1", "tp1", ping_far_gw.clone(), Expect::Answer).output(reply_check(echo_reply(&ping_far_gw).into())),
        t.port_row("b1 pings its gateway 10.1.1.1", "tp3", ping_gw_b1.clone(), Expect::Answer).output(reply_check(echo_reply(&ping_gw_b1).into())),
        t.port_row("red: x1 pings 10.1.0.1, red's router answers with its MAC", "tp4", ping_x.clone(), Expect::Answer).output(reply_check(echo_reply(&ping_x).into())),
        t.port_row("UDP to the gateway", "tp1", udp(A1, GW_A_MAC, GW_A, 64), Expect::Drop(NotForGateway)),
        t.port_row("TCP to the gateway", "tp1", packets::tcp4(A1.mac, GW_A_MAC, A1.ip, GW_A, 64, 22, PAYLOAD), Expect::Drop(NotForGateway)),
        t.port_row("ICMP echo reply to the gateway: an answer to a PING health check", "tp1", echo_reply_to_gw, Expect::Drop(LbHealthAnswer)),
        t.port_row("TCP to the gateway on a health check port: an answer to a check", "tp1", packets::tcp4(A1.mac, GW_A_MAC, A1.ip, GW_A, 64, 61_000, PAYLOAD), Expect::Drop(LbHealthAnswer)),
        t.port_row("DHCP DISCOVER (0.0.0.0 -> 255.255.255.255, 68 -> 67): to the agent", "tp1", packets::dhcp(A1.mac, [0xff; 6], [0; 4], [255; 4], 1), Expect::Pass(Class::Ipv4)),
        t.port_row("DHCP REQUEST broadcast from the VM's address", "tp1", packets::dhcp(A1.mac, [0xff; 6], A1.ip, [255; 4], 3), Expect::Pass(Class::Ipv4)),
        t.port_row("DHCP REQUEST unicast to the gateway (renewal)", "tp1", packets::dhcp(A1.mac, GW_A_MAC, A1.ip, GW_A, 3), Expect::Pass(Class::Ipv4)),
        t.port_row("DHCP DISCOVER from a foreign MAC", "tp1", packets::dhcp(STRANGER, [0xff; 6], [0; 4], [255; 4], 1), Expect::Drop(SpoofedMac)),
        t.port_row("DHCP OFFER from a VM (a rogue server)", "tp1", packets::udp4(A1.mac, [0xff; 6], A1.ip, [255; 4], 64, 67, 68, PAYLOAD), Expect::Drop(FloodSuppressed)),
        t.port_row("UDP broadcast 255.255.255.255:53", "tp1", udp(A1, [0xff; 6], [255; 4], 64), Expect::Drop(FloodSuppressed)),
        t.port_row("UDP to the subnet broadcast 10.1.0.255", "tp1", udp(A1, [0xff; 6], [10, 1, 0, 255], 64), Expect::Drop(FloodSuppressed)),
        t.port_row("mDNS multicast 224.0.0.251", "tp1", udp(A1, [0x01, 0x00, 0x5e, 0, 0, 0xfb], [224, 0, 0, 251], 1), Expect::Drop(FloodSuppressed)),
    ];
    t.check_rows(rows);
}

#[test]
fn anti_spoofing_and_port_state() {
    let mut t = tester();
    let tp2 = t.ifindex("tp2");
    let from =
        |mac: [u8; 6], ip: [u8; 4]| packets::udp4(mac, A2.mac, ip, A2.ip, 64, 40000, 5000, PAYLOAD);
    #[rustfmt::skip]
    let rows = vec![
        t.port_row("foreign source MAC", "tp1", from(STRANGER, A1.ip), Expect::Drop(SpoofedMac)),
        t.port_row("foreign source address", "tp1", from(A1.mac, [10, 1, 0, 99]), Expect::Drop(SpoofedIp)),
        t.port_row("another port's address (a2's) from a1", "tp1", from(A1.mac, A2.ip), Expect::Drop(SpoofedIp)),
        t.port_row("foreign MAC and address", "tp1", from(STRANGER, [10, 1, 0, 99]), Expect::Drop(SpoofedMac)),
        t.port_row("pair 10.1.0.64/28 (port MAC): from 10.1.0.70", "tp1", from(A1.mac, [10, 1, 0, 70]), Expect::Forward).to(tp2),
        t.port_row("pair 10.1.0.64/28: from 10.1.0.80, outside it", "tp1", from(A1.mac, [10, 1, 0, 80]), Expect::Drop(SpoofedIp)),
        t.port_row("pair 10.1.0.200/32 with its own MAC: from it", "tp1", from(PAIR_MAC_1, [10, 1, 0, 200]), Expect::Forward).to(tp2),
        t.port_row("pair 10.1.0.200/32: its address with the port's MAC", "tp1", from(A1.mac, [10, 1, 0, 200]), Expect::Drop(SpoofedIp)),
        t.port_row("pair 10.1.0.200/32: its MAC with the port's address", "tp1", from(PAIR_MAC_1, A1.ip), Expect::Drop(SpoofedMac)),
        t.port_row("pair 10.1.0.201 (no prefix, port MAC)", "tp1", from(A1.mac, [10, 1, 0, 201]), Expect::Forward).to(tp2),
        t.port_row("pair 10.1.0.128/28 with its own MAC: from 10.1.0.130", "tp1", from(PAIR_MAC_2, [10, 1, 0, 130]), Expect::Forward).to(tp2),
        t.port_row("pair 10.1.0.128/28: with the port's MAC", "tp1", from(A1.mac, [10, 1, 0, 130]), Expect::Drop(SpoofedIp)),
        t.port_row("port security off: any MAC and address", "tp6", from(STRANGER, [10, 77, 0, 1]), Expect::Forward).to(tp2),
        t.port_row("port security off: its own", "tp6", from(A6.mac, A6.ip), Expect::Forward).to(tp2),
        t.port_row("admin-down port: IPv4", "tp7", from(A7.mac, A7.ip), Expect::Drop(PortDown)),
        t.port_row("admin-down port: ARP", "tp7", who_has(A7, A2.ip), Expect::Drop(PortDown)),
        t.port_row("admin-down port: garbage", "tp7", vec![0; 20], Expect::Drop(PortDown)),
        t.port_row("frame on an interface that is no port (tp8)", "tp8", udp(A1, A2.mac, A2.ip, 64), Expect::Drop(PortUnknown)),
        t.port_row("frame on the uplink through the port program", UPLINK, udp(A1, A2.mac, A2.ip, 64), Expect::Drop(PortUnknown)),
        t.port_row("IPv6 from a VM", "tp1", packets::ipv6_udp(PAYLOAD), Expect::Drop(Ipv6Unsupported)),
        t.port_row("802.1Q-tagged from a VM", "tp1", packets::vlan_ipv4_udp(5, PAYLOAD), Expect::Drop(VlanOnPort)),
        t.port_row("LLDP from a VM", "tp1", packets::lldp(), Expect::Drop(UnsupportedEthertype)),
    ];
    t.check_rows(rows);
}

#[test]
fn admin_down_network() {
    let mut t = ProgramTester::in_test_net();
    let w = world()
        .net(
            Net::new("d", 400)
                .subnet("sd", "10.4.0.0/24", "10.4.0.1")
                .admin_down(),
        )
        .port(Port::local("d1", "d", "tp8", mac([0, 4, 5]), [10, 4, 0, 5]));
    t.install(&w);
    let m = mac([0, 4, 5]);
    t.check(&t.port_row(
        "port on an administratively down network",
        "tp8",
        packets::udp4(
            m,
            [0xff; 6],
            [10, 4, 0, 5],
            [10, 4, 0, 9],
            64,
            1,
            2,
            PAYLOAD,
        ),
        Expect::Drop(PortDown),
    ));
}

#[test]
fn icmp_errors() {
    let mut t = tester();
    let err = |e: Vec<u8>| Expected::from(e).check("IPv4 and ICMP checksums", icmp_checksums_ok);
    let ttl1 = udp(A1, GW_A_MAC, B1.ip, 1);
    let ttl0 = udp(A1, GW_A_MAC, B1.ip, 0);
    let ttl1_remote = udp(A1, GW_A_MAC, B3.ip, 1);
    let ttl1_ping = packets::ping4(A1.mac, GW_A_MAC, A1.ip, B1.ip, 1, 9, 9, PAYLOAD);
    let ttl1_from_b = udp(B1, GW_B_MAC, A1.ip, 1);
    let big_df = udp_sized(A1, GW_A_MAC, B1.ip, 1451);
    let big_df_remote = udp_sized(A1, GW_A_MAC, B3.ip, 1500);
    let big = packets::with_df(udp_sized(A1, GW_A_MAC, B1.ip, 1451), false);
    let big_l2 = udp_sized(A1, A2.mac, A2.ip, 1501);
    let no_route = udp(A1, GW_A_MAC, [8, 8, 8, 8], 64);
    let no_host = udp(A1, GW_A_MAC, [10, 1, 1, 99], 64);
    let via_nobody = udp(A1, GW_A_MAC, [172, 16, 0, 1], 64);
    let x_no_host = udp(X1, GW_X_MAC, B1.ip, 64);
    let ttl1_icmp_error = {
        let inner = udp(B1, A1.mac, A1.ip, 64);
        let mut e = icmp_error(
            &inner,
            unreachable(DestUnreachableHeader::Port),
            A1.ip,
            A1.mac,
        );
        // Re-address it: a1 reports to b1 through the router, TTL 1.
        e[0..6].copy_from_slice(&GW_A_MAC);
        e[6..12].copy_from_slice(&A1.mac);
        e[L3 + 1] = 0;
        e[IP_TTL] = 1;
        e[L3 + 12..L3 + 16].copy_from_slice(&A1.ip);
        e[L3 + 16..L3 + 20].copy_from_slice(&B1.ip);
        packets::fix_ipv4_checksum(&mut e);
        e
    };
    let ttl1_later_fragment = {
        let mut f = udp(A1, GW_A_MAC, B1.ip, 1);
        f[packets::IP_FLAGS] = 0x00;
        f[packets::IP_FLAGS + 1] = 0x10;
        packets::fix_ipv4_checksum(&mut f);
        f
    };
    let ttl1_options = {
        let mut f = udp(A1, GW_A_MAC, B1.ip, 1);
        f.splice(L4..L4, [1u8, 1, 1, 0]);
        f[L3] = 0x46;
        let total = u16::from_be_bytes([f[L3 + 2], f[L3 + 3]]) + 4;
        f[L3 + 2..L3 + 4].copy_from_slice(&total.to_be_bytes());
        packets::fix_ipv4_checksum(&mut f);
        f
    };
    let frag_needed =
        |mtu| unreachable(DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu });
    #[rustfmt::skip]
    let rows = vec![
        t.port_row("routed a1 -> b1 with TTL 1: time exceeded from 10.1.0.1", "tp1", ttl1.clone(), Expect::AnswerError(TtlExceeded)).output(err(icmp_error(&ttl1, time_exceeded(), GW_A, GW_A_MAC))),
        t.port_row("routed with TTL 0", "tp1", ttl0.clone(), Expect::AnswerError(TtlExceeded)).output(err(icmp_error(&ttl0, time_exceeded(), GW_A, GW_A_MAC))),
        t.port_row("routed to a remote port (b3) with TTL 1", "tp1", ttl1_remote.clone(), Expect::AnswerError(TtlExceeded)).output(err(icmp_error(&ttl1_remote, time_exceeded(), GW_A, GW_A_MAC))),
        t.port_row("routed echo request with TTL 1 (traceroute): an echo request is no error, answered", "tp1", ttl1_ping.clone(), Expect::AnswerError(TtlExceeded)).output(err(icmp_error(&ttl1_ping, time_exceeded(), GW_A, GW_A_MAC))),
        t.port_row("b1 -> a1 with TTL 1: from b's gateway 10.1.1.1 and its MAC", "tp3", ttl1_from_b.clone(), Expect::AnswerError(TtlExceeded)).output(err(icmp_error(&ttl1_from_b, time_exceeded(), GW_B, GW_B_MAC))),
        t.port_row("routed a1 -> b1, 1451 bytes with DF: fragmentation needed, next-hop MTU 1450", "tp1", big_df.clone(), Expect::AnswerError(FragmentationNeeded)).output(err(icmp_error(&big_df, frag_needed(1450), GW_A, GW_A_MAC))),
        t.port_row("routed a1 -> b3 (remote), 1500 bytes with DF: fragmentation needed, 1450", "tp1", big_df_remote.clone(), Expect::AnswerError(FragmentationNeeded)).output(err(icmp_error(&big_df_remote, frag_needed(1450), GW_A, GW_A_MAC))),
        t.port_row("routed a1 -> b1, 1451 bytes without DF: dropped (no fragmentation in the overlay)", "tp1", big, Expect::Drop(TooBig)),
        t.port_row("L2 a1 -> a2, 1501 bytes with DF (net a MTU 1500): fragmentation needed from the network's gateway, 1500", "tp1", big_l2.clone(), Expect::AnswerError(FragmentationNeeded)).output(err(icmp_error(&big_l2, frag_needed(1500), GW_A, GW_A_MAC))),
        t.port_row("no route (8.8.8.8): network unreachable", "tp1", no_route.clone(), Expect::AnswerError(NoRoute)).output(err(icmp_error(&no_route, unreachable(DestUnreachableHeader::Network), GW_A, GW_A_MAC))),
        t.port_row("connected subnet, nobody at 10.1.1.99: host unreachable", "tp1", no_host.clone(), Expect::AnswerError(HostUnreachable)).output(err(icmp_error(&no_host, unreachable(DestUnreachableHeader::Host), GW_A, GW_A_MAC))),
        t.port_row("static route 172.16.0.0/12 via 10.1.1.99 (nobody): host unreachable", "tp1", via_nobody.clone(), Expect::AnswerError(HostUnreachable)).output(err(icmp_error(&via_nobody, unreachable(DestUnreachableHeader::Host), GW_A, GW_A_MAC))),
        t.port_row("red: x1 -> 10.1.1.5 (b1's address in blue, nobody in red): host unreachable from red", "tp4", x_no_host.clone(), Expect::AnswerError(HostUnreachable)).output(err(icmp_error(&x_no_host, unreachable(DestUnreachableHeader::Host), GW_A, GW_X_MAC))),
        t.port_row("routed ICMP error with TTL 1: no error about an error", "tp1", ttl1_icmp_error, Expect::Drop(TtlExceeded)),
        t.port_row("routed later fragment with TTL 1: no error", "tp1", ttl1_later_fragment, Expect::Drop(TtlExceeded)),
        t.port_row("routed with IP options and TTL 1: dropped without an error", "tp1", ttl1_options, Expect::Drop(TtlExceeded)),
    ];
    t.check_rows(rows);
}

#[test]
fn identical_cidrs_in_two_vpcs() {
    let mut t = tester();
    let (tp2, tp5, up0) = (t.ifindex("tp2"), t.ifindex("tp5"), t.ifindex(UPLINK));
    let blue = udp(A1, GW_A_MAC, B3.ip, 64);
    let red = udp(X1, GW_X_MAC, Y3.ip, 64);
    #[rustfmt::skip]
    let rows = vec![
        t.port_row("blue a1 -> 10.1.0.6: a2 on tp2", "tp1", udp(A1, A2.mac, A2.ip, 64), Expect::Forward).to(tp2),
        t.port_row("red x1 -> 10.1.0.6: x2 on tp5", "tp4", udp(X1, X2.mac, X2.ip, 64), Expect::Forward).to(tp5),
        t.port_row("red x1 -> 10.1.0.6 with blue a2's MAC: not reachable across VPCs", "tp4", udp(X1, A2.mac, A2.ip, 64), Expect::Drop(UnknownDestination)),
        t.port_row("blue a1 -> 10.1.1.7: b3, VNI 101 to 198.18.2.3", "tp1", blue.clone(), Expect::Forward).output(encapsulated(&routed(&blue, B3.mac, GW_B_MAC), 101, HOST_B3)).to(up0),
        t.port_row("red x1 -> 10.1.1.7: y3, VNI 201 to 198.18.2.4", "tp4", red.clone(), Expect::Forward).output(encapsulated(&routed(&red, Y3.mac, GW_Y_MAC), 201, HOST_Y3)).to(up0),
        t.port_row("red x1 -> 10.1.0.20 (x3, remote in red only)", "tp4", udp(X1, X3.mac, X3.ip, 64), Expect::Forward).output(encapsulated(&udp(X1, X3.mac, X3.ip, 64), 200, HOST_Y3)).to(up0),
        t.port_row("blue a1 -> 10.1.0.20 (only red has it)", "tp1", udp(A1, X3.mac, X3.ip, 64), Expect::Drop(UnknownDestination)),
    ];
    t.check_rows(rows);
}
