//! Packet parser: Ethernet (up to two VLAN tags), ARP, IPv4 (options,
//! fragments), IPv6 (extension header chain), and the TCP/UDP/ICMP header
//! that follows. Every length field is checked against the frame; anything
//! malformed or truncated is an `Err(DropReason)`, never a half-parsed
//! packet. All packet access goes through [`ptr_at`].

use super::ctx::Pkt;
use dataplane_common::DropReason;

pub const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;
const MAX_IPV6_EXT_HEADERS: usize = 8;

pub const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// TCP header flags.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    Ipv4,
    Ipv6,
    Arp,
    Other,
}

/// Where the headers of a well-formed packet are. Offsets are from the
/// start of the frame; `l4_off`/`l4_proto` are 0 when there is no L4 header
/// to look at (ARP, other ethertypes, non-first fragments).
#[derive(Clone, Copy)]
pub struct Parsed {
    pub l3: L3,
    pub l3_off: usize,
    pub l4_off: usize,
    pub l4_proto: u8,
}

/// Bounds-checked pointer to a `T` at `off` bytes into the frame's linear
/// part, or `None` if it would run past `data_end`.
#[inline(always)]
pub fn ptr_at<C: Pkt, T>(ctx: &C, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

/// Mutable variant of [`ptr_at`].
#[inline(always)]
pub fn ptr_at_mut<C: Pkt, T>(ctx: &C, off: usize) -> Option<*mut T> {
    ptr_at::<C, T>(ctx, off).map(|p| p as *mut T)
}

#[inline(always)]
fn be16_at<C: Pkt>(ctx: &C, off: usize) -> Option<u16> {
    // SAFETY: ptr_at checked both bytes lie inside the packet; unaligned read.
    ptr_at::<C, [u8; 2]>(ctx, off).map(|p| u16::from_be_bytes(unsafe { *p }))
}

/// Parses the frame. `frame_len` is the whole frame (linear part and
/// fragments); length fields are checked against it, headers must be in the
/// linear part.
#[inline(always)]
pub fn parse<C: Pkt>(ctx: &C, frame_len: u64) -> Result<Parsed, DropReason> {
    let mut ethertype = be16_at(ctx, 12).ok_or(DropReason::TruncatedEthernet)?;
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        // Tag: TCI (2 bytes) then the encapsulated ethertype.
        ethertype = be16_at(ctx, off + 2).ok_or(DropReason::TruncatedVlan)?;
        off += VLAN_HLEN;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(DropReason::TooManyVlanTags);
    }
    let avail = frame_len.saturating_sub(off as u64);
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(ctx, off, avail),
        ETH_P_IPV6 => parse_ipv6(ctx, off, avail),
        ETH_P_ARP => parse_arp(ctx, off),
        _ => Ok(Parsed {
            l3: L3::Other,
            l3_off: off,
            l4_off: 0,
            l4_proto: 0,
        }),
    }
}

/// Parses a frame a VM sent: only untagged IPv4 and ARP go further, so a
/// tag (`VlanOnPort`) or IPv6 (`L3::Ipv6`, refused by the caller) ends it
/// at the ethertype. Keeps the port program small: the tag and IPv6
/// extension header walks would multiply the paths the verifier follows
/// through everything after.
///
/// A tag is looked for in both places it can be: in the data (XDP, and an
/// inner tag of a QinQ frame at TC) and in the sk_buff's metadata (the
/// outer tag at TC, see [`Pkt::vlan_tagged`]). A tenant's tag must never
/// reach a peer or, as an outer tag of the VXLAN packet, the underlay.
#[inline(always)]
pub fn parse_port<C: Pkt>(ctx: &C, frame_len: u64) -> Result<Parsed, DropReason> {
    if ctx.vlan_tagged() {
        return Err(DropReason::VlanOnPort);
    }
    let ethertype = be16_at(ctx, 12).ok_or(DropReason::TruncatedEthernet)?;
    let avail = frame_len.saturating_sub(ETH_HLEN as u64);
    let other = |l3| {
        Ok(Parsed {
            l3,
            l3_off: ETH_HLEN,
            l4_off: 0,
            l4_proto: 0,
        })
    };
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(ctx, ETH_HLEN, avail),
        ETH_P_ARP => parse_arp(ctx, ETH_HLEN),
        ETH_P_8021Q | ETH_P_8021AD => Err(DropReason::VlanOnPort),
        ETH_P_IPV6 => other(L3::Ipv6),
        _ => other(L3::Other),
    }
}

#[inline(always)]
fn parse_arp<C: Pkt>(ctx: &C, off: usize) -> Result<Parsed, DropReason> {
    // Ethernet/IPv4 ARP is 28 bytes: htype, ptype, hlen, plen, oper, 2x(MAC, IP).
    let p = ptr_at::<C, [u8; 28]>(ctx, off).ok_or(DropReason::TruncatedArp)?;
    // SAFETY: ptr_at checked the 28 bytes.
    let a = unsafe { &*p };
    let htype = u16::from_be_bytes([a[0], a[1]]);
    let ptype = u16::from_be_bytes([a[2], a[3]]);
    if htype != 1 || ptype != ETH_P_IPV4 || a[4] != 6 || a[5] != 4 {
        return Err(DropReason::BadArp);
    }
    Ok(Parsed {
        l3: L3::Arp,
        l3_off: off,
        l4_off: 0,
        l4_proto: 0,
    })
}

