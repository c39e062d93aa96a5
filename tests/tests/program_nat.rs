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

use dataplane_common::{DropReason::*, HostInfo, QosBucket, QosKey, DIR_EGRESS, HOST_F_GATEWAY};
use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type, PacketBuilder};
use strato_dataplane::tables::Diff;
use strato_dataplane::Attach;
use strato_tests::packets::{self, L3};
use strato_tests::progtest::{
    encapsulated_frame, mac, Expect, Expected, Fixture, Net, Port, ProgramTester, Router, Verdict,
    World, OTHER_LINK, OTHER_LINK_NEXTHOP_MAC, OTHER_LINK_UNDERLAY, UNDERLAY_IP, UPLINK,
    UPLINK_MAC,
};

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

/// r1 on net a with its external gateway (through the gateway host).
fn router() -> Router {
    Router::new("r1").interface("sa", GW_A_MAC).external(
        EXT_VNI,
        EXT_PORT_IP,
        EXT_PORT_MAC,
        GATEWAY_HOST,
    )
}

fn world(gateway: bool) -> World {
    World::new()
        .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
        .router(router())
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
    unreachable_quoting(src_mac, dst_mac, src, dst, ttl, &quoted)
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
    let out = |inner: Vec<u8>| encapsulated_frame(&inner, EXT_VNI, GATEWAY_HOST);
    #[rustfmt::skip]
    let rows = vec![
        t.port_row("a1 -> internet UDP: source 198.51.100.10, TTL-1, tunnelled on VNI 900 to the gateway host", "tp1", udp(A1_MAC, GW_A_MAC, A1, CLIENT, 64), Expect::Forward).output(out(udp(EXT_PORT_MAC, EXT_PORT_MAC, EIP, CLIENT, 63))).to(up),
        t.port_row("a1 -> internet TCP: TCP checksum follows the pseudo-header", "tp1", tcp(A1_MAC, GW_A_MAC, A1, CLIENT, 64), Expect::Forward).output(out(tcp(EXT_PORT_MAC, EXT_PORT_MAC, EIP, CLIENT, 63))).to(up),
        t.port_row("a1 -> internet ICMP echo: only the IPv4 header changes", "tp1", ping(A1_MAC, GW_A_MAC, A1, CLIENT, 64), Expect::Forward).output(out(ping(EXT_PORT_MAC, EXT_PORT_MAC, EIP, CLIENT, 63))).to(up),
        t.port_row("a1's ICMP error about a datagram the client sent to its EIP: outer source and quoted destination become the EIP", "tp1", port_unreachable(A1_MAC, GW_A_MAC, A1, CLIENT, 64, CLIENT, A1), Expect::Forward).output(out(port_unreachable(EXT_PORT_MAC, EXT_PORT_MAC, EIP, CLIENT, 63, CLIENT, EIP))).to(up),
        t.port_row("a1 -> internet, a later fragment (no L4 header): translated, IPv4 checksum only", "tp1", later_fragment(A1_MAC, GW_A_MAC, A1, CLIENT, 64), Expect::Forward).output(out(later_fragment(EXT_PORT_MAC, EXT_PORT_MAC, EIP, CLIENT, 63))).to(up),
        t.port_row("a2 (no elastic IP) -> internet: to the router's SNAT gateway untranslated, on net a's VNI, MACs kept", "tp2", udp(A2_MAC, GW_A_MAC, A2, CLIENT, 64), Expect::Forward).output(encapsulated_frame(&udp(A2_MAC, GW_A_MAC, A2, CLIENT, 63), 100, GATEWAY_HOST)).to(up),
    ];
    t.check_rows(rows);
}

