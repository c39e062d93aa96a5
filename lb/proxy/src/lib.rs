//! `strato-l7`: one L7 load-balancer instance (the process an agent starts
//! per instance, in its network namespace). It serves the HTTP and
//! TERMINATED_HTTPS listeners of [`strato_proto::l7::L7Config`] read from
//! its state directory, routes requests by L7 policies to pools, balances
//! them over members (reusing `strato-lb`'s weighted Maglev for source-IP
//! hashing), re-reads its configuration on `SIGHUP` (members and listeners
//! that leave drain), drains and exits on `SIGTERM`, and reports through
//! its control socket and access log.
//!
//! It owns only its own process state: it never decides what it serves
//! (the controller does), never touches namespaces, BPF or the
//! controller's store, and never logs per request above `debug`.
//!
//! Modules, lowest first: [`error`], [`tls`], [`balance`] (member choice,
//! persistence), [`config`] (validation, policy match), [`metrics`], [`access_log`],
//! [`upstream`] (member connections), [`state`], [`proxy`] (one request),
//! [`server`] (listeners, control socket); [`Instance`] ties them together.
#![deny(unsafe_code)]

pub mod access_log;
pub mod balance;
pub mod config;
pub mod error;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod state;
pub mod tls;
pub mod upstream;

mod instance;

pub use config::ConfigError;
pub use instance::{inherited_listeners, Instance, Options, StartError, LISTEN_FDS_ENV};
