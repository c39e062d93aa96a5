//! Shared dataplane definitions: the one place where every eBPF map key and
//! value, every map name and every drop reason is defined.
//!
//! This crate is compiled twice: `#![no_std]` into the kernel programs
//! (`dataplane-ebpf`), and with the `user` feature into the user-space crates
//! (agent, stratoctl, program tests), where the types implement `aya::Pod`.
//! Everything here is `#[repr(C)]` plain old data with fixed-width fields and
//! explicit padding; sizes are asserted at compile time so the two sides can
//! never disagree. This crate must never contain logic that differs between
//! the two sides, and never depend on anything but `core` in the kernel build.
//!
//! One module per feature, each with its map types, flags and the sizes
//! pinned; every item is re-exported at the root (`dataplane_common::PortInfo`).
//! Map names and capacities are in [`maps`], program names in [`programs`].
#![no_std]
#![deny(unsafe_code)]

/// Implements `aya::Pod` for map key and value types, in the user-space
/// build only (the kernel build never sees aya).
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        #[cfg(feature = "user")]
        #[allow(unsafe_code)]
        const _: () = {
            $(
                // SAFETY: every type given to `pod!` is #[repr(C)], holds only
                // fixed-width integers and arrays of them, and has no implicit
                // padding (explicit `_pad` fields; its size is asserted next
                // to it), so any bit pattern is a valid value and it can be
                // copied to and from map memory.
                unsafe impl aya::Pod for $t {}
            )*
        };
    };
}
pub(crate) use pod;

pub mod maps;
pub mod programs;

mod bench;
mod conntrack;
mod elastic_ips;
mod host;
mod lb;
mod port;
mod routing;
mod security_groups;
mod snat;
mod stats;
mod tunnel;

pub use bench::*;
pub use conntrack::*;
pub use elastic_ips::*;
pub use host::*;
pub use lb::*;
pub use port::*;
pub use routing::*;
pub use security_groups::*;
pub use snat::*;
pub use stats::*;
pub use tunnel::*;
