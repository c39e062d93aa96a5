//! Program tests for the L4 load balancer: compiled load balancers -> the
//! agent's tables (`lbmaps`) -> packets through BPF_PROG_TEST_RUN.
//!
//! The world: router r1 joins net a (VNI 100, 10.1.0.0/24) and net b
//! (VNI 200, 10.2.0.0/24). Client c1 (10.1.0.5, tp1) and member m1
//! (10.2.0.10, tp2) are on this host; member m2 (10.2.0.11) is on host
//! 198.18.2.3. The load balancer's VIP is 10.1.0.100 on net a, with
//! listeners: TCP 80 -> m1:8080; TCP 90 -> m2:8080; TCP 81 and UDP 81 with
//! no member; UDP 53 -> m1:5353; TCP 70 -> m2 and four more remote members
//! (weights 1, 1, 2, 2, 4) for the spread.
//!
//! Expected frames are built from scratch with etherparse (every checksum
//! computed over the translated packet), never with the dataplane's code.

use std::collections::BTreeMap;

use dataplane_common::{DropReason::*, HOST_F_LB};
use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type, PacketBuilder};
use strato_dataplane::Attach;
use strato_proto::config::{Entry, ListenerEntry, LoadBalancerEntry, MemberEntry};
use strato_tests::progtest::{
    mac, Expect, Expected, Fixture, Net, Port, ProgramTester, Router, Verdict, World, UNDERLAY_IP,
    UPLINK, UPLINK_MAC,
};

const GW_A_MAC: [u8; 6] = mac([0xa0, 0, 1]);
const GW_B_MAC: [u8; 6] = mac([0xb0, 0, 1]);
const C1_MAC: [u8; 6] = mac([0, 1, 5]);
const C1: [u8; 4] = [10, 1, 0, 5];
const M1_MAC: [u8; 6] = mac([0, 2, 10]);
const M1: [u8; 4] = [10, 2, 0, 10];
const M2_MAC: [u8; 6] = mac([0, 2, 11]);
const M2: [u8; 4] = [10, 2, 0, 11];
const HOST_M2: [u8; 4] = [198, 18, 2, 3];
const VIP_MAC: [u8; 6] = mac([0, 1, 100]);
const VIP: [u8; 4] = [10, 1, 0, 100];
const GW_A: [u8; 4] = [10, 1, 0, 1];
const PEER_HOST_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x02, 0x02, 0x02];
/// Extra remote members of listener 70 (weights 1, 2, 2, 4 after m2's 1).
const SPREAD: [([u8; 4], u16); 4] = [
    ([10, 2, 0, 21], 1),
    ([10, 2, 0, 22], 2),
    ([10, 2, 0, 23], 2),
    ([10, 2, 0, 24], 4),
];

const PAYLOAD: &[u8] = b"strato load balancer payload";

fn member(id: &str, ip: [u8; 4], port: u16, weight: u16, state: &str) -> MemberEntry {
    MemberEntry {
        id: id.into(),
        address: std::net::Ipv4Addr::from(ip).to_string(),
        protocol_port: port,
        weight,
        backup: false,
        state: state.into(),
        monitor_address: None,
        monitor_port: None,
        location: None,
    }
}

fn listener(id: &str, protocol: &str, port: u16, members: Vec<MemberEntry>) -> ListenerEntry {
    ListenerEntry {
        id: id.into(),
        protocol: protocol.into(),
        protocol_port: port,
        idle_timeout_s: 50,
        drain_timeout_s: 30,
        source_ip: false,
        pool_id: Some(format!("pool-{id}")),
        at_limit: false,
        monitor: None,
        members,
    }
}

fn load_balancer(m1_state: &str) -> LoadBalancerEntry {
    // "drain-expired": m1 disabled under a listener without drain time.
    let (state, drain) = match m1_state {
        "drain-expired" => ("draining", 0),
        s => (s, 30),
    };
    let mut l80 = listener("l80", "TCP", 80, vec![member("m1", M1, 8080, 1, state)]);
    l80.drain_timeout_s = drain;
    let mut spread = vec![member("m2", M2, 8080, 1, "active")];
    for (i, (ip, w)) in SPREAD.iter().enumerate() {
        spread.push(member(&format!("s{i}"), *ip, 8080, *w, "active"));
    }
    LoadBalancerEntry {
        id: "lb1".into(),
        vip_network_id: "a".into(),
        vip_address: "10.1.0.100".into(),
        vip_mac: "fa:16:3e:00:01:64".into(),
        admin_state_up: true,
        listeners: vec![
            l80,
            listener("l90", "TCP", 90, vec![member("m2", M2, 8080, 1, "active")]),
            listener("l81", "TCP", 81, vec![]),
            listener("l81u", "UDP", 81, vec![]),
            listener("l53", "UDP", 53, vec![member("m1", M1, 5353, 1, "active")]),
            listener("l70", "TCP", 70, spread),
        ],
        domain: 0,
        floating_ip: None,
        gateway: false,
        checked_pools: vec![],
    }
}

