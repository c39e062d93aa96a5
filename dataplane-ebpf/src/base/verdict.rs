//! What to do with a frame ([`Verdict`]), and [`finish`]: the verdict
//! counted and turned into the attach point's return code.

use aya_ebpf::helpers::generated::bpf_redirect;
use dataplane_common::DropReason;

use super::{
    ctx::Pkt,
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
