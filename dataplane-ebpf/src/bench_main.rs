//! The benchmark object (`strato-dataplane-bench`): every production entry
//! point ([`entry`], the same source as `main.rs` builds) and the benchmark
//! and test programs and maps ([`bench`]: floor, ceilings, harness). Loaded
//! by benchmarks and by the program tests' harness, never by an agent.
#![no_std]
#![no_main]

mod base;
mod bench;
mod entry;
mod features;
mod net;
mod paths;
