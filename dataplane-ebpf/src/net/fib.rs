//! Next hops from the kernel's FIB and neighbour table
//! (`bpf_fib_lookup`), cached per CPU in `NEXTHOPS`: towards another
//! host's underlay address (the tunnel) or, on a gateway host, out of the
//! external interface ([`to_external`]).

use aya_ebpf::{
    bindings::bpf_fib_lookup,
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_xdp_adjust_head},
    macros::map,
    maps::LruPerCpuHashMap,
    programs::XdpContext,
};
use dataplane_common::{
    maps::{self, NEXTHOP_TTL_NS},
    DropReason, HostInfo, NextHop, NextHopKey,
};

use crate::base::{
    addr::set_mac,
    clock,
    ctx::Pkt,
    parse::{ptr_at, ptr_at_mut, ETH_HLEN},
    verdict::Verdict,
};

#[map]
pub static NEXTHOPS: LruPerCpuHashMap<NextHopKey, NextHop> =
    LruPerCpuHashMap::with_max_entries(maps::NEXTHOPS_MAX, 0);

const AF_INET: u8 = 2;

/// Skip policy rules: the main table.
const BPF_FIB_LOOKUP_DIRECT: u32 = 1;

/// Look up as the host sending out of `ifindex` (the uplink), not as a
/// router forwarding from it: hosts do not forward.
const BPF_FIB_LOOKUP_OUTPUT: u32 = 2;

const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;

pub const BPF_FIB_LKUP_RET_NO_NEIGH: i64 = 7;

pub const BPF_FIB_LKUP_RET_FRAG_NEEDED: i64 = 8;

/// The next hop towards `dst` out of `oif` (source `src`): the cached
/// answer while it is fresh and was given for a frame at least this long
/// (`len`, 0 for an aggregate), else the kernel's FIB and neighbour table
/// (`bpf_fib_lookup`, an output lookup pinned to `oif`), whose answer is
/// then cached. Failures (the lookup's code) are not cached: an unresolved
/// neighbour is asked about again every packet.
#[inline(always)]
pub fn next_hop<C: Pkt>(
    ctx: &C,
    oif: u32,
    src: [u8; 4],
    dst: [u8; 4],
    len: u16,
) -> Result<NextHop, i64> {
    let now = clock::now();
    let key = NextHopKey {
        ifindex: oif,
        ip: dst,
    };
    let mut proven = 0;
    if let Some(c) = NEXTHOPS.get_ptr_mut(&key) {
        // SAFETY: a live per-CPU map value.
        let c = unsafe { &*c };
        if c.expires_ns > now {
            if len <= c.max_len {
                return Ok(*c);
            }
            proven = c.max_len;
        }
    }
    // SAFETY: an all-zero bpf_fib_lookup is a valid (empty) request.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.ifindex = oif;
    fib.__bindgen_anon_1.tot_len = len;
    fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
    fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    // SAFETY: fib is a live, correctly sized request; ctx is the program's context.
    let rc = unsafe {
        fib_lookup(
            ctx.raw(),
            &mut fib,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_DIRECT | BPF_FIB_LOOKUP_OUTPUT,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS {
        return Err(rc);
    }
    let hop = NextHop {
        expires_ns: now + NEXTHOP_TTL_NS,
        ifindex: fib.ifindex,
        // The largest plain frame the FIB has accepted (an aggregate, 0,
        // proves nothing about the MTU).
        max_len: if len > proven { len } else { proven },
        _pad: 0,
        dmac: fib.dmac,
        smac: fib.smac,
        _pad2: [0; 4],
    };
    let _ = NEXTHOPS.insert(&key, &hop, 0);
    Ok(hop)
}

/// On a gateway host: an already translated packet from a VM's host leaves
/// through the external interface, to the next hop the kernel's FIB and
/// neighbour table give for its destination.
#[inline(always)]
pub fn to_external(ctx: &XdpContext, host: &HostInfo, off: usize) -> Verdict {
    let Some(ip) = ptr_at::<_, [u8; 20]>(ctx, off + ETH_HLEN) else {
        return Verdict::Drop(DropReason::TruncatedIpv4);
    };
    // SAFETY: bounds-checked.
    let ip = unsafe { &*ip };
    let hop = match next_hop(
        ctx,
        host.ext_ifindex,
        [ip[12], ip[13], ip[14], ip[15]],
        [ip[16], ip[17], ip[18], ip[19]],
        u16::from_be_bytes([ip[2], ip[3]]),
    ) {
        Ok(h) => h,
        Err(BPF_FIB_LKUP_RET_NO_NEIGH) => return Verdict::Drop(DropReason::ExternalNoNeighbour),
        Err(BPF_FIB_LKUP_RET_FRAG_NEEDED) => return Verdict::Drop(DropReason::TooBig),
        Err(_) => return Verdict::Drop(DropReason::ExternalUnreachable),
    };
    // SAFETY: shrinking the head by the outer headers, checked by the caller.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, off as i32) } != 0 {
        return Verdict::Drop(DropReason::AdjustFailed);
    }
    let Some(eth) = ptr_at_mut::<_, [u8; 14]>(ctx, 0) else {
        return Verdict::Drop(DropReason::AdjustFailed);
    };
    // SAFETY: bounds-checked.
    let eth = unsafe { &mut *eth };
    set_mac(eth, 0, &hop.dmac);
    set_mac(eth, 6, &hop.smac);
    Verdict::Redirect(hop.ifindex)
}
