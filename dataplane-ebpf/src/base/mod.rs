//! Layer 1, base: what every program needs whatever it does with a packet.
//! The packet context of both attach points ([`ctx::Pkt`]), the parser,
//! checksum arithmetic, address helpers, a packet's flow, verdicts and
//! their counting, the per-CPU scratch, the clock, the counters.
//!
//! May import: `aya_ebpf`, `dataplane_common`, and other base modules.
//! Must never: import `net`, `features` or `paths`; decide anything about
//! a packet (no table of a feature is read here, except the counters and
//! the port pipeline's tail-call arrays that [`ctx::Pkt::tail`] jumps
//! through).

pub mod addr;
pub mod clock;
pub mod csum;
pub mod ctx;
pub mod flow;
pub mod parse;
pub mod scratch;
pub mod stats;
pub mod verdict;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
