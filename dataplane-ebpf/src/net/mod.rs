//! Layer 2, net: moving IPv4 packets between ports, hosts and the
//! outside. The tables every path reads (ports, endpoints and routes, the
//! host record), routing primitives (`decrement_ttl`, `flow_hash`), the
//! VXLAN tunnel's encapsulation and its next hops (the kernel's FIB),
//! address rewriting with checksums (`nat::translate`), ICMP errors and
//! answers, ARP replies.
//!
//! May import: `base`, `aya_ebpf`, `dataplane_common`, other net modules.
//! Must never: import `features` or `paths`; apply a policy (security
//! groups, elastic IPs, SNAT, load balancing are features).

pub mod arp;
pub mod fib;
pub mod host;
pub mod icmp;
pub mod nat;
pub mod port;
pub mod routing;
pub mod tunnel;
