//! The port path: a frame a VM sent, seen on the host end of its veth (XDP
//! or TC). Port lookup -> the load balancer in front (`features::lb`) ->
//! admin state -> parse -> anti-spoofing -> ARP answered here / DHCP to
//! the agent / L2 forward within the network / L3 routing in the VPC
//! (gateway ping, TTL, MTU, static routes) -> security groups and
//! connection tracking -> delivery: redirect to a local port, or
//! VXLAN-encapsulate to the destination's host. And the pipeline's tails:
//! out of the VPC (elastic IP or SNAT), to a load balancer VIP, a
//! member's reply to a local port.
//!
//! Distributed routing: a packet is routed on the sender's host, so it
//! crosses the underlay once, already carrying the destination network's VNI
//! and MACs; the receiving host only delivers.

use dataplane_common::{
    maps::{self, TAIL_EXTERNAL, TAIL_LB, TAIL_LB_REPLY},
    DropReason, Endpoint, PortInfo, DIR_EGRESS, EIP_F_QOS, EP_EXTERNAL, EP_F_DOWN, EP_F_SNAT,
    EP_GATEWAY, EP_LOCAL, EP_REMOTE, EP_VIP, PORT_F_ADMIN_UP, PORT_F_LB_MEMBER, PORT_F_SECURITY,
    ROUTE_CONNECTED, ROUTE_EXTERNAL, ROUTE_NEXTHOP,
};

use crate::{
    base::{
        addr::{ip_eq, mac_at, mac_eq, mac_zero, set_mac},
        ctx::Pkt,
        flow::Flow,
        parse::{self, ptr_at, ptr_at_mut, ETH_HLEN, IPPROTO_UDP, L3},
        scratch::{self, Scratch},
        stats::Slot,
        verdict::{finish, Verdict},
    },
    features::{elastic_ips, lb, security_groups::Check},
    net::{
        arp::arp_reply,
        icmp::{gateway_ping, icmp_error},
        nat,
        port::{self, source_allowed},
        routing::{decrement_ttl, endpoint, flow_hash, route},
        tunnel::encap,
    },
};

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
    let Some(port) = port::port(ifindex) else {
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
    let Some(port) = port::port(ifindex) else {
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
    let snat = match elastic_ips::eip_out(x.domain, saddr) {
        _ if public => false,
        Some(o) => {
            let eip = o.eip;
            // Limits count IP bytes (what the tenant's rate means).
            let bytes = ctx.len().saturating_sub(ETH_HLEN as u64);
            if o.flags & EIP_F_QOS != 0 && !elastic_ips::police(eip, DIR_EGRESS, bytes) {
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

/// The tail for a packet a VM sent to a load balancer's VIP that was not
/// balanced in front of the pipeline (a refusal to answer, or a trace):
/// the load balancer refuses or translates it, and a translated packet
/// re-enters the pipeline (`TAIL_PORT`).
#[inline(always)]
pub fn lb_tail<C: Pkt>(ctx: &C) -> i32 {
    let ifindex = ctx.ingress_ifindex();
    let len = ctx.len();
    let Some(port) = port::port(ifindex) else {
        let slot = Slot::at(0);
        return finish::<C>(ifindex, &slot, len, Verdict::Drop(DropReason::PortUnknown));
    };
    let slot = Slot::at(port.slot);
    match lb::to_backend(ctx, port, len) {
        Ok(()) => {
            // The pipeline counts the frame again when it re-enters.
            slot.uncount(len);
            ctx.tail(maps::TAIL_PORT);
            finish::<C>(ifindex, &slot, len, Verdict::Drop(DropReason::NoTailCall))
        }
        Err(v) => finish::<C>(ifindex, &slot, len, v),
    }
}

/// The tail for a local member's packet to a local port: a reply to
/// translate back when it belongs to a balanced connection.
#[inline(always)]
pub fn lb_reply_tail<C: Pkt>(ctx: &C) -> i32 {
    let ifindex = ctx.ingress_ifindex();
    let len = ctx.len();
    let Some(port) = port::port(ifindex) else {
        let slot = Slot::at(0);
        return finish::<C>(ifindex, &slot, len, Verdict::Drop(DropReason::PortUnknown));
    };
    let slot = Slot::at(port.slot);
    let v = match lb::reply(ctx, ETH_HLEN, port.domain) {
        Err(r) => Verdict::Drop(r),
        Ok(daddr) => match endpoint(port.domain, daddr) {
            Some(ep) if ep.kind == EP_LOCAL => Verdict::Redirect(ep.ifindex),
            _ => Verdict::Drop(DropReason::UnknownDestination),
        },
    };
    finish::<C>(ifindex, &slot, len, v)
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
    let Some(sc) = scratch::scratch() else {
        return Verdict::Drop(DropReason::NoScratch);
    };
    let dhcp = is_dhcp_request(ctx, l4_off, l4_proto);
    // The decision goes through the scratch (see `base::scratch::Scratch`): what
    // follows is verified once, not once per way of getting here.
    let ep = route_step(ctx, ifindex, port, l4_off, l4_proto, dhcp, sc);
    let sc = scratch::launder(sc);
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
    let sc = scratch::launder(sc);
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
        if let Some(dst) = port::port(ep.ifindex) {
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
