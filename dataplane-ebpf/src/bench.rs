//! The benchmark object's own programs and maps (`strato-dataplane-bench`
//! only, never the production object): the floor (a program that does
//! nothing), the ceilings (programs that only move a frame, optionally
//! rewriting its MACs, to the interface `BARE` names: what the harness's
//! veths and the attach point cost, so the VPC pipeline can be compared
//! with "just moving the packet"), and the harness (`BENCH_FRAME` put back
//! before each repeated run, then a production path). Never attached by an
//! agent.
//!
//! May import: every layer (it is an entry file, as `entry.rs`).

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    helpers::generated::{bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_store_bytes},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap},
    programs::{TcContext, XdpContext},
};
use dataplane_common::{BareTarget, BenchFrame, BARE_F_MACS, BENCH_FRAME_MAX};

use crate::{base::parse::ptr_at_mut, paths};

#[map]
static BARE: HashMap<u32, BareTarget> = HashMap::with_max_entries(64, 0);

#[map]
static BENCH_FRAME: Array<BenchFrame> = Array::with_max_entries(1, 0);

/// Benchmark harness: makes the packet the frame in `BENCH_FRAME` again
/// (its length, then its bytes), whatever the previous run of a repeated
/// test did to it. False if it cannot.
#[inline(always)]
fn restore(ctx: &XdpContext) -> bool {
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
fn xdp(ctx: &XdpContext) -> u32 {
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
fn tc(ctx: &TcContext) -> i32 {
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

/// The benchmark floor: one XDP invocation that does nothing. Never attached.
#[xdp]
pub fn strato_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark ceiling: redirect only (see [`xdp`]).
#[xdp(frags)]
pub fn strato_bare(ctx: XdpContext) -> u32 {
    xdp(&ctx)
}

/// Benchmark ceiling at TC (clsact ingress): redirect only.
#[classifier]
pub fn strato_bare_tc(ctx: TcContext) -> i32 {
    tc(&ctx)
}

/// Benchmark harness: the frame put back, then the port pipeline (see
/// `programs::BENCH_PORT`). Never attached.
#[xdp(frags)]
pub fn strato_bench_port(ctx: XdpContext) -> u32 {
    if !restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    paths::port::port_entry(&ctx) as u32
}

/// Benchmark harness: the frame put back, then the port pipeline without
/// the load balancer in front. Never attached.
#[xdp(frags)]
pub fn strato_bench_port_plain(ctx: XdpContext) -> u32 {
    if !restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    paths::port::port_ingress::<_, false>(&ctx) as u32
}

/// Benchmark harness: the frame put back, then the uplink program.
#[xdp(frags)]
pub fn strato_bench_uplink(ctx: XdpContext) -> u32 {
    if !restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    paths::uplink::uplink_ingress(&ctx)
}

/// Benchmark harness: the frame put back, then the external program.
#[xdp(frags)]
pub fn strato_bench_external(ctx: XdpContext) -> u32 {
    if !restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    paths::external::external_ingress(&ctx)
}

/// The harness's own cost: the frame put back, passed.
#[xdp(frags)]
pub fn strato_bench_restore(ctx: XdpContext) -> u32 {
    if !restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    xdp_action::XDP_PASS
}
