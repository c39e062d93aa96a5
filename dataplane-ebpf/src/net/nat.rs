//! Address rewriting with every checksum that covers the address
//! ([`translate`]): the IPv4 header, the TCP/UDP pseudo-header (first
//! fragments only: later ones carry no L4 header), and for ICMP errors the
//! quoted packet (its opposite address, its header and L4 checksums, and
//! the ICMP checksum over them), so the sender matches the error to its
//! connection. Checksums are updated incrementally (RFC 1624). Shared by
//! elastic IPs, SNAT and the load balancer.

use dataplane_common::DropReason;

use crate::base::{
    csum,
    ctx::Pkt,
    parse::{ptr_at_mut, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
};

/// Offset of the source address in an IPv4 header.
pub const SRC: usize = 12;

/// Offset of the destination address.
pub const DST: usize = 16;

#[inline(always)]
pub fn word(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// `check` after the 4 bytes `from` became `to`.
#[inline(always)]
fn replace_addr(check: u16, from: &[u8; 4], to: &[u8; 4]) -> u16 {
    let c = csum::replace16(check, word(from, 0), word(to, 0));
    csum::replace16(c, word(from, 2), word(to, 2))
}

/// ICMP types whose body quotes the packet that caused them.
#[inline(always)]
pub fn is_icmp_error(ty: u8) -> bool {
    ty == 3 || ty == 4 || ty == 5 || ty == 11 || ty == 12
}

/// Rewrites the address at `which` ([`SRC`] or [`DST`]) of the IPv4 packet
/// at `l3` to `to`, with every checksum that covers it. The frame's length
/// never changes.
#[inline(always)]
pub fn translate<C: Pkt>(ctx: &C, l3: usize, which: usize, to: [u8; 4]) -> Result<(), DropReason> {
    let Some(ip) = ptr_at_mut::<_, [u8; 20]>(ctx, l3) else {
        return Err(DropReason::TruncatedIpv4);
    };
    // SAFETY: bounds-checked.
    let ip = unsafe { &mut *ip };
    let off = if which == SRC { SRC } else { DST };
    let from = [ip[off], ip[off + 1], ip[off + 2], ip[off + 3]];
    let c = replace_addr(word(ip, 10), &from, &to).to_be_bytes();
    ip[10] = c[0];
    ip[11] = c[1];
    ip[off] = to[0];
    ip[off + 1] = to[1];
    ip[off + 2] = to[2];
    ip[off + 3] = to[3];
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let proto = ip[9];
    // Later fragments: the L4 header (and its checksum) is in the first.
    if (ip[6] & 0x1f) != 0 || ip[7] != 0 || ihl < 20 {
        return Ok(());
    }
    let l4 = l3 + (ihl & 0x3c);
    let (f, t) = (u32::from_ne_bytes(from), u32::from_ne_bytes(to));
    match proto {
        IPPROTO_TCP => {
            if !ctx.l4_csum_replace4(l4 + 16, f, t, false) {
                return Err(DropReason::TruncatedTcp);
            }
        }
        IPPROTO_UDP => {
            if !ctx.l4_csum_replace4(l4 + 6, f, t, true) {
                return Err(DropReason::TruncatedUdp);
            }
        }
        IPPROTO_ICMP => translate_quoted(ctx, l4, off, &from, &to)?,
        _ => {}
    }
    Ok(())
}

/// An ICMP error's quoted packet travelled the other way: its address
/// opposite to `outer` is the one translated (when it is `from`).
#[inline(always)]
fn translate_quoted<C: Pkt>(
    ctx: &C,
    l4: usize,
    outer: usize,
    from: &[u8; 4],
    to: &[u8; 4],
) -> Result<(), DropReason> {
    // ICMP header (8) and the quoted IPv4 header without options.
    let Some(m) = ptr_at_mut::<_, [u8; 28]>(ctx, l4) else {
        return Err(DropReason::TruncatedIcmp);
    };
    // SAFETY: bounds-checked.
    let m = unsafe { &mut *m };
    if !is_icmp_error(m[0]) {
        return Ok(());
    }
    let inner = if outer == SRC { 8 + DST } else { 8 + SRC };
    if m[inner] != from[0]
        || m[inner + 1] != from[1]
        || m[inner + 2] != from[2]
        || m[inner + 3] != from[3]
        || m[8] != 0x45
    {
        return Ok(());
    }
    let mut icmp_sum = word(m, 2);
    // The quoted address, and the quoted header's checksum.
    icmp_sum = replace_addr(icmp_sum, from, to);
    let old_ip_sum = word(m, 18);
    let new_ip_sum = replace_addr(old_ip_sum, from, to);
    icmp_sum = csum::replace16(icmp_sum, old_ip_sum, new_ip_sum);
    let b = new_ip_sum.to_be_bytes();
    m[18] = b[0];
    m[19] = b[1];
    m[inner] = to[0];
    m[inner + 1] = to[1];
    m[inner + 2] = to[2];
    m[inner + 3] = to[3];
    let proto = m[17];
    let first = (m[14] & 0x1f) == 0 && m[15] == 0;
    // The quoted L4 checksum, when the quote reaches it.
    let at = if proto == IPPROTO_UDP {
        6
    } else if proto == IPPROTO_TCP {
        16
    } else {
        0
    };
    if first && at != 0 {
        if let Some(q) = ptr_at_mut::<_, [u8; 18]>(ctx, l4 + 28) {
            // SAFETY: bounds-checked.
            let q = unsafe { &mut *q };
            let old = word(q, at);
            if !(proto == IPPROTO_UDP && old == 0) {
                let mut new = replace_addr(old, from, to);
                if proto == IPPROTO_UDP && new == 0 {
                    new = 0xffff;
                }
                icmp_sum = csum::replace16(icmp_sum, old, new);
                let b = new.to_be_bytes();
                q[at] = b[0];
                q[at + 1] = b[1];
            }
        } else if proto == IPPROTO_UDP {
            if let Some(q) = ptr_at_mut::<_, [u8; 8]>(ctx, l4 + 28) {
                // SAFETY: bounds-checked.
                let q = unsafe { &mut *q };
                let old = word(q, 6);
                if old != 0 {
                    let mut new = replace_addr(old, from, to);
                    if new == 0 {
                        new = 0xffff;
                    }
                    icmp_sum = csum::replace16(icmp_sum, old, new);
                    let b = new.to_be_bytes();
                    q[6] = b[0];
                    q[7] = b[1];
                }
            }
        }
    }
    // The outer packet's ICMP header again (the pointers above may not be
    // used across the second lookup's branches).
    let Some(h) = ptr_at_mut::<_, [u8; 4]>(ctx, l4) else {
        return Err(DropReason::TruncatedIcmp);
    };
    // SAFETY: bounds-checked.
    let h = unsafe { &mut *h };
    let b = icmp_sum.to_be_bytes();
    h[2] = b[0];
    h[3] = b[1];
    Ok(())
}
