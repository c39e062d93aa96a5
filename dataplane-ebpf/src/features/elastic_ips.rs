//! Elastic IPs: distributed 1:1 NAT.
//!
//! The host of the bound port translates: outbound (a VM towards the
//! external network) the source becomes the elastic IP before the packet is
//! tunnelled to a gateway host; inbound (tunnelled from a gateway host) the
//! destination becomes the fixed IP before the port's ingress rules and
//! delivery. Gateway hosts only steer: they answer ARP for elastic IPs on
//! the external network and tunnel their traffic to the bound port's host.
//!
//! This module holds the bindings and the bandwidth limits; the rewrite is
//! `net::nat::translate`, and the paths put them together (outbound in the
//! port path's tail, inbound on the uplink, steering on the external
//! interface).

use aya_ebpf::{macros::map, maps::HashMap};
use dataplane_common::{maps, EipEntry, EipOut, EpKey, QosBucket, QosKey};

use crate::base::clock;

#[map]
pub static EIPS: HashMap<[u8; 4], EipEntry> = HashMap::with_max_entries(maps::EIPS_MAX, 0);

#[map]
pub static EIP_OUT: HashMap<EpKey, EipOut> = HashMap::with_max_entries(maps::EIP_OUT_MAX, 0);

#[map]
static EIP_QOS: HashMap<QosKey, QosBucket> = HashMap::with_max_entries(maps::EIP_QOS_MAX, 0);

/// Does a packet of `len` bytes conform to `eip`'s bandwidth limit in
/// `direction`? (See [`QosBucket`]; a missing bucket is no limit.) The
/// clock is updated without a lock: two CPUs racing may both pass a packet
/// the limit had room for once, a small overshoot.
#[inline(always)]
pub fn police(eip: [u8; 4], direction: u32, len: u64) -> bool {
    let Some(b) = EIP_QOS.get_ptr_mut(&QosKey { eip, direction }) else {
        return true;
    };
    // SAFETY: a live map value.
    let b = unsafe { &mut *b };
    // No panic path in the division (a rate of 0 is no limit).
    let Some(cost) = ((len & 0xffff_ffff) * 8_000_000_000).checked_div(b.rate_bps) else {
        return true;
    };
    let now = clock::now_precise();
    let full = now.saturating_sub(b.burst_ns);
    let clock = if b.clock_ns < full { full } else { b.clock_ns };
    let next = clock + cost;
    if next > now {
        return false;
    }
    b.clock_ns = next;
    true
}

#[inline(always)]
pub fn eip(ip: [u8; 4]) -> Option<&'static EipEntry> {
    // SAFETY: map values stay valid for the program's run (RCU).
    unsafe { EIPS.get(&ip) }
}

#[inline(always)]
pub fn eip_out(domain: u32, ip: [u8; 4]) -> Option<&'static EipOut> {
    // SAFETY: as above.
    unsafe { EIP_OUT.get(&EpKey { domain, ip }) }
}
