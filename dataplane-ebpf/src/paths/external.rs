//! The external path: XDP on a gateway host's external interface. ARP for
//! elastic IPs is answered with the interface's MAC; IPv4 to an elastic IP
//! is steered to its port's host, translated back by the router's SNAT,
//! or balanced by a public load balancer; everything else goes to the
//! stack.

use aya_ebpf::programs::XdpContext;
use dataplane_common::{DropReason, HostInfo, EIP_F_LB, EIP_F_SNAT, EIP_F_STEER};

use crate::{
    base::{
        addr::mac_zero,
        ctx::Pkt,
        parse::{self, ptr_at, ptr_at_mut, ETH_HLEN, L3},
        stats::Slot,
        verdict::{finish, Verdict},
    },
    features::{elastic_ips, lb, snat},
    net::{arp::arp_reply, host::HOST, routing::flow_hash, tunnel::encap},
};

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
    let Some(e) = elastic_ips::eip([ip[16], ip[17], ip[18], ip[19]]) else {
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
    if a[6] != 0 || a[7] != 1 || elastic_ips::eip(tpa).is_none() || mac_zero(&host.ext_mac) {
        return Verdict::Pass;
    }
    arp_reply(eth, a, &host.ext_mac);
    Verdict::Tx
}
