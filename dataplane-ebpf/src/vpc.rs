//! The VPC pipeline.
//!
//! Port ingress (a frame a VM sent, seen on the host end of its veth):
//! port lookup -> admin state -> parse -> anti-spoofing -> ARP answered
//! here / DHCP to the agent / L2 forward within the network / L3 routing in
//! the VPC (gateway ping, TTL, MTU, static routes) -> delivery: redirect to a
//! local port, or VXLAN-encapsulate to the destination's host.
//!
//! Uplink ingress: VXLAN to this host's underlay address is decapsulated and
//! redirected to the destination port; everything else goes to the stack.
//!
//! Distributed routing: a packet is routed on the sender's host, so it
//! crosses the underlay once, already carrying the destination network's VNI
//! and MACs; the receiving host only delivers.

use aya_ebpf::{
    bindings::bpf_fib_lookup,
    helpers::generated::{
        bpf_csum_diff, bpf_fib_lookup as fib_lookup, bpf_ktime_get_coarse_ns, bpf_redirect,
        bpf_xdp_adjust_head,
    },
    programs::XdpContext,
};
use dataplane_common::{
    maps::{NEXTHOP_TTL_NS, PROBE_PORT_MAX, PROBE_PORT_MIN, TAIL_EXTERNAL, TAIL_LB, TAIL_LB_REPLY},
    DropReason, EipEntry, Endpoint, HostInfo, MacKey, NextHop, NextHopKey, PortInfo, DIR_EGRESS,
    DIR_INGRESS, EIP_F_LB, EIP_F_LOCAL, EIP_F_QOS, EIP_F_SNAT, EIP_F_STEER, EP_EXTERNAL, EP_F_DOWN,
    EP_F_SNAT, EP_GATEWAY, EP_LOCAL, EP_REMOTE, EP_VIP, HOST_F_GATEWAY, HOST_F_LB, MACS_DOWN,
    PORT_F_ADMIN_UP, PORT_F_LB_MEMBER, PORT_F_SECURITY, ROUTE_CONNECTED, ROUTE_EXTERNAL,
    ROUTE_NEXTHOP, VNI_F_EXTERNAL, VNI_F_SNAT, VXLAN_OVERHEAD, VXLAN_PORT,
};

use crate::{
    csum,
    ctx::Pkt,
    lb,
    maps::{self, allowed, endpoint, route, HOST, MACS, VNIS},
    nat,
    parse::{self, ptr_at, ptr_at_mut, ETH_HLEN, ETH_P_IPV4, IPPROTO_ICMP, IPPROTO_UDP, L3},
    policy::{self, Check, Flow, Scratch},
    snat,
    stats::{count_drop, Outcome, Slot},
};

/// What to do with a frame.
pub enum Verdict {
    /// To the kernel stack.
    Pass,
    /// Dropped, counted with its reason.
    Drop(DropReason),
    /// Sent back out of the interface it came in on (an answer).
    Tx,
    /// Redirected to this ifindex.
    Redirect(u32),
    /// An answer that replaced a dropped frame (ICMP error): sent back, and
    /// the original counted as dropped with this reason.
    TxError(DropReason),
    /// Continues in the tail program in this slot of the port pipeline's
    /// program array (`maps::TAIL_*`).
    Tail(u32),
}

#[inline(always)]
pub fn finish<C: Pkt>(ifindex: u32, slot: &Slot, len: u64, v: Verdict) -> i32 {
    match v {
        Verdict::Pass => {
            slot.outcome(Outcome::Passed);
            C::PASS
        }
        Verdict::Drop(r) => {
            slot.outcome(Outcome::Dropped);
            count_drop(ifindex, len, r);
            C::DROP
        }
        // Answers go back out of the ingress interface by redirect, not
        // XDP_TX: on a veth, XDP_TX only wakes the peer when the peer runs an
        // XDP program itself (a VM does not), a redirect flushes it. At TC a
        // redirect to the ingress device's egress reaches the VM.
        Verdict::Tx => {
            slot.outcome(Outcome::Answered);
            // SAFETY: plain helper call.
            unsafe { bpf_redirect(ifindex, 0) as i32 }
        }
        Verdict::TxError(r) => {
            slot.outcome(Outcome::Dropped);
            count_drop(ifindex, len, r);
            // SAFETY: plain helper call.
            unsafe { bpf_redirect(ifindex, 0) as i32 }
        }
        Verdict::Redirect(to) => {
            slot.outcome(Outcome::Forwarded);
            // SAFETY: plain helper call; the kernel validates the ifindex.
            unsafe { bpf_redirect(to, 0) as i32 }
        }
        // Handled by the caller (it needs the context); never reaches here.
        Verdict::Tail(_) => {
            slot.outcome(Outcome::Dropped);
            count_drop(ifindex, len, DropReason::NoTailCall);
            C::DROP
        }
    }
}

#[inline(always)]
pub fn mac_eq(a: &[u8; 6], b: &[u8; 6]) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5]
}

#[inline(always)]
pub fn mac_zero(a: &[u8; 6]) -> bool {
    (a[0] | a[1] | a[2] | a[3] | a[4] | a[5]) == 0
}

#[inline(always)]
pub fn ip_eq(a: &[u8; 4], b: &[u8; 4]) -> bool {
    u32::from_ne_bytes(*a) == u32::from_ne_bytes(*b)
}

#[inline(always)]
fn mac_at(b: &[u8; 14], off: usize) -> [u8; 6] {
    [
        b[off],
        b[off + 1],
        b[off + 2],
        b[off + 3],
        b[off + 4],
        b[off + 5],
    ]
}