#[test]
fn inbound_destination_becomes_the_fixed_ip() {
    let mut t = tester(false);
    let tp1 = t.ifindex("tp1");
    let routed = |f: Vec<u8>| Expected::from(f);
    #[rustfmt::skip]
    let rows = vec![
        t.uplink_row("VNI 900 UDP to a1's EIP: destination 10.1.0.5, TTL-1, a1's MACs, to tp1", vxlan_in(EXT_VNI, &udp(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP, 64)), Expect::Forward).output(routed(udp(GW_A_MAC, A1_MAC, CLIENT, A1, 63))).to(tp1),
        t.uplink_row("VNI 900 TCP to a1's EIP", vxlan_in(EXT_VNI, &tcp(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP, 64)), Expect::Forward).output(routed(tcp(GW_A_MAC, A1_MAC, CLIENT, A1, 63))).to(tp1),
        t.uplink_row("VNI 900 ICMP echo to a1's EIP", vxlan_in(EXT_VNI, &ping(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP, 64)), Expect::Forward).output(routed(ping(GW_A_MAC, A1_MAC, CLIENT, A1, 63))).to(tp1),
        t.uplink_row("VNI 900 ICMP error about a1's datagram (quoted source the EIP): both addresses back to 10.1.0.5", vxlan_in(EXT_VNI, &port_unreachable(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP, 64, EIP, CLIENT)), Expect::Forward).output(routed(port_unreachable(GW_A_MAC, A1_MAC, CLIENT, A1, 63, A1, CLIENT))).to(tp1),
        t.uplink_row("VNI 900 later fragment to a1's EIP", vxlan_in(EXT_VNI, &later_fragment(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP, 64)), Expect::Forward).output(routed(later_fragment(GW_A_MAC, A1_MAC, CLIENT, A1, 63))).to(tp1),
        t.uplink_row("VNI 900 to a1's EIP with TTL 1: dropped", vxlan_in(EXT_VNI, &udp(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP, 1)), Expect::Drop(TtlExceeded)),
        t.uplink_row("VNI 900 to an EIP bound on another host, on a host that is no gateway: dropped", vxlan_in(EXT_VNI, &udp(ROUTER_MAC, EXT_PORT_MAC, CLIENT, EIP_REMOTE, 64)), Expect::Drop(UnknownElasticIp)),
        t.uplink_row("VNI 900 to an address that is no EIP, on a host that is no gateway: dropped", vxlan_in(EXT_VNI, &udp(ROUTER_MAC, EXT_PORT_MAC, EIP, CLIENT, 64)), Expect::Drop(UnknownElasticIp)),
    ];
    t.check_rows(rows);
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
    #[rustfmt::skip]
    let rows = vec![
        ext_row("internet -> EIP bound on another host: tunnelled unchanged on VNI 900 to that host", from_internet.clone(), Expect::Forward).output(encapsulated_frame(&from_internet, EXT_VNI, HOST_REMOTE)).to(up),
        ext_row("ARP for an EIP on the external network: answered with the external interface's MAC", ext_arp, Expect::Answer).output(ext_arp_reply),
        ext_row("internet -> an address that is no EIP: to the gateway's own stack", udp(ROUTER_MAC, ext_mac, CLIENT, [198, 51, 100, 99], 64), Expect::Pass(strato_tests::progtest::Class::Ipv4)),
        t.uplink_row("VNI 900 from a VM's host (source already its EIP): out of the external interface to the FIB's next hop", vxlan_in(EXT_VNI, &outbound), Expect::Forward).output(Expected::from(sent).any(6..12)).to(ext),
    ];
    t.check_rows(rows);
}

// ---------------------------------------------------------------------------
// Router SNAT on the gateway host, and the bandwidth limit's burst.

const SNAT_IP: [u8; 4] = [198, 51, 100, 2];
/// The gateway host's external interface MAC (its `HostInfo::ext_mac`).
const SNAT_EXT_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x0e, 0x0e, 0x0e];

