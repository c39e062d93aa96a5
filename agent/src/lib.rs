//! Strato's host agent, as a library shared by the `strato-agent` binary
//! and the tests.
//!
//! - [`agent`]: the watch -> realise -> report loop: receives the host's
//!   configuration ([`strato_proto::config`]) from the controller, keeps
//!   the dataplane ([`strato_dataplane`]) in step with it, reports ports,
//!   interfaces, counters and the realised revision.
//! - Realisers, one per feature, each planning map writes from the desired
//!   entries and what is installed: [`vpc`] (ports, routes, tunnels, elastic
//!   IPs, SNAT), [`security_groups`] (policies), [`lb`] (load balancer
//!   services, Maglev tables, backends).
//! - Host services: [`dhcp`] (answers the VMs' DHCP on their taps),
//!   [`lb::probe`] (member health checks), [`lb::access_log`] (per-connection
//!   log and metrics file).
//!
//! The agent never decides policy; it realises what it is told. It never
//! touches the controller's store or API logic (it does not link them).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod agent;
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
