//! Strato's kernel programs: one entry point per attach point, the logic in
//! one module per concern (`parse`, `stats`, later `conntrack`, `policy`,
//! `nat`, `lb`, `route`, `encap`).
//!
//! Built for `bpfel-unknown-none` by `controller/build.rs` (aya-build) and
//! embedded into the user-space loader. Every map layout and drop reason comes
//! from `dataplane-common`; this crate must never define its own. The hot path
//! counts, it never logs.
#![no_std]
#![no_main]

mod parse;
mod port;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// XDP on a host's uplink (the underlay NIC). Today: validate and count, pass
/// everything well-formed to the stack. `frags`: multi-buffer frames (GRO/TSO
/// aggregates, jumbo frames) are accepted, headers are read from the linear part.
#[xdp(frags)]
pub fn strato_uplink(ctx: XdpContext) -> u32 {
    classify(&ctx)
}

/// XDP on a VM port (host end of the VM's veth). Same checks as the uplink
/// for now; the VPC pipeline (anti-spoofing, policy, routing) goes here.
#[xdp(frags)]
pub fn strato_port(ctx: XdpContext) -> u32 {
    classify(&ctx)
}

/// The benchmark floor: one XDP invocation that does nothing. Never attached.
#[xdp]
pub fn strato_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    let len = stats::frame_len(ctx);
    match parse::parse(ctx, len) {
        Ok(parsed) => {
            stats::count_pass(ifindex, len, &parsed);
            xdp_action::XDP_PASS
        }
        Err(reason) => {
            stats::count_drop(ifindex, len, reason);
            xdp_action::XDP_DROP
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