/// A gateway host (external interface up1) doing router r1's SNAT.
fn snat_tester() -> ProgramTester {
    let w = World::new()
        .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
        .router(Router::new("r1").interface("sa", GW_A_MAC))
        .entry(strato_proto::config::Entry::Snat(
            strato_proto::config::SnatEntry {
                router_id: "r1".into(),
                ip: "198.51.100.2".into(),
                ext_vni: EXT_VNI,
                vnis: vec![100],
                host: "gw".into(),
                underlay_ip: "198.18.1.1".into(),
                local: true,
            },
        ));
    let mut t = ProgramTester::in_test_net();
    t.install(&w);
    let ext = t.ifindex(OTHER_LINK);
    let host = HostInfo {
        flags: HOST_F_GATEWAY,
        ext_ifindex: ext,
        ext_slot: t.slot_for(ext),
        ext_mac: SNAT_EXT_MAC,
        ..t.default_host()
    };
    t.set_host(host);
    t
}

/// The IPv4 and L4 checksums of an untagged frame are right (etherparse
/// recomputes them over the whole packet).
fn checksums_ok(f: &[u8]) -> Result<(), String> {
    let p = etherparse::SlicedPacket::from_ethernet(f).map_err(|e| format!("parse: {e}"))?;
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        return Err("not IPv4".into());
    };
    let h = ip.header().to_header();
    if h.header_checksum != h.calc_header_checksum() {
        return Err("IPv4 header checksum".into());
    }
    let (what, got, want) = match &p.transport {
        Some(etherparse::TransportSlice::Udp(u)) => (
            "UDP",
            u.checksum(),
            u.to_header()
                .calc_checksum_ipv4(&h, u.payload())
                .map_err(|e| e.to_string())?,
        ),
        Some(etherparse::TransportSlice::Tcp(t)) => (
            "TCP",
            t.checksum(),
            t.to_header()
                .calc_checksum_ipv4(&h, t.payload())
                .map_err(|e| e.to_string())?,
        ),
        Some(etherparse::TransportSlice::Icmpv4(i)) => (
            "ICMP",
            i.checksum(),
            i.icmp_type().calc_checksum(i.payload()),
        ),
        _ => return Ok(()),
    };
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} checksum {got:#x} want {want:#x}"))
    }
}