fn world(m1_state: &str) -> World {
    let mut w = World::new()
        .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
        .net(Net::new("b", 200).subnet("sb", "10.2.0.0/24", "10.2.0.1"))
        .router(Router::on("r1", &[("sa", GW_A_MAC), ("sb", GW_B_MAC)]))
        .port(Port::local("c1", "a", "tp1", C1_MAC, C1))
        .port(Port::local("m1", "b", "tp2", M1_MAC, M1))
        .port(Port::remote("m2", "b", HOST_M2, M2_MAC, M2));
    for (i, (ip, _)) in SPREAD.iter().enumerate() {
        w = w.port(Port::remote(
            &format!("s{i}"),
            "b",
            HOST_M2,
            mac([0, 2, 21 + i as u8]),
            *ip,
        ));
    }
    w.entry(Entry::LoadBalancer(load_balancer(m1_state)))
}

fn tester() -> ProgramTester {
    let mut t = ProgramTester::in_test_net();
    t.install(&world("active"));
    let mut host = t.default_host();
    host.flags |= HOST_F_LB;
    t.set_host(host);
    t
}

fn tcp(
    macs: ([u8; 6], [u8; 6]),
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    ttl: u8,
    syn: bool,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src.0, dst.0, ttl)
        .tcp(src.1, dst.1, 1000, 65535);
    let b = if syn { b.syn() } else { b.ack(5000) };
    let mut v = Vec::new();
    b.write(&mut v, PAYLOAD).expect("tcp");
    v
}

fn udp(macs: ([u8; 6], [u8; 6]), src: ([u8; 4], u16), dst: ([u8; 4], u16), ttl: u8) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src.0, dst.0, ttl)
        .udp(src.1, dst.1);
    let mut v = Vec::new();
    b.write(&mut v, PAYLOAD).expect("udp");
    v
}

/// The reset answering a segment `client` -> `vip` with sequence 1000 and
/// `PAYLOAD` (a SYN: acknowledges one more).
fn reset(port: u16, client_port: u16, syn: bool) -> Vec<u8> {
    let (seq, ack) = if syn {
        (0, 1000 + PAYLOAD.len() as u32 + 1)
    } else {
        (5000, 0)
    };
    let mut ip =
        etherparse::Ipv4Header::new(20, 64, etherparse::IpNumber::TCP, VIP, C1).expect("small");
    ip.dont_fragment = true;
    let mut t = etherparse::TcpHeader::new(port, client_port, seq, 0);
    t.rst = true;
    t.ack = syn;
    t.acknowledgment_number = ack;
    t.checksum = t.calc_checksum_ipv4(&ip, &[]).expect("checksum");
    let b = PacketBuilder::ethernet2(VIP_MAC, C1_MAC)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()));
    let mut v = Vec::new();
    b.tcp_header(t).write(&mut v, &[]).expect("rst");
    v
}

/// The inner frame of a VXLAN frame to `host` on `vni` (outer headers
/// not fixed here: the VPC tests cover them).
fn tunnelled(inner: Vec<u8>, vni: u32) -> Expected {
    let mut f = vec![0u8; 42];
    f.extend_from_slice(&dataplane_common_vxlan(vni));
    f.extend_from_slice(&inner);
    Expected::from(f)
        .any(0..42)
        .check("outer destination is m2's host", |f| {
            if f[30..34] == HOST_M2 {
                Ok(())
            } else {
                Err(format!("outer destination {:?}", &f[30..34]))
            }
        })
}

fn dataplane_common_vxlan(vni: u32) -> [u8; 8] {
    strato_tests::packets::vxlan_header(0x08, vni)
}

/// A row: c1's TCP segment from `sport` to VIP:80 (a SYN if `syn`),
/// forwarded to m1 on tp2 as m1 receives it: routed onto net b (TTL 63,
/// MACs), VIP:80 translated to m1:8080.
fn to_m1(t: &ProgramTester, d: &str, sport: u16, syn: bool) -> Fixture {
    let segment = tcp((C1_MAC, VIP_MAC), (C1, sport), (VIP, 80), 64, syn);
    t.port_row(d, "tp1", segment, Expect::Forward)
        .to(t.ifindex("tp2"))
        .output(tcp((GW_B_MAC, M1_MAC), (C1, sport), (M1, 8080), 63, syn))
}

