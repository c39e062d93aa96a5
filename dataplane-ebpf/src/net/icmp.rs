//! ICMP the dataplane answers itself: echo replies from a router
//! interface ([`gateway_ping`]) and errors from a port's gateway
//! ([`icmp_error`]: unreachable, fragmentation needed, time exceeded).

use aya_ebpf::helpers::generated::bpf_csum_diff;
use dataplane_common::{
    maps::{PROBE_PORT_MAX, PROBE_PORT_MIN},
    DropReason, PortInfo,
};

use crate::base::{
    addr::{mac_at, mac_zero, set_mac},
    csum,
    ctx::Pkt,
    parse::{ptr_at, ptr_at_mut, ETH_HLEN, ETH_P_IPV4, IPPROTO_ICMP},
    verdict::Verdict,
};

/// Echo replies from any router interface address of the VPC; anything else
/// addressed to a router interface is dropped.
#[inline(always)]
pub fn gateway_ping<C: Pkt>(ctx: &C, l4_off: usize, l4_proto: u8) -> Verdict {
    if l4_proto != IPPROTO_ICMP || l4_off == 0 {
        // An answer to a load balancer health check (the agent read it).
        if l4_off != 0 {
            if let Some(p) = ptr_at::<_, [u8; 4]>(ctx, l4_off) {
                // SAFETY: bounds-checked.
                let dport = unsafe { u16::from_be_bytes([(*p)[2], (*p)[3]]) };
                if (PROBE_PORT_MIN..=PROBE_PORT_MAX).contains(&dport) {
                    return Verdict::Drop(DropReason::LbHealthAnswer);
                }
            }
        }
        return Verdict::Drop(DropReason::NotForGateway);
    }
    let (Some(eth), Some(ip), Some(icmp)) = (
        ptr_at_mut::<_, [u8; 14]>(ctx, 0),
        ptr_at_mut::<_, [u8; 20]>(ctx, ETH_HLEN),
        ptr_at_mut::<_, [u8; 4]>(ctx, l4_off),
    ) else {
        return Verdict::Drop(DropReason::TruncatedIcmp);
    };
    // SAFETY: all three ranges were bounds-checked.
    let (eth, ip, icmp) = unsafe { (&mut *eth, &mut *ip, &mut *icmp) };
    // No reassembly here: a fragmented echo request is not answered.
    if icmp[0] == 0 {
        // Echo replies to a gateway answer the agents' PING checks.
        return Verdict::Drop(DropReason::LbHealthAnswer);
    }
    if icmp[0] != 8 || icmp[1] != 0 || (ip[6] & 0x3f) != 0 || ip[7] != 0 {
        return Verdict::Drop(DropReason::NotForGateway);
    }
    let d = mac_at(eth, 0);
    let s = mac_at(eth, 6);
    set_mac(eth, 0, &s);
    set_mac(eth, 6, &d);
    let mut i = 12;
    while i < 16 {
        ip.swap(i, i + 4);
        i += 1;
    }
    let check = u16::from_be_bytes([ip[10], ip[11]]);
    let c = csum::replace16(
        check,
        u16::from_be_bytes([ip[8], ip[9]]),
        u16::from_be_bytes([64, ip[9]]),
    )
    .to_be_bytes();
    ip[8] = 64;
    ip[10] = c[0];
    ip[11] = c[1];
    let ic = u16::from_be_bytes([icmp[2], icmp[3]]);
    let c = csum::replace16(ic, 0x0800, 0x0000).to_be_bytes();
    icmp[0] = 0;
    icmp[2] = c[0];
    icmp[3] = c[1];
    Verdict::Tx
}

