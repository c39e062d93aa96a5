//! Strato's controller, as a library shared by the `strato-controller`
//! binary and the tests.
//!
//! Modules, each depending only on those after it (`tests/src/layout.rs`
//! checks there is no cycle):
//! - `api`: HTTP turned into typed commands at the edge, and rendering;
//!   never touches storage or the dataplane itself. `reconcile`: the loops
//!   that follow the agents' reports (gateway failover, LB provisioning).
//! - `identity`, then `app` (the process's shared state handed to
//!   handlers), `hosts` (agents' latest reports).
//! - `commit`: `Core`, the only writer: validate, store, apply, compile.
//! - `compile`: desired state -> each host's configuration (the
//!   `strato_proto::config` entries) and deltas.
//! - `keymanager`: Barbican secrets and containers (sealed at rest) and
//!   the certificates Octavia's TLS listeners name; never sees HTTP.
//! - `vpnaas` (Neutron VPNaaS), `lbaas`, then `network`: VPN, Octavia
//!   and Neutron logic; validate a
//!   command against the state and return the changes; never see HTTP.
//! - `state` (the desired state in memory), `kek` (the Key Manager's
//!   key-encryption key, sealing payloads), `store` (SQLite durability),
//!   `model` (the stored objects), `auth`, `error`.
//!
//! Nothing here loads BPF or runs in the packet path: the agents
//! (`strato-agent`) do, from what `compile` emits.
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
pub mod kek;
pub mod keymanager;
pub mod lbaas;
pub mod model;
pub mod network;
pub mod reconcile;
pub mod state;
pub mod store;
pub mod vpnaas;
