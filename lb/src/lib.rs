//! Strato's load balancers (ELB): the L4 path compiled into the XDP dataplane
//! (Maglev consistent hashing, VIP translation) and the L7 proxy that runs on
//! gateway hosts. Owns listener/pool/member selection logic; must never touch
//! the API store directly (it receives compiled configuration from the
//! controller).
//!
//! - [`maglev`]: builds the weighted Maglev lookup table of a pool, in the
//!   control plane, that the dataplane indexes with a flow hash.
//! - [`numbering`]: the dense ids (services, backends) and the ranges of
//!   the shared Maglev array handed out and given back.
//! - [`health`]: a member's health from its checks' results (rise/fall).
#![deny(unsafe_code)]

pub mod health;
pub mod maglev;
pub mod numbering;