/// A row: c1's TCP segment from `sport` to VIP:80 (a SYN if `syn`),
/// answered by the load balancer with a reset, counted as `reason`.
fn reset_by_lb(
    t: &ProgramTester,
    d: &str,
    sport: u16,
    syn: bool,
    reason: dataplane_common::DropReason,
) -> Fixture {
    let segment = tcp((C1_MAC, VIP_MAC), (C1, sport), (VIP, 80), 64, syn);
    t.port_row(d, "tp1", segment, Expect::AnswerError(reason))
        .output(reset(80, sport, syn))
}

#[test]
fn vip_translation_reply_and_refusals() {
    let mut t = tester();
    let tp1 = t.ifindex("tp1");
    let tp2 = t.ifindex("tp2");
    let up = t.ifindex(UPLINK);
    #[rustfmt::skip]
    let rows = vec![
        to_m1(&t, "SYN to VIP:80 -> local member m1:8080, routed (TTL, MACs)", 40000, true),
        to_m1(&t, "the connection's next segment goes to the same member", 40000, false),
        t.port_row("m1's reply is translated back to VIP:80 on its way to c1", "tp2", tcp((M1_MAC, GW_B_MAC), (M1, 8080), (C1, 40000), 64, false), Expect::Forward).to(tp1).output(tcp((GW_A_MAC, C1_MAC), (VIP, 80), (C1, 40000), 63, false)),
        t.port_row("SYN to VIP:90 -> remote member m2:8080, tunnelled on net b's VNI", "tp1", tcp((C1_MAC, VIP_MAC), (C1, 40001), (VIP, 90), 64, true), Expect::Forward).to(up).output(tunnelled(tcp((GW_B_MAC, M2_MAC), (C1, 40001), (M2, 8080), 63, true), 200)),
        Fixture::new("m2's reply arrives tunnelled and is translated back to VIP:90", strato_tests::packets::vxlan(PEER_HOST_MAC, UPLINK_MAC, HOST_M2, UNDERLAY_IP, 51234, 0x08, 100, &tcp((GW_A_MAC, C1_MAC), (M2, 8080), (C1, 40001), 63, false)), Expect::Forward).on(Attach::Uplink).at(up).to(tp1).output(tcp((GW_A_MAC, C1_MAC), (VIP, 90), (C1, 40001), 63, false)),
        t.port_row("UDP to VIP:53 -> m1:5353", "tp1", udp((C1_MAC, VIP_MAC), (C1, 40002), (VIP, 53), 64), Expect::Forward).to(tp2).output(udp((GW_B_MAC, M1_MAC), (C1, 40002), (M1, 5353), 63)),
        t.port_row("SYN to a listener without members: reset", "tp1", tcp((C1_MAC, VIP_MAC), (C1, 40003), (VIP, 81), 64, true), Expect::AnswerError(LbNoBackend)).output(reset(81, 40003, true)),
        t.port_row("SYN to a port without a listener: reset", "tp1", tcp((C1_MAC, VIP_MAC), (C1, 40003), (VIP, 82), 64, true), Expect::AnswerError(LbNoListener)).output(reset(82, 40003, true)),
        t.port_row("UDP to a listener without members: ICMP port unreachable", "tp1", udp((C1_MAC, VIP_MAC), (C1, 40004), (VIP, 81), 64), Expect::AnswerError(LbNoBackend)).output(port_unreachable(udp((C1_MAC, VIP_MAC), (C1, 40004), (VIP, 81), 64))),
        t.port_row("ICMP to the VIP: not balanced", "tp1", strato_tests::packets::ping4(C1_MAC, VIP_MAC, C1, VIP, 64, 7, 1, PAYLOAD), Expect::Drop(LbUnsupported)),
    ];
    for f in rows {
        t.check(&f);
    }
    // One connection per TCP/UDP tuple that was given a member.
    let flows = t.dataplane().lb_flows().expect("read LB_FLOWS");
    assert_eq!(flows.len(), 3, "{flows:?}");
    let f80 = flows.iter().find(|(k, _)| k.remote_port == 80).unwrap().1;
    // (`check` may run a row more than once.)
    assert!(f80.packets >= 2, "{f80:?}");
}

