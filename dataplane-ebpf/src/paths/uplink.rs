//! The uplink path: XDP on a host's underlay NIC. VXLAN to this host's
//! underlay address is decapsulated and delivered to its port (the port's
//! security groups, and a load balancer backend's reply turned back into
//! the VIP's, on the way); on an external network's VNI, an elastic IP's
//! inbound traffic is translated, and a gateway host sends a VM host's
//! outbound traffic out (or through the router's SNAT). Everything else
//! goes to the stack.

use aya_ebpf::{helpers::generated::bpf_xdp_adjust_head, programs::XdpContext};
use dataplane_common::{
    DropReason, EipEntry, MacKey, PortInfo, DIR_INGRESS, EIP_F_LOCAL, EIP_F_QOS, EIP_F_SNAT,
    EP_F_DOWN, EP_LOCAL, HOST_F_GATEWAY, HOST_F_LB, MACS_DOWN, VNI_F_EXTERNAL, VNI_F_SNAT,
    VXLAN_OVERHEAD, VXLAN_PORT,
};

use crate::{
    base::{
        addr::{ip_eq, set_mac},
        ctx::Pkt,
        flow::Flow,
        parse::{self, ptr_at, ptr_at_mut, ETH_HLEN, ETH_P_IPV4, IPPROTO_UDP, L3},
        scratch,
        stats::Slot,
        verdict::{finish, Verdict},
    },
    features::{elastic_ips, lb, security_groups::Check, snat},
    net::{
        fib::to_external,
        host::HOST,
        nat, port,
        routing::{decrement_ttl, endpoint},
        tunnel::{MACS, VNIS},
    },
};

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
    if let Some(dst) = port::port(to) {
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
    let Some(sc) = scratch::scratch() else {
        return Err(DropReason::NoScratch);
    };
    Flow::read_into(ctx, l3, &mut sc.flow, &mut sc.options)?;
    let sc = scratch::launder(sc);
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
    if let Some(e) = elastic_ips::eip(daddr) {
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
    let Some(dst) = port::port(ep.ifindex) else {
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
        && !elastic_ips::police(eip, DIR_INGRESS, Pkt::len(ctx).saturating_sub(l3 as u64))
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