#[inline(always)]
fn set_mac(b: &mut [u8; 14], off: usize, m: &[u8; 6]) {
    b[off] = m[0];
    b[off + 1] = m[1];
    b[off + 2] = m[2];
    b[off + 3] = m[3];
    b[off + 4] = m[4];
    b[off + 5] = m[5];
}

/// A frame from a VM, at either attach point of its port: the load
/// balancer in front ([`lb::port_balance`]), then the pipeline. Both are
/// functions of their own in the program (BPF-to-BPF calls): the pipeline
/// is verified once from one state, and the two stack frames are side by
/// side, not nested.
#[inline(always)]
pub fn port_entry<C: Pkt>(ctx: &C) -> i32 {
    if let Some(port) = lb::may_balance(ctx) {
        lb::port_balance(ctx, port);
    }
    port_ingress_call(ctx)
}

#[inline(never)]
fn port_ingress_call<C: Pkt>(ctx: &C) -> i32 {
    port_ingress::<C, false>(ctx)
}

/// The port pipeline (`TRACE`: for `stratoctl trace`, which changes no
/// table and runs without the load balancer in front).
#[inline(always)]
pub fn port_ingress<C: Pkt, const TRACE: bool>(ctx: &C) -> i32 {
    let ifindex = ctx.ingress_ifindex();
    let len = ctx.len();
    let Some(port) = maps::port(ifindex) else {
        let slot = Slot::rx(0, len);
        return finish::<C>(ifindex, &slot, len, Verdict::Drop(DropReason::PortUnknown));
    };
    let slot = Slot::rx(port.slot, len);
    let v = port_pipeline::<C, TRACE>(ctx, ifindex, port, len, &slot);
    if let Verdict::Tail(slot) = v {
        ctx.tail(slot);
    }
    finish::<C>(ifindex, &slot, len, v)
}

/// The port pipeline's tail: a packet leaving the VPC through its router's
/// external gateway, every check done. It needs nothing from the caller
/// but the packet: the port (domain, VNI, counters) is looked up again (an
/// array read), so no state crosses the tail call.
#[inline(always)]
pub fn port_out<C: Pkt>(ctx: &C) -> i32 {
    let ifindex = ctx.ingress_ifindex();
    let len = ctx.len();
    let Some(port) = maps::port(ifindex) else {
        let slot = Slot::at(0);
        return finish::<C>(ifindex, &slot, len, Verdict::Drop(DropReason::PortUnknown));
    };
    let slot = Slot::at(port.slot);
    let v = external_out(ctx, port);
    finish::<C>(ifindex, &slot, len, v)
}

/// A packet leaving the VPC: its source's elastic IP, or without one the
/// router's SNAT (the packet goes to that gateway host untranslated, on the
/// port's own VNI, MACs as the VM sent them so that host learns them).
#[inline(always)]
fn external_out<C: Pkt>(ctx: &C, x: &PortInfo) -> Verdict {
    let ep = match endpoint(x.domain, [0; 4]) {
        Some(ep) if ep.kind == EP_EXTERNAL => ep,
        _ => return Verdict::Drop(DropReason::NoRoute),
    };
    let Some(ip) = ptr_at::<_, [u8; 20]>(ctx, ETH_HLEN) else {
        return Verdict::Drop(DropReason::TruncatedIpv4);
    };
    // SAFETY: bounds-checked.
    let saddr = unsafe { [(*ip)[12], (*ip)[13], (*ip)[14], (*ip)[15]] };
    // A public listener's member answers as the listener's elastic IP.
    let public = if x.flags & PORT_F_LB_MEMBER != 0 {
        match lb::public_reply(ctx, x.domain) {
            Ok(p) => p,
            Err(r) => return Verdict::Drop(r),
        }
    } else {
        false
    };
    let snat = match nat::eip_out(x.domain, saddr) {
        _ if public => false,
        Some(o) => {
            let eip = o.eip;
            // Limits count IP bytes (what the tenant's rate means).
            let bytes = ctx.len().saturating_sub(ETH_HLEN as u64);
            if o.flags & EIP_F_QOS != 0 && !nat::police(eip, DIR_EGRESS, bytes) {
                return Verdict::Drop(DropReason::QosRateExceeded);
            }
            if let Err(r) = nat::translate(ctx, ETH_HLEN, nat::SRC, eip) {
                return Verdict::Drop(r);
            }
            false
        }
        None if ep.flags & EP_F_SNAT != 0 => true,
        None => return Verdict::Drop(DropReason::NoElasticIp),
    };
    let (Some(eth), Some(ip)) = (
        ptr_at_mut::<_, [u8; 14]>(ctx, 0),
        ptr_at_mut::<_, [u8; 20]>(ctx, ETH_HLEN),
    ) else {
        return Verdict::Drop(DropReason::TruncatedIpv4);
    };
    // SAFETY: both bounds-checked.
    let (eth, ip) = unsafe { (&mut *eth, &mut *ip) };
    decrement_ttl(ip);
    if !snat {
        set_mac(eth, 0, &ep.mac);
        set_mac(eth, 6, &ep.gw_mac);
    }
    let first = (ip[6] & 0x1f) == 0 && ip[7] == 0;
    let l4_off = if first {
        ETH_HLEN + ((ip[0] & 0x0f) as usize) * 4
    } else {
        0
    };
    let hash = flow_hash(ctx, ip, l4_off);
    // An external endpoint's `ifindex` is the SNAT gateway host's address.
    let (vni, underlay) = if snat {
        (x.vni, ep.ifindex.to_ne_bytes())
    } else {
        (ep.vni, ep.underlay)
    };
    match encap(ctx, vni, underlay, hash) {
        Ok(out) => Verdict::Redirect(out),
        Err(r) => Verdict::Drop(r),
    }
}

