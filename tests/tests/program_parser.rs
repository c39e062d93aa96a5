//! Program tests for the parser every entry point starts with: well-formed
//! frames pass unchanged and are classified; malformed and truncated frames
//! are dropped with the precise reason; nothing crashes or slips through.
//!
//! Bad inputs tried: every truncation point of Ethernet+IPv4+TCP,
//! Ethernet+IPv6+UDP, ARP and VLAN-tagged frames; IHL 0 and 4; IPv4 version
//! 5 and IPv6 version 4; total length below the header, below IHL and past
//! the frame; IPv6 payload length past the frame; TCP data offset 0, 4 and
//! past the segment; UDP length 0, 4 and past the payload; short ICMP; ARP
//! with wrong lengths/types; three VLAN tags; IPv6 extension headers running
//! past the payload, and nine of them; and 20,000 random mutations.

use dataplane_common::DropReason::{self, *};
use strato::dataplane::Attach;
use strato_tests::packets::{self, L3, L4};
use strato_tests::progtest::{Class, Expect, Fixture, ProgramTester, Verdict, TEST_IFINDEX};

fn pass(d: &str, f: Vec<u8>, c: Class) -> Fixture {
    Fixture::new(d, f, Expect::Pass(c))
}

fn drop(d: &str, f: Vec<u8>, r: DropReason) -> Fixture {
    Fixture::new(d, f, Expect::Drop(r))
}

/// Applies `edit` to a frame and fixes the IPv4 checksum, so the frame is
/// wrong only in the field the row is about.
fn edited(mut f: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    edit(&mut f);
    if f.len() >= L3 + 20 && f[12..14] == [0x08, 0x00] && f[L3] >> 4 == 4 {
        packets::fix_ipv4_checksum(&mut f);
    }
    f
}

