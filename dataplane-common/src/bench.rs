//! Benchmark harness types (`BARE`, `BENCH_FRAME`): only the benchmark
//! object (`strato-dataplane-bench`) has these maps; never an agent's.

/// Value of `BARE`: where the ceiling programs send a frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BareTarget {
    pub ifindex: u32,
    /// `BARE_F_MACS`: rewrite the MACs.
    pub flags: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
}

/// `BareTarget::flags`: rewrite destination and source MAC.
pub const BARE_F_MACS: u32 = 1;

/// Value of `BENCH_FRAME[0]`: a frame of `len` bytes (1 to
/// [`BENCH_FRAME_MAX`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchFrame {
    pub len: u32,
    pub bytes: [u8; BENCH_FRAME_MAX],
}

/// Largest frame the benchmark harness restores.
pub const BENCH_FRAME_MAX: usize = 252;

// Layouts are an ABI between kernel and user space: pin them.
const _: () = assert!(core::mem::size_of::<BareTarget>() == 20);
const _: () = assert!(core::mem::size_of::<BenchFrame>() == 256);

crate::pod!(BareTarget, BenchFrame);
