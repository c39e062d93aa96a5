//! The VXLAN overlay: encapsulation towards another host ([`encap`]) and
//! the tables decapsulation reads (`VNIS`, `MACS`; the decapsulating path
//! is the uplink's).

use aya_ebpf::{macros::map, maps::HashMap};
use dataplane_common::{maps, DropReason, MacKey, VniInfo, VXLAN_OVERHEAD, VXLAN_PORT};

use super::{
    fib::{next_hop, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH},
    host::HOST,
};
use crate::base::{
    csum,
    ctx::Pkt,
    parse::{ptr_at, ptr_at_mut, ETH_HLEN, ETH_P_IPV4, IPPROTO_UDP},
};

#[map]
pub static VNIS: HashMap<u32, VniInfo> = HashMap::with_max_entries(maps::VNIS_MAX, 0);

#[map]
pub static MACS: HashMap<MacKey, u32> = HashMap::with_max_entries(maps::MACS_MAX, 0);

/// Pushes outer Ethernet/IPv4/UDP/VXLAN headers for `vni` towards the host
/// at `underlay`; returns the interface to redirect to. The next hop comes
/// from the kernel's FIB and neighbour table (`bpf_fib_lookup`). On error the
/// frame is unchanged.
#[inline(always)]
pub fn encap<C: Pkt>(ctx: &C, vni: u32, underlay: [u8; 4], hash: u32) -> Result<u32, DropReason> {
    let Some(host) = HOST.get(0) else {
        return Err(DropReason::NoUnderlay);
    };
    if u32::from_ne_bytes(host.underlay_ip) == 0 {
        return Err(DropReason::NoUnderlay);
    }
    let inner = ctx.len() as u32;
    let outer_ip_len = inner + (VXLAN_OVERHEAD as u32 - ETH_HLEN as u32);
    let Some(eth) = ptr_at::<_, [u8; 14]>(ctx, 0) else {
        return Err(DropReason::TruncatedEthernet);
    };
    // SAFETY: bounds-checked; copied before the frame is resized.
    let inner_eth = unsafe { *eth };
    // A GSO aggregate is checked segment by segment (by the caller against
    // the overlay MTU); the FIB only checks plain frames.
    let check_len = if ctx.gso_size() == 0 {
        outer_ip_len as u16
    } else {
        0
    };
    let hop = match next_hop(
        ctx,
        host.uplink_ifindex,
        host.underlay_ip,
        underlay,
        check_len,
    ) {
        Ok(h) => h,
        Err(BPF_FIB_LKUP_RET_NO_NEIGH) => return Err(DropReason::UnderlayNoNeighbour),
        Err(BPF_FIB_LKUP_RET_FRAG_NEEDED) => return Err(DropReason::TooBig),
        Err(_) => return Err(DropReason::UnderlayUnreachable),
    };
    // Room for outer IPv4/UDP/VXLAN and the inner Ethernet header.
    if !ctx.grow_l3(VXLAN_OVERHEAD as u32, true) {
        return Err(DropReason::AdjustFailed);
    }
    let Some(h) = ptr_at_mut::<_, [u8; 64]>(ctx, 0) else {
        return Err(DropReason::AdjustFailed);
    };
    // SAFETY: bounds-checked after the adjustment.
    let h = unsafe { &mut *h };
    let mut i = 0;
    while i < 14 {
        h[50 + i] = inner_eth[i];
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        h[i] = hop.dmac[i];
        h[6 + i] = hop.smac[i];
        i += 1;
    }
    h[12] = (ETH_P_IPV4 >> 8) as u8;
    h[13] = ETH_P_IPV4 as u8;
    // DF: the underlay must not fragment (the overlay MTU leaves room for
    // the outer headers); ID 0 is then allowed (RFC 6864).
    let iph = csum::ipv4_header_with_checksum(
        0,
        outer_ip_len as u16,
        0x40,
        IPPROTO_UDP,
        host.underlay_ip,
        underlay,
    );
    let mut i = 0;
    while i < 20 {
        h[14 + i] = iph[i];
        i += 1;
    }
    let sport = (0xc000 | (hash & 0x3fff) as u16).to_be_bytes();
    let ulen = ((outer_ip_len - 20) as u16).to_be_bytes();
    let dport = VXLAN_PORT.to_be_bytes();
    let v = vni.to_be_bytes();
    let tail: [u8; 16] = [
        sport[0], sport[1], dport[0], dport[1], ulen[0], ulen[1], 0, 0, // UDP, no checksum
        0x08, 0, 0, 0, v[1], v[2], v[3], 0, // VXLAN: I flag, VNI
    ];
    let mut i = 0;
    while i < 16 {
        h[34 + i] = tail[i];
        i += 1;
    }
    Ok(hop.ifindex)
}
