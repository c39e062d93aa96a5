//! The TC build of the port pipeline (what agents attach) against its XDP
//! build (what the fixture rows of `program_vpc` check in detail): for
//! every path, the same frame out and the same verdict. The TC-only code,
//! resizing with `bpf_skb_adjust_room`/`bpf_skb_change_tail` for VXLAN and
//! ICMP errors and the sk_buff context, runs here.

use strato_dataplane::Attach;
use strato_tests::progtest::{Net, Port, ProgramTester, Router, Verdict, World};

const fn mac(a: u8, b: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, 0, a, b]
}
const GW_A: [u8; 6] = mac(0xa0, 1);
const A1: ([u8; 6], [u8; 4]) = (mac(1, 5), [10, 1, 0, 5]);
const A2: ([u8; 6], [u8; 4]) = (mac(1, 6), [10, 1, 0, 6]);
const B1: ([u8; 6], [u8; 4]) = (mac(2, 5), [10, 1, 1, 5]);
const B3: ([u8; 6], [u8; 4]) = (mac(2, 7), [10, 1, 1, 7]);

fn world() -> World {
    World::new()
        .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
        .net(
            Net::new("b", 101)
                .mtu(1450)
                .subnet("sb", "10.1.1.0/24", "10.1.1.1"),
        )
        .router(
            Router::new("r1")
                .interface("sa", GW_A)
                .interface("sb", mac(0xb0, 1)),
        )
        .port(Port::local("a1", "a", "tp1", A1.0, A1.1))
        .port(Port::local("a2", "a", "tp2", A2.0, A2.1))
        .port(Port::local("b1", "b", "tp3", B1.0, B1.1))
        .port(Port::remote("b3", "b", [198, 18, 2, 3], B3.0, B3.1))
}

fn udp(dmac: [u8; 6], dst: [u8; 4], ttl: u8, payload: usize, df: bool) -> Vec<u8> {
    let mut f = Vec::new();
    let mut ip = etherparse::Ipv4Header::new(
        (8 + payload) as u16,
        ttl,
        etherparse::IpNumber::UDP,
        A1.1,
        dst,
    )
    .expect("header");
    ip.dont_fragment = df;
    etherparse::PacketBuilder::ethernet2(A1.0, dmac)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .udp(4000, 9)
        .write(&mut f, &vec![7u8; payload])
        .expect("frame");
    f
}

/// TC verdict codes for the XDP ones (`TC_ACT_OK`, `TC_ACT_SHOT`,
/// `TC_ACT_REDIRECT`).
fn tc_code(v: Verdict) -> i32 {
    match v {
        Verdict::Pass => 0,
        Verdict::Drop => 2,
        Verdict::Redirect => 7,
        other => panic!("the port pipeline never returns {other:?}"),
    }
}

#[test]
fn tc_and_xdp_builds_agree_on_every_path() {
    let mut t = ProgramTester::in_test_net();
    t.install(&world());
    let tp1 = t.ifindex("tp1");
    let arp = strato_tests::packets::arp_request_from(A1.0, A1.1, [10, 1, 0, 1]);
    // (what, frame, expected verdict, expected output length: None = same)
    let cases: Vec<(&str, Vec<u8>, Verdict, Option<usize>)> = vec![
        (
            "switched to a local port",
            udp(A2.0, A2.1, 64, 32, false),
            Verdict::Redirect,
            None,
        ),
        (
            "routed to a local port",
            udp(GW_A, B1.1, 64, 32, false),
            Verdict::Redirect,
            None,
        ),
        (
            "routed + VXLAN",
            udp(GW_A, B3.1, 64, 32, false),
            Verdict::Redirect,
            Some(74 + 50),
        ),
        (
            "routed + VXLAN, 1400 B",
            udp(GW_A, B3.1, 64, 1400, true),
            Verdict::Redirect,
            Some(1442 + 50),
        ),
        // ICMP errors: 14 + 20 + 8 + the original IPv4 header + 20 (or 8) bytes.
        (
            "TTL expiry: time exceeded",
            udp(GW_A, B1.1, 1, 32, false),
            Verdict::Redirect,
            Some(82),
        ),
        (
            "too big with DF: frag needed",
            udp(GW_A, B1.1, 64, 1460, true),
            Verdict::Redirect,
            Some(82),
        ),
        (
            "no route, short packet",
            udp(GW_A, [192, 168, 1, 1], 64, 4, false),
            Verdict::Redirect,
            Some(70),
        ),
        ("ARP for the gateway", arp, Verdict::Redirect, None),
        (
            "spoofed source MAC",
            {
                let mut f = udp(A2.0, A2.1, 64, 32, false);
                f[6..12].copy_from_slice(&mac(9, 9));
                f
            },
            Verdict::Drop,
            None,
        ),
    ];
    for (what, frame, want, len) in cases {
        let xdp = t.run(Attach::Port, tp1, &frame);
        assert_eq!(xdp.verdict, want, "{what}: XDP verdict");
        assert_eq!(
            xdp.output.len(),
            len.unwrap_or(frame.len()),
            "{what}: XDP output length"
        );
        let (code, out) = t.run_tc(tp1, &frame);
        assert_eq!(code, tc_code(want), "{what}: TC verdict");
        assert_eq!(
            out, xdp.output,
            "{what}: the TC build's output differs from the XDP build's"
        );
    }
}

