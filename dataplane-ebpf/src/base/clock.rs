//! The clock: one place that reads the kernel's monotonic time.

use aya_ebpf::helpers::generated::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns};

/// `bpf_ktime_get_coarse_ns`: CLOCK_MONOTONIC at tick resolution, what
/// every table's timestamps use (connections, load balancer flows, SNAT,
/// next hops).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// `bpf_ktime_get_ns`: CLOCK_MONOTONIC at full resolution, for the
/// bandwidth limits' token buckets (a tick is too coarse for them).
#[inline(always)]
pub fn now_precise() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}
