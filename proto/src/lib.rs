//! The contract between Strato's processes, and nothing else: what the
//! controller compiles for a host ([`config`]), what an agent reports back
//! ([`report`], [`lb`]), what an L7 instance runs ([`l7`]), the names both derive the same way ([`naming`]), the
//! HTTP client every process uses to reach the controller ([`client`]), and
//! the processes' shared logging setup ([`telemetry`]) and time formats ([`time`]).
//!
//! Never here: logic of either side (validation, compilation, map
//! encoding), storage, or anything that needs BPF. Both the controller and
//! the agent depend on this crate; it depends on neither.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod client;
pub mod config;
pub mod l7;
pub mod lb;
pub mod naming;
pub mod report;
pub mod telemetry;
pub mod time;
