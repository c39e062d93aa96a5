//! Strato's controller, as a library shared by the `strato-controller`
//! binary and the tests.
//!
//! Layers, each depending only on those after it: `api` (HTTP, parses
//! requests into commands; never touches storage or the dataplane itself),
//! `identity`, `network` and `lbaas` (Keystone, Neutron and Octavia logic:
//! validate a command against the state, return the changes; never see
//! HTTP), `compile` (desired state -> each host's configuration, the
//! `strato_proto::config` entries), `state` (the in-memory desired state
//! and its only writer), `store` (SQLite durability), `model` (the stored
//! objects). `hosts` keeps the agents' reports; `app` the process's shared
//! state; `reconcile` the loops that follow the agents' reports. Nothing here loads BPF or runs in the
//! packet path: the agents (`strato-agent`) do, from what `compile` emits.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod api;
pub mod app;
pub mod auth;
pub mod clouds;
pub mod commit;
pub mod compile;
pub mod error;
pub mod hosts;
pub mod identity;
pub mod lbaas;
pub mod model;
pub mod network;
pub mod reconcile;
pub mod state;
pub mod store;