#[inline(always)]
fn port_pipeline<C: Pkt, const TRACE: bool>(
    ctx: &C,
    ifindex: u32,
    port: &PortInfo,
    len: u64,
    slot: &Slot,
) -> Verdict {
    if port.flags & PORT_F_ADMIN_UP == 0 {
        return Verdict::Drop(DropReason::PortDown);
    }
    let parsed = match parse::parse_port(ctx, len) {
        Ok(p) => p,
        Err(r) => return Verdict::Drop(r),
    };
    slot.class(parsed.l3);
    match parsed.l3 {
        L3::Arp => arp(ctx, ifindex, port),
        L3::Ipv4 => ipv4::<C, TRACE>(ctx, ifindex, port, parsed.l4_off, parsed.l4_proto),
        L3::Ipv6 => Verdict::Drop(DropReason::Ipv6Unsupported),
        L3::Other => Verdict::Drop(DropReason::UnsupportedEthertype),
    }
}

/// May this port send from (`mac`, `ip`)?
#[inline(always)]
fn source_allowed(
    ifindex: u32,
    port: &PortInfo,
    mac: &[u8; 6],
    ip: &[u8; 4],
) -> Result<(), DropReason> {
    if port.flags & PORT_F_SECURITY == 0 {
        return Ok(());
    }
    if mac_eq(mac, &port.mac) && ip_eq(ip, &port.ipv4) {
        return Ok(());
    }
    match allowed(ifindex, *ip) {
        Some(a) if mac_eq(&a.mac, mac) => Ok(()),
        _ if !mac_eq(mac, &port.mac) => Err(DropReason::SpoofedMac),
        _ => Err(DropReason::SpoofedIp),
    }
}

/// ARP from a VM: requests for addresses on its network are answered here
/// (the owner's MAC, or the router interface's); nothing is flooded.
#[inline(always)]
fn arp<C: Pkt>(ctx: &C, ifindex: u32, port: &PortInfo) -> Verdict {
    let (Some(eth), Some(a)) = (
        ptr_at_mut::<_, [u8; 14]>(ctx, 0),
        ptr_at_mut::<_, [u8; 28]>(ctx, ETH_HLEN),
    ) else {
        return Verdict::Drop(DropReason::TruncatedArp);
    };
    // SAFETY: both ranges were bounds-checked by ptr_at_mut.
    let (eth, a) = unsafe { (&mut *eth, &mut *a) };
    let src = mac_at(eth, 6);
    let sha = [a[8], a[9], a[10], a[11], a[12], a[13]];
    let spa = [a[14], a[15], a[16], a[17]];
    let tpa = [a[24], a[25], a[26], a[27]];
    if port.flags & PORT_F_SECURITY != 0 {
        if !mac_eq(&sha, &src) {
            return Verdict::Drop(DropReason::SpoofedMac);
        }
        // An ARP probe (RFC 5227) comes from 0.0.0.0.
        if u32::from_ne_bytes(spa) != 0 {
            if let Err(r) = source_allowed(ifindex, port, &src, &spa) {
                return Verdict::Drop(r);
            }
        } else if !mac_eq(&src, &port.mac) {
            return Verdict::Drop(DropReason::SpoofedMac);
        }
    }
    if a[6] != 0 || a[7] != 1 || ip_eq(&spa, &tpa) {
        return Verdict::Drop(DropReason::ArpNotRequest);
    }
    let Some(ep) = endpoint(port.domain, tpa) else {
        return Verdict::Drop(DropReason::ArpUnknownTarget);
    };
    // Only addresses on the asker's own network are on-link; a port's own
    // address is never answered (duplicate address detection must see silence).
    if ep.vni != port.vni || (ep.kind == EP_LOCAL && ep.ifindex == ifindex) {
        return Verdict::Drop(DropReason::ArpUnknownTarget);
    }
    arp_reply(eth, a, &ep.mac);
    Verdict::Tx
}

/// Turns the ARP request in `eth`/`a` into its reply from `owner`: target
/// <- sender, sender <- the owner of the asked address.
#[inline(always)]
fn arp_reply(eth: &mut [u8; 14], a: &mut [u8; 28], owner: &[u8; 6]) {
    let src = mac_at(eth, 6);
    let sha = [a[8], a[9], a[10], a[11], a[12], a[13]];
    let spa = [a[14], a[15], a[16], a[17]];
    let tpa = [a[24], a[25], a[26], a[27]];
    set_mac(eth, 0, &src);
    set_mac(eth, 6, owner);
    a[7] = 2;
    let mut i = 0;
    while i < 6 {
        a[18 + i] = sha[i];
        a[8 + i] = owner[i];
        i += 1;
    }
    let mut i = 0;
    while i < 4 {
        a[24 + i] = spa[i];
        a[14 + i] = tpa[i];
        i += 1;
    }
}

#[inline(always)]
fn is_dhcp_request<C: Pkt>(ctx: &C, l4_off: usize, l4_proto: u8) -> bool {
    if l4_proto != IPPROTO_UDP || l4_off == 0 {
        return false;
    }
    match ptr_at::<_, [u8; 4]>(ctx, l4_off) {
        // SAFETY: bounds-checked.
        Some(p) => unsafe { (*p)[2] == 0 && (*p)[3] == 67 },
        None => false,
    }
}

/// `Scratch::step`: `[kind, argument, MTU, drop reason]`, every field
/// written on every path (a partly written value would reach the verifier
/// as an uninitialised register).
const STEP_PASS: u32 = 0;
const STEP_DROP: u32 = 1;
/// Argument: routed (TTL and MACs rewritten) or switched.
const STEP_DELIVER: u32 = 2;
/// An echo request to the router interface.
const STEP_PING: u32 = 3;
/// `STEP_DELIVER` arguments.
const DELIVER_ROUTED: u32 = 1;
/// Routed out of the VPC: the source becomes the port's elastic IP.
const DELIVER_EXTERNAL: u32 = 2;
/// To a load balancer VIP (`TAIL_LB`).
const DELIVER_LB: u32 = 4;
/// From a load balancer member to a local port (`TAIL_LB_REPLY`).
const DELIVER_LB_REPLY: u32 = 8;

