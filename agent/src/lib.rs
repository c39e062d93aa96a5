//! Strato's host agent, as a library shared by the `strato-agent` binary
//! and the tests.
//!
//! - [`agent`]: the watch -> realise -> report loop: receives the host's
//!   configuration ([`strato_proto::config`]) from the controller, keeps
//!   the dataplane ([`strato_dataplane`]) in step with it, reports ports,
//!   interfaces, counters and the realised revision. It only orders the
//!   work of the parts below.
//! - The loop's parts: `desired` (the configuration and its revision; which
//!   update makes which work due), `interfaces` (what is attached, in which
//!   role), `host` (underlay address, next hop, DHCP leases), `report`
//!   (which report is due, and building it), `watch` (the configuration
//!   stream).
//! - Planners, one per feature, pure functions from the desired entries to
//!   map contents: [`vpc`] (ports, routes, tunnels, elastic IPs, SNAT),
//!   [`security_groups`] (policies), [`lb`] (load balancer services, Maglev
//!   tables, backends); and their realisers (`realise::{vpc,
//!   security_groups, lb}`), which keep what is written and what changed,
//!   plan, and apply through the dataplane.
//! - Host services: [`dhcp`] (answers the VMs' DHCP on their taps),
//!   [`lb::probe`] (member health checks), [`lb::access_log`] (per-connection
//!   log and metrics file).
//! - [`sys`]: the agent's interface ioctls, /proc knobs and the raw-socket
//!   helpers the host services share.
//!
//! The agent never decides policy; it realises what it is told. It never
//! touches the controller's store or API logic (it does not link them).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod agent;
pub mod config;
mod desired;
pub mod dhcp;
mod host;
mod interfaces;
pub mod lb;
mod realise;
mod report;
pub mod security_groups;
pub mod sys;
pub mod vpc;
mod watch;
