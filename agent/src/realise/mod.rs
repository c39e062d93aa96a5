//! Realisers: the agent's stateful halves of the feature planners. Each
//! keeps what its maps hold and what changed since the last pass, and has
//! one shape: a plan step from the desired entries and the current state
//! that returns the writes, then an apply step that gives them to the
//! dataplane and records what was written.
//!
//! - [`vpc`]: ports, endpoints, routes, tunnels, elastic IPs, SNAT, the
//!   host record and counter slots (planned by [`crate::vpc`]).
//! - [`security_groups`]: policies and the connection table's sweeps
//!   (planned by [`crate::security_groups`]).
//! - [`lb`]: load balancer services, tables and backends, the health
//!   checks and the access log (planned by [`crate::lb`]).
//!
//! A realiser never decides policy, never talks to the controller and never
//! touches another realiser's maps; the agent ([`crate::agent`]) orders
//! them (policies before the ports that refer to them, listeners before
//! their VIPs, old policies retired after the ports moved).

pub mod lb;
pub mod security_groups;
pub mod vpc;