/// How a delivery to `ep` continues, besides routing.
#[inline(always)]
fn deliver_how(port: &PortInfo, ep: &Endpoint) -> u32 {
    if ep.kind == EP_VIP {
        DELIVER_LB
    } else if ep.kind == EP_LOCAL && port.flags & PORT_F_LB_MEMBER != 0 {
        DELIVER_LB_REPLY
    } else {
        0
    }
}
/// An ICMP error answers; argument `type << 8 | code`.
const STEP_ERROR: u32 = 4;

#[inline(always)]
fn step(sc: &mut Scratch, kind: u32, arg: u32, mtu: u16, reason: DropReason) {
    sc.step = [kind, arg, mtu as u32, reason as u32];
}

#[inline(always)]
fn step_drop(sc: &mut Scratch, reason: DropReason) -> Option<&'static Endpoint> {
    step(sc, STEP_DROP, 0, 0, reason);
    None
}

#[inline(always)]
fn step_error(
    sc: &mut Scratch,
    ty: u8,
    code: u8,
    mtu: u16,
    reason: DropReason,
) -> Option<&'static Endpoint> {
    step(sc, STEP_ERROR, (ty as u32) << 8 | code as u32, mtu, reason);
    None
}

/// A drop reason read back from `Scratch::step`.
#[inline(always)]
fn step_reason(v: u32) -> DropReason {
    // SAFETY: only ever written from a `DropReason` (`repr(u32)`).
    unsafe { core::mem::transmute(v) }
}

#[inline(always)]
fn ipv4<C: Pkt, const TRACE: bool>(
    ctx: &C,
    ifindex: u32,
    port: &PortInfo,
    l4_off: usize,
    l4_proto: u8,
) -> Verdict {
    let Some(sc) = policy::scratch() else {
        return Verdict::Drop(DropReason::NoScratch);
    };
    let dhcp = is_dhcp_request(ctx, l4_off, l4_proto);
    // The decision goes through the scratch (see `policy::Scratch`): what
    // follows is verified once, not once per way of getting here.
    let ep = route_step(ctx, ifindex, port, l4_off, l4_proto, dhcp, sc);
    let sc = policy::launder(sc);
    let st = sc.step;
    if st[0] == STEP_PASS {
        return Verdict::Pass;
    }
    if st[0] == STEP_DROP {
        return Verdict::Drop(step_reason(st[3]));
    }
    // To a load balancer's VIP, not balanced in front of the pipeline (a
    // refusal to answer, or a trace): the tail refuses or translates, and
    // a translated packet comes through this pipeline again.
    if st[0] == STEP_DELIVER && st[1] & DELIVER_LB != 0 {
        return Verdict::Tail(TAIL_LB);
    }
    // Security groups, once every earlier check passed: the sender's
    // egress rules for whatever leaves the port (also what the router
    // answers: its errors and pings); for a delivery, the receiver's
    // ingress rules when it is local (a remote one is checked by its host's
    // uplink), then the connection entry, all before any rewrite. DHCP to
    // the agent is always allowed.
    if let Err(r) = Flow::read_into(ctx, ETH_HLEN, &mut sc.flow, &mut sc.options) {
        return Verdict::Drop(r);
    }
    let sc = policy::launder(sc);
    let flow = &sc.flow;
    let mut check = Check::new(port.domain, flow, &mut sc.check);
    if !dhcp {
        if let Err(r) = check.sender::<TRACE>(port, flow) {
            return Verdict::Drop(r);
        }
    }
    let Some(ep) = ep else {
        if st[0] == STEP_PING {
            return gateway_ping(ctx, l4_off, l4_proto);
        }
        return icmp_error(
            ctx,
            port,
            (st[1] >> 8) as u8,
            st[1] as u8,
            st[2] as u16,
            step_reason(st[3]),
        );
    };
    if ep.kind == EP_LOCAL {
        if let Some(dst) = maps::port(ep.ifindex) {
            if let Err(r) = check.receiver::<TRACE>(dst, flow) {
                return Verdict::Drop(r);
            }
        }
    }
    // Towards the external network: the source address's elastic IP.
    // Without one, through the router's SNAT (on its gateway host): the
    // packet goes there untranslated, on the port's own VNI. The rest is
    // the tail program's (its own verifier budget).
    // Out of the VPC: the tail program translates (or hands the packet
    // to the router's SNAT) and tunnels it, with its own verifier budget.
    if !TRACE {
        if let Err(r) = check.commit(flow) {
            return Verdict::Drop(r);
        }
    }
    if st[1] == DELIVER_EXTERNAL {
        return Verdict::Tail(TAIL_EXTERNAL);
    }
    if st[1] & DELIVER_ROUTED != 0 {
        // Routed: TTL and MACs.
        let (Some(eth), Some(ip)) = (
            ptr_at_mut::<_, [u8; 14]>(ctx, 0),
            ptr_at_mut::<_, [u8; 20]>(ctx, ETH_HLEN),
        ) else {
            return Verdict::Drop(DropReason::TruncatedIpv4);
        };
        // SAFETY: both ranges were bounds-checked by ptr_at_mut.
        let (eth, ip) = unsafe { (&mut *eth, &mut *ip) };
        decrement_ttl(ip);
        set_mac(eth, 0, &ep.mac);
        set_mac(eth, 6, &ep.gw_mac);
    }
    // A load balancer member's packet to a local port may be a reply to
    // translate back to the VIP (the tail delivers it).
    if st[1] & DELIVER_LB_REPLY != 0 {
        return Verdict::Tail(TAIL_LB_REPLY);
    }
    deliver(ctx, ep, l4_off)
}