/// Answers the frame with an ICMP error from the port's gateway (RFC 792/
/// 1812: the original IP header and at least 8 bytes of its payload), and
/// counts the original as dropped with `reason`. Quotes 20 payload bytes
/// when the original has them: an sk_buff whose TCP checksum is still to be
/// filled in cannot be cut before that field. Needs a router on the port's
/// network and an original without IP options; otherwise only drops.
#[inline(always)]
pub fn icmp_error<C: Pkt>(
    ctx: &C,
    port: &PortInfo,
    ty: u8,
    code: u8,
    mtu: u16,
    reason: DropReason,
) -> Verdict {
    match ptr_at::<_, [u8; 4]>(ctx, ETH_HLEN) {
        // SAFETY: bounds-checked.
        Some(ip) if u16::from_be_bytes(unsafe { [(*ip)[2], (*ip)[3]] }) >= 40 => {
            icmp_error_quoting::<C, 40, { ETH_HLEN + 28 + 40 }>(ctx, port, ty, code, mtu, reason)
        }
        _ => icmp_error_quoting::<C, 28, { ETH_HLEN + 28 + 28 }>(ctx, port, ty, code, mtu, reason),
    }
}

#[inline(always)]
fn icmp_error_quoting<C: Pkt, const QUOTE: usize, const TOTAL: usize>(
    ctx: &C,
    port: &PortInfo,
    ty: u8,
    code: u8,
    mtu: u16,
    reason: DropReason,
) -> Verdict {
    const NEW: usize = ETH_HLEN + 20 + 8;
    let (vm_mac, vm_ip) = {
        let (Some(eth), Some(ip)) = (
            ptr_at::<_, [u8; 14]>(ctx, 0),
            ptr_at::<_, [u8; QUOTE]>(ctx, ETH_HLEN),
        ) else {
            return Verdict::Drop(reason);
        };
        // SAFETY: bounds-checked.
        let (eth, ip) = unsafe { (&*eth, &*ip) };
        // Never answer an ICMP error with one (RFC 1122), nor fragments
        // after the first.
        if ip[0] != 0x45
            || mac_zero(&port.gw_mac)
            || (ip[6] & 0x1f) != 0
            || ip[7] != 0
            || (ip[9] == IPPROTO_ICMP && ip[20] != 8 && ip[20] != 0)
        {
            return Verdict::Drop(reason);
        }
        (mac_at(eth, 6), [ip[12], ip[13], ip[14], ip[15]])
    };
    // Room for the new IPv4 and ICMP headers in front of the original IPv4
    // header, then cut what follows its first 8 payload bytes.
    if !ctx.grow_l3((NEW - ETH_HLEN) as u32, false) || !ctx.truncate(TOTAL as u32) {
        return Verdict::Drop(DropReason::AdjustFailed);
    }
    let Some(h) = ptr_at_mut::<_, [u8; TOTAL]>(ctx, 0) else {
        return Verdict::Drop(DropReason::AdjustFailed);
    };
    // SAFETY: bounds-checked after both adjustments.
    let h = unsafe { &mut *h };
    let mut i = 0;
    while i < 6 {
        h[i] = vm_mac[i];
        h[6 + i] = port.gw_mac[i];
        i += 1;
    }
    h[12] = (ETH_P_IPV4 >> 8) as u8;
    h[13] = ETH_P_IPV4 as u8;
    let iph = csum::ipv4_header_with_checksum(
        0xc0,
        (20 + 8 + QUOTE) as u16,
        0,
        IPPROTO_ICMP,
        port.gw_ip,
        vm_ip,
    );
    let mut i = 0;
    while i < 20 {
        h[ETH_HLEN + i] = iph[i];
        i += 1;
    }
    let m = mtu.to_be_bytes();
    let icmp = ETH_HLEN + 20;
    h[icmp] = ty;
    h[icmp + 1] = code;
    h[icmp + 2] = 0;
    h[icmp + 3] = 0;
    h[icmp + 4] = 0;
    h[icmp + 5] = 0;
    h[icmp + 6] = m[0];
    h[icmp + 7] = m[1];
    // SAFETY: the 36 bytes (ICMP header + quote) lie inside the checked range.
    let sum = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            h.as_mut_ptr().add(icmp) as *mut u32,
            (8 + QUOTE) as u32,
            0,
        )
    };
    // bpf_csum_diff sums native-order words: store the result in native order.
    let c = (!csum::fold(sum as u64 & 0xffff_ffff)).to_ne_bytes();
    h[icmp + 2] = c[0];
    h[icmp + 3] = c[1];
    Verdict::TxError(reason)
}
