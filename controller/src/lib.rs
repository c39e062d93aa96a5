//! Strato's control plane and host agent, as a library shared by the three
//! binaries (`strato-controller`, `strato-agent`, `stratoctl`) and the tests.
//!
//! Layers: `api` (HTTP, parses requests into commands; never touches storage
//! or the dataplane itself), `identity` and `network` (Keystone and Neutron
//! logic: validate a command against the state, return the changes),
//! `state` (the in-memory desired state and its only writer), `store`
//! (SQLite durability), `hosts` (agents' reports), `agent`
//! (owns one host's dataplane: loads, attaches and pins the eBPF programs and
//! reports to the controller), `dataplane` (the eBPF object and its maps),
//! `client` (the HTTP client the agent and stratoctl use). Nothing here runs
//! in the packet path; the packet path only reads maps this code writes.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod agent;
pub mod api;
pub mod app;
pub mod auth;
pub mod client;
pub mod clouds;
pub mod compile;
pub mod dataplane;
pub mod dhcp;
pub mod error;
pub mod hosts;
pub mod identity;
pub mod lbaas;
pub mod lblog;
pub mod lbmaps;
pub mod lbprobe;
pub mod model;
pub mod network;
pub mod policy;
pub mod report;
pub mod state;
pub mod store;
pub mod tables;
pub mod telemetry;
