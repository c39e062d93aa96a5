//! The per-CPU scratch of one program run (see [`Scratch`]). Its parts
//! are laid out here, so every layer can have one without importing
//! another's; what goes in them is each user's business (the security
//! groups' check state, the load balancer's keys, the port path's step).

use aya_ebpf::{macros::map, maps::PerCpuArray};
use dataplane_common::{CtKey, LbFlow, LbFlowKey, LbRev, LbServiceKey};

use super::flow::{Flow, Options};

/// Per-CPU scratch of one program run: the packet's flow, and the routing
/// step a port packet takes (`vpc`). Kept out of the 512-byte stack, and
/// read back through a pointer the compiler cannot see through
/// ([`launder`]): values written on different paths (constants included)
/// reach the verifier as plain numbers, so those paths merge instead of
/// being verified once each. Never read from user space.
#[repr(C)]
pub struct Scratch {
    pub flow: Flow,
    /// The TCP option walk (see `tcp_wscale`).
    pub options: Options,
    pub check: CheckState,
    /// The routing decision of a port packet (`paths::port`): kind, argument,
    /// MTU, drop reason.
    pub step: [u32; 4],
    /// The load balancer's keys and values (`features::lb`).
    pub lb: LbScratch,
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: per-CPU value owned by this CPU for the program's run
    // (programs on one CPU do not nest).
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// The same reference, through a volatile read of the pointer: the
/// compiler must load what was stored through it again instead of reusing
/// the stored values (see [`Scratch`]).
#[inline(always)]
pub fn launder<T>(r: &'static mut T) -> &'static mut T {
    let p: *mut T = r;
    // SAFETY: reads back the pointer just written; it stays valid.
    unsafe { &mut *core::ptr::read_volatile(&p) }
}

/// What a security-group check (`features::security_groups::Check`)
/// carries from stage to stage.
#[repr(C)]
pub struct CheckState {
    pub key: CtKey,
    /// The packet comes from side a of `key`: 1, else 0.
    pub from_a: u32,
    /// `CS_*` bits.
    pub flags: u32,
    pub now: u64,
    /// Per side, when its `CS_ADMITTED` bit is set: the policy and rule a
    /// first packet was admitted under, for the entry `commit` creates.
    pub policy: [u32; 2],
    pub rule: [u32; 2],
}

/// The load balancer's keys and values while it works, in the per-CPU
/// scratch ([`Scratch`]) rather than on the port pipeline's stack,
/// which has no room for them.
#[repr(C)]
pub struct LbScratch {
    pub skey: LbServiceKey,
    pub fkey: LbFlowKey,
    pub flow: LbFlow,
    pub rkey: LbFlowKey,
    pub rev: LbRev,
}
