//! Strato's kernel programs, the production object (`strato-dataplane`):
//! what agents attach and `stratoctl` loads. Its entry points, one per
//! attach point, are in [`entry`]; benchmark and test programs are built
//! into a second object from `bench_main.rs` and never ship here.
//!
//! The logic is layered; each layer imports only the ones below it:
//!
//! 1. [`base`]: packet context, parser, checksums, verdicts, scratch,
//!    clock, counters;
//! 2. [`net`]: ports, routing, tunnels, FIB next hops, address rewriting,
//!    ICMP and ARP answers;
//! 3. [`features`]: security groups with connection tracking, elastic
//!    IPs, SNAT, the load balancer (never importing one another);
//! 4. [`paths`]: port, uplink and external: features put together.
//!
//! Built for `bpfel-unknown-none` by `dataplane/build.rs` (aya-build) and
//! embedded into the user-space loader. Every map layout, map name and
//! drop reason comes from `dataplane-common`; this crate must never define
//! its own (a map's static is named exactly as its `dataplane_common::maps`
//! constant). The hot path counts, it never logs.
#![no_std]
#![no_main]

mod base;
mod entry;
mod features;
mod net;
mod paths;
