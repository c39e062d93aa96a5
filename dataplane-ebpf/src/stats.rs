//! Per-interface and per-drop-reason counters (per-CPU maps, summed in user
//! space). The only thing the hot path records about a packet.

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::generated::bpf_xdp_get_buff_len, macros::map,
    maps::PerCpuHashMap, programs::XdpContext,
};
use dataplane_common::{maps, DropKey, DropReason, DropStats, IfStats};

use crate::parse::{Parsed, L3};

#[map(name = "IF_STATS")]
static IF_STATS: PerCpuHashMap<u32, IfStats> =
    PerCpuHashMap::with_max_entries(maps::IF_STATS_MAX, 0);

#[map(name = "DROP_STATS")]
static DROP_STATS: PerCpuHashMap<DropKey, DropStats> =
    PerCpuHashMap::with_max_entries(maps::DROP_STATS_MAX, 0);

/// Whole frame length, including the fragments of a multi-buffer frame.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> u64 {
    // SAFETY: ctx.ctx is the live xdp_md the kernel handed to this program.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) }
}

#[inline(always)]
fn if_stats(ifindex: u32) -> Option<*mut IfStats> {
    if let Some(p) = IF_STATS.get_ptr_mut(ifindex) {
        return Some(p);
    }
    // First packet on this interface and CPU: create the entry. A full map
    // means this interface is not counted; the packet path goes on.
    let _ = IF_STATS.insert(ifindex, IfStats::default(), BPF_NOEXIST as u64);
    IF_STATS.get_ptr_mut(ifindex)
}

#[inline(always)]
pub fn count_pass(ifindex: u32, len: u64, parsed: &Parsed) {
    if let Some(s) = if_stats(ifindex) {
        // SAFETY: per-CPU value owned by this CPU for the program's run.
        let s = unsafe { &mut *s };
        s.rx_packets += 1;
        s.rx_bytes += len;
        s.passed += 1;
        match parsed.l3 {
            L3::Ipv4 => s.ipv4 += 1,
            L3::Ipv6 => s.ipv6 += 1,
            L3::Arp => s.arp += 1,
            L3::Other => s.other += 1,
        }
    }
}

#[inline(always)]
pub fn count_drop(ifindex: u32, len: u64, reason: DropReason) {
    if let Some(s) = if_stats(ifindex) {
        // SAFETY: as in count_pass.
        let s = unsafe { &mut *s };
        s.rx_packets += 1;
        s.rx_bytes += len;
        s.dropped += 1;
    }
    let key = DropKey {
        ifindex,
        reason: reason as u32,
    };
    let p = match DROP_STATS.get_ptr_mut(key) {
        Some(p) => p,
        None => {
            let _ = DROP_STATS.insert(key, DropStats::default(), BPF_NOEXIST as u64);
            match DROP_STATS.get_ptr_mut(key) {
                Some(p) => p,
                None => return,
            }
        }
    };
    // SAFETY: per-CPU value owned by this CPU for the program's run.
    let d = unsafe { &mut *p };
    d.packets += 1;
    d.bytes += len;
}
