//! Layer 3, features: what a tenant configures, one module each: security
//! groups with connection tracking, elastic IPs, router SNAT, the load
//! balancer. Each owns its tables and its logic.
//!
//! May import: `base`, `net`, `aya_ebpf`, `dataplane_common`.
//! Must never: import another feature or `paths`. Where two features
//! meet (an elastic IP's packet through a port's security groups, a load
//! balancer member answering as an elastic IP), a path puts them together.

pub mod elastic_ips;
pub mod lb;
pub mod security_groups;
pub mod snat;
