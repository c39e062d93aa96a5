//! Frame builders for fixtures and benchmarks (etherparse's PacketBuilder
//! for well-formed frames; helpers to break them in precise ways).

use etherparse::{PacketBuilder, VlanId};

pub const SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
pub const SRC4: [u8; 4] = [10, 0, 0, 1];
pub const DST4: [u8; 4] = [10, 0, 0, 2];
pub const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// Offsets in an untagged Ethernet + IPv4 (no options) frame.
pub const L3: usize = 14;
pub const L4: usize = 34;

fn write(b: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    b(&mut v);
    v
}

pub fn ipv4_tcp(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(SRC4, DST4, 64)
        .tcp(40000, 80, 1, 65535);
    write(|v| b.write(v, payload).expect("build ipv4/tcp"))
}

pub fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(SRC4, DST4, 64)
        .udp(40000, 53);
    write(|v| b.write(v, payload).expect("build ipv4/udp"))
}

pub fn ipv4_icmp_echo(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(SRC4, DST4, 64)
        .icmpv4_echo_request(7, 1);
    write(|v| b.write(v, payload).expect("build ipv4/icmp"))
}

pub fn ipv6_tcp(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv6(SRC6, DST6, 64)
        .tcp(40000, 80, 1, 65535);
    write(|v| b.write(v, payload).expect("build ipv6/tcp"))
}

pub fn ipv6_udp(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv6(SRC6, DST6, 64)
        .udp(40000, 53);
    write(|v| b.write(v, payload).expect("build ipv6/udp"))
}

pub fn ipv6_icmp_echo(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv6(SRC6, DST6, 64)
        .icmpv6_echo_request(7, 1);
    write(|v| b.write(v, payload).expect("build ipv6/icmpv6"))
}

pub fn vlan_ipv4_udp(vid: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .single_vlan(VlanId::try_new(vid).expect("vid"))
        .ipv4(SRC4, DST4, 64)
        .udp(40000, 53);
    write(|v| b.write(v, payload).expect("build vlan/ipv4/udp"))
}

pub fn qinq_ipv4_udp(outer: u16, inner: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .double_vlan(
            VlanId::try_new(outer).expect("vid"),
            VlanId::try_new(inner).expect("vid"),
        )
        .ipv4(SRC4, DST4, 64)
        .udp(40000, 53);
    write(|v| b.write(v, payload).expect("build qinq/ipv4/udp"))
}

/// An Ethernet/IPv4 ARP request (who-has DST4 tell SRC4).
pub fn arp_request() -> Vec<u8> {
    arp_request_from(SRC_MAC, SRC4, DST4)
}

/// Broadcast ARP request: who has `target`, tell `sender` (`mac`).
pub fn arp_request_from(mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// An Ethernet frame of an ethertype the parser does not look into (LLDP).
pub fn lldp() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&0x88ccu16.to_be_bytes());
    f.extend_from_slice(&[0x02, 0x07, 0x04, 0x02, 0, 0, 0, 0, 1, 0, 0]);
    f
}

/// An IPv6 frame with the given raw extension headers (each already padded
/// to its length) between the fixed header and a UDP datagram. `chain[i].0`
/// is the header's own protocol number.
pub fn ipv6_with_ext(chain: &[(u8, Vec<u8>)], udp_payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + udp_payload.len();
    let ext_len: usize = chain.iter().map(|(_, h)| h.len()).sum();
    let mut f = Vec::new();
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((ext_len + udp_len) as u16).to_be_bytes());
    f.push(chain.first().map(|(p, _)| *p).unwrap_or(17));
    f.push(64);
    f.extend_from_slice(&SRC6);
    f.extend_from_slice(&DST6);
    for (i, (_, h)) in chain.iter().enumerate() {
        let mut h = h.clone();
        h[0] = chain.get(i + 1).map(|(p, _)| *p).unwrap_or(17);
        f.extend_from_slice(&h);
    }
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(udp_payload);
    f
}

/// A generic extension header of `8 * (units + 1)` bytes (hop-by-hop,
/// routing, destination options): next header placeholder, length, padding.
pub fn ext_header(units: u8) -> Vec<u8> {
    let mut h = vec![0u8; 8 * (units as usize + 1)];
    h[1] = units;
    h
}