#[inline(always)]
fn parse_ipv4<C: Pkt>(ctx: &C, off: usize, avail: u64) -> Result<Parsed, DropReason> {
    let p = ptr_at::<C, [u8; 20]>(ctx, off).ok_or(DropReason::TruncatedIpv4)?;
    // SAFETY: ptr_at checked the 20 bytes of the fixed header.
    let h = unsafe { &*p };
    if h[0] >> 4 != 4 {
        return Err(DropReason::BadIpv4Version);
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(DropReason::BadIpv4HeaderLength);
    }
    let total = u16::from_be_bytes([h[2], h[3]]) as usize;
    if total < ihl || total as u64 > avail {
        return Err(DropReason::BadIpv4TotalLength);
    }
    // Options must be readable from the linear part.
    if ptr_at::<C, u8>(ctx, off + ihl - 1).is_none() {
        return Err(DropReason::BadIpv4HeaderLength);
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let more_fragments = frag & 0x2000 != 0;
    let frag_offset = frag & 0x1fff;
    let proto = h[9];
    let l4_off = off + ihl;
    if frag_offset != 0 {
        // A later fragment: no L4 header to look at.
        return Ok(Parsed {
            l3: L3::Ipv4,
            l3_off: off,
            l4_off: 0,
            l4_proto: 0,
        });
    }
    check_l4(ctx, proto, l4_off, total - ihl, more_fragments)?;
    Ok(Parsed {
        l3: L3::Ipv4,
        l3_off: off,
        l4_off,
        l4_proto: proto,
    })
}

#[inline(always)]
fn parse_ipv6<C: Pkt>(ctx: &C, off: usize, avail: u64) -> Result<Parsed, DropReason> {
    let p = ptr_at::<C, [u8; 40]>(ctx, off).ok_or(DropReason::TruncatedIpv6)?;
    // SAFETY: ptr_at checked the 40 bytes of the fixed header.
    let h = unsafe { &*p };
    if h[0] >> 4 != 6 {
        return Err(DropReason::BadIpv6Version);
    }
    let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
    if payload as u64 + 40 > avail {
        return Err(DropReason::BadIpv6PayloadLength);
    }
    let mut next = h[6];
    let payload_start = off + 40;
    let payload_end = payload_start + payload;
    let mut cur = payload_start;
    let mut fragmented = false;
    let mut walked = 0;
    while walked < MAX_IPV6_EXT_HEADERS {
        if next != IPV6_HOPOPTS
            && next != IPV6_ROUTING
            && next != IPV6_FRAGMENT
            && next != IPV6_AH
            && next != IPV6_DSTOPTS
        {
            break;
        }
        let e = ptr_at::<C, [u8; 8]>(ctx, cur).ok_or(DropReason::TruncatedIpv6ExtHeader)?;
        // SAFETY: ptr_at checked the 8 bytes every extension header has.
        let e = unsafe { &*e };
        let len = match next {
            IPV6_FRAGMENT => 8,
            IPV6_AH => (e[1] as usize + 2) * 4,
            _ => (e[1] as usize + 1) * 8,
        };
        if cur + len > payload_end {
            return Err(DropReason::TruncatedIpv6ExtHeader);
        }
        if next == IPV6_FRAGMENT {
            let fo = u16::from_be_bytes([e[2], e[3]]);
            if fo & 0xfff8 != 0 {
                // A later fragment: no L4 header.
                return Ok(Parsed {
                    l3: L3::Ipv6,
                    l3_off: off,
                    l4_off: 0,
                    l4_proto: 0,
                });
            }
            fragmented = fo & 1 != 0;
        }
        next = e[0];
        cur += len;
        walked += 1;
    }
    if walked == MAX_IPV6_EXT_HEADERS
        && matches!(
            next,
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_AH | IPV6_DSTOPTS
        )
    {
        return Err(DropReason::TooManyIpv6ExtHeaders);
    }
    check_l4(ctx, next, cur, payload_end - cur, fragmented)?;
    Ok(Parsed {
        l3: L3::Ipv6,
        l3_off: off,
        l4_off: cur,
        l4_proto: next,
    })
}

/// Checks the L4 header at `off`, `len` bytes of IP payload remaining.
/// `first_fragment`: only part of the datagram is here, so length fields that
/// describe the whole datagram (UDP length) cannot be checked against `len`.
#[inline(always)]
fn check_l4<C: Pkt>(
    ctx: &C,
    proto: u8,
    off: usize,
    len: usize,
    first_fragment: bool,
) -> Result<(), DropReason> {
    match proto {
        IPPROTO_TCP => {
            if len < 20 {
                return Err(DropReason::TruncatedTcp);
            }
            let t = ptr_at::<C, [u8; 20]>(ctx, off).ok_or(DropReason::TruncatedTcp)?;
            // SAFETY: ptr_at checked the 20 bytes of the fixed header.
            let doff = ((unsafe { (*t)[12] } >> 4) as usize) * 4;
            if doff < 20 || doff > len {
                return Err(DropReason::BadTcpDataOffset);
            }
        }
        IPPROTO_UDP => {
            if len < 8 {
                return Err(DropReason::TruncatedUdp);
            }
            let ulen = be16_at(ctx, off + 4).ok_or(DropReason::TruncatedUdp)? as usize;
            if ulen < 8 || (!first_fragment && ulen > len) {
                return Err(DropReason::BadUdpLength);
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if len < 8 || ptr_at::<C, [u8; 8]>(ctx, off).is_none() {
                return Err(DropReason::TruncatedIcmp);
            }
        }
        _ => {}
    }
    Ok(())
}
