//! Counters: per-slot interface counters (a per-CPU array indexed by the
//! slot the agent gave the port or uplink, so counting costs one array
//! lookup) and per-(interface, reason) drop counters (a per-CPU hash, touched
//! only on drops). Summed over CPUs in user space. The only thing the hot
//! path records about a packet.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
};
use dataplane_common::{maps, DropKey, DropReason, DropStats, IfStats};

use super::parse::L3;

#[map]
static IF_STATS: PerCpuArray<IfStats> = PerCpuArray::with_max_entries(maps::IF_STATS_MAX, 0);

#[map]
static DROP_STATS: PerCpuHashMap<DropKey, DropStats> =
    PerCpuHashMap::with_max_entries(maps::DROP_STATS_MAX, 0);

/// The counters of one slot on this CPU, for the program's run.
pub struct Slot(Option<*mut IfStats>);

/// What happened to a frame, for the counters.
#[derive(Clone, Copy)]
pub enum Outcome {
    Passed,
    Forwarded,
    Answered,
    Dropped,
}

impl Slot {
    /// Counts a received frame of `len` bytes on `slot`.
    #[inline(always)]
    pub fn rx(slot: u32, len: u64) -> Slot {
        let p = IF_STATS.get_ptr_mut(slot);
        if let Some(p) = p {
            // SAFETY: per-CPU value owned by this CPU for the program's run.
            let s = unsafe { &mut *p };
            s.rx_packets += 1;
            s.rx_bytes += len;
        }
        Slot(p)
    }

    /// The counters of `slot` without counting a frame (a tail program's
    /// view of the frame its caller counted).
    #[inline(always)]
    pub fn at(slot: u32) -> Slot {
        Slot(IF_STATS.get_ptr_mut(slot))
    }

    /// Takes back the frame `rx` counted (the frame goes through the
    /// pipeline again, which counts it once more).
    #[inline(always)]
    pub fn uncount(&self, len: u64) {
        if let Some(p) = self.0 {
            // SAFETY: as in rx.
            let s = unsafe { &mut *p };
            s.rx_packets = s.rx_packets.wrapping_sub(1);
            s.rx_bytes = s.rx_bytes.wrapping_sub(len);
            s.ipv4 = s.ipv4.wrapping_sub(1);
        }
    }

    #[inline(always)]
    pub fn class(&self, l3: L3) {
        if let Some(p) = self.0 {
            // SAFETY: as in rx.
            let s = unsafe { &mut *p };
            match l3 {
                L3::Ipv4 => s.ipv4 += 1,
                L3::Ipv6 => s.ipv6 += 1,
                L3::Arp => s.arp += 1,
                L3::Other => s.other += 1,
            }
        }
    }

    #[inline(always)]
    pub fn outcome(&self, o: Outcome) {
        if let Some(p) = self.0 {
            // SAFETY: as in rx.
            let s = unsafe { &mut *p };
            match o {
                Outcome::Passed => s.passed += 1,
                Outcome::Forwarded => s.forwarded += 1,
                Outcome::Answered => s.answered += 1,
                Outcome::Dropped => s.dropped += 1,
            }
        }
    }
}

/// Counts a drop of `len` bytes on `ifindex` for `reason`.
#[inline(always)]
pub fn count_drop(ifindex: u32, len: u64, reason: DropReason) {
    let key = DropKey {
        ifindex,
        reason: reason as u32,
    };
    let p = match DROP_STATS.get_ptr_mut(key) {
        Some(p) => p,
        None => {
            // First drop of this kind on this interface and CPU. A full map
            // means it is not counted; the verdict stands.
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