/// The MAC of an interface of the test namespace (a veth's, chosen by the
/// kernel: the source of frames the FIB sends out of it).
fn link_mac(t: &ProgramTester, link: &str) -> [u8; 6] {
    let o = std::process::Command::new("ip")
        .args(["-n", t.net().name(), "-br", "link", "show", link])
        .output()
        .expect("ip link show");
    assert!(o.status.success(), "ip link show {link}: {o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    let field = text.split_whitespace().nth(2).unwrap_or_default();
    let bytes: Vec<u8> = field
        .split(':')
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    bytes
        .try_into()
        .unwrap_or_else(|_| panic!("no MAC for {link} in {text:?}"))
}

fn udp_from(mac: [u8; 6], src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    packets::udp4(mac, GW_A_MAC, src, dst, 63, sport, dport, PAYLOAD)
}

/// Delivers `frame` into `ingress` for real (the entry point attached to
/// it) and returns the one frame that came out, which must be out of
/// `egress`: for translations whose expected bytes depend on what the
/// program chose (a SNAT port), so they cannot be fixture rows.
fn through(
    t: &mut ProgramTester,
    attach: Attach,
    ingress: u32,
    frame: &[u8],
    egress: u32,
    what: &str,
) -> Vec<u8> {
    let out = t.deliver(attach, ingress, frame);
    match out.as_slice() {
        [(i, f)] if *i == egress => f.clone(),
        other => panic!(
            "{what}: want one frame out of {}, came out of [{}]",
            t.net().name_of(egress),
            other
                .iter()
                .map(|(i, f)| format!("{} ({} bytes)", t.net().name_of(*i), f.len()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[test]
fn router_snat_on_the_gateway() {
    let mut t = snat_tester();
    let (up, ext) = (t.ifindex(UPLINK), t.ifindex(OTHER_LINK));
    let remote = OTHER_LINK_UNDERLAY;
    // A VM's packet from its host's tunnel, translated and sent out of the
    // external interface (delivered for real: that is where it must leave).
    let out = |t: &mut ProgramTester, frame: Vec<u8>| {
        through(
            t,
            Attach::Uplink,
            up,
            &vxlan_in(100, &frame),
            ext,
            "a VM's packet to the internet, after SNAT",
        )
    };
    // A VM's datagram: source the router's address and a port of 1024+.
    let o = out(&mut t, udp_from(A1_MAC, A1, 40000, remote, 5000));
    let f = &o;
    assert_eq!(
        &f[0..6],
        &OTHER_LINK_NEXTHOP_MAC,
        "to the external next hop"
    );
    assert_eq!(&f[L3 + 12..L3 + 16], &SNAT_IP);
    assert_eq!(&f[L3 + 16..L3 + 20], &remote);
    let port = u16::from_be_bytes([f[L3 + 20], f[L3 + 21]]);
    assert!(port >= 1024);
    checksums_ok(f).expect("checksums after SNAT");
    // The same flow keeps its port; another VM's gets another.
    let again = out(&mut t, udp_from(A1_MAC, A1, 40000, remote, 5000));
    assert_eq!(u16::from_be_bytes([again[L3 + 20], again[L3 + 21]]), port);
    let other = out(&mut t, udp_from(A2_MAC, A2, 40000, remote, 5000));
    assert_ne!(u16::from_be_bytes([other[L3 + 20], other[L3 + 21]]), port);
    // The reply, on the external interface: back to a1, tunnelled to its
    // host (the one it came from) on its network's VNI.
    let reply = packets::udp4(
        ROUTER_MAC,
        SNAT_EXT_MAC,
        remote,
        SNAT_IP,
        64,
        5000,
        port,
        PAYLOAD,
    );
    let inner = packets::udp4(GW_A_MAC, A1_MAC, remote, A1, 63, 5000, 40000, PAYLOAD);
    #[rustfmt::skip]
    let rows = vec![
        Fixture::new("reply to the SNAT address: back to a1's address and port, tunnelled on VNI 100 to a1's host", reply.clone(), Expect::Forward).on(Attach::External).at(ext).output(encapsulated_frame(&inner, 100, GATEWAY_HOST)).to(up),
        Fixture::new("a datagram to the SNAT address that no flow expects: dropped", packets::udp4(ROUTER_MAC, SNAT_EXT_MAC, remote, SNAT_IP, 64, 5000, 1, PAYLOAD), Expect::Drop(SnatNoFlow)).on(Attach::External).at(ext),
        t.uplink_row("a VM's later fragment: SNAT cannot translate it", vxlan_in(100, &later_fragment(A1_MAC, GW_A_MAC, A1, remote, 63)), Expect::Drop(SnatFragment)),
    ];
    t.check_rows(rows);
    // A VM's TCP segment: translated. The external port is the allocator's
    // choice: read it from SNAT_OUT, then every byte of the frame is fixed
    // (etherparse computes the checksums over the translated segment).
    let segment = tcp(A1_MAC, GW_A_MAC, A1, remote, 63);
    let o = out(&mut t, segment);
    let flows = t.dataplane().snat_entries().expect("SNAT_OUT");
    let (_, given) = flows
        .iter()
        .find(|(k, _)| {
            (k.inside, k.remote, k.inside_port, k.remote_port, k.proto)
                == (A1, remote, 40000, 443, 6)
        })
        .unwrap_or_else(|| panic!("no SNAT_OUT entry for a1's TCP flow: {flows:?}"));
    assert_eq!(given.ext_ip, SNAT_IP, "the flow's external address");
    assert!(given.ext_port >= 1024, "port {} below 1024", given.ext_port);
    let want = {
        let b = PacketBuilder::ethernet2(link_mac(&t, OTHER_LINK), OTHER_LINK_NEXTHOP_MAC)
            .ipv4(SNAT_IP, remote, 63)
            .tcp(given.ext_port, 443, 1, 65535);
        let mut v = Vec::new();
        b.write(&mut v, PAYLOAD).expect("tcp");
        v
    };
    if let Some(why) = Expected::from(want).mismatch(&o) {
        panic!("a VM's TCP segment after SNAT: {why}");
    }
    // ICMP echo: the identifier is the port.
    let ping_out = out(&mut t, ping(A1_MAC, GW_A_MAC, A1, remote, 63));
    checksums_ok(&ping_out).expect("ICMP checksum after SNAT");
    let id = u16::from_be_bytes([ping_out[L3 + 24], ping_out[L3 + 25]]);
    let echo_reply = {
        let b = PacketBuilder::ethernet2(ROUTER_MAC, SNAT_EXT_MAC)
            .ipv4(remote, SNAT_IP, 64)
            .icmpv4_echo_reply(id, 1);
        let mut v = Vec::new();
        b.write(&mut v, PAYLOAD).expect("echo reply");
        v
    };
    let back = through(
        &mut t,
        Attach::External,
        ext,
        &echo_reply,
        up,
        "the echo reply to the SNAT address, back through the tunnel",
    );
    let inner = &back[50..];
    assert_eq!(&inner[L3 + 16..L3 + 20], &A1, "to a1");
    assert_eq!(
        u16::from_be_bytes([inner[L3 + 24], inner[L3 + 25]]),
        7,
        "with a1's identifier"
    );
    checksums_ok(inner).expect("ICMP checksum back");
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

#[test]
fn bandwidth_limit_honours_the_burst() {
    // 8 kbit/s with an 80 kbit (10,000-byte) bucket: a 1,000-byte datagram
    // costs 1 s of the rate, so ten pass at once, then the limit drops.
    // The program reads the kernel's clock, which the test cannot stop:
    // each count is checked against the bucket's arithmetic with the time
    // that really passed (measured around the runs) as the only slack, one
    // more datagram per second. So the check holds on a machine of any
    // speed and still fails on a wrong bucket.
    let mut fip = strato_proto::config::FloatingIpEntry {
        id: "fip-q".into(),
        floating_ip_address: "198.51.100.10".into(),
        fixed_ip_address: "10.1.0.5".into(),
        port_id: "a1".into(),
        network_id: format!("ext{EXT_VNI}"),
        vni: EXT_VNI,
        host: "h".into(),
        underlay_ip: "198.18.1.1".into(),
        steer: false,
        qos_policy_id: Some("q".into()),
        limits: vec![strato_proto::config::BandwidthLimit {
            direction: "egress".into(),
            max_kbps: 8,
            max_burst_kbps: 80,
        }],
    };
    const COST_NS: u64 = 1_000_000_000;
    let w = World::new()
        .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
        .router(router())
        .port(Port::local("a1", "a", "tp1", A1_MAC, A1))
        .entry(strato_proto::config::Entry::FloatingIp(fip.clone()));
    let mut t = ProgramTester::in_test_net();
    t.install(&w);
    let tp1 = t.ifindex("tp1");
    let key = QosKey {
        eip: EIP,
        direction: DIR_EGRESS,
    };
    let bucket = t.dataplane().tables().expect("tables").eip_qos[&key];
    assert_eq!(
        (bucket.rate_bps, bucket.burst_ns),
        (8_000, 10 * COST_NS),
        "the compiled bucket: 8 kbit/s, 10 s deep"
    );
    // IP length 1,000.
    let frame = packets::udp4(A1_MAC, GW_A_MAC, A1, CLIENT, 64, 40000, 5000, &[0x5a; 972]);
    // `n` datagrams; how many passed, every other one dropped as over the
    // rate; and the ns that passed from `since` to after the last run.
    let send = |t: &mut ProgramTester, n: usize, since: u64| -> (u64, u64) {
        let mut passed = 0;
        for i in 0..n {
            let o = t.run(Attach::Port, tp1, &frame);
            match o.verdict {
                Verdict::Redirect => passed += 1,
                Verdict::Drop => assert!(
                    o.counters.drops.keys().any(|(_, r)| *r == QosRateExceeded),
                    "datagram {i} dropped for another reason: {:?}",
                    o.counters.drops
                ),
                v => panic!("datagram {i}: {v:?}"),
            }
        }
        (passed, monotonic_ns() - since)
    };
    // `n` datagrams from `since`: `want` pass, plus one per second the run
    // took (refilled meanwhile).
    let expect_passed = |t: &mut ProgramTester, n: usize, since: u64, want: u64, when: &str| {
        let (passed, took) = send(t, n, since);
        let slack = took / COST_NS;
        assert!(
            (want..=want + slack).contains(&passed),
            "{passed} of {n} passed {when}, want {want} (+{slack} refilled in {took} ns)"
        );
    };
    // The bucket with its virtual clock `secs` before now; now.
    let clock_back = |t: &mut ProgramTester, secs: u64| -> u64 {
        let now = monotonic_ns();
        let b = QosBucket {
            clock_ns: now - secs * COST_NS,
            ..bucket
        };
        t.dataplane()
            .apply(&Diff {
                eip_qos: (vec![(key, b)], vec![]),
                ..Diff::default()
            })
            .expect("write the bucket");
        now
    };
    // A fresh bucket is full: ten pass, plus one per second of the run.
    let start = monotonic_ns();
    expect_passed(&mut t, 20, start, 10, "from a fresh bucket (its burst)");
    // Refill, with the clock driven through the bucket: its virtual clock
    // set 3 s before now is a drained bucket after 3 s of refill: three
    // pass, the rest drop.
    let now = clock_back(&mut t, 3);
    expect_passed(&mut t, 10, now, 3, "after 3 s of refill");
    // A bucket drained long ago is full again, never fuller than its depth.
    let now = clock_back(&mut t, 100);
    expect_passed(&mut t, 20, now, 10, "after 100 s idle (the burst)");
    // Without a limit all pass.
    fip.limits.clear();
    let w = w.entry(strato_proto::config::Entry::FloatingIp(fip));
    t.install(&w);
    let all = (0..20)
        .filter(|_| t.run(Attach::Port, tp1, &frame).verdict == Verdict::Redirect)
        .count();
    assert_eq!(all, 20);
}

#[test]
fn without_snat_a_vm_without_an_elastic_ip_stays_in() {
    let w = World::new()
        .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
        .router(router().no_snat())
        .port(Port::local("a1", "a", "tp1", A1_MAC, A1))
        .port(Port::local("a2", "a", "tp2", A2_MAC, A2))
        .floating_ip(EIP, EXT_VNI, "a1", A1, UNDERLAY_IP, false);
    let mut t = ProgramTester::in_test_net();
    t.install(&w);
    let up = t.ifindex(UPLINK);
    let rows = vec![
        t.port_row(
            "enable_snat false: a2 (no elastic IP) -> internet: dropped",
            "tp2",
            udp(A2_MAC, GW_A_MAC, A2, CLIENT, 64),
            Expect::Drop(NoElasticIp),
        ),
        t.port_row(
            "enable_snat false: a1 still leaves by its elastic IP",
            "tp1",
            udp(A1_MAC, GW_A_MAC, A1, CLIENT, 64),
            Expect::Forward,
        )
        .output(encapsulated_frame(
            &udp(EXT_PORT_MAC, EXT_PORT_MAC, EIP, CLIENT, 63),
            EXT_VNI,
            GATEWAY_HOST,
        ))
        .to(up),
    ];
    t.check_rows(rows);
}

#[test]
fn the_tc_build_leaves_the_vpc_too() {
    let mut t = tester(false);
    let tp1 = t.ifindex("tp1");
    for frame in [
        udp(A1_MAC, GW_A_MAC, A1, CLIENT, 64),
        ping(A1_MAC, GW_A_MAC, A1, CLIENT, 64),
        tcp(A1_MAC, GW_A_MAC, A1, CLIENT, 64),
    ] {
        let (verdict, out) = t.run_tc(tp1, &frame);
        assert_eq!(verdict, 7, "TC_ACT_REDIRECT; output {out:02x?}");
    }
}

#[test]
fn router_snat_exhaustion_is_counted() {
    let mut t = snat_tester();
    let (up, ext) = (t.ifindex(UPLINK), t.ifindex(OTHER_LINK));
    let remote = OTHER_LINK_UNDERLAY;
    // Every external port towards remote:5000 taken by other VMs' flows.
    t.dataplane()
        .snat_occupy(SNAT_IP, remote, 5000, 17, 1024..=65535)
        .expect("occupy the ports");
    t.check(&t.uplink_row(
        "a new flow to remote:5000 with every port taken: dropped, counted as snat_exhausted",
        vxlan_in(100, &udp_from(A1_MAC, A1, 40000, remote, 5000)),
        Expect::Drop(SnatExhausted),
    ));
    // Mappings depend on the remote end: another remote port still gets one.
    let o = through(
        &mut t,
        Attach::Uplink,
        up,
        &vxlan_in(100, &udp_from(A1_MAC, A1, 40000, remote, 5001)),
        ext,
        "another remote port is not exhausted",
    );
    assert_eq!(
        &o[L3 + 12..L3 + 16],
        &SNAT_IP,
        "translated to the SNAT address"
    );
}

/// An ICMP port unreachable `src` -> `dst` quoting the IPv4 + UDP headers
/// of `quoted` (a whole frame).
fn unreachable_quoting(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    quoted: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, ttl)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Port,
        ));
    let mut out = Vec::new();
    b.write(&mut out, &quoted[L3..L3 + 28]).expect("icmp error");
    out
}

#[test]
fn router_snat_translates_icmp_errors_back() {
    let mut t = snat_tester();
    let (up, ext) = (t.ifindex(UPLINK), t.ifindex(OTHER_LINK));
    let remote = OTHER_LINK_UNDERLAY;
    // a1's datagram goes out translated; the port it got:
    let o = through(
        &mut t,
        Attach::Uplink,
        up,
        &vxlan_in(100, &udp_from(A1_MAC, A1, 40000, remote, 5000)),
        ext,
        "a1's datagram, translated",
    );
    let port = u16::from_be_bytes([o[L3 + 20], o[L3 + 21]]);
    // The remote end answers with port unreachable, quoting the datagram
    // as it arrived (from the router's address and that port).
    let as_sent = packets::udp4(
        EXT_PORT_MAC,
        EXT_PORT_MAC,
        SNAT_IP,
        remote,
        62,
        port,
        5000,
        PAYLOAD,
    );
    let error = unreachable_quoting(ROUTER_MAC, SNAT_EXT_MAC, remote, SNAT_IP, 64, &as_sent);
    // a1 gets it quoting its own datagram: address, port and checksums.
    let as_a1_sent = packets::udp4(
        EXT_PORT_MAC,
        EXT_PORT_MAC,
        A1,
        remote,
        62,
        40000,
        5000,
        PAYLOAD,
    );
    let want = unreachable_quoting(GW_A_MAC, A1_MAC, remote, A1, 63, &as_a1_sent);
    let rows = vec![
        Fixture::new("port unreachable for a translated datagram: back to a1, quoting a1's address and port (checksums right)", error, Expect::Forward)
            .on(Attach::External)
            .at(ext)
            .output(encapsulated_frame(&want, 100, GATEWAY_HOST))
            .to(up),
        Fixture::new("an ICMP error quoting a flow nobody has: dropped",
            unreachable_quoting(ROUTER_MAC, SNAT_EXT_MAC, remote, SNAT_IP, 64,
                &packets::udp4(EXT_PORT_MAC, EXT_PORT_MAC, SNAT_IP, remote, 62, 1, 5000, PAYLOAD)),
            Expect::Drop(SnatNoFlow))
            .on(Attach::External)
            .at(ext),
    ];
    t.check_rows(rows);
}