/// Anti-spoofing, then the switching or routing decision for an IPv4
/// packet from a port, written to `sc.step`; the destination when it is
/// delivered.
#[inline(always)]
fn route_step<C: Pkt>(
    ctx: &C,
    ifindex: u32,
    port: &PortInfo,
    l4_off: usize,
    l4_proto: u8,
    dhcp: bool,
    sc: &mut Scratch,
) -> Option<&'static Endpoint> {
    let (Some(eth), Some(ip)) = (
        ptr_at::<_, [u8; 14]>(ctx, 0),
        ptr_at::<_, [u8; 20]>(ctx, ETH_HLEN),
    ) else {
        return step_drop(sc, DropReason::TruncatedIpv4);
    };
    // SAFETY: both ranges were bounds-checked by ptr_at.
    let (eth, ip) = unsafe { (&*eth, &*ip) };
    let src_mac = mac_at(eth, 6);
    let dst_mac = mac_at(eth, 0);
    let saddr = [ip[12], ip[13], ip[14], ip[15]];
    let daddr = [ip[16], ip[17], ip[18], ip[19]];
    if dhcp && u32::from_ne_bytes(saddr) == 0 && dst_mac[0] & 1 != 0 {
        // DISCOVER/REQUEST (broadcast) before the VM has an address.
        if port.flags & PORT_F_SECURITY != 0 && !mac_eq(&src_mac, &port.mac) {
            return step_drop(sc, DropReason::SpoofedMac);
        }
    } else if let Err(r) = source_allowed(ifindex, port, &src_mac, &saddr) {
        return step_drop(sc, r);
    }
    if dst_mac[0] & 1 != 0 {
        if dhcp {
            step(sc, STEP_PASS, 0, 0, DropReason::FloodSuppressed);
            return None;
        }
        return step_drop(sc, DropReason::FloodSuppressed);
    }
    let total = wire_len(ctx, u16::from_be_bytes([ip[2], ip[3]]), l4_off, l4_proto);
    let routed = !mac_zero(&port.gw_mac) && mac_eq(&dst_mac, &port.gw_mac);
    if !routed {
        // Switched within the network: the destination must be an address
        // of a port on this network with exactly this MAC.
        let Some(ep) = endpoint(port.domain, daddr) else {
            return step_drop(sc, DropReason::UnknownDestination);
        };
        if ep.kind == EP_GATEWAY || ep.vni != port.vni || !mac_eq(&ep.mac, &dst_mac) {
            return step_drop(sc, DropReason::UnknownDestination);
        }
        if ep.flags & EP_F_DOWN != 0 {
            return step_drop(sc, DropReason::PortDown);
        }
        if total > port.mtu {
            // The network's router (if any) tells the sender, so path MTU
            // discovery works on the segment too.
            if ip[6] & 0x40 != 0 {
                return step_error(sc, 3, 4, port.mtu, DropReason::FragmentationNeeded);
            }
            return step_drop(sc, DropReason::TooBig);
        }
        step(
            sc,
            STEP_DELIVER,
            deliver_how(port, ep),
            0,
            DropReason::TooBig,
        );
        return Some(ep);
    }
    // Routed in the VPC.
    let ep = match endpoint(port.domain, daddr) {
        Some(ep) => ep,
        None => match route(port.domain, daddr) {
            None => return step_error(sc, 3, 0, 0, DropReason::NoRoute),
            Some(r) if r.kind == ROUTE_NEXTHOP => match endpoint(port.domain, r.nexthop) {
                Some(ep) if ep.kind != EP_GATEWAY => ep,
                _ => return step_error(sc, 3, 1, 0, DropReason::HostUnreachable),
            },
            Some(r) if r.kind == ROUTE_CONNECTED => {
                return step_error(sc, 3, 1, 0, DropReason::HostUnreachable)
            }
            // Out of the VPC through its router's external gateway.
            Some(r) if r.kind == ROUTE_EXTERNAL => match endpoint(port.domain, [0; 4]) {
                Some(ep) if ep.kind == EP_EXTERNAL => ep,
                _ => return step_error(sc, 3, 0, 0, DropReason::NoRoute),
            },
            Some(_) => return step_error(sc, 3, 0, 0, DropReason::NoRoute),
        },
    };
    if ep.kind == EP_GATEWAY {
        if dhcp {
            // Renewal unicast to the server identifier (the gateway).
            step(sc, STEP_PASS, 0, 0, DropReason::NotForGateway);
            return None;
        }
        step(sc, STEP_PING, 0, 0, DropReason::NotForGateway);
        return None;
    }
    if mac_zero(&ep.gw_mac) {
        // The destination's subnet has no router interface: not routable.
        return step_error(sc, 3, 0, 0, DropReason::NoRoute);
    }
    if ep.flags & EP_F_DOWN != 0 {
        return step_drop(sc, DropReason::PortDown);
    }
    if ip[8] <= 1 {
        return step_error(sc, 11, 0, 0, DropReason::TtlExceeded);
    }
    if total > ep.mtu {
        if ip[6] & 0x40 != 0 {
            return step_error(sc, 3, 4, ep.mtu, DropReason::FragmentationNeeded);
        }
        return step_drop(sc, DropReason::TooBig);
    }
    let how = if ep.kind == EP_EXTERNAL {
        DELIVER_EXTERNAL
    } else {
        DELIVER_ROUTED | deliver_how(port, ep)
    };
    step(sc, STEP_DELIVER, how, 0, DropReason::TooBig);
    Some(ep)
}

