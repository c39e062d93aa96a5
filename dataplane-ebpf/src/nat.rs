//! Elastic IPs: distributed 1:1 NAT.
//!
//! The host of the bound port translates: outbound (a VM towards the
//! external network) the source becomes the elastic IP before the packet is
//! tunnelled to a gateway host; inbound (tunnelled from a gateway host) the
//! destination becomes the fixed IP before the port's ingress rules and
//! delivery. Gateway hosts only steer: they answer ARP for elastic IPs on
//! the external network and tunnel their traffic to the bound port's host.
//!
//! Checksums are updated incrementally (RFC 1624): the IPv4 header, the
//! TCP/UDP pseudo-header (first fragments only: later ones carry no L4
//! header, and 1:1 NAT needs none), and for ICMP errors the quoted packet
//! (its opposite address, its header and L4 checksums, and the ICMP
//! checksum over them), so the sender matches the error to its connection.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, macros::map, maps::HashMap};
use dataplane_common::{maps, DropReason, EipEntry, EipOut, EpKey, QosBucket, QosKey};

use crate::{
    csum,
    ctx::Pkt,
    parse::{ptr_at_mut, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
};

#[map(name = "EIPS")]
pub static EIPS: HashMap<[u8; 4], EipEntry> = HashMap::with_max_entries(maps::EIPS_MAX, 0);

#[map(name = "EIP_OUT")]
pub static EIP_OUT: HashMap<EpKey, EipOut> = HashMap::with_max_entries(maps::EIP_OUT_MAX, 0);

#[map(name = "EIP_QOS")]
static EIP_QOS: HashMap<QosKey, QosBucket> = HashMap::with_max_entries(maps::EIP_QOS_MAX, 0);

/// Does a packet of `len` bytes conform to `eip`'s bandwidth limit in
/// `direction`? (See [`QosBucket`]; a missing bucket is no limit.) The
/// clock is updated without a lock: two CPUs racing may both pass a packet
/// the limit had room for once, a small overshoot.
#[inline(always)]
pub fn police(eip: [u8; 4], direction: u32, len: u64) -> bool {
    let Some(b) = EIP_QOS.get_ptr_mut(&QosKey { eip, direction }) else {
        return true;
    };
    // SAFETY: a live map value.
    let b = unsafe { &mut *b };
    // No panic path in the division (a rate of 0 is no limit).
    let Some(cost) = ((len & 0xffff_ffff) * 8_000_000_000).checked_div(b.rate_bps) else {
        return true;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let full = now.saturating_sub(b.burst_ns);
    let clock = if b.clock_ns < full { full } else { b.clock_ns };
    let next = clock + cost;
    if next > now {
        return false;
    }
    b.clock_ns = next;
    true
}

#[inline(always)]
pub fn eip(ip: [u8; 4]) -> Option<&'static EipEntry> {
    // SAFETY: map values stay valid for the program's run (RCU).
    unsafe { EIPS.get(&ip) }
}

#[inline(always)]
pub fn eip_out(domain: u32, ip: [u8; 4]) -> Option<&'static EipOut> {
    // SAFETY: as above.
    unsafe { EIP_OUT.get(&EpKey { domain, ip }) }
}

/// Offset of the source address in an IPv4 header.
pub const SRC: usize = 12;
/// Offset of the destination address.
pub const DST: usize = 16;

#[inline(always)]
fn word(b: &[u8], i: usize) -> u16 {
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
fn is_icmp_error(ty: u8) -> bool {
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