/// The load balancer in front of the pipeline translates in the same
/// program run: with the tail program (`TAIL_LB`) gone, connections to a
/// listener are still balanced, new and known ones; only what is refused
/// needs the tail (here it fails, dropped as `no_tail_call`).
#[test]
fn listeners_are_balanced_in_front_of_the_pipeline() {
    let mut t = tester();
    let tp2 = t.ifindex("tp2");
    t.dataplane()
        .clear_tail(dataplane_common::maps::TAIL_LB)
        .expect("empty the load balancer's tail slot");
    #[rustfmt::skip]
    let rows = vec![
        to_m1(&t, "SYN to VIP:80 -> m1:8080 without the tail", 41000, true),
        to_m1(&t, "its next segment, a known connection", 41000, false),
        t.port_row("UDP to VIP:53 -> m1:5353 without the tail", "tp1", udp((C1_MAC, VIP_MAC), (C1, 41001), (VIP, 53), 64), Expect::Forward).to(tp2).output(udp((GW_B_MAC, M1_MAC), (C1, 41001), (M1, 5353), 63)),
        t.port_row("a refusal (listener without members) is the tail's", "tp1", tcp((C1_MAC, VIP_MAC), (C1, 41002), (VIP, 81), 64, true), Expect::Drop(NoTailCall)),
        t.port_row("a VIP addressed to another port's MAC is not balanced in front", "tp1", tcp((C1_MAC, C1_MAC), (C1, 41003), (VIP, 80), 64, true), Expect::Drop(UnknownDestination)),
    ];
    for f in rows {
        t.check(&f);
    }
}

/// An ICMP port unreachable from net a's gateway quoting `original`'s IPv4
/// header and first 20 payload bytes (what the pipeline's error path
/// quotes when there are that many).
fn port_unreachable(original: Vec<u8>) -> Vec<u8> {
    let quote = &original[14..14 + 40];
    let b = PacketBuilder::ethernet2(GW_A_MAC, C1_MAC)
        .ipv4(GW_A, C1, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Port,
        ));
    let mut v = Vec::new();
    b.write(&mut v, quote).expect("icmp");
    // The pipeline's errors carry TOS 0xc0 (network control), no DF.
    v[15] = 0xc0;
    v[20] = 0;
    strato_tests::packets::fix_ipv4_checksum(&mut v);
    v
}

#[test]
fn draining_and_down_members() {
    let mut t = tester();
    t.check(&to_m1(&t, "SYN to VIP:80 -> m1", 41000, true));
    // m1 disabled: it drains (its connection goes on), no new connection.
    t.install(&world("draining"));
    #[rustfmt::skip]
    let rows = vec![
        to_m1(&t, "a draining member keeps its connection", 41000, false),
        reset_by_lb(&t, "a draining member takes no new connection", 41001, true, LbNoBackend),
    ];
    t.check_rows(rows);
    // m1 fails its health check: its connection is reset.
    t.install(&world("down"));
    t.check(&reset_by_lb(
        &t,
        "a connection on a member that went down is reset",
        41000,
        false,
        LbDrained,
    ));
}

/// 1,000 new connections to listener 70 spread over its five members by
/// weight (1, 1, 2, 2, 4 of 10), within 10% of each share.
#[test]
fn new_connections_spread_by_weight() {
    let mut t = tester();
    let mut count: BTreeMap<[u8; 4], u32> = BTreeMap::new();
    let tp1 = t.ifindex("tp1");
    for i in 0..1000u16 {
        let f = tcp((C1_MAC, VIP_MAC), (C1, 20000 + i), (VIP, 70), 64, true);
        let out = t.run(Attach::Port, tp1, &f);
        assert_eq!(out.verdict, Verdict::Redirect, "connection {i}");
        // Inner IPv4 destination of the tunnelled frame.
        let inner = 50 + 14;
        let dst: [u8; 4] = out.output[inner + 16..inner + 20].try_into().unwrap();
        *count.entry(dst).or_default() += 1;
    }
    let weights: BTreeMap<[u8; 4], u32> = std::iter::once((M2, 1))
        .chain(SPREAD.iter().map(|(ip, w)| (*ip, *w as u32)))
        .collect();
    eprintln!("spread over weights {weights:?}: {count:?}");
    for (ip, w) in &weights {
        let want = 1000.0 * *w as f64 / 10.0;
        let got = *count.get(ip).unwrap_or(&0) as f64;
        // 10% of the share, or three standard deviations of a binomial
        // sample of 1,000 when that is more (the hash is fixed, so the
        // figure is the same on every run).
        let p = *w as f64 / 10.0;
        let sigma3 = 3.0 * (1000.0 * p * (1.0 - p)).sqrt();
        assert!(
            (got - want).abs() <= (want * 0.10).max(sigma3),
            "{ip:?}: {got} connections, want {want} (weights {weights:?}, got {count:?})"
        );
    }
}

/// A drained member's connection goes on until its listener's drain
/// timeout, and is reset after it.
#[test]
fn connections_are_reset_after_the_drain_timeout() {
    let mut t = tester();
    t.check(&to_m1(&t, "SYN to VIP:80 -> m1", 42000, true));
    t.install(&world("drain-expired"));
    t.check(&reset_by_lb(
        &t,
        "past the drain timeout the connection is reset",
        42000,
        false,
        LbDrained,
    ));
}
