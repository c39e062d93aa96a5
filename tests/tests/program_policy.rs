//! Program tests for security groups: the policy lookup in every match
//! dimension and connection tracking through its states, as rows run in
//! order against one tester (the connection table carries state from row
//! to row, as it does between packets).
//!
//! The world: VPC with router r1, net a (10.1.0.0/24) and net b
//! (10.1.1.0/24). Local ports: w1 (10.1.0.5, tp1, group web), c1 (10.1.0.6,
//! tp2, group client), d1 (10.1.1.5, tp3, group db), s1 (10.1.0.7, tp4,
//! stateless group dns), n1 (10.1.0.8, tp5, port security on and no group).
//! Remote r3 (10.1.0.20, group client) on another host.
//!
//! - web: ingress TCP 80 from 10.1.0.0/24, TCP 8000-8100 from 10.1.1.0/24,
//!   ICMP echo request (type 8) from anywhere; egress anything.
//! - client: egress anything; no ingress rule.
//! - db: ingress TCP 5432 from members of web; egress anything.
//! - dns (stateless): ingress UDP 53 from anywhere; egress UDP anything.
//!
//! Bad packets tried: SYN+FIN, SYN+RST, FIN without ACK, no flags, a segment
//! a gigabyte beyond the window, an acknowledgement of unsent data, an ICMP
//! error about no tracked flow, a non-SYN first segment to a closed port.

use dataplane_common::{DropReason::*, CT_TCP_CLOSE, CT_TCP_ESTABLISHED, CT_TCP_TIME_WAIT};
use etherparse::PacketBuilder;
use strato_dataplane::Attach;
use strato_tests::packets;
use strato_tests::progtest::{
    mac, vm, Expect, Fixture, Net, Port, ProgramTester, Router, SecurityGroupEntry, SgRuleEntry,
    Vm, World, UNDERLAY_IP, UPLINK_MAC,
};

const GW_A_MAC: [u8; 6] = mac([0xa0, 0, 1]);
const GW_B_MAC: [u8; 6] = mac([0xb0, 0, 1]);
const W1: Vm = vm([0, 1, 5], [10, 1, 0, 5], "tp1");
const C1: Vm = vm([0, 1, 6], [10, 1, 0, 6], "tp2");
const D1: Vm = vm([0, 2, 5], [10, 1, 1, 5], "tp3");
const S1: Vm = vm([0, 1, 7], [10, 1, 0, 7], "tp4");
const N1: Vm = vm([0, 1, 8], [10, 1, 0, 8], "tp5");
const R3: Vm = vm([0, 1, 0x20], [10, 1, 0, 20], "");
const HOST_R3: [u8; 4] = [198, 18, 2, 2];
const PEER_HOST_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x02, 0x02, 0x02];

fn web(allow_80: bool) -> SecurityGroupEntry {
    let mut rules = vec![
        SgRuleEntry::ipv4(
            "web-8000",
            "ingress",
            Some(6),
            (Some(8000), Some(8100)),
            Some("10.1.1.0/24"),
            None,
        ),
        SgRuleEntry::ipv4("web-ping", "ingress", Some(1), (Some(8), None), None, None),
        SgRuleEntry::ipv4("web-out", "egress", None, (None, None), None, None),
    ];
    if allow_80 {
        rules.push(SgRuleEntry::ipv4(
            "web-80",
            "ingress",
            Some(6),
            (Some(80), Some(80)),
            Some("10.1.0.0/24"),
            None,
        ));
    }
    SecurityGroupEntry {
        id: "web".into(),
        stateful: true,
        rules,
    }
}

