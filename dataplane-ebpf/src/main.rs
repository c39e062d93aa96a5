//! Strato's kernel programs: one entry point per attach point, the logic in
//! one module per concern (`parse`, `stats`, `maps`, `vpc`, `policy`
//! (security groups and conntrack), later `nat`, `lb`).
//!
//! Built for `bpfel-unknown-none` by `controller/build.rs` (aya-build) and
//! embedded into the user-space loader. Every map layout and drop reason comes
//! from `dataplane-common`; this crate must never define its own. The hot path
//! counts, it never logs.
#![no_std]
#![no_main]

mod bare;
mod csum;
mod ctx;
mod lb;
mod maps;
mod nat;
mod parse;
mod policy;
mod snat;
mod stats;
mod vpc;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// XDP on a host's uplink (the underlay NIC): VXLAN for this host is
/// decapsulated and delivered to its port; the rest goes to the stack.
/// `frags`: multi-buffer frames (GRO aggregates, jumbo frames) are accepted,
/// headers are read from the linear part.
#[xdp(frags)]
pub fn strato_uplink(ctx: XdpContext) -> u32 {
    vpc::uplink_ingress(&ctx)
}

/// XDP on a VM port (host end of the VM's veth): the VPC pipeline.
#[xdp(frags)]
pub fn strato_port(ctx: XdpContext) -> u32 {
    vpc::port_entry(&ctx) as u32
}

/// The same VPC pipeline at TC (clsact ingress of the port): what the agent
/// attaches, because it keeps the VM's TSO/GSO and checksum offloads (see
/// docs/benchmarks.md for XDP against TC on VM ports).
#[classifier]
pub fn strato_port_tc(ctx: TcContext) -> i32 {
    ctx::tc_linearize(&ctx, 128);
    vpc::port_entry(&ctx)
}

/// Tail of the XDP port pipeline for packets leaving the VPC (reached by
/// tail call only; see `vpc::port_out`).
#[xdp(frags)]
pub fn strato_port_out(ctx: XdpContext) -> u32 {
    vpc::port_out(&ctx) as u32
}

/// The same tail for the TC build.
#[classifier]
pub fn strato_port_out_tc(ctx: TcContext) -> i32 {
    vpc::port_out(&ctx)
}

/// Tail of the XDP port pipeline for packets to a load balancer's VIP
/// that were not balanced in front of it (refusals; see `lb::port_lb`); a
/// translated packet re-enters `strato_port`.
#[xdp(frags)]
pub fn strato_port_lb(ctx: XdpContext) -> u32 {
    lb::port_lb(&ctx) as u32
}

/// The same tail for the TC build (re-enters `strato_port_tc`).
#[classifier]
pub fn strato_port_lb_tc(ctx: TcContext) -> i32 {
    lb::port_lb(&ctx)
}

/// Tail of the XDP port pipeline for a load balancer member's packets to
/// local ports (see `lb::port_lb_reply`).
#[xdp(frags)]
pub fn strato_port_lb_reply(ctx: XdpContext) -> u32 {
    lb::port_lb_reply(&ctx) as u32
}

/// The same tail for the TC build.
#[classifier]
pub fn strato_port_lb_reply_tc(ctx: TcContext) -> i32 {
    lb::port_lb_reply(&ctx)
}

/// The port pipeline for `stratoctl trace`: the XDP build, reading the
/// connection table but never writing it (a diagnostic changes nothing).
/// Never attached.
#[xdp(frags)]
pub fn strato_port_trace(ctx: XdpContext) -> u32 {
    vpc::port_ingress::<_, true>(&ctx) as u32
}

/// XDP on a gateway host's external interface (see `vpc::external_ingress`).
#[xdp(frags)]
pub fn strato_external(ctx: XdpContext) -> u32 {
    vpc::external_ingress(&ctx)
}

/// The benchmark floor: one XDP invocation that does nothing. Never attached.
#[xdp]
pub fn strato_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark ceiling: redirect only (see `bare`).
#[xdp(frags)]
pub fn strato_bare(ctx: XdpContext) -> u32 {
    bare::xdp(&ctx)
}

/// Benchmark ceiling at TC (clsact ingress): redirect only.
#[classifier]
pub fn strato_bare_tc(ctx: TcContext) -> i32 {
    bare::tc(&ctx)
}

/// Benchmark harness: the frame put back, then the port pipeline (see
/// `programs::BENCH_PORT`). Never attached.
#[xdp(frags)]
pub fn strato_bench_port(ctx: XdpContext) -> u32 {
    if !bare::restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    vpc::port_entry(&ctx) as u32
}

/// Benchmark harness: the frame put back, then the port pipeline without
/// the load balancer in front. Never attached.
#[xdp(frags)]
pub fn strato_bench_port_plain(ctx: XdpContext) -> u32 {
    if !bare::restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    vpc::port_ingress::<_, false>(&ctx) as u32
}

/// Benchmark harness: the frame put back, then the uplink program.
#[xdp(frags)]
pub fn strato_bench_uplink(ctx: XdpContext) -> u32 {
    if !bare::restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    vpc::uplink_ingress(&ctx)
}

/// Benchmark harness: the frame put back, then the external program.
#[xdp(frags)]
pub fn strato_bench_external(ctx: XdpContext) -> u32 {
    if !bare::restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    vpc::external_ingress(&ctx)
}

/// The harness's own cost: the frame put back, passed.
#[xdp(frags)]
pub fn strato_bench_restore(ctx: XdpContext) -> u32 {
    if !bare::restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
