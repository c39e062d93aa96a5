//! The VPC tables the agent fills from the compiled configuration. Layouts
//! and names come from `dataplane-common`.

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruPerCpuHashMap, ProgramArray},
};
use dataplane_common::{
    maps, AllowedKey, AllowedMac, Endpoint, EpKey, HostInfo, MacKey, NextHop, NextHopKey, PortInfo,
    Route, RouteKey, VniInfo,
};

#[map(name = "PORTS")]
pub static PORTS: HashMap<u32, PortInfo> = HashMap::with_max_entries(maps::PORTS_MAX, 0);

#[map(name = "PORT_INDEX")]
pub static PORT_INDEX: Array<PortInfo> = Array::with_max_entries(maps::PORT_INDEX_MAX, 0);

/// The port whose tap is `ifindex`: the dense array when the ifindex fits,
/// else the hash.
#[inline(always)]
pub fn port(ifindex: u32) -> Option<&'static PortInfo> {
    if ifindex < maps::PORT_INDEX_MAX {
        return PORT_INDEX
            .get(ifindex)
            .filter(|p| p.flags & dataplane_common::PORT_F_PRESENT != 0);
    }
    // SAFETY: map values stay valid for the program's run.
    unsafe { PORTS.get(&ifindex) }
}

#[map(name = "ENDPOINTS")]
pub static ENDPOINTS: HashMap<EpKey, Endpoint> = HashMap::with_max_entries(maps::ENDPOINTS_MAX, 0);

#[map(name = "ROUTES")]
pub static ROUTES: LpmTrie<RouteKey, Route> = LpmTrie::with_max_entries(maps::ROUTES_MAX, 0);

#[map(name = "VNIS")]
pub static VNIS: HashMap<u32, VniInfo> = HashMap::with_max_entries(maps::VNIS_MAX, 0);

#[map(name = "MACS")]
pub static MACS: HashMap<MacKey, u32> = HashMap::with_max_entries(maps::MACS_MAX, 0);

#[map(name = "ALLOWED")]
pub static ALLOWED: LpmTrie<AllowedKey, AllowedMac> =
    LpmTrie::with_max_entries(maps::ALLOWED_MAX, 0);

/// The port pipeline's tails (XDP builds), by `maps::TAIL_*`: external
/// traffic, the load balancer, the pipeline itself (re-entered after the
/// load balancer's translation), local replies of load balancer members.
#[map(name = "PORT_OUT_XDP")]
pub static PORT_OUT_XDP: ProgramArray = ProgramArray::with_max_entries(maps::TAILS, 0);

/// The same for the TC build.
#[map(name = "PORT_OUT_TC")]
pub static PORT_OUT_TC: ProgramArray = ProgramArray::with_max_entries(maps::TAILS, 0);

#[map(name = "NEXTHOPS")]
pub static NEXTHOPS: LruPerCpuHashMap<NextHopKey, NextHop> =
    LruPerCpuHashMap::with_max_entries(maps::NEXTHOPS_MAX, 0);

#[map(name = "HOST")]
pub static HOST: Array<HostInfo> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn endpoint(domain: u32, ip: [u8; 4]) -> Option<&'static Endpoint> {
    // SAFETY: map values stay valid for the program's run (RCU).
    unsafe { ENDPOINTS.get(&EpKey { domain, ip }) }
}

#[inline(always)]
pub fn route(domain: u32, ip: [u8; 4]) -> Option<&'static Route> {
    ROUTES.get(Key::new(
        64,
        RouteKey {
            domain: domain.to_be_bytes(),
            ip,
        },
    ))
}

/// The MAC allowed to send from `ip` on the port with tap `ifindex`.
#[inline(always)]
pub fn allowed(ifindex: u32, ip: [u8; 4]) -> Option<&'static AllowedMac> {
    ALLOWED.get(Key::new(
        64,
        AllowedKey {
            ifindex: ifindex.to_be_bytes(),
            ip,
        },
    ))
}