fn world(allow_80: bool) -> World {
    World::new()
        .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
        .net(Net::new("b", 101).subnet("sb", "10.1.1.0/24", "10.1.1.1"))
        .router(Router::on("r1", &[("sa", GW_A_MAC), ("sb", GW_B_MAC)]))
        .group(web(allow_80))
        .group(SecurityGroupEntry {
            id: "client".into(),
            stateful: true,
            rules: vec![SgRuleEntry::ipv4(
                "client-out",
                "egress",
                None,
                (None, None),
                None,
                None,
            )],
        })
        .group(SecurityGroupEntry {
            id: "db".into(),
            stateful: true,
            rules: vec![
                SgRuleEntry::ipv4(
                    "db-5432",
                    "ingress",
                    Some(6),
                    (Some(5432), Some(5432)),
                    None,
                    Some("web"),
                ),
                SgRuleEntry::ipv4("db-out", "egress", None, (None, None), None, None),
            ],
        })
        .group(SecurityGroupEntry {
            id: "dns".into(),
            stateful: false,
            rules: vec![
                SgRuleEntry::ipv4(
                    "dns-in",
                    "ingress",
                    Some(17),
                    (Some(53), Some(53)),
                    None,
                    None,
                ),
                SgRuleEntry::ipv4("dns-out", "egress", Some(17), (None, None), None, None),
            ],
        })
        .port(Port::local("w1", "a", W1.tap, W1.mac, W1.ip).groups(&["web"]))
        .port(Port::local("c1", "a", C1.tap, C1.mac, C1.ip).groups(&["client"]))
        .port(Port::local("d1", "b", D1.tap, D1.mac, D1.ip).groups(&["db"]))
        .port(Port::local("s1", "a", S1.tap, S1.mac, S1.ip).groups(&["dns"]))
        .port(Port::local("n1", "a", N1.tap, N1.mac, N1.ip).groups(&[]))
        .port(Port::remote("r3", "a", HOST_R3, R3.mac, R3.ip).groups(&["client"]))
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;

/// A TCP segment on the same network (switched: delivered unchanged).
#[allow(clippy::too_many_arguments)]
fn tcp(
    from: Vm,
    to: Vm,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> Vec<u8> {
    tcp_to(from, to.mac, to.ip, sport, dport, flags, seq, ack, data)
}

#[allow(clippy::too_many_arguments)]
fn tcp_to(
    from: Vm,
    dst_mac: [u8; 6],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(from.mac, dst_mac)
        .ipv4(from.ip, dst, 64)
        .tcp(sport, dport, seq, 65535);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(ack);
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    if flags & PSH != 0 {
        b = b.psh();
    }
    let mut v = Vec::new();
    b.write(&mut v, data).expect("build tcp");
    v
}

fn udp(from: Vm, to: Vm, sport: u16, dport: u16) -> Vec<u8> {
    packets::udp4(
        from.mac,
        to.mac,
        from.ip,
        to.ip,
        64,
        sport,
        dport,
        b"policy test",
    )
}

fn ping(from: Vm, to: Vm, id: u16) -> Vec<u8> {
    packets::ping4(from.mac, to.mac, from.ip, to.ip, 64, id, 1, b"policy test")
}

fn echo_reply(from: Vm, to: Vm, id: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(from.mac, to.mac)
        .ipv4(from.ip, to.ip, 64)
        .icmpv4_echo_reply(id, 1);
    let mut v = Vec::new();
    b.write(&mut v, b"policy test").expect("build echo reply");
    v
}

/// Port unreachable from `from` to `to`, quoting `original` (its IP header
/// and 8 bytes).
fn port_unreachable(from: Vm, to: Vm, original: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(from.mac, to.mac)
        .ipv4(from.ip, to.ip, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ));
    let mut v = Vec::new();
    b.write(&mut v, &original[14..14 + 28])
        .expect("build icmp error");
    v
}

fn port(t: &ProgramTester, d: &str, from: Vm, input: Vec<u8>, expect: Expect) -> Fixture {
    Fixture::new(d, input, expect)
        .on(Attach::Port)
        .at(t.ifindex(from.tap))
}

fn fwd(t: &ProgramTester, d: &str, from: Vm, to: Vm, input: Vec<u8>) -> Fixture {
    port(t, d, from, input, Expect::Forward).to(t.ifindex(to.tap))
}

fn tester() -> ProgramTester {
    let mut t = ProgramTester::in_test_net();
    let h = t.default_host();
    t.set_host(h);
    t.install(&world(true));
    t
}

fn state_of(t: &ProgramTester, a: [u8; 4], b: [u8; 4], port_a: u16, port_b: u16) -> Vec<u8> {
    t.ct_entries()
        .into_iter()
        .filter(|(k, _)| {
            (k.addr_a == a && k.addr_b == b && k.port_a == port_a && k.port_b == port_b)
                || (k.addr_a == b && k.addr_b == a && k.port_a == port_b && k.port_b == port_a)
        })
        .map(|(_, e)| e.state)
        .collect()
}

#[test]
fn tcp_states_and_policy_dimensions() {
    let mut t = tester();
    #[rustfmt::skip]
    let rows = vec![
        // A full connection c1 -> w1:80 (allowed by web from 10.1.0.0/24).
        fwd(&t, "SYN c1 -> w1:80 (allowed)", C1, W1, tcp(C1, W1, 40000, 80, SYN, 1000, 0, b"")),
        // c1 has no ingress rule: its SYN-ACK passes only as a reply.
        fwd(&t, "SYN-ACK w1 -> c1 (tracked reply)", W1, C1, tcp(W1, C1, 80, 40000, SYN | ACK, 5000, 1001, b"")),
        fwd(&t, "ACK c1 -> w1", C1, W1, tcp(C1, W1, 40000, 80, ACK, 1001, 5001, b"")),
        fwd(&t, "data w1 -> c1", W1, C1, tcp(W1, C1, 80, 40000, ACK | PSH, 5001, 1001, b"hello")),
        fwd(&t, "data c1 -> w1", C1, W1, tcp(C1, W1, 40000, 80, ACK | PSH, 1001, 5006, b"hi")),
        port(&t, "segment a gigabyte beyond the window", C1, tcp(C1, W1, 40000, 80, ACK, 1001u32.wrapping_add(1 << 30), 5006, b"x"), Expect::Drop(CtOutOfWindow)),
        port(&t, "acknowledges data w1 never sent", C1, tcp(C1, W1, 40000, 80, ACK, 1003, 5006 + 100_000, b""), Expect::Drop(CtOutOfWindow)),
        port(&t, "SYN+FIN", C1, tcp(C1, W1, 40001, 80, SYN | FIN, 1, 0, b""), Expect::Drop(CtInvalid)),
        port(&t, "SYN+RST", C1, tcp(C1, W1, 40001, 80, SYN | RST, 1, 0, b""), Expect::Drop(CtInvalid)),
        port(&t, "FIN without ACK", C1, tcp(C1, W1, 40001, 80, FIN, 1, 0, b""), Expect::Drop(CtInvalid)),
        port(&t, "no flags", C1, tcp(C1, W1, 40001, 80, 0, 1, 0, b""), Expect::Drop(CtInvalid)),
        // Ports and prefixes.
        port(&t, "SYN c1 -> w1:81 (no rule)", C1, tcp(C1, W1, 40002, 81, SYN, 1, 0, b""), Expect::Drop(PolicyDeniedIngress)),
        port(&t, "ACK c1 -> w1:22 without a connection", C1, tcp(C1, W1, 40002, 22, ACK, 1, 1, b""), Expect::Drop(PolicyDeniedIngress)),
        port(&t, "SYN w1 -> c1:22 (client allows no ingress)", W1, tcp(W1, C1, 40003, 22, SYN, 1, 0, b""), Expect::Drop(PolicyDeniedIngress)),
        port(&t, "SYN d1 -> w1:80 routed (80 only from net a)", D1, tcp_to(D1, GW_B_MAC, W1.ip, 40004, 80, SYN, 1, 0, b""), Expect::Drop(PolicyDeniedIngress)),
        port(&t, "SYN d1 -> w1:8050 routed (8000-8100 from net b)", D1, tcp_to(D1, GW_B_MAC, W1.ip, 40004, 8050, SYN, 1, 0, b""), Expect::Forward).to(t.ifindex(W1.tap)).output(routed(tcp_to(D1, GW_B_MAC, W1.ip, 40004, 8050, SYN, 1, 0, b""), W1.mac, GW_A_MAC)),
        port(&t, "SYN d1 -> w1:8101 (just outside the range)", D1, tcp_to(D1, GW_B_MAC, W1.ip, 40004, 8101, SYN, 1, 0, b""), Expect::Drop(PolicyDeniedIngress)),
        // Remote group: db allows 5432 from members of web only.
        port(&t, "SYN w1 -> d1:5432 (w1 is in web)", W1, tcp_to(W1, GW_A_MAC, D1.ip, 40005, 5432, SYN, 1, 0, b""), Expect::Forward).to(t.ifindex(D1.tap)).output(routed(tcp_to(W1, GW_A_MAC, D1.ip, 40005, 5432, SYN, 1, 0, b""), D1.mac, GW_B_MAC)),
        port(&t, "SYN c1 -> d1:5432 (c1 is not)", C1, tcp_to(C1, GW_A_MAC, D1.ip, 40006, 5432, SYN, 1, 0, b""), Expect::Drop(PolicyDeniedIngress)),
        // ICMP by type, and echo pseudo-connections.
        fwd(&t, "ping c1 -> w1 (type 8 allowed)", C1, W1, ping(C1, W1, 77)),
        fwd(&t, "echo reply w1 -> c1 (tracked)", W1, C1, echo_reply(W1, C1, 77)),
        port(&t, "ping w1 -> c1 (no ingress)", W1, ping(W1, C1, 78), Expect::Drop(PolicyDeniedIngress)),
        // Related ICMP errors.
        fwd(&t, "port unreachable about the tracked c1 -> w1:80", W1, C1, port_unreachable(W1, C1, &tcp(C1, W1, 40000, 80, ACK, 1003, 5006, b""))),
        port(&t, "port unreachable about no flow", W1, port_unreachable(W1, C1, &tcp(C1, W1, 45000, 80, ACK, 1, 1, b"")), Expect::Drop(PolicyDeniedIngress)),
        // Stateless: every packet against the rules, both ways.
        fwd(&t, "UDP c1 -> s1:53 (stateless ingress rule)", C1, S1, udp(C1, S1, 5353, 53)),
        fwd(&t, "UDP s1 -> c1 reply (s1 egress UDP; c1 tracked)", S1, C1, udp(S1, C1, 53, 5353)),
        port(&t, "UDP c1 -> s1:54", C1, udp(C1, S1, 5353, 54), Expect::Drop(PolicyDeniedIngress)),
        port(&t, "TCP from s1 (stateless egress is UDP only)", S1, tcp(S1, C1, 40007, 80, SYN, 1, 0, b""), Expect::Drop(PolicyDeniedEgress)),
        // Port security on and no group: nothing in or out.
        port(&t, "UDP c1 -> n1 (no group)", C1, udp(C1, N1, 5353, 53), Expect::Drop(PolicyDeniedIngress)),
        port(&t, "UDP n1 -> c1 (no group)", N1, udp(N1, C1, 5353, 53), Expect::Drop(PolicyDeniedEgress)),
    ];
    t.check_rows(rows);
    assert_eq!(
        state_of(&t, C1.ip, W1.ip, 40000, 80),
        vec![CT_TCP_ESTABLISHED],
        "one entry for the connection on this host (c1's egress and w1's ingress side)"
    );
    // Teardown by FIN from both sides.
    #[rustfmt::skip]
    let rows = vec![
        fwd(&t, "FIN c1 -> w1", C1, W1, tcp(C1, W1, 40000, 80, FIN | ACK, 1003, 5006, b"")),
        fwd(&t, "FIN w1 -> c1", W1, C1, tcp(W1, C1, 80, 40000, FIN | ACK, 5006, 1004, b"")),
        fwd(&t, "last ACK c1 -> w1", C1, W1, tcp(C1, W1, 40000, 80, ACK, 1004, 5007, b"")),
    ];
    t.check_rows(rows);
    assert_eq!(
        state_of(&t, C1.ip, W1.ip, 40000, 80),
        vec![CT_TCP_TIME_WAIT],
        "the entry saw the close"
    );
    // Reset, then a new SYN on the same ports reopens (checked again).
    #[rustfmt::skip]
    let rows = vec![
        fwd(&t, "SYN c1 -> w1:80 again (reopens)", C1, W1, tcp(C1, W1, 40000, 80, SYN, 9000, 0, b"")),
        fwd(&t, "RST w1 -> c1", W1, C1, tcp(W1, C1, 80, 40000, RST | ACK, 0, 9001, b"")),
    ];
    t.check_rows(rows);
    assert!(state_of(&t, C1.ip, W1.ip, 40000, 80)
        .iter()
        .all(|s| *s == CT_TCP_CLOSE));
    let s = t.ct_stats();
    // Exact: every row ran once (rows that leave are delivered instead of
    // test-run, never both), so the table saw each packet once.
    assert_eq!(
        (s.inserts, s.hits, s.related),
        (6, 12, 2),
        "connections inserted, found, related ICMP: {s:?}"
    );
    assert_eq!(s.insert_failures, 0);
}

/// A SYN or SYN-ACK offering window scale `ws` among the options Linux
/// sends (MSS, SACK permitted, timestamps, NOP, window scale).
fn syn_scaled(from: Vm, to: Vm, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    use etherparse::TcpOptionElement::*;
    let mut b = PacketBuilder::ethernet2(from.mac, to.mac)
        .ipv4(from.ip, to.ip, 64)
        .tcp(sport, dport, seq, 65535)
        .syn();
    if flags & ACK != 0 {
        b = b.ack(ack);
    }
    let b = b
        .options(&[
            MaximumSegmentSize(1460),
            SelectiveAcknowledgementPermitted,
            Timestamp(1, 0),
            Noop,
            WindowScale(2),
        ])
        .expect("options");
    let mut v = Vec::new();
    b.write(&mut v, b"").expect("build tcp");
    v
}

/// The window scale comes from the SYN options (both sides offer 2: a
/// 65,535 window means 262,140 bytes): a segment inside the scaled window
/// passes, one beyond it (but inside what the largest scale, 14, would
/// allow) is out of window.
#[test]
fn window_scale_from_the_syn_options() {
    let mut t = tester();
    #[rustfmt::skip]
    let rows = vec![
        fwd(&t, "SYN c1 -> w1:80 offering window scale 2", C1, W1, syn_scaled(C1, W1, 40100, 80, SYN, 1000, 0)),
        fwd(&t, "SYN-ACK w1 -> c1 offering window scale 2", W1, C1, syn_scaled(W1, C1, 80, 40100, SYN | ACK, 5000, 1001)),
        fwd(&t, "ACK c1 -> w1", C1, W1, tcp(C1, W1, 40100, 80, ACK, 1001, 5001, b"")),
        fwd(&t, "ACK w1 -> c1: window 65535 << 2", W1, C1, tcp(W1, C1, 80, 40100, ACK, 5001, 1001, b"")),
        fwd(&t, "c1 -> w1 200,000 bytes ahead: inside the scaled window", C1, W1, tcp(C1, W1, 40100, 80, ACK, 1001 + 200_000, 5001, b"x")),
        port(&t, "c1 -> w1 300,000 bytes ahead: beyond it", C1, tcp(C1, W1, 40100, 80, ACK, 1001 + 300_000, 5001, b"x"), Expect::Drop(CtOutOfWindow)),
    ];
    t.check_rows(rows);
}

#[test]
fn ingress_rules_at_the_uplink() {
    let mut t = tester();
    let vx = |inner: &[u8]| {
        packets::vxlan(
            PEER_HOST_MAC,
            UPLINK_MAC,
            HOST_R3,
            UNDERLAY_IP,
            51234,
            0x08,
            100,
            inner,
        )
    };
    let syn80 = tcp(R3, W1, 41000, 80, SYN, 1, 0, b"");
    let syn81 = tcp(R3, W1, 41000, 81, SYN, 1, 0, b"");
    t.check(
        &t.uplink_row(
            "VXLAN: SYN r3 -> w1:80 decapsulated and delivered",
            vx(&syn80),
            Expect::Forward,
        )
        .to(t.ifindex(W1.tap))
        .output(syn80.clone()),
    );
    t.check(&t.uplink_row(
        "VXLAN: SYN r3 -> w1:81 dropped by w1's rules",
        vx(&syn81),
        Expect::Drop(PolicyDeniedIngress),
    ));
}

#[test]
fn rule_changes_cut_what_they_no_longer_allow_and_nothing_else() {
    let mut t = tester();
    #[rustfmt::skip]
    let rows = vec![
        fwd(&t, "SYN c1 -> w1:80", C1, W1, tcp(C1, W1, 40000, 80, SYN, 1000, 0, b"")),
        fwd(&t, "SYN-ACK", W1, C1, tcp(W1, C1, 80, 40000, SYN | ACK, 5000, 1001, b"")),
        fwd(&t, "ACK", C1, W1, tcp(C1, W1, 40000, 80, ACK, 1001, 5001, b"")),
        fwd(&t, "ping c1 -> w1", C1, W1, ping(C1, W1, 9)),
    ];
    t.check_rows(rows);
    // web loses its port 80 rule: a new policy id for w1.
    t.install(&world(false));
    t.check(&port(
        &t,
        "data on the cut connection",
        C1,
        tcp(C1, W1, 40000, 80, ACK | PSH, 1001, 5001, b"x"),
        Expect::Drop(PolicyRevoked),
    ));
    t.check(&fwd(
        &t,
        "the ping flow is still allowed",
        C1,
        W1,
        ping(C1, W1, 9),
    ));
    t.check(&fwd(&t, "and its reply", W1, C1, echo_reply(W1, C1, 9)));
    // The data on the cut connection and the ping flow were checked again
    // against the new rules; the reply found its flow already rechecked.
    assert_eq!(t.ct_stats().rechecked, 2);
    // Adding the rule back does not disturb the ping flow, and allows 80.
    t.install(&world(true));
    t.check(&fwd(
        &t,
        "ping after the rule came back",
        C1,
        W1,
        ping(C1, W1, 9),
    ));
    t.check(&fwd(
        &t,
        "SYN c1 -> w1:80 allowed again",
        C1,
        W1,
        tcp(C1, W1, 40010, 80, SYN, 1, 0, b""),
    ));
}

/// `input` routed: TTL - 1, MACs rewritten.
fn routed(input: Vec<u8>, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let mut out = input;
    out[0..6].copy_from_slice(&dst_mac);
    out[6..12].copy_from_slice(&src_mac);
    out[14 + 8] -= 1;
    packets::fix_ipv4_checksum(&mut out);
    out
}