/// The IPv4 length each packet will have on the wire: the datagram's, or
/// for a TSO/GSO aggregate (TC only) one segment's.
#[inline(always)]
fn wire_len<C: Pkt>(ctx: &C, total: u16, l4_off: usize, l4_proto: u8) -> u16 {
    let gso = ctx.gso_size();
    if gso == 0 || l4_off == 0 {
        return total;
    }
    let l4_hdr = match l4_proto {
        parse::IPPROTO_TCP => match ptr_at::<_, [u8; 13]>(ctx, l4_off) {
            // SAFETY: bounds-checked.
            Some(t) => ((unsafe { (*t)[12] } >> 4) as usize) * 4,
            None => 20,
        },
        _ => 8,
    };
    (l4_off - ETH_HLEN + l4_hdr + gso as usize) as u16
}

/// Entropy for the outer UDP source port: addresses and, when present, the
/// L4 ports of the inner packet.
#[inline(always)]
pub fn flow_hash<C: Pkt>(ctx: &C, ip: &[u8; 20], l4_off: usize) -> u32 {
    let mut h = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]])
        ^ u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]).rotate_left(16)
        ^ ip[9] as u32;
    if l4_off != 0 {
        if let Some(p) = ptr_at::<_, [u8; 4]>(ctx, l4_off) {
            // SAFETY: bounds-checked.
            h ^= u32::from_ne_bytes(unsafe { *p });
        }
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x45d9_f3b);
    h ^ (h >> 16)
}

#[inline(always)]
fn deliver<C: Pkt>(ctx: &C, ep: &Endpoint, l4_off: usize) -> Verdict {
    if ep.kind == EP_LOCAL {
        return Verdict::Redirect(ep.ifindex);
    }
    if ep.kind != EP_REMOTE {
        return Verdict::Drop(DropReason::UnknownDestination);
    }
    // Only a tunnelled packet needs the flow hash (outer source port).
    let hash = match ptr_at::<_, [u8; 20]>(ctx, ETH_HLEN) {
        // SAFETY: bounds-checked.
        Some(ip) => flow_hash(ctx, unsafe { &*ip }, l4_off),
        None => 0,
    };
    match encap(ctx, ep.vni, ep.underlay, hash) {
        Ok(out) => Verdict::Redirect(out),
        Err(r) => Verdict::Drop(r),
    }
}

const AF_INET: u8 = 2;
/// Skip policy rules: the main table.
const BPF_FIB_LOOKUP_DIRECT: u32 = 1;
/// Look up as the host sending out of `ifindex` (the uplink), not as a
/// router forwarding from it: hosts do not forward.
const BPF_FIB_LOOKUP_OUTPUT: u32 = 2;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
const BPF_FIB_LKUP_RET_NO_NEIGH: i64 = 7;
const BPF_FIB_LKUP_RET_FRAG_NEEDED: i64 = 8;

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