fn set16(f: &mut [u8], off: usize, v: u16) {
    f[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

fn well_formed() -> Vec<Fixture> {
    let p = b"0123456789";
    vec![
        pass("ipv4 tcp", packets::ipv4_tcp(p), Class::Ipv4),
        pass("ipv4 tcp, no payload", packets::ipv4_tcp(&[]), Class::Ipv4),
        pass("ipv4 udp", packets::ipv4_udp(p), Class::Ipv4),
        pass("ipv4 icmp echo", packets::ipv4_icmp_echo(p), Class::Ipv4),
        pass("ipv6 tcp", packets::ipv6_tcp(p), Class::Ipv6),
        pass("ipv6 udp", packets::ipv6_udp(p), Class::Ipv6),
        pass("ipv6 icmpv6 echo", packets::ipv6_icmp_echo(p), Class::Ipv6),
        pass("arp request", packets::arp_request(), Class::Arp),
        pass(
            "arp request padded to 60 bytes",
            {
                let mut f = packets::arp_request();
                f.resize(60, 0);
                f
            },
            Class::Arp,
        ),
        pass("lldp (other ethertype)", packets::lldp(), Class::Other),
        pass(
            "802.1Q ipv4 udp",
            packets::vlan_ipv4_udp(100, p),
            Class::Ipv4,
        ),
        pass(
            "802.1ad+802.1Q ipv4 udp",
            packets::qinq_ipv4_udp(10, 20, p),
            Class::Ipv4,
        ),
        pass(
            "ipv4 udp with Ethernet padding after the datagram",
            {
                let mut f = packets::ipv4_udp(b"x");
                f.resize(60, 0);
                f
            },
            Class::Ipv4,
        ),
        pass(
            "ipv4 with 4 bytes of options (IHL 6)",
            {
                let mut f = packets::ipv4_udp(p);
                f.splice(L4..L4, [1u8, 1, 1, 0]);
                edited(f, |f| {
                    f[L3] = 0x46;
                    let total = u16::from_be_bytes([f[L3 + 2], f[L3 + 3]]) + 4;
                    set16(f, L3 + 2, total);
                })
            },
            Class::Ipv4,
        ),
        pass(
            "ipv4 later fragment with 3 bytes (no L4 header to check)",
            edited(packets::ipv4_udp(b""), |f| {
                f.truncate(L4 + 3);
                set16(f, L3 + 2, 23);
                set16(f, L3 + 6, 0x0010);
            }),
            Class::Ipv4,
        ),
        pass(
            "ipv4 first fragment: UDP length covers the whole datagram",
            edited(packets::ipv4_udp(p), |f| {
                set16(f, L3 + 6, 0x2000);
                set16(f, L4 + 4, 1400);
            }),
            Class::Ipv4,
        ),
        pass(
            "ipv4 unknown protocol (GRE) with a 1-byte payload",
            edited(packets::ipv4_udp(b""), |f| {
                f.truncate(L4 + 1);
                f[L3 + 9] = 47;
                set16(f, L3 + 2, 21);
            }),
            Class::Ipv4,
        ),
        pass(
            "ipv6 hop-by-hop + destination options + udp",
            packets::ipv6_with_ext(
                &[(0, packets::ext_header(0)), (60, packets::ext_header(1))],
                p,
            ),
            Class::Ipv6,
        ),
        pass(
            "ipv6 routing header + udp",
            packets::ipv6_with_ext(&[(43, packets::ext_header(2))], p),
            Class::Ipv6,
        ),
        pass(
            "ipv6 first fragment",
            packets::ipv6_with_ext(&[(44, packets::frag_header(0, true))], p),
            Class::Ipv6,
        ),
        pass(
            "ipv6 later fragment",
            packets::ipv6_with_ext(&[(44, packets::frag_header(100, false))], p),
            Class::Ipv6,
        ),
        pass(
            "ipv6 with 8 extension headers (the limit)",
            packets::ipv6_with_ext(&vec![(60, packets::ext_header(0)); 8], p),
            Class::Ipv6,
        ),
    ]
}

fn malformed() -> Vec<Fixture> {
    let p = b"0123456789";
    vec![
        drop("empty frame", vec![], TruncatedEthernet),
        drop("13-byte frame", vec![0; 13], TruncatedEthernet),
        drop(
            "three VLAN tags",
            {
                let mut f = packets::qinq_ipv4_udp(10, 20, p);
                f.splice(12..12, [0x81u8, 0x00, 0x00, 0x05]);
                f
            },
            TooManyVlanTags,
        ),
        drop(
            "ipv4 IHL 4",
            edited(packets::ipv4_tcp(p), |f| f[L3] = 0x44),
            BadIpv4HeaderLength,
        ),
        drop(
            "ipv4 IHL 0",
            edited(packets::ipv4_tcp(p), |f| f[L3] = 0x40),
            BadIpv4HeaderLength,
        ),
        drop(
            "ipv4 version 5",
            edited(packets::ipv4_tcp(p), |f| f[L3] = 0x55),
            BadIpv4Version,
        ),
        drop(
            "ipv4 version 6 under ethertype ipv4",
            edited(packets::ipv4_tcp(p), |f| f[L3] = 0x65),
            BadIpv4Version,
        ),
        drop(
            "ipv4 IHL 15 but total length 40",
            edited(packets::ipv4_tcp(p), |f| {
                f[L3] = 0x4f;
                set16(f, L3 + 2, 40);
            }),
            BadIpv4TotalLength,
        ),
        drop(
            "ipv4 total length 10 (< header)",
            edited(packets::ipv4_tcp(p), |f| set16(f, L3 + 2, 10)),
            BadIpv4TotalLength,
        ),
        drop(
            "ipv4 total length past the frame",
            edited(packets::ipv4_tcp(p), |f| set16(f, L3 + 2, 1500)),
            BadIpv4TotalLength,
        ),
        drop(
            "ipv4 total length 0xffff",
            edited(packets::ipv4_udp(p), |f| set16(f, L3 + 2, 0xffff)),
            BadIpv4TotalLength,
        ),
        drop(
            "tcp data offset 0",
            edited(packets::ipv4_tcp(p), |f| f[L4 + 12] = 0x00),
            BadTcpDataOffset,
        ),
        drop(
            "tcp data offset 4",
            edited(packets::ipv4_tcp(p), |f| f[L4 + 12] = 0x40),
            BadTcpDataOffset,
        ),
        drop(
            "tcp data offset 15 past a 30-byte segment",
            edited(packets::ipv4_tcp(p), |f| f[L4 + 12] = 0xf0),
            BadTcpDataOffset,
        ),
        drop(
            "tcp with 10 bytes by the IP total length",
            edited(packets::ipv4_tcp(p), |f| set16(f, L3 + 2, 30)),
            TruncatedTcp,
        ),
        drop(
            "udp length 0",
            edited(packets::ipv4_udp(p), |f| set16(f, L4 + 4, 0)),
            BadUdpLength,
        ),
        drop(
            "udp length 4",
            edited(packets::ipv4_udp(p), |f| set16(f, L4 + 4, 4)),
            BadUdpLength,
        ),
        drop(
            "udp length past the IP payload",
            edited(packets::ipv4_udp(p), |f| set16(f, L4 + 4, 200)),
            BadUdpLength,
        ),
        drop(
            "udp with 4 bytes by the IP total length",
            edited(packets::ipv4_udp(p), |f| set16(f, L3 + 2, 24)),
            TruncatedUdp,
        ),
        drop(
            "icmp with 4 bytes by the IP total length",
            edited(packets::ipv4_icmp_echo(p), |f| set16(f, L3 + 2, 24)),
            TruncatedIcmp,
        ),
        drop(
            "ipv6 udp length past the payload",
            edited(packets::ipv6_udp(p), |f| set16(f, 14 + 40 + 4, 100)),
            BadUdpLength,
        ),
        drop(
            "ipv6 version 4 under ethertype ipv6",
            edited(packets::ipv6_udp(p), |f| f[L3] = 0x40),
            BadIpv6Version,
        ),
        drop(
            "ipv6 payload length past the frame",
            edited(packets::ipv6_udp(p), |f| set16(f, L3 + 4, 1000)),
            BadIpv6PayloadLength,
        ),
        drop(
            "ipv6 tcp data offset 3",
            edited(packets::ipv6_tcp(p), |f| f[14 + 40 + 12] = 0x30),
            BadTcpDataOffset,
        ),
        drop(
            "ipv6 icmpv6 with 4 bytes by payload length",
            edited(packets::ipv6_icmp_echo(p), |f| {
                set16(f, L3 + 4, 4);
                f.truncate(14 + 40 + 4);
            }),
            TruncatedIcmp,
        ),
        drop(
            "ipv6 extension header longer than the payload",
            edited(
                packets::ipv6_with_ext(&[(0, packets::ext_header(0))], p),
                |f| f[14 + 40 + 1] = 20,
            ),
            TruncatedIpv6ExtHeader,
        ),
        drop(
            "ipv6 with 9 extension headers",
            packets::ipv6_with_ext(&vec![(60, packets::ext_header(0)); 9], p),
            TooManyIpv6ExtHeaders,
        ),
        drop(
            "arp hardware length 8",
            edited(packets::arp_request(), |f| f[14 + 4] = 8),
            BadArp,
        ),
        drop(
            "arp protocol type ipv6",
            edited(packets::arp_request(), |f| set16(f, 14 + 2, 0x86dd)),
            BadArp,
        ),
        drop(
            "arp hardware type 6 (IEEE 802)",
            edited(packets::arp_request(), |f| set16(f, 14, 6)),
            BadArp,
        ),
    ]
}

/// The reason a frame cut to `n` bytes must be dropped with, for an
/// untagged Ethernet + IPv4 frame whose IP total length is the whole rest.
fn ipv4_truncation_reason(n: usize) -> DropReason {
    if n < 14 {
        TruncatedEthernet
    } else if n < 34 {
        TruncatedIpv4
    } else {
        BadIpv4TotalLength
    }
}

fn truncations() -> Vec<Fixture> {
    let mut rows = Vec::new();
    let tcp = packets::ipv4_tcp(b"0123456789");
    for n in 0..tcp.len() {
        rows.push(drop(
            &format!("eth+ipv4+tcp cut to {n} of {}", tcp.len()),
            tcp[..n].to_vec(),
            ipv4_truncation_reason(n),
        ));
    }
    let udp6 = packets::ipv6_udp(b"0123456789");
    for n in 0..udp6.len() {
        let r = if n < 14 {
            TruncatedEthernet
        } else if n < 54 {
            TruncatedIpv6
        } else {
            BadIpv6PayloadLength
        };
        rows.push(drop(
            &format!("eth+ipv6+udp cut to {n} of {}", udp6.len()),
            udp6[..n].to_vec(),
            r,
        ));
    }
    let arp = packets::arp_request();
    for n in 0..arp.len() {
        let r = if n < 14 {
            TruncatedEthernet
        } else {
            TruncatedArp
        };
        rows.push(drop(
            &format!("arp cut to {n} of {}", arp.len()),
            arp[..n].to_vec(),
            r,
        ));
    }
    let vlan = packets::vlan_ipv4_udp(100, b"01234");
    for n in 0..vlan.len() {
        let r = match n {
            0..14 => TruncatedEthernet,
            14..18 => TruncatedVlan,
            18..38 => TruncatedIpv4,
            _ => BadIpv4TotalLength,
        };
        rows.push(drop(
            &format!("802.1Q frame cut to {n} of {}", vlan.len()),
            vlan[..n].to_vec(),
            r,
        ));
    }
    rows
}

#[test]
fn well_formed_frames_pass_unchanged_on_every_entry_point() {
    let mut t = ProgramTester::new();
    for attach in [Attach::Uplink, Attach::Port] {
        for f in well_formed() {
            t.check(&f.on(attach));
        }
    }
}

#[test]
fn malformed_frames_are_dropped_with_their_reason() {
    let mut t = ProgramTester::new();
    for attach in [Attach::Uplink, Attach::Port] {
        for f in malformed() {
            t.check(&f.on(attach));
        }
    }
}

#[test]
fn every_truncation_point_is_dropped() {
    let mut t = ProgramTester::new();
    let rows = truncations();
    assert!(
        rows.len() > 200,
        "expected every cut of four frames, got {} rows",
        rows.len()
    );
    for f in rows {
        t.check(&f);
    }
}

/// 20,000 deterministic random mutations (byte flips, truncation, length
/// field corruption) of well-formed frames: the program always answers Pass
/// (with the frame unchanged) or Drop (with exactly one reason counted).
#[test]
fn random_mutations_never_crash_or_corrupt() {
    let mut t = ProgramTester::new();
    let seeds: Vec<Vec<u8>> = well_formed().into_iter().map(|f| f.input).collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut passed, mut dropped) = (0, 0);
    for i in 0..20_000 {
        let mut f = seeds[(next() as usize) % seeds.len()].clone();
        for _ in 0..(1 + next() % 4) {
            match next() % 3 {
                0 if !f.is_empty() => {
                    let at = (next() as usize) % f.len();
                    f[at] ^= (next() as u8) | 1;
                }
                1 => {
                    let n = (next() as usize) % (f.len() + 1);
                    f.truncate(n);
                }
                _ if f.len() > 20 => {
                    // Corrupt a byte in the header area, where length fields live.
                    let at = 12 + (next() as usize) % 50.min(f.len() - 12);
                    f[at] = next() as u8;
                }
                _ => {}
            }
        }
        if f.len() < strato_tests::progtest::MIN_FRAME {
            continue; // the kernel never hands these to XDP (see ProgramTester::check)
        }
        let o = t.run(Attach::Uplink, &f);
        let s = o
            .counters
            .interfaces
            .get(&TEST_IFINDEX)
            .copied()
            .unwrap_or_default();
        match o.verdict {
            Verdict::Pass => {
                assert_eq!(o.output, f, "mutation {i}: passed frame was modified");
                assert_eq!(
                    (s.passed, s.dropped),
                    (1, 0),
                    "mutation {i}: counters {s:?}"
                );
                assert_eq!(
                    s.ipv4 + s.ipv6 + s.arp + s.other,
                    1,
                    "mutation {i}: class counters {s:?}"
                );
                passed += 1;
            }
            Verdict::Drop => {
                assert_eq!(
                    (s.passed, s.dropped),
                    (0, 1),
                    "mutation {i}: counters {s:?}"
                );
                assert_eq!(
                    o.counters.drops.len(),
                    1,
                    "mutation {i}: drops {:?}",
                    o.counters.drops
                );
                dropped += 1;
            }
            v => panic!(
                "mutation {i}: verdict {v:?} for {}",
                strato_tests::progtest::hex(&f)
            ),
        }
    }
    // Both outcomes must actually be exercised for the test to mean anything.
    assert!(
        passed > 1000 && dropped > 1000,
        "passed {passed}, dropped {dropped}"
    );
}
