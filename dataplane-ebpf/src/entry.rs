//! The production object's entry points: one per attach point (and per
//! tail of the port pipeline), each a thin function that calls its path.
//! Declared by both object roots (`main.rs`, `bench_main.rs`), so the
//! benchmark object runs exactly these programs too.
//!
//! May import: every layer. Must never: hold logic of its own.

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::{base, paths};

/// XDP on a host's uplink (the underlay NIC): VXLAN for this host is
/// decapsulated and delivered to its port; the rest goes to the stack.
/// `frags`: multi-buffer frames (GRO aggregates, jumbo frames) are accepted,
/// headers are read from the linear part.
#[xdp(frags)]
pub fn strato_uplink(ctx: XdpContext) -> u32 {
    paths::uplink::uplink_ingress(&ctx)
}

/// XDP on a VM port (host end of the VM's veth): the VPC pipeline.
#[xdp(frags)]
pub fn strato_port(ctx: XdpContext) -> u32 {
    paths::port::port_entry(&ctx) as u32
}

/// The same VPC pipeline at TC (clsact ingress of the port): what the agent
/// attaches, because it keeps the VM's TSO/GSO and checksum offloads (see
/// docs/benchmarks.md for XDP against TC on VM ports).
#[classifier]
pub fn strato_port_tc(ctx: TcContext) -> i32 {
    base::ctx::tc_linearize(&ctx, 128);
    paths::port::port_entry(&ctx)
}

/// Tail of the XDP port pipeline for packets leaving the VPC (reached by
/// tail call only; see `paths::port::port_out`).
#[xdp(frags)]
pub fn strato_port_out(ctx: XdpContext) -> u32 {
    paths::port::port_out(&ctx) as u32
}

/// The same tail for the TC build.
#[classifier]
pub fn strato_port_out_tc(ctx: TcContext) -> i32 {
    paths::port::port_out(&ctx)
}

/// Tail of the XDP port pipeline for packets to a load balancer's VIP
/// that were not balanced in front of it (refusals; see `paths::port::lb_tail`); a
/// translated packet re-enters `strato_port`.
#[xdp(frags)]
pub fn strato_port_lb(ctx: XdpContext) -> u32 {
    paths::port::lb_tail(&ctx) as u32
}

/// The same tail for the TC build (re-enters `strato_port_tc`).
#[classifier]
pub fn strato_port_lb_tc(ctx: TcContext) -> i32 {
    paths::port::lb_tail(&ctx)
}

/// Tail of the XDP port pipeline for a load balancer member's packets to
/// local ports (see `paths::port::lb_reply_tail`).
#[xdp(frags)]
pub fn strato_port_lb_reply(ctx: XdpContext) -> u32 {
    paths::port::lb_reply_tail(&ctx) as u32
}

/// The same tail for the TC build.
#[classifier]
pub fn strato_port_lb_reply_tc(ctx: TcContext) -> i32 {
    paths::port::lb_reply_tail(&ctx)
}

/// The port pipeline for `stratoctl trace`: the XDP build, reading the
/// connection table but never writing it (a diagnostic changes nothing).
/// Never attached.
#[xdp(frags)]
pub fn strato_port_trace(ctx: XdpContext) -> u32 {
    paths::port::port_ingress::<_, true>(&ctx) as u32
}

/// XDP on a gateway host's external interface (see `paths::external::external_ingress`).
#[xdp(frags)]
pub fn strato_external(ctx: XdpContext) -> u32 {
    paths::external::external_ingress(&ctx)
}