/// The next hop towards `dst` out of `oif` (source `src`): the cached
/// answer while it is fresh and was given for a frame at least this long
/// (`len`, 0 for an aggregate), else the kernel's FIB and neighbour table
/// (`bpf_fib_lookup`, an output lookup pinned to `oif`), whose answer is
/// then cached. Failures (the lookup's code) are not cached: an unresolved
/// neighbour is asked about again every packet.
#[inline(always)]
fn next_hop<C: Pkt>(
    ctx: &C,
    oif: u32,
    src: [u8; 4],
    dst: [u8; 4],
    len: u16,
) -> Result<NextHop, i64> {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let key = NextHopKey {
        ifindex: oif,
        ip: dst,
    };
    let mut proven = 0;
    if let Some(c) = maps::NEXTHOPS.get_ptr_mut(&key) {
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
    let _ = maps::NEXTHOPS.insert(&key, &hop, 0);
    Ok(hop)
}

/// Echo replies from any router interface address of the VPC; anything else
/// addressed to a router interface is dropped.
#[inline(always)]
fn gateway_ping<C: Pkt>(ctx: &C, l4_off: usize, l4_proto: u8) -> Verdict {
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

/// XDP on the uplink: VXLAN for this host is decapsulated and delivered to
/// the destination port; all other traffic goes to the stack.
#[inline(always)]
pub fn uplink_ingress(ctx: &XdpContext) -> u32 {
    let ifindex = Pkt::ingress_ifindex(ctx);
    let len = Pkt::len(ctx);
    let host = HOST.get(0);
    let slot = Slot::rx(host.map(|h| h.uplink_slot).unwrap_or(0), len);
    let v = match parse::parse(ctx, len) {
        Err(r) => Verdict::Drop(r),
        Ok(p) => {
            slot.class(p.l3);
            match host {
                Some(host) if p.l3 == L3::Ipv4 && p.l4_proto == IPPROTO_UDP => {
                    decap(ctx, &host.underlay_ip, p.l3_off, p.l4_off)
                }
                _ => Verdict::Pass,
            }
        }
    };
    finish::<XdpContext>(ifindex, &slot, len, v) as u32
}

#[inline(always)]
fn decap(ctx: &XdpContext, underlay_ip: &[u8; 4], l3_off: usize, l4_off: usize) -> Verdict {
    let Some(ip) = ptr_at::<_, [u8; 20]>(ctx, l3_off) else {
        return Verdict::Pass;
    };
    let Some(udp) = ptr_at::<_, [u8; 8]>(ctx, l4_off) else {
        return Verdict::Pass;
    };
    // SAFETY: both bounds-checked.
    let (ip, udp) = unsafe { (&*ip, &*udp) };
    if !ip_eq(&[ip[16], ip[17], ip[18], ip[19]], underlay_ip)
        || u16::from_be_bytes([udp[2], udp[3]]) != VXLAN_PORT
    {
        return Verdict::Pass;
    }
    // We only ever send outer headers without VLAN tags or IP options, and
    // never fragmented (DF): the inner frame must be whole.
    if l3_off != ETH_HLEN || l4_off != ETH_HLEN + 20 || (ip[6] & 0x3f) != 0 || ip[7] != 0 {
        return Verdict::Drop(DropReason::BadVxlan);
    }
    let off = VXLAN_OVERHEAD as usize;
    let (Some(vx), Some(inner)) = (
        ptr_at::<_, [u8; 8]>(ctx, off - 8),
        ptr_at::<_, [u8; 34]>(ctx, off),
    ) else {
        return Verdict::Drop(DropReason::BadVxlan);
    };
    // SAFETY: both bounds-checked.
    let (vx, inner) = unsafe { (&*vx, &*inner) };
    if vx[0] & 0x08 == 0 {
        return Verdict::Drop(DropReason::BadVxlan);
    }
    let vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
    let (vx_flags, vx_port) = (vx[0], u16::from_be_bytes([vx[1], vx[2]]));
    if u16::from_be_bytes([inner[12], inner[13]]) != ETH_P_IPV4 || inner[14] >> 4 != 4 {
        return Verdict::Drop(DropReason::UnsupportedEthertype);
    }
    let dmac = [inner[0], inner[1], inner[2], inner[3], inner[4], inner[5]];
    // The sender already chose the destination (its MAC on the VNI's
    // network): a port of this host, or a VM that a static route points at.
    // SAFETY: map values stay valid for the program's run.
    let Some(to) = (unsafe {
        MACS.get(&MacKey {
            vni,
            mac: dmac,
            _pad: [0; 2],
        })
    }) else {
        // Only on a miss: is it the VNI or the destination that is unknown,
        // or the external network (no port has a MAC there)?
        // SAFETY: as above.
        return match unsafe { VNIS.get(&vni) } {
            None => Verdict::Drop(DropReason::UnknownVni),
            Some(v) if v.flags & VNI_F_EXTERNAL != 0 => external_decap(ctx, off),
            Some(v) if v.flags & VNI_F_SNAT != 0 => match HOST.get(0) {
                Some(h) if h.ext_ifindex != 0 => snat::snat_out(ctx, off, v.domain, vni, h),
                _ => Verdict::Drop(DropReason::NotGateway),
            },
            Some(_) => Verdict::Drop(DropReason::NotLocal),
        };
    };

    let to = *to;
    if to == MACS_DOWN {
        return Verdict::Drop(DropReason::PortDown);
    }
    // The receiving port's ingress rules; then, with load balancers on
    // this host, a backend's reply becomes the VIP's.
    if let Some(dst) = maps::port(to) {
        if let Err(r) = ingress_policy(ctx, dst, off + ETH_HLEN) {
            return Verdict::Drop(r);
        }
        if let Some(h) = HOST.get(0) {
            if h.flags & HOST_F_LB != 0 {
                if let Err(r) = lb::reply(ctx, off + ETH_HLEN, dst.domain) {
                    return Verdict::Drop(r);
                }
            }
        }
        // Balanced from the internet by a gateway: remember the listener.
        if vx_flags & dataplane_common::VXLAN_F_LB != 0 {
            lb::public_inbound(ctx, off + ETH_HLEN, dst.domain, vx_port);
        }
    }
    // SAFETY: shrinking the head by the outer headers, checked above.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, off as i32) } != 0 {
        return Verdict::Drop(DropReason::AdjustFailed);
    }
    Verdict::Redirect(to)
}

/// A local port's ingress rules and the connection entry, for the IPv4
/// packet at `l3` that is about to be delivered to it.
#[inline(always)]
fn ingress_policy<C: Pkt>(ctx: &C, dst: &PortInfo, l3: usize) -> Result<(), DropReason> {
    if dst.policy == 0 {
        return Ok(());
    }
    let Some(sc) = policy::scratch() else {
        return Err(DropReason::NoScratch);
    };
    Flow::read_into(ctx, l3, &mut sc.flow, &mut sc.options)?;
    let sc = policy::launder(sc);
    let flow = &sc.flow;
    let mut check = Check::new(dst.domain, flow, &mut sc.check);
    check.receiver::<false>(dst, flow)?;
    check.commit(flow)
}

/// A frame tunnelled on an external network's VNI: inbound to an elastic
/// IP bound to a port of this host (translate and deliver), or, on a
/// gateway host, outbound from a VM's host (out of the external interface).
#[inline(always)]
fn external_decap(ctx: &XdpContext, off: usize) -> Verdict {
    let Some(ip) = ptr_at::<_, [u8; 20]>(ctx, off + ETH_HLEN) else {
        return Verdict::Drop(DropReason::TruncatedIpv4);
    };
    // SAFETY: bounds-checked.
    let ip = unsafe { &*ip };
    let daddr = [ip[16], ip[17], ip[18], ip[19]];
    if let Some(e) = nat::eip(daddr) {
        if e.flags & EIP_F_LOCAL != 0 {
            return eip_in(ctx, e, off);
        }
        if e.flags & EIP_F_SNAT != 0 {
            return snat::snat_in_tunnelled(ctx, off);
        }
    }
    match HOST.get(0) {
        Some(h) if h.flags & HOST_F_GATEWAY != 0 && h.ext_ifindex != 0 => to_external(ctx, h, off),
        _ => Verdict::Drop(DropReason::UnknownElasticIp),
    }
}

/// Inbound to an elastic IP of a local port: destination to the fixed IP,
/// routed (TTL, MACs of the port's router), the port's ingress rules, then
/// delivered without the outer headers.
#[inline(always)]
fn eip_in(ctx: &XdpContext, e: &EipEntry, off: usize) -> Verdict {
    let fixed = e.fixed;
    let ep = match endpoint(e.domain, fixed) {
        Some(ep) if ep.kind == EP_LOCAL => ep,
        _ => return Verdict::Drop(DropReason::UnknownElasticIp),
    };
    if ep.flags & EP_F_DOWN != 0 {
        return Verdict::Drop(DropReason::PortDown);
    }
    let Some(dst) = maps::port(ep.ifindex) else {
        return Verdict::Drop(DropReason::UnknownElasticIp);
    };
    let l3 = off + ETH_HLEN;
    let eip = match ptr_at::<_, [u8; 20]>(ctx, l3) {
        // SAFETY: bounds-checked.
        Some(ip) if unsafe { (*ip)[8] } > 1 => unsafe {
            [(*ip)[16], (*ip)[17], (*ip)[18], (*ip)[19]]
        },
        Some(_) => return Verdict::Drop(DropReason::TtlExceeded),
        None => return Verdict::Drop(DropReason::TruncatedIpv4),
    };
    if e.flags & EIP_F_QOS != 0
        && !nat::police(eip, DIR_INGRESS, Pkt::len(ctx).saturating_sub(l3 as u64))
    {
        return Verdict::Drop(DropReason::QosRateExceeded);
    }
    if let Err(r) = nat::translate(ctx, l3, nat::DST, fixed) {
        return Verdict::Drop(r);
    }
    if let Err(r) = ingress_policy(ctx, dst, l3) {
        return Verdict::Drop(r);
    }
    let (Some(eth), Some(ip)) = (
        ptr_at_mut::<_, [u8; 14]>(ctx, off),
        ptr_at_mut::<_, [u8; 20]>(ctx, l3),
    ) else {
        return Verdict::Drop(DropReason::TruncatedIpv4);
    };
    // SAFETY: both bounds-checked.
    let (eth, ip) = unsafe { (&mut *eth, &mut *ip) };
    decrement_ttl(ip);
    set_mac(eth, 0, &ep.mac);
    set_mac(eth, 6, &ep.gw_mac);
    // SAFETY: shrinking the head by the outer headers, checked by the caller.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, off as i32) } != 0 {
        return Verdict::Drop(DropReason::AdjustFailed);
    }
    Verdict::Redirect(ep.ifindex)
}