/// An IPv6 fragment header; `offset` in 8-byte units, `more` fragments flag.
pub fn frag_header(offset: u16, more: bool) -> Vec<u8> {
    let fo = (offset << 3) | more as u16;
    let mut h = vec![0u8; 8];
    h[2..4].copy_from_slice(&fo.to_be_bytes());
    h[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    h
}

/// Recomputes the IPv4 header checksum of an untagged frame (after a test
/// edited header fields, so the frame is wrong only where the test meant it).
pub fn fix_ipv4_checksum(f: &mut [u8]) {
    let ihl = ((f[L3] & 0x0f) as usize) * 4;
    let end = (L3 + ihl).min(f.len());
    f[L3 + 10] = 0;
    f[L3 + 11] = 0;
    let mut sum = 0u32;
    for c in f[L3..end].chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    f[L3 + 10..L3 + 12].copy_from_slice(&c.to_be_bytes());
}

// ---------------------------------------------------------------------------
// Frames with chosen addresses, for the VPC rows: what a VM sends, what a
// remote host sends over the underlay. Built with etherparse (or byte by
// byte for ARP and VXLAN, which etherparse 0.16 does not write), never with
// the dataplane's own code.

/// Offsets in an untagged Ethernet + IPv4 (no options) frame.
pub const IP_TTL: usize = L3 + 8;
pub const IP_FLAGS: usize = L3 + 6;

/// Ethernet + IPv4 (DF set, TTL `ttl`) + UDP.
#[allow(clippy::too_many_arguments)]
pub fn udp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, ttl)
        .udp(sport, dport);
    write(|v| b.write(v, payload).expect("build ipv4/udp"))
}

/// Ethernet + IPv4 (DF set) + TCP SYN-less segment from port 40000 to `dport`.
pub fn tcp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, ttl)
        .tcp(40000, dport, 1, 65535);
    write(|v| b.write(v, payload).expect("build ipv4/tcp"))
}

/// Ethernet + IPv4 (DF set) + ICMP echo request `id`/`seq`.
#[allow(clippy::too_many_arguments)]
pub fn ping4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, ttl)
        .icmpv4_echo_request(id, seq);
    write(|v| b.write(v, payload).expect("build ipv4/icmp"))
}

/// An Ethernet/IPv4 ARP packet (`op` 1 request, 2 reply).
pub fn arp(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
    f
}

/// A DHCP (BOOTP) message from `mac`, UDP 68 -> 67, `src` -> `dst` (0.0.0.0 ->
/// 255.255.255.255 for a DISCOVER), message type option `msg_type`.
pub fn dhcp(mac: [u8; 6], eth_dst: [u8; 6], src: [u8; 4], dst: [u8; 4], msg_type: u8) -> Vec<u8> {
    let mut bootp = vec![0u8; 236];
    bootp[0] = 1; // BOOTREQUEST
    bootp[1] = 1; // Ethernet
    bootp[2] = 6;
    bootp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    bootp[12..16].copy_from_slice(&src);
    bootp[28..34].copy_from_slice(&mac);
    bootp.extend_from_slice(&[99, 130, 83, 99]); // magic cookie
    bootp.extend_from_slice(&[53, 1, msg_type, 255]);
    let b = PacketBuilder::ethernet2(mac, eth_dst)
        .ipv4(src, dst, 64)
        .udp(68, 67);
    write(|v| b.write(v, &bootp).expect("build dhcp"))
}

/// Sets or clears DF in an untagged IPv4 frame (checksum fixed).
pub fn with_df(mut f: Vec<u8>, df: bool) -> Vec<u8> {
    if df {
        f[IP_FLAGS] |= 0x40;
    } else {
        f[IP_FLAGS] &= !0x40;
    }
    fix_ipv4_checksum(&mut f);
    f
}

/// The 8-byte VXLAN header (RFC 7348) with `flags` (0x08: VNI valid).
pub fn vxlan_header(flags: u8, vni: u32) -> [u8; 8] {
    let v = vni.to_be_bytes();
    [flags, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// A VXLAN packet on the underlay: Ethernet, IPv4 (TTL 64, DF clear), UDP
/// `sport` -> 4789 (with a checksum, as some senders do), VXLAN, `inner`.
#[allow(clippy::too_many_arguments)]
pub fn vxlan(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    flags: u8,
    vni: u32,
    inner: &[u8],
) -> Vec<u8> {
    let mut payload = vxlan_header(flags, vni).to_vec();
    payload.extend_from_slice(inner);
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .udp(sport, 4789);
    let f = write(|v| b.write(v, &payload).expect("build vxlan"));
    with_df(f, false)
}