/// A VM's VLAN-tagged frame (802.1Q, and QinQ: an 802.1ad tag outside an
/// 802.1Q one) is dropped as `vlan_on_port` by both builds, counted on the
/// port it came from.
///
/// What BPF_PROG_TEST_RUN can express here is a tag in the data, which is
/// where XDP sees it and where the inner tag of a QinQ frame stays at TC.
/// A real VM's outer tag reaches the TC program in the sk_buff's metadata
/// instead (the kernel untags before clsact ingress), and that case cannot
/// be a row: the kernel refuses a `__sk_buff` context with `vlan_present`,
/// `vlan_tci` or `vlan_proto` set (EINVAL, checked on 6.18), and the run
/// never untags the data itself. `tests/tests/e2e_vlan.rs` proves that
/// case end to end, with real tagged frames from a VM.
#[test]
fn tagged_frames_are_dropped_by_both_builds() {
    use dataplane_common::DropReason;
    let mut t = ProgramTester::in_test_net();
    t.install(&world());
    let tp1 = t.ifindex("tp1");
    // The untagged frame, its 802.1Q tag (VID 100) and an 802.1ad tag
    // (VID 300) inserted after the MACs.
    let plain = udp(A2.0, A2.1, 64, 32, false);
    let tag = |tpid: u16, vid: u16| {
        let mut b = tpid.to_be_bytes().to_vec();
        b.extend_from_slice(&vid.to_be_bytes());
        b
    };
    let tagged = |tags: &[Vec<u8>]| {
        let mut f = plain[..12].to_vec();
        for t in tags {
            f.extend_from_slice(t);
        }
        f.extend_from_slice(&plain[12..]);
        f
    };
    let cases = [
        ("802.1Q, VID 100", tagged(&[tag(0x8100, 100)])),
        ("802.1Q priority tag, VID 0", tagged(&[tag(0x8100, 0xa000)])),
        (
            "QinQ: 802.1ad VID 300, 802.1Q VID 100",
            tagged(&[tag(0x88a8, 300), tag(0x8100, 100)]),
        ),
        ("802.1ad alone, VID 300", tagged(&[tag(0x88a8, 300)])),
    ];
    let vlan_drops = |t: &mut ProgramTester| {
        t.dataplane()
            .counters()
            .expect("read counters")
            .drops
            .get(&(tp1, DropReason::VlanOnPort))
            .map(|s| s.packets)
            .unwrap_or(0)
    };
    // The same frame untagged goes through (the rows below fail for the tag).
    let xdp = t.run(Attach::Port, tp1, &plain);
    assert_eq!(xdp.verdict, Verdict::Redirect, "untagged: XDP verdict");
    assert_eq!(
        t.run_tc(tp1, &plain).0,
        tc_code(Verdict::Redirect),
        "untagged: TC verdict"
    );
    for (what, frame) in cases {
        let before = vlan_drops(&mut t);
        let xdp = t.run(Attach::Port, tp1, &frame);
        assert_eq!(xdp.verdict, Verdict::Drop, "{what}: XDP verdict");
        assert_eq!(vlan_drops(&mut t), before + 1, "{what}: XDP vlan_on_port");
        let (code, _) = t.run_tc(tp1, &frame);
        assert_eq!(code, tc_code(Verdict::Drop), "{what}: TC verdict");
        assert_eq!(vlan_drops(&mut t), before + 2, "{what}: TC vlan_on_port");
    }
}