#[inline(always)]
pub fn decrement_ttl(ip: &mut [u8; 20]) {
    let ttl = ip[8];
    let sum = u16::from_be_bytes([ip[10], ip[11]]);
    let old = u16::from_be_bytes([ttl, ip[9]]);
    let new = u16::from_be_bytes([ttl.wrapping_sub(1), ip[9]]);
    ip[8] = ttl.wrapping_sub(1);
    let c = csum::replace16(sum, old, new).to_be_bytes();
    ip[10] = c[0];
    ip[11] = c[1];
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

/// XDP on a gateway host's external interface: ARP for elastic IPs is
/// answered with the interface's MAC; IPv4 to a bound elastic IP is
/// tunnelled to the host of its port; everything else goes to the stack.
#[inline(always)]
pub fn external_ingress(ctx: &XdpContext) -> u32 {
    let ifindex = Pkt::ingress_ifindex(ctx);
    let len = Pkt::len(ctx);
    let host = HOST.get(0);
    let slot = Slot::rx(host.map(|h| h.ext_slot).unwrap_or(0), len);
    let v = match parse::parse(ctx, len) {
        Err(r) => Verdict::Drop(r),
        Ok(p) => {
            slot.class(p.l3);
            match host {
                Some(h) if p.l3_off == ETH_HLEN && p.l3 == L3::Arp => external_arp(ctx, h),
                Some(_) if p.l3_off == ETH_HLEN && p.l3 == L3::Ipv4 => steer(ctx, p.l4_off),
                _ => Verdict::Pass,
            }
        }
    };
    finish::<XdpContext>(ifindex, &slot, len, v) as u32
}

#[inline(always)]
fn steer(ctx: &XdpContext, l4_off: usize) -> Verdict {
    let Some(ip) = ptr_at::<_, [u8; 20]>(ctx, ETH_HLEN) else {
        return Verdict::Pass;
    };
    // SAFETY: bounds-checked.
    let ip = unsafe { &*ip };
    let Some(e) = nat::eip([ip[16], ip[17], ip[18], ip[19]]) else {
        return Verdict::Pass;
    };
    if e.flags & EIP_F_SNAT != 0 {
        return snat::snat_in(ctx);
    }
    if e.flags & EIP_F_LB != 0 {
        return lb::from_internet(ctx, e);
    }
    if e.flags & EIP_F_STEER == 0 {
        return Verdict::Drop(DropReason::UnknownElasticIp);
    }
    let hash = flow_hash(ctx, ip, l4_off);
    match encap(ctx, e.vni, e.underlay, hash) {
        Ok(out) => Verdict::Redirect(out),
        Err(r) => Verdict::Drop(r),
    }
}

/// ARP requests on the external network for an elastic IP this region
/// serves are answered with the external interface's MAC.
#[inline(always)]
fn external_arp(ctx: &XdpContext, host: &HostInfo) -> Verdict {
    let (Some(eth), Some(a)) = (
        ptr_at_mut::<_, [u8; 14]>(ctx, 0),
        ptr_at_mut::<_, [u8; 28]>(ctx, ETH_HLEN),
    ) else {
        return Verdict::Drop(DropReason::TruncatedArp);
    };
    // SAFETY: both ranges were bounds-checked by ptr_at_mut.
    let (eth, a) = unsafe { (&mut *eth, &mut *a) };
    let tpa = [a[24], a[25], a[26], a[27]];
    if a[6] != 0 || a[7] != 1 || nat::eip(tpa).is_none() || mac_zero(&host.ext_mac) {
        return Verdict::Pass;
    }
    arp_reply(eth, a, &host.ext_mac);
    Verdict::Tx
}
