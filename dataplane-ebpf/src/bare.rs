//! Benchmark ceilings: programs that only move a frame (optionally
//! rewriting its MACs) to the interface `BARE` names. They measure what the
//! harness's veths and the attach point cost, so the VPC pipeline can be
//! compared with "just moving the packet". Never attached by an agent.

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    helpers::generated::bpf_redirect,
    macros::map,
    maps::HashMap,
    programs::{TcContext, XdpContext},
};
use dataplane_common::{BareTarget, BARE_F_MACS};

use crate::parse::ptr_at_mut;

#[map(name = "BARE")]
static BARE: HashMap<u32, BareTarget> = HashMap::with_max_entries(64, 0);

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
