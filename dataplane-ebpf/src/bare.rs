//! Benchmark ceilings: programs that only move a frame (optionally
//! rewriting its MACs) to the interface `BARE` names. They measure what the
//! harness's veths and the attach point cost, so the VPC pipeline can be
//! compared with "just moving the packet". Never attached by an agent.

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    helpers::generated::{bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_store_bytes},
    macros::map,
    maps::{Array, HashMap},
    programs::{TcContext, XdpContext},
};
use dataplane_common::{BareTarget, BenchFrame, BARE_F_MACS, BENCH_FRAME_MAX};

use crate::parse::ptr_at_mut;

#[map(name = "BARE")]
static BARE: HashMap<u32, BareTarget> = HashMap::with_max_entries(64, 0);

#[map(name = "BENCH_FRAME")]
static BENCH_FRAME: Array<BenchFrame> = Array::with_max_entries(1, 0);

/// Benchmark harness: makes the packet the frame in `BENCH_FRAME` again
/// (its length, then its bytes), whatever the previous run of a repeated
/// test did to it. False if it cannot.
#[inline(always)]
pub fn restore(ctx: &XdpContext) -> bool {
    let Some(f) = BENCH_FRAME.get(0) else {
        return false;
    };
    let want = f.len as usize;
    if want == 0 || want > BENCH_FRAME_MAX {
        return false;
    }
    let cur = ctx.data_end() - ctx.data();
    if cur != want {
        // SAFETY: plain helper call; the kernel checks the headroom.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, cur as i32 - want as i32) } != 0 {
            return false;
        }
    }
    // SAFETY: `want` bytes of the map value, into a packet of that length.
    unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, f.bytes.as_ptr() as *mut _, want as u32) == 0 }
}

#[inline(always)]
pub fn xdp(ctx: &XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: map values stay valid for the program's run.
    let Some(t) = (unsafe { BARE.get(&ifindex) }) else {
        return xdp_action::XDP_PASS;
    };
    if t.flags & BARE_F_MACS != 0 {
        let Some(eth) = ptr_at_mut::<_, [u8; 12]>(ctx, 0) else {
            return xdp_action::XDP_DROP;
        };
        // SAFETY: bounds-checked.
        let eth = unsafe { &mut *eth };
        eth[..6].copy_from_slice(&t.dmac);
        eth[6..].copy_from_slice(&t.smac);
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(t.ifindex, 0) as u32 }
}

#[inline(always)]
pub fn tc(ctx: &TcContext) -> i32 {
    // SAFETY: the context is the live __sk_buff.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: map values stay valid for the program's run.
    let Some(t) = (unsafe { BARE.get(&ifindex) }) else {
        return TC_ACT_OK;
    };
    if t.flags & BARE_F_MACS != 0 {
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&t.dmac);
        macs[6..].copy_from_slice(&t.smac);
        if ctx.store(0, &macs, 0).is_err() {
            return aya_ebpf::bindings::TC_ACT_SHOT;
        }
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(t.ifindex, 0) as i32 }
}
